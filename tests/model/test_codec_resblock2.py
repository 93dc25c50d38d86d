"""TiCodec with ``"resblock": "2"`` (the second HiFi-GAN residual block type): a tiny codec built here in the
official layout (random weights, weight norm as ``weight_g``/``weight_v``) loads, decodes and encodes exactly like an
independent reference network, and ``parley reply`` speaks through it."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import _resblock2_codec as ref
from _fo_pipeline import LLM_DIR, meta, requires_fixture
from _paths import TINY_A, TINY_A_CHECKPOINTS, TINY_A_EXPECTED
from core.model.freeze_omni.codec import CodecConfig, ResBlock1, ResBlock2, TiCodec
from core.model.freeze_omni.errors import CheckpointError
from core.runtime import configure_torch_threads


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    configure_torch_threads(1)
    parts = ref.build(seed=0)
    folder = ref.save_official(parts, tmp_path_factory.mktemp("rb2") / "codec")
    return parts, folder


@pytest.fixture(scope="module")
def codec(built) -> TiCodec:
    return TiCodec.from_checkpoint(built[1], device="cpu", dtype=torch.float32, with_encoder=True)


def test_config_and_layout(built, codec) -> None:
    assert codec.config.resblock == "2"
    blocks = list(codec.generator.resblocks) + list(codec.encoder.resblocks)
    assert blocks and all(isinstance(b, ResBlock2) for b in blocks)
    # One conv per dilation, the first two dilations only: [1, 3, 5] -> (1, 3); [1, 2] -> (1, 2).
    assert [c.dilation[0] for c in codec.generator.resblocks[0].convs] == [1, 3]
    assert [c.dilation[0] for c in codec.generator.resblocks[1].convs] == [1, 2]
    stored = torch.load(built[1] / "final.pt", weights_only=True)
    assert "resblocks.0.convs.1.weight_g" in stored["generator"]
    assert not any(".convs1." in k or ".convs2." in k for part in stored.values() for k in part)


def test_decode_matches_the_reference(built, codec) -> None:
    parts, _ = built
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, 64, size=13).tolist()
    for voice in (ref.CONFIG["global_tokens"], [0, 9, 33, 60]):
        expected = ref.reference_decode(parts, tokens, voice)
        wave = codec.decode(tokens, voice)
        assert wave.shape == expected.shape == (codec.config.output_length(13),)
        np.testing.assert_allclose(wave.numpy(), expected.numpy(), rtol=0, atol=2e-6)
    assert float(wave.abs().max()) > 1e-3  # not a silent network


def test_encoder_matches_the_reference(built, codec) -> None:
    parts, _ = built
    t = np.arange(24_000) / 24_000
    rng = np.random.default_rng(2)
    wave = (0.3 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    local_ref, global_ref = ref.reference_encode(parts, torch.from_numpy(wave))
    local, global_ids = codec.encode(wave)
    assert global_ids == global_ref and codec.global_tokens_from_wave(wave) == global_ref
    assert local.tolist() == local_ref and len(local_ref) > 10


def test_resblock1_is_unchanged_by_the_switch() -> None:
    """The release type stays ResBlock1 (the fixture's parity tests check its numbers)."""
    codec = TiCodec.from_checkpoint(TINY_A_CHECKPOINTS / "codec")
    assert codec.config.resblock == "1"
    assert all(isinstance(b, ResBlock1) for b in list(codec.generator.resblocks) + list(codec.encoder.resblocks))


def test_declared_type_must_match_the_weights(tmp_path) -> None:
    """A resblock-1 checkpoint declared as "2" fails on the first key of the other layout, naming file and key."""
    folder = tmp_path / "codec"
    folder.mkdir()
    raw = json.loads((TINY_A_CHECKPOINTS / "codec" / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**raw, "resblock": "2"}))
    shutil.copy(TINY_A_CHECKPOINTS / "codec" / "final.pt", folder / "final.pt")
    with pytest.raises(CheckpointError) as info:
        TiCodec.from_checkpoint(folder)
    assert info.value.key == "generator.resblocks.0.convs.0.weight_g" and "final.pt" in str(info.value)


@pytest.mark.parametrize("change, key", [({"resblock": "3"}, "resblock"),
                                         ({"resblock_dilation_sizes": [[1, 3, 5], [2]]}, "resblock_dilation_sizes")])
def test_config_refusals(change, key) -> None:
    with pytest.raises(CheckpointError) as info:
        CodecConfig.from_dict({**ref.CONFIG, **change})
    assert info.value.key == key


@requires_fixture
def test_parley_reply_speaks_through_a_resblock2_codec(built, tmp_path, monkeypatch, capsys) -> None:
    """The tiny fixture model with this codec in place of its own: ``parley reply`` answers (same LLM tokens and
    codec tokens as the fixture, since the codec does not feed back), and ``--voice`` from a reference WAV runs the
    resblock-2 encoder."""
    from core.cli import main

    monkeypatch.setenv("PARLEY_LOG_DIR", str(tmp_path / "logs"))
    root = tmp_path / "checkpoints"
    root.mkdir()
    for part in ("audiollm", "decoder"):
        os.symlink(TINY_A_CHECKPOINTS / part, root / part)
    shutil.copytree(built[1], root / "codec")
    voice = tmp_path / "voice.wav"
    t = np.arange(16_000) / 16_000
    sf.write(voice, (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 16_000)
    out, trace_path = tmp_path / "out.wav", tmp_path / "trace.json"
    rc = main(["--log-level", "ERROR", "reply", "--profile", "freeze-omni", "--checkpoint", str(root), "--llm",
               str(LLM_DIR), "--greedy", "--codec-chunk", "8", "--codec-padding", "2", "--voice", str(voice),
               "--input", str(TINY_A / "input.wav"), "--output", str(out), "--trace", str(trace_path)])
    assert rc == 0, capsys.readouterr().err
    assert "listen end: ss after 9 chunks" in capsys.readouterr().out
    trace = json.loads(trace_path.read_text())
    m = meta()["main"]
    assert trace["assistant_token_ids"] == m["past_tokens"]
    for k, seg in enumerate(trace["segments"]):
        assert seg["codec_tokens"] == np.load(TINY_A_EXPECTED / f"segment{k}.npz")["codec_tokens"].tolist()
    voice_tokens = trace["settings"]["voice_global_tokens"]
    assert len(voice_tokens) == 4 and all(0 <= v < 64 for v in voice_tokens)
    wave, rate = sf.read(out, dtype="float32")
    assert rate == 24_000 and wave.size == sum(s["samples"] for s in trace["segments"]) > 0
    assert np.isfinite(wave).all() and np.abs(wave).max() > 1e-3
