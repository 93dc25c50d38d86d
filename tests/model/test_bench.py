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
