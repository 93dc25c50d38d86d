"""core.doctor: every check reports what to do, never raises, and core.doctor does not import Qt."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace

import pytest

from core import doctor
from core.settings import Settings


def test_display_problem_names_what_is_missing(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("display check is Linux-only")
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    msg = doctor.display_problem()
    assert msg and "DISPLAY" in msg and "QT_QPA_PLATFORM=offscreen" in msg
    monkeypatch.setenv("DISPLAY", ":12345")
    msg = doctor.display_problem()
    assert msg and "no X server" in msg
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert doctor.display_problem() is None


def test_audio_failure_is_a_check_with_a_fix(monkeypatch):
    def broken():
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(doctor, "_query_audio", broken)
    monkeypatch.setattr(doctor, "_pulse_status", lambda: (False, "Connection refused"))
    checks = doctor.check_audio()
    by = {c.name: c for c in checks}
    if sys.platform.startswith("linux"):
        assert by["sound server"].status == doctor.FAIL and "pulseaudio" in by["sound server"].fix
    assert by["audio library"].status == doctor.FAIL and "libportaudio2" in by["audio library"].fix


def test_missing_devices_and_configured_device_absent(monkeypatch):
    monkeypatch.setattr(doctor, "_pulse_status", lambda: (True, "PulseAudio"))
    monkeypatch.setattr(doctor, "_query_audio", lambda: {
        "devices": [{"name": "Speakers", "max_input_channels": 0, "max_output_channels": 2}],
        "apis": ["ALSA"], "default_in": -1, "default_out": 0})
    by = {c.name: c for c in doctor.check_audio(output_name="USB Headset")}
    assert by["input device"].status == doctor.FAIL and "microphone" in by["input device"].fix
    assert by["output device"].status == doctor.WARN and "Speakers" in by["output device"].fix


def test_crashing_check_becomes_a_failed_check(monkeypatch):
    def boom():
        raise RuntimeError("kaboom")

    monkeypatch.setattr(doctor, "check_espeak", boom)
    checks = doctor.run_checks(Settings(), [], include=("espeak",))
    assert checks[-1].status == doctor.FAIL and "kaboom" in checks[-1].detail


def test_freeze_omni_configured_but_missing(tmp_path):
    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir = str(tmp_path)
    checks = {c.name: c for c in doctor.check_weights(s)}
    assert checks["Freeze-Omni weights"].status == doctor.FAIL
    assert "Model manager" in checks["Freeze-Omni weights"].fix


def test_gpu_check_for_freeze_omni_without_gpu(monkeypatch):
    import core.settings.models as models

    monkeypatch.setattr(models, "gpu_info", lambda *a, **k: None)
    c = doctor.check_gpu("freeze-omni", "bf16", "cuda")
    assert c.status == doctor.FAIL and "no GPU" in c.detail and c.fix
    assert doctor.check_gpu("lite").status == doctor.OK


def test_run_doctor_json(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PARLEY_CONFIG_DIR", str(tmp_path))
    monkeypatch.setattr(doctor, "check_audio", lambda *a: [doctor.Check("input device", doctor.FAIL, "none", "plug")])
    monkeypatch.setattr(doctor, "check_gpu", lambda *a: doctor.Check("GPU", doctor.OK, "none needed"))
    rc = doctor.run_doctor(Namespace(json=True))
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["ok"] is False
    assert {"name", "status", "detail", "fix"} <= set(out["checks"][0])
    assert any(c["name"] == "input device" and c["fix"] == "plug" for c in out["checks"])


def test_doctor_never_imports_qt(tmp_path):
    code = ("import os, sys; os.environ['PARLEY_CONFIG_DIR']=sys.argv[1]; import core.doctor as d; "
            "d.run_checks(include=('display','weights','espeak')); "
            "print(any(m.startswith('PySide6') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
