"""Settings dialog (validation in the dialog, persistence), model manager (checksums, fit, downloads from a local
folder, cancel, errors, never the network), setup check dialog, and `parley` without a display."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.doctor_dialog import DoctorDialog
from app.model_manager import ModelManagerDialog
from app.settings_dialog import SettingsDialog
from core import doctor
from core.settings import Settings, load_settings, save_settings
from core.settings import download as dl
from core.settings import models as models_mod

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dialog(qtbot, config_dir):
    def make(cls, *args, **kw):
        d = cls(*args, **kw)
        qtbot.addWidget(d)
        d.show()
        return d

    return make


# ------------------------------------------------------------------------------------------------ settings ----

def test_settings_dialog_refuses_invalid_values_with_a_message(qtbot, dialog, tmp_path):
    d = dialog(SettingsDialog, Settings())
    got = []
    d.applied.connect(got.append)
    d.profile.setCurrentIndex(d.profile.findData("freeze-omni"))
    d.checkpoint_dir.setText(str(tmp_path / "nowhere"))
    d.backbone_dir.setText(str(tmp_path))            # exists, but no config.json
    d.offset.setValue(0.9)                            # above the onset threshold
    d.persona_name.setText("")
    assert d.on_apply() is False
    assert got == []
    text = d.errors.text()
    assert d.errors.isVisible()
    assert "checkpoint folder" in text and "does not exist" in text
    assert "no config.json" in text
    assert "offset threshold must be lower" in text
    assert "persona needs a name" in text
    # fix everything: applied, error box gone
    d.profile.setCurrentIndex(d.profile.findData("lite"))
    d.offset.setValue(0.3)
    d.persona_name.setText("Ada")
    d.eot_silence.setValue(1100)
    assert d.on_apply() is True
    assert not d.errors.isVisible()
    assert got[-1].persona.name == "Ada" and got[-1].vad.end_of_turn_silence_ms == 1100


def test_settings_dialog_round_trip_all_fields(dialog):
    s = Settings()
    s.audio.input_device = "Some Mic"
    s.audio.aec = False
    s.audio.ready_sound = False
    s.sampling.top_k = 7
    s.recording.retention_days = 3
    s.model.voices["calm"] = [1, 2, 3, 4, 5, 6, 7, 8]
    s.model.voice = "calm"
    d = dialog(SettingsDialog, s)
    out = d.collect()
    assert out.audio.input_device == "Some Mic" and out.audio.aec is False and out.audio.ready_sound is False
    assert not d.ready_sound.isChecked()
    assert out.sampling.top_k == 7 and out.recording.retention_days == 3
    assert out.model.voice == "calm" and out.model.voices["calm"] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert out.to_dict() == s.to_dict()


def test_settings_dialog_voice_library(dialog):
    d = dialog(SettingsDialog, Settings())
    assert d.add_voice("bad", [1, 2]) == "bad"           # any length up to the codec's; range is checked
    assert d.add_voice("worse", [5000] * 8) is None and "0 to 1023" in d.voice_status.text()
    name = d.add_voice("calm", [9] * 8)
    assert d.collect().model.voice == name
    d.remove_voice()
    assert name not in d.collect().model.voices and d.collect().model.voice == "release"
    d.checkpoint_dir.setText("")
    d.derive_voice(wav_path="/tmp/x.wav")
    assert "checkpoint folder" in d.voice_status.text()


def test_derive_voice_from_a_recording_with_the_fixture_codec(qtbot, dialog, tmp_path):
    fixture = REPO / ".." / "shared" / "fixtures" / "freeze_omni_tiny_a"
    if not (fixture / "checkpoints" / "codec" / "final.pt").exists():
        pytest.skip("fixture codec missing")
    pytest.importorskip("core.model.freeze_omni.codec")
    d = dialog(SettingsDialog, Settings())
    d.checkpoint_dir.setText(str(fixture))
    before = set(d.voices)
    d.derive_voice(wav_path=str(fixture / "input.wav"))
    qtbot.waitUntil(lambda: set(d.voices) != before or "Could not" in d.voice_status.text(), timeout=60000)
    assert "input" in d.voices, d.voice_status.text()
    assert all(isinstance(t, int) for t in d.voices["input"])


def test_device_list_is_filled_in_the_background(qtbot, dialog, monkeypatch):
    import core.settings.device_test as dt

    monkeypatch.setattr(dt, "device_names", lambda kind: [f"{kind} A", f"{kind} B"])
    d = dialog(SettingsDialog, Settings())
    qtbot.waitUntil(lambda: d.in_device.count() == 3, timeout=3000)
    assert [d.in_device.itemText(i) for i in range(3)] == ["(system default)", "input A", "input B"]


def test_device_test_failure_is_shown_in_the_dialog(qtbot, dialog, monkeypatch):
    import core.settings.device_test as dt

    def broken(*a, **k):
        raise ValueError("output device 'Nope' is not present")

    monkeypatch.setattr(dt, "run_device_test", broken)
    d = dialog(SettingsDialog, Settings())
    d.test_devices()
    qtbot.waitUntil(lambda: "Device test failed" in d.test_status.text(), timeout=3000)
    assert "Nope" in d.test_status.text() and d.test_button.isEnabled()


# ------------------------------------------------------------------------------------------------ models ----

def _fake_checkpoints(root: Path, good: dict[str, bytes]) -> None:
    for rel in ("audiollm/train.yaml", "audiollm/global_cmvn", "decoder/model.json", "codec/model.json"):
        (root / "checkpoints" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "checkpoints" / rel).write_text("{}")
    for rel, data in good.items():
        (root / "checkpoints" / rel).write_bytes(data)


def test_model_manager_checksums_ok_and_mismatch(qtbot, dialog, tmp_path, monkeypatch):
    data = {"audiollm/final.pt": b"A" * 300_000, "decoder/final.pt": b"D" * 200_000, "codec/final.pt": b"C" * 1000}
    _fake_checkpoints(tmp_path, data)
    fake = {rel: (len(b), hashlib.sha256(b).hexdigest()) for rel, b in data.items()}
    fake["codec/final.pt"] = (1000, "0" * 64)        # this one will not match
    monkeypatch.setattr(models_mod, "FREEZE_OMNI_CHECKSUMS", fake)
    monkeypatch.setattr("app.model_manager.gpu_info", lambda: None)
    s = Settings()
    s.model.checkpoint_dir = str(tmp_path)
    s.model.device = "cuda"                       # chosen although the machine (as patched) has no GPU
    d = dialog(ModelManagerDialog, s)
    qtbot.waitUntil(lambda: d.gpu_known, timeout=3000)
    assert "no GPU" in d.gpu_label.text()
    assert "no GPU" in d.fo_box.fit.text()
    assert d.verify_button.isEnabled()
    d.verify_checksums()
    root = tmp_path / "checkpoints"
    qtbot.waitUntil(lambda: d.fo_box.status_of(root / "codec/final.pt") == "bad", timeout=5000)
    qtbot.waitUntil(lambda: "verify" not in d.tasks, timeout=5000)
    assert d.fo_box.status_of(root / "audiollm/final.pt") == "ok"
    assert d.fo_box.status_of(root / "decoder/final.pt") == "ok"
    assert "MISMATCH" in d.fo_box.items[str(root / "codec/final.pt")].text(2)


def test_model_manager_lists_lite_files_and_missing_fo(dialog):
    d = dialog(ModelManagerDialog, Settings())
    assert any("Freeze-Omni checkpoint folder" in p or "No Freeze-Omni" in p for p in d.fo_box.inventory.problems)
    assert not d.verify_button.isEnabled()
    if not d.lite_box.inventory.problems:
        assert d.lite_box.tree.topLevelItemCount() >= 5


def test_model_manager_download_from_a_local_folder(qtbot, dialog, tmp_path):
    src = tmp_path / "mirror"
    for rel, size in (("checkpoints/audiollm/final.pt", 2_500_000), ("checkpoints/codec/model.json", 10)):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"z" * size)
    d = dialog(ModelManagerDialog, Settings(),
               source_factories={"freeze-omni": lambda: dl.LocalFolderSource(src, patterns=("checkpoints/*",))})
    d.dest.setText(str(tmp_path / "models"))
    used = []
    d.use_folders.connect(used.append)
    d.start_download("freeze-omni")
    assert not d.dl_fo_button.isEnabled() and d.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: bool(used), timeout=10000)
    assert used[0] == {"checkpoint_dir": str(tmp_path / "models" / "Freeze-Omni")}
    assert d.dl_progress.value() == 1000 and "Done" in d.dl_status.text()
    assert (tmp_path / "models/Freeze-Omni/checkpoints/audiollm/final.pt").stat().st_size == 2_500_000
    assert d.dl_fo_button.isEnabled() and not d.cancel_button.isEnabled()


def test_model_manager_cancel_and_resume(qtbot, dialog, tmp_path):
    import threading

    src = tmp_path / "mirror"
    (src / "big.bin").parent.mkdir(parents=True, exist_ok=True)
    (src / "big.bin").write_bytes(os.urandom(6_000_000))
    gate = threading.Event()

    class SlowSource(dl.LocalFolderSource):
        def fetch(self, f, dest_root, on_bytes, cancel):
            def slow(n):
                on_bytes(n)
                gate.set()
                time.sleep(0.02)
            return super().fetch(f, dest_root, slow, cancel)

    d = dialog(ModelManagerDialog, Settings(), source_factories={"qwen2": lambda: SlowSource(src)})
    d.dest.setText(str(tmp_path / "models"))
    d.start_download("qwen2")
    assert gate.wait(5)
    d.cancel_download()
    qtbot.waitUntil(lambda: "cancelled" in d.dl_status.text(), timeout=5000)
    part = tmp_path / "models/Qwen2-7B-Instruct/big.bin.part"
    assert part.exists() and 0 < part.stat().st_size < 6_000_000
    assert d.dl_qwen_button.isEnabled()
    d.source_factories["qwen2"] = lambda: dl.LocalFolderSource(src)
    d.start_download("qwen2")
    qtbot.waitUntil(lambda: "Done" in d.dl_status.text(), timeout=10000)
    assert (tmp_path / "models/Qwen2-7B-Instruct/big.bin").read_bytes() == (src / "big.bin").read_bytes()


def test_model_manager_hub_download_fails_fast_without_network(qtbot, dialog, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()     # nothing listens: the "Hub" refuses at once, nothing leaves this machine
    d = dialog(ModelManagerDialog, Settings(),
               source_factories={"freeze-omni": lambda: dl.freeze_omni_source(endpoint=f"http://127.0.0.1:{port}")})
    d.dest.setText(str(tmp_path / "models"))
    t0 = time.monotonic()
    d.start_download("freeze-omni")
    qtbot.waitUntil(lambda: "Download failed" in d.dl_status.text(), timeout=5000)
    assert time.monotonic() - t0 < 3
    assert "cannot reach" in d.dl_status.text() and "internet connection" in d.dl_status.text()
    assert d.dl_fo_button.isEnabled()


def test_model_manager_points_at_existing_folders(dialog, tmp_path):
    d = dialog(ModelManagerDialog, Settings())
    used = []
    d.use_folders.connect(used.append)
    d.point_at("backbone_dir", str(tmp_path))
    assert used == [{"backbone_dir": str(tmp_path)}]
    assert any("no weights" in p for p in d.fo_box.inventory.problems)


def test_main_window_refuses_bad_folders_from_the_model_manager(qtbot, config_dir, tmp_path):
    from app.main_window import MainWindow

    w = MainWindow(Settings(), stack_factory=lambda s, p: (_ for _ in ()).throw(RuntimeError("unused")))
    qtbot.addWidget(w)
    w._use_model_folders({"backbone_dir": str(tmp_path / "nope")})
    assert any("Cannot use these folders" in t and "does not exist" in t for t in w.notices.texts())
    assert w.settings.model.backbone_dir == ""
    w.close()
    assert w.wait_shut_down()


# ------------------------------------------------------------------------------------------------ doctor ----

def test_doctor_dialog_lists_problems_with_fixes(qtbot, dialog, monkeypatch):
    fake = [doctor.Check("display", "ok", "X11 :87"),
            doctor.Check("input device", "fail", "no audio input device found", "connect a microphone")]
    monkeypatch.setattr(doctor, "run_checks", lambda *a, **k: fake)
    d = dialog(DoctorDialog, Settings(), first_run=True)
    qtbot.waitUntil(lambda: d.checks == fake, timeout=3000)
    html = d.view.toHtml()
    assert "connect a microphone" in html and "What to do" in html
    assert "1 problem(s)" in d.summary.text()


def test_startup_check_banners_audio_problems(qtbot, config_dir, monkeypatch):
    from app.main_window import MainWindow

    monkeypatch.setattr(doctor, "run_checks", lambda *a, **k: [
        doctor.Check("sound server", "fail", "PulseAudio/PipeWire is not reachable", "start it")])
    w = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w)
    w.run_startup_checks(first_run=False)
    qtbot.waitUntil(lambda: any("PulseAudio" in t for t in w.notices.texts()), timeout=3000)
    assert w.isVisibleTo(w) or True
    w.close()
    assert w.wait_shut_down()


# ------------------------------------------------------------------------------------------------ no display ----

def test_parley_without_a_display_prints_one_line_and_exits_2(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux-only check")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PARLEY_CONFIG_DIR"] = str(tmp_path)
    env["PARLEY_LOG_DIR"] = str(tmp_path / "log")
    out = subprocess.run([sys.executable, "-m", "core.cli"], capture_output=True, text=True, timeout=120,
                         env=env, cwd=str(REPO))
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("parley: no display") and "QT_QPA_PLATFORM=offscreen" in lines[0]
    assert "Aborted" not in out.stderr and "qt.qpa" not in out.stderr
