"""A deliberately broken environment gives a clear message naming what is missing, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PARLEY = Path(sys.executable).with_name("parley")


def _env_without(*names: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


@pytest.fixture
def no_pulseaudio(tmp_path) -> dict[str, str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    return _env_without("PULSE_RUNTIME_PATH", "PULSE_SERVER", XDG_RUNTIME_DIR=str(runtime),
                        PULSE_SERVER=f"unix:{runtime}/no-such-socket")


def test_app_without_display_names_the_missing_display():
    proc = subprocess.run([str(PARLEY)], capture_output=True, text=True, timeout=120,
                          env=_env_without("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "display" in proc.stderr.lower()
    assert "DISPLAY" in proc.stderr and "QT_QPA_PLATFORM=offscreen" in proc.stderr


def test_doctor_without_pulseaudio_names_the_sound_server(no_pulseaudio):
    proc = subprocess.run([str(PARLEY), "doctor"], capture_output=True, text=True, timeout=180, env=no_pulseaudio)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert "PulseAudio" in out
    assert "no audio input device" in out


def test_bench_audio_without_the_loop_says_how_to_start_it(no_pulseaudio):
    proc = subprocess.run([str(PARLEY), "bench", "audio", "--seconds", "2"], capture_output=True, text=True,
                          timeout=180, env=no_pulseaudio)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert "PulseAudio" in out or "pulse" in out.lower()
