"""``parley reply --profile freeze-omni`` end to end on the fixture inputs (FORMAT.md's outcomes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _fo_pipeline import LLM_DIR, max_abs, meta, requires_fixture
from _paths import REPO_ROOT, TINY_A, TINY_A_CHECKPOINTS, TINY_A_EXPECTED
from core.cli import main

pytestmark = requires_fixture

FIXTURE_ARGS = ["--profile", "freeze-omni", "--checkpoint", str(TINY_A_CHECKPOINTS), "--llm", str(LLM_DIR),
                "--greedy", "--codec-chunk", "8", "--codec-padding", "2"]
INT16_STEP = 1.0 / 32768


def _parley() -> list[str]:
    exe = Path(sys.executable).parent / "parley"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "core.cli"]


@pytest.fixture(autouse=True)
def _log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_LOG_DIR", str(tmp_path / "logs"))


@pytest.mark.slow
def test_reply_subprocess_reproduces_the_fixture(tmp_path):
    out, trace_path = tmp_path / "out.wav", tmp_path / "trace.json"
    env = {**os.environ, "PARLEY_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run(_parley() + ["reply", *FIXTURE_ARGS, "--input", str(TINY_A / "input.wav"),
                                       "--output", str(out), "--trace", str(trace_path)],
                          capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "listen end: ss after 9 chunks" in proc.stdout
    trace = json.loads(trace_path.read_text())
    m = meta()["main"]
    assert trace["profile"] == "freeze-omni" and trace["sample_rate"] == 24000
    assert [c["state"] for c in trace["chunks"]] == m["stat_sequence"]
    assert [c["index"] for c in trace["chunks"]] == list(range(9))
    probs = np.load(TINY_A_EXPECTED / "listen.npz")["state_probs"]
    np.testing.assert_allclose([c["probs"] for c in trace["chunks"]], probs, atol=1e-4)
    assert trace["listen_end"] == "ss"
    assert trace["assistant_token_ids"] == m["past_tokens"]
    assert trace["assistant_text"] == m["whole_text"]
    assert [s["raw_text"] for s in trace["segments"]] == [s["text_raw"] for s in m["segments"]]
    assert [s["text"] for s in trace["segments"]] == [s["text"] for s in m["segments"]]
    for k, seg in enumerate(trace["segments"]):
        ref = np.load(TINY_A_EXPECTED / f"segment{k}.npz")
        assert seg["codec_tokens"] == ref["codec_tokens"].tolist()
        assert seg["samples"] == sum(m["segments"][k]["yield_lengths"])
    assert set(trace["timings"]) >= {"load_s", "listen_s", "turn_end_to_first_audio_ms", "reply_s"}
    wave, rate = sf.read(out, dtype="float32")
    assert rate == 24000 and wave.shape == (m["final_wave_samples"],)
    assert max_abs(wave, np.load(TINY_A_EXPECTED / "final_wave.npy")) <= INT16_STEP + 1e-4


def test_reply_rejected_turn(tmp_path, capsys):
    out, trace_path = tmp_path / "out.wav", tmp_path / "trace.json"
    rc = main(["--log-level", "ERROR", "reply", *FIXTURE_ARGS, "--input", str(TINY_A / "input_el.wav"), "--output", str(out),
               "--trace", str(trace_path)])
    assert rc == 0
    assert "turn rejected" in capsys.readouterr().out
    trace = json.loads(trace_path.read_text())
    assert [c["state"] for c in trace["chunks"]] == meta()["el_variant"]["stat_sequence"]
    assert trace["listen_end"] == "el" and trace["assistant_token_ids"] == [] and trace["segments"] == []
    wave, rate = sf.read(out)
    assert rate == 24000 and wave.size == 0


@pytest.mark.slow
def test_reply_stereo_44k_input_and_turn_end_input(tmp_path):
    """Any rate / channel count is accepted (soxr to 16 kHz, channels averaged); --turn-end input listens to the
    whole file and ignores the state head."""
    mono, rate = sf.read(TINY_A / "input.wav", dtype="float32")
    stereo = np.stack([mono, mono], axis=1)
    import soxr

    src = tmp_path / "stereo44.wav"
    sf.write(src, soxr.resample(stereo, rate, 44100), 44100, subtype="FLOAT")
    trace_path = tmp_path / "trace.json"
    rc = main(["--log-level", "ERROR", "reply", *FIXTURE_ARGS, "--turn-end", "input", "--input", str(src), "--output",
               str(tmp_path / "o.wav"), "--trace", str(trace_path)])
    assert rc == 0
    trace = json.loads(trace_path.read_text())
    assert trace["listen_end"] == "input"
    assert len(trace["chunks"]) == 24  # 60938 samples -> 24 chunks of 2560
    assert trace["settings"]["turn_end"] == "input"


def test_reply_needs_checkpoint_and_llm(tmp_path, capsys):
    rc = main(["--log-level", "ERROR", "reply", "--profile", "freeze-omni", "--input", str(TINY_A / "input.wav"),
               "--output", str(tmp_path / "o.wav")])
    assert rc == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_reply_bad_checkpoint_is_one_clear_line(tmp_path, capsys):
    root = tmp_path / "ckpt"
    (root / "audiollm").mkdir(parents=True)
    for name in ("train.yaml", "global_cmvn"):
        (root / "audiollm" / name).write_bytes((TINY_A_CHECKPOINTS / "audiollm" / name).read_bytes())
    data = (TINY_A_CHECKPOINTS / "audiollm" / "final.pt").read_bytes()
    (root / "audiollm" / "final.pt").write_bytes(data[:1000])
    for part in ("decoder", "codec"):
        os.symlink(TINY_A_CHECKPOINTS / part, root / part)
    rc = main(["--log-level", "ERROR", "reply", "--profile", "freeze-omni", "--checkpoint", str(root), "--llm", str(LLM_DIR),
               "--input", str(TINY_A / "input.wav"), "--output", str(tmp_path / "o.wav")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("parley: ") and len(err.strip().splitlines()) == 1
    assert str(root / "audiollm" / "final.pt") in err and "Traceback" not in err


def test_reply_missing_input(tmp_path, capsys):
    rc = main(["--log-level", "ERROR", "reply", *FIXTURE_ARGS, "--input", str(tmp_path / "none.wav"), "--output", str(tmp_path / "o.wav")])
    assert rc == 2 and "input file not found" in capsys.readouterr().err


def test_reply_voice_tokens_are_checked(tmp_path, capsys):
    rc = main(["--log-level", "ERROR", "reply", *FIXTURE_ARGS, "--voice", "1,2,3", "--input", str(TINY_A / "input_el.wav"),
               "--output", str(tmp_path / "o.wav")])
    assert rc == 2 and "global token ids" in capsys.readouterr().err


def _args(**overrides):
    import argparse

    base = dict(codec_chunk=None, codec_padding=None, greedy=False, voice=None)
    base.update(overrides)
    return argparse.Namespace(**base)


def test_reply_settings_without_server_json_are_bin_inference_py():
    from core.model.freeze_omni.cli import reply_settings

    s = reply_settings(_args(), TINY_A_CHECKPOINTS, codec=None)
    assert (s.stream.chunk_size, s.stream.padding, s.stream.threshold, s.stream.first_chunk_size) == (40, 10, 0.01,
                                                                                                       None)
    assert s.segmentation == "offline" and s.decoder_top_k == 2 and not s.stream.trim_leading_silence
    assert (s.sampling.top_k, s.sampling.top_p, s.sampling.temperature) == (5, 0.8, 0.7)
    g = reply_settings(_args(greedy=True, codec_chunk=8, codec_padding=2), TINY_A_CHECKPOINTS, codec=None)
    assert g.sampling.top_k == 1 and g.decoder_top_k == 1 and (g.stream.chunk_size, g.stream.padding) == (8, 2)


def test_reply_settings_from_server_json(tmp_path):
    from core.model.freeze_omni.cli import reply_settings

    (tmp_path / "server.json").write_text(json.dumps({
        "decoder_top_k": 3, "decoder_first_chunk_size": 20, "decoder_chunk_size": 40,
        "decoder_chunk_overlap_size": 10, "decoder_penalty_window_size": -1, "decoder_penalty": 1.1,
        "decoder_N": 2401, "decoder_seg_threshold_first_pack": 0.1, "decoder_seg_threshold": 0.015}))
    s = reply_settings(_args(), tmp_path, codec=None)
    assert (s.stream.first_chunk_size, s.stream.chunk_size, s.stream.padding) == (20, 40, 10)
    assert (s.stream.first_threshold, s.stream.threshold) == (0.1, 0.015)
    assert s.stream.trim_leading_silence and s.segmentation == "server" and s.decoder_top_k == 3
    o = reply_settings(_args(codec_chunk=16, codec_padding=4), tmp_path, codec=None)
    assert (o.stream.first_chunk_size, o.stream.chunk_size, o.stream.padding) == (16, 16, 4)
    (tmp_path / "server.json").write_text('{"decoder_chunk_size": "big"}')
    from core.errors import UserError

    with pytest.raises(UserError, match="decoder_chunk_size"):
        reply_settings(_args(), tmp_path, codec=None)


@pytest.mark.slow
def test_reply_voice_from_reference_wav_and_system_prompt(tmp_path):
    """--voice REF.wav derives the global (voice) tokens with the codec encoder; an answer that starts with
    <|im_end|> (here after a different persona) is an empty reply, not a crash (docs/freeze-omni.md, D11)."""
    trace_path = tmp_path / "trace.json"
    rc = main(["--log-level", "ERROR", "reply", *FIXTURE_ARGS, "--voice", str(TINY_A_EXPECTED / "output.wav"),
               "--system-prompt", "Be brief.", "--input", str(TINY_A / "input.wav"), "--output",
               str(tmp_path / "o.wav"), "--trace", str(trace_path)])
    assert rc == 0
    trace = json.loads(trace_path.read_text())
    tokens = trace["settings"]["voice_global_tokens"]
    assert len(tokens) == 2 and all(0 <= t < 64 for t in tokens)
    assert trace["listen_end"] in ("ss", "el", "input")
