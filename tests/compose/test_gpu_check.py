"""The GPU check (scripts/gpu_check.sh -> core.compose.gpu_check), its CPU-only parts: without a GPU it
says so in one line, exits 3 and still prints its JSON report; the fixture parity runs on the CPU through the same
code path as on CUDA (and catches a wrong model); the out-of-memory scenario runs end to end with its cap as a no-op.
The GPU parts themselves need an NVIDIA GPU (docs/benchmarks.md, "GPU check")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from _shared import REPO as REPO_ROOT
from _shared import default_fixture

TINY_A = default_fixture()
requires_fixture = pytest.mark.skipif(not (TINY_A / "checkpoints" / "audiollm" / "final.pt").is_file(),
                                      reason=f"parity fixture not found at {TINY_A}")
from core.compose import gpu_check

without_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="covers a machine without a GPU")


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("PARLEY_FIXTURES", str(TINY_A.parent))


@requires_fixture
@without_gpu
def test_script_without_gpu_says_so_in_one_line_and_prints_the_json(tmp_path):
    env = {**os.environ, "PARLEY_PYTHON": sys.executable, "PARLEY_LOG_DIR": str(tmp_path / "logs")}
    proc = subprocess.run([str(REPO_ROOT / "scripts" / "gpu_check.sh"), "--out", str(tmp_path / "report.json")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == gpu_check.EXIT_NO_GPU == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no NVIDIA GPU: ") and "exit code 3" in lines[0]
    report = json.loads(proc.stdout)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["check"] == "gpu" and report["status"] == "no_gpu" and report["gpu"] is False
    assert report["no_gpu_reason"] in lines[0] and report["failed"] == []
    env_info = report["environment"]
    assert env_info["torch"] == torch.__version__ and env_info["cuda_available"] is False
    assert {"torch_cuda", "driver", "transformers", "bitsandbytes", "devices", "python"} <= set(env_info)
    parity = report["parity"]
    assert parity["status"] == "pass" and parity["cpu_float32"]["status"] == "pass"
    assert parity["cpu_float32"]["device"] == "cpu" and parity["cpu_float32"]["dtype"] == "float32"
    for name in ("cuda_float32", "cuda_bfloat16"):
        assert parity[name]["status"] == "skipped"
    for name in ("vram_fit", "oom_mid_answer", "release_bench", "quantized"):
        assert report[name]["status"] == "skipped" and "no NVIDIA GPU" in report[name]["reason"]
    assert set(gpu_check.SECTIONS) <= set(report)


@without_gpu
def test_skip_and_bad_arguments(capsys):

    assert gpu_check.main(["--skip", ",".join(gpu_check.SECTIONS)]) == gpu_check.EXIT_NO_GPU
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert all(report[name] == {"status": "skipped", "reason": "--skip"} for name in gpu_check.SECTIONS)
    assert len(err.strip().splitlines()) == 1
    result = gpu_check.run(["--skip", "everything"])
    assert result.code == gpu_check.EXIT_USAGE and result.report is None and "unknown section" in result.message
    assert gpu_check.run(["--bench-chunks", "many"]).code == gpu_check.EXIT_USAGE


@without_gpu
def test_missing_fixture_is_a_skip_not_a_failure(tmp_path):
    result = gpu_check.run(["--fixture", str(tmp_path / "none")])
    assert result.code == gpu_check.EXIT_NO_GPU
    assert result.report["parity"]["status"] == "skipped" and "not found" in result.report["parity"]["reason"]


@requires_fixture
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fixture_parity_on_the_cpu_through_the_gpu_check_path(dtype):
    result = gpu_check.fixture_parity(TINY_A, "cpu", dtype)
    assert result["status"] == "pass", result["failures"]
    assert all(d["match"] for d in result["decisions"].values())
    assert result["tokens"]["matching_prefix"] >= 4
    if dtype == "float32":  # strict: everything as the CPU tests demand
        assert result["strict"] and result["codec_tokens_match"]
        assert max(result["max_abs_diff"].values()) < result["tolerance"] == 1e-4
        assert result["wave_samples"]["got"] == result["wave_samples"]["expected"]


@requires_fixture
def test_parity_catches_a_wrong_model():
    from core.model.freeze_omni.loader import load_freeze_omni
    from core.model.freeze_omni.parity import compare_with_fixture

    pipe = load_freeze_omni(TINY_A / "checkpoints", TINY_A / "llm")
    with torch.no_grad():
        pipe.audiollm.adpter.project.bias.add_(1e-3)
    result = compare_with_fixture(pipe, TINY_A, strict=True)
    assert result["status"] == "fail"
    assert any(f.startswith("adapter_out: max abs difference") for f in result["failures"])


@requires_fixture
def test_out_of_memory_scenario_runs_end_to_end_with_a_no_op_cap():
    """The scenario's harness (engine, backend wrapper, event checks) on the CPU; on CUDA the cap is real."""
    result = gpu_check.oom_mid_answer(TINY_A, "cpu", inject=False)
    assert result["status"] == "pass", result["failures"]
    assert result["replies_capped"] == 1 and result["answered_turns"] and result["final_state"] == "idle"
    assert len(result["decided_turns"]) >= 2 and result["errors"] == []
