"""``parley bench model``: one JSON object with the documented keys; the release-size synthetic run is refused on a
CPU before anything big is allocated."""

from __future__ import annotations

import json

import pytest

from _fo_pipeline import requires_fixture
from _paths import FIXTURES
from core.cli import main


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("PARLEY_FIXTURES", str(FIXTURES))


@requires_fixture
@pytest.mark.slow
def test_bench_fixture_prints_one_json_object(capsys):
    rc = main(["--log-level", "ERROR", "bench", "model", "--chunks", "3", "--tokens", "4"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source"] == "fixture" and result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["torch_threads"] == 1
    assert result["dims"]["encoder_layers"] == 2 and result["dims"]["llm_hidden"] == 128
    assert result["listen"]["chunks"] == 3
    for key in ("p50", "p95", "mean"):
        assert result["listen"]["step_ms"][key] > 0
    assert result["llm"]["tokens"] == 4 and result["llm"]["tokens_per_s"] > 0
    assert result["decoder"]["tokens_per_s"] > 0 and result["decoder"]["prefill_ms"] > 0
    assert result["codec"]["rtf"] > 0 and result["codec"]["window_tokens"] == 60
    assert result["first_audio"]["method"] == "measured"
    assert result["first_audio"]["turn_end_to_first_audio_ms"] > 0
    assert result["memory"]["peak_rss_mb"] > 0 and result["memory"]["cuda_max_allocated_mb"] is None


def test_bench_synthetic_release_is_refused_on_cpu(capsys):
    rc = main(["--log-level", "ERROR", "bench", "model", "--synthetic", "release"])  # default 20 chunks/32 tokens
    assert rc == 2
    err = capsys.readouterr().err
    assert "GB" in err and "--device cuda" in err


def test_bench_rejects_half_a_checkpoint(capsys):
    rc = main(["--log-level", "ERROR", "bench", "model", "--checkpoint", "/nonexistent"])
    assert rc == 2 and "--llm" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_synthetic_path_with_shrunk_release_dims(capsys, monkeypatch):
    """The --synthetic code path end to end, with the release config dicts shrunk so that it fits a test: the
    real run differs only in the numbers (checked on a CPU it is refused, see above)."""
    from core.model.freeze_omni import bench

    train = json.loads(json.dumps(bench.RELEASE_TRAIN_CONFIG))
    train["encoder_conf"]["overview_conf"]["encoder-output-dim"] = 32
    train["encoder_conf"]["para_conf"]["subsampling"]["subsampling-output-dim"] = 32
    train["encoder_conf"]["para_conf"]["transformer"].update({
        "transformer-attention-dim": 32, "transformer-attention-heads": 4, "transformer-input-dim": 32,
        "transformer-linear-units": 64, "transformer-num-blocks": 2, "transformer-output-dim": 32})
    train["model_conf"].update(enc_out_dim=32, llm_embed_dim=64, llm_head_num=4, num_key_value_heads=2)
    qwen = dict(bench.RELEASE_QWEN2_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2)
    decoder = [16, 1024, dict(bench.RELEASE_DECODER[2], idim=16, transformer_attention_dim=16,
                              transformer_linear_units=32, transformer_num_blocks=2, transformer_attention_heads=2,
                              encoder_output_dim=16)]
    codec = dict(bench.RELEASE_CODEC, upsample_initial_channel=256, resblock_kernel_sizes=[3],
                 resblock_dilation_sizes=[[1, 3, 5]])
    monkeypatch.setattr(bench, "RELEASE_TRAIN_CONFIG", train)
    monkeypatch.setattr(bench, "RELEASE_QWEN2_7B", qwen)
    monkeypatch.setattr(bench, "RELEASE_DECODER", decoder)
    monkeypatch.setattr(bench, "RELEASE_CODEC", codec)
    rc = main(["--log-level", "ERROR", "bench", "model", "--synthetic", "release", "--chunks", "2", "--tokens", "3"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source"] == "synthetic-release" and result["checkpoint"] is None
    assert result["dims"]["llm_hidden"] == 64 and result["dims"]["llm_vocab"] == 152064
    assert result["dims"]["decoder_codes"] == 1024 and result["dims"]["codec_upsample_rates"] == [8, 5, 5, 3]
    assert result["settings"]["codec_first_chunk"] == 20  # the release server.json streaming values
    assert result["first_audio"]["method"] == "composed" and result["first_audio"]["first_window_tokens"] == 30
    assert result["llm"]["tokens"] == 3 and result["decoder"]["tokens_per_s"] > 0 and result["codec"]["rtf"] > 0


def test_synthetic_parameter_estimate_is_the_release_size():
    from core.model.freeze_omni.bench import synthetic_params

    assert 8.1e9 < synthetic_params() < 8.25e9  # Qwen2-7B 7.62 B + encoder/adapter 0.38 B + decoder 0.16 B + codec
