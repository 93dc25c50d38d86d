"""TiCodec: decode parity with the tiny fixture, weight-norm folding, global-token encoder, loader errors."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from _paths import TINY_A_CHECKPOINTS, TINY_A_EXPECTED
from core.model.freeze_omni.codec import CodecConfig, TiCodec, fold_weight_norm
from core.model.freeze_omni.errors import CheckpointError
from core.runtime import configure_torch_threads

CODEC_DIR = TINY_A_CHECKPOINTS / "codec"


@pytest.fixture(scope="module")
def codec() -> TiCodec:
    configure_torch_threads(1)
    return TiCodec.from_checkpoint(CODEC_DIR, device="cpu", dtype=torch.float32)


def test_config(codec: TiCodec) -> None:
    c = codec.config
    assert c.upsample_rates == (3, 10, 20) and c.hop == 600 and c.n_codes == 64 and c.global_code_num == 2
    assert codec.default_global_tokens == [47, 32] and codec.sample_rate == 24000
    assert c.generator_channels(0) == 128  # the global feature is added after stage 0 in this config
    assert c.global_stage == 0 and c.global_feature_conv[0] == c.encoder_channels(0) == 64


RELEASE_CODEC_JSON = {
    "resblock": "1", "upsample_rates": [8, 5, 5, 3], "upsample_kernel_sizes": [16, 11, 11, 5],
    "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "sampling_rate": 24000, "n_code_groups": 1,
    "residul_layer": 1, "n_codes": 1024, "global_code_num": 8, "global_feature_conv": [128, 64, 128, 3, 1],
    "global_tokens": [473, 975, 419, 219, 565, 121, 550, 616],
}


def test_release_config_shapes() -> None:
    """The released codec/model.json: 600 samples per token exactly, global feature after stage 1 (128 ch),
    GlobalTokenEncoder on encoder stage 1, parameter counts of docs/freeze-omni.md "Codec keys" (weight norm folded)."""
    config = CodecConfig.from_dict(RELEASE_CODEC_JSON)
    assert config.output_length(40) == 24_000 and config.hop == 600
    assert [config.generator_channels(i) for i in range(4)] == [256, 128, 64, 32]
    assert config.global_stage == 1 and config.encoder_channels(1) == 128
    with torch.device("meta"):
        model = TiCodec(config)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(model.generator), count(model.encoder), count(model.quantizer)) == (15_369_857, 47_332_032,
                                                                                      655_360)


def test_config_rejects_mismatched_global_encoder() -> None:
    with pytest.raises(CheckpointError) as info:
        CodecConfig.from_dict({**RELEASE_CODEC_JSON, "global_feature_conv": [64, 64, 128, 3, 1]})
    assert info.value.key == "global_feature_conv"


def test_unit_codec_parity(codec: TiCodec) -> None:
    u = np.load(TINY_A_EXPECTED / "unit_codec.npz")
    wave = codec.decode(torch.from_numpy(u["tokens"]), u["global_tokens"].tolist())
    assert wave.dtype == torch.float32 and wave.shape == u["wave"].shape
    np.testing.assert_allclose(wave.numpy(), u["wave"], rtol=0, atol=1e-4)
    # (1, T) input and default (release) global tokens give the same result here (the fixture uses them).
    again = codec.decode(torch.from_numpy(u["tokens"]).unsqueeze(0))
    np.testing.assert_array_equal(again.numpy(), wave.numpy())


@pytest.mark.parametrize("segment", [0, 1])
def test_every_codec_call_of_the_fixture(codec: TiCodec, segment: int) -> None:
    d = np.load(TINY_A_EXPECTED / f"segment{segment}.npz")
    calls = sorted(int(k[len("codec_call"):].split("_")[0]) for k in d.files if k.endswith("_wave"))
    assert calls
    for j in calls:
        wave = codec.decode(d[f"codec_call{j}_tokens"].tolist(), d[f"codec_call{j}_global_tokens"])
        assert wave.shape == d[f"codec_call{j}_wave"].shape
        np.testing.assert_allclose(wave.numpy(), d[f"codec_call{j}_wave"], rtol=0, atol=1e-4)


def test_output_length_is_not_always_600_per_token(codec: TiCodec) -> None:
    for tokens in (1, 4, 10, 30):
        assert codec.config.output_length(tokens) == 600 * tokens + 200
        assert codec.decode([0] * tokens).shape[0] == codec.config.output_length(tokens)


def test_decode_rejects_bad_ids(codec: TiCodec) -> None:
    with pytest.raises(ValueError, match="codec tokens"):
        codec.decode([1, 64])
    with pytest.raises(ValueError, match="global tokens"):
        codec.decode([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="non-empty"):
        codec.decode([])


def test_fold_weight_norm_matches_torch_per_input_channel_for_conv_transpose() -> None:
    """torch's own weight_norm(dim=0) on a ConvTranspose1d (weight (in, out, k)) normalises per INPUT channel."""
    torch.manual_seed(0)
    layer = nn.utils.parametrizations.weight_norm(nn.ConvTranspose1d(6, 3, 5, stride=2), dim=0)
    g = layer.parametrizations.weight.original0.detach()
    v = layer.parametrizations.weight.original1.detach()
    with torch.no_grad():
        g.mul_(torch.linspace(0.5, 2.0, 6).reshape(6, 1, 1))
    assert g.shape == (6, 1, 1)
    np.testing.assert_allclose(fold_weight_norm(g, v).numpy(), layer.weight.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_global_tokens_from_short_wave(codec: TiCodec) -> None:
    """The fixture has no expected array for the encoder path: check shape, range and determinism."""
    t = np.arange(12_000) / 24_000  # 0.5 s at 24 kHz
    rng = np.random.default_rng(0)
    wave = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    tokens = codec.global_tokens_from_wave(wave)
    assert len(tokens) == codec.config.global_code_num
    assert all(isinstance(i, int) and 0 <= i < codec.config.n_codes for i in tokens)
    assert codec.global_tokens_from_wave(torch.from_numpy(wave)) == tokens
    assert codec.decode([1, 2, 3], tokens).shape[0] == codec.config.output_length(3)  # usable as a voice
    with pytest.raises(ValueError, match="too short"):
        codec.global_tokens_from_wave(wave[:100])


def test_tiny_encoder_cannot_make_local_tokens(codec: TiCodec) -> None:
    """The tiny config's encoder ends at 256 channels while conv_post wants 512: a clear error, not a crash."""
    with pytest.raises(ValueError, match="conv_post"):
        codec.encode(np.zeros(6000, dtype=np.float32))


def test_without_encoder() -> None:
    model = TiCodec.from_checkpoint(TINY_A_CHECKPOINTS, with_encoder=False)  # checkpoints root accepted
    assert model.encoder is None
    with pytest.raises(RuntimeError, match="with_encoder=False"):
        model.global_tokens_from_wave(np.zeros(6000, dtype=np.float32))


# ------------------------------------------------------------------------------------------------ loader errors
@pytest.fixture()
def codec_copy(tmp_path):
    folder = tmp_path / "codec"
    folder.mkdir()
    shutil.copy(CODEC_DIR / "model.json", folder / "model.json")
    return folder, torch.load(CODEC_DIR / "final.pt", weights_only=True)


def _expect_error(folder, key, words) -> None:
    with pytest.raises(CheckpointError) as info:
        TiCodec.from_checkpoint(folder)
    err = info.value
    assert err.file is not None and str(folder) in err.file and err.key == key
    assert words in str(err) and (key is None or key in str(err))


def test_error_truncated(codec_copy) -> None:
    folder, _ = codec_copy
    data = (CODEC_DIR / "final.pt").read_bytes()
    (folder / "final.pt").write_bytes(data[:4096])
    _expect_error(folder, None, "cannot read the checkpoint")


def test_error_missing_subdict(codec_copy) -> None:
    folder, state = codec_copy
    del state["encoder"]
    torch.save(state, folder / "final.pt")
    _expect_error(folder, "encoder", "missing")


def test_error_missing_key(codec_copy) -> None:
    folder, state = codec_copy
    del state["generator"]["ups.1.weight_g"]
    torch.save(state, folder / "final.pt")
    _expect_error(folder, "generator.ups.1.weight_g", "missing")


def test_error_already_folded_weight_is_unexpected(codec_copy) -> None:
    folder, state = codec_copy
    state["generator"]["conv_pre.weight"] = torch.zeros(256, 512, 7)
    torch.save(state, folder / "final.pt")
    _expect_error(folder, "generator.conv_pre.weight", "unexpected")


def test_error_wrong_shape(codec_copy) -> None:
    folder, state = codec_copy
    state["quantizer"]["quantizer_modules.0.embedding.weight"] = torch.zeros(65, 512)
    torch.save(state, folder / "final.pt")
    _expect_error(folder, "quantizer.quantizer_modules.0.embedding.weight", "shape (65, 512)")


def test_error_pickled_object(codec_copy) -> None:
    folder, state = codec_copy
    state["h"] = argparse.Namespace(n_codes=64)  # any non-allow-listed object
    torch.save(state, folder / "final.pt")
    _expect_error(folder, None, "weights_only=True")


def test_error_bad_config(codec_copy) -> None:
    folder, _ = codec_copy
    raw = json.loads((folder / "model.json").read_text())
    raw["global_tokens"] = [47, 99]
    (folder / "model.json").write_text(json.dumps(raw))
    shutil.copy(CODEC_DIR / "final.pt", folder / "final.pt")
    with pytest.raises(CheckpointError) as info:
        TiCodec.from_checkpoint(folder)
    assert info.value.key == "global_tokens" and "model.json" in str(info.value)
