"""``parley bench audio``: a clear one-line refusal without the loop, one JSON object with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", "--log-level", "WARNING", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_without_the_loop_it_says_how_to_start_it(tmp_path):
    env = dict(os.environ)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env.update(XDG_RUNTIME_DIR=str(runtime), PULSE_SERVER=f"unix:{tmp_path}/no-such-server",
               PULSE_RUNTIME_PATH=str(runtime / "pulse"), HOME=str(tmp_path))
    r = run_cli("bench", "audio", "--seconds", "2", env=env, timeout=120)
    assert r.returncode != 0
    assert r.stdout.strip() == ""
    assert "Traceback" not in r.stderr
    ours = [line for line in r.stderr.splitlines() if line.startswith("parley bench audio:")]
    assert len(ours) == 1, r.stderr
    assert "scripts/testenv.sh start" in ours[0]


@pytest.mark.audio
@pytest.mark.slow
def test_bench_prints_one_json_object(pulse_loop, figures):
    r = run_cli("bench", "audio", "--seconds", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    result = json.loads(lines[0])
    for key in ("erle_db", "false_onsets", "double_talk_detect_ms", "flush_ms", "output_latency_ms",
                "cpu_fraction", "cpu_fraction_by_thread", "threads", "device", "loop_ms"):
        assert key in result, key
    assert result["false_onsets"] == 0
    assert result["flush_ms"] is not None and result["flush_ms"] < result["flush_bound_ms"]
    assert 0 < result["cpu_fraction"] < 1
    figures("bench_audio", {k: result[k] for k in ("erle_db", "false_onsets", "double_talk_detect_ms",
                                                   "flush_ms", "output_latency_ms", "loop_ms", "cpu_fraction")})
