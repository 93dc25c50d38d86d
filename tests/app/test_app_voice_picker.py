"""The Lite voice picker in Settings: the installed Piper voices in a list (the bundled one, the user's voices
folder, a chosen file; broken ones named with the reason), a speed control that reaches the voice (Piper's
length_scale), and "Play sample": the real Piper voice synthesises a sentence that really plays on the PulseAudio
null sink (a private one; its monitor recorded with parec). Compute devices this machine cannot run are listed
disabled with the reason, and refused on Apply."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from _loop import private_loop
from _monitor import Monitor, sound
from app.settings_dialog import NO_GPU_REASON, SettingsDialog
from core.settings import Settings
from core.settings.schema import default_device, machine_has_cuda
from core.settings.voices import bundled_voice_path, lite_voices, synthesize_sample

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("PARLEY_SCREENSHOT_DIR") or REPO / "docs" / "screenshots")

needs_voice = pytest.mark.skipif(bundled_voice_path() is None or not shutil.which("espeak-ng"),
                                 reason="the Lite voice package or espeak-ng is not installed")


def _second_voice(folder: Path, name: str = "en_GB-amy-low", dataset: str = "amy") -> Path:
    """Another Piper voice in the voices folder: the bundled network (linked, not copied) with its own config."""
    folder.mkdir(parents=True, exist_ok=True)
    bundled = bundled_voice_path()
    onnx = folder / f"{name}.onnx"
    onnx.symlink_to(bundled)
    config = json.loads(Path(str(bundled) + ".json").read_text())
    config["dataset"] = dataset
    config["language"].update({"code": "en_GB", "region": "GB", "country_english": "Great Britain"})
    config["audio"]["quality"] = "low"
    Path(str(onnx) + ".json").write_text(json.dumps(config))
    return onnx


@pytest.fixture
def voices(config_dir, tmp_path, monkeypatch):
    """The voices folder (in a temporary home) with a second voice and a broken one (no .onnx.json); a chosen file
    elsewhere."""
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PARLEY_DATA_DIR", str(home / ".local" / "share" / "parley"))
    folder = home / ".local" / "share" / "parley" / "voices"
    amy = _second_voice(folder)
    (folder / "broken.onnx").write_bytes(b"not a voice")
    chosen = _second_voice(tmp_path / "elsewhere", "en_US-kim-medium", "kim")
    return {"amy": amy, "broken": folder / "broken.onnx", "chosen": chosen}


@pytest.fixture
def dialog(qtbot):
    def make(settings: Settings) -> SettingsDialog:
        d = SettingsDialog(settings)
        qtbot.addWidget(d)
        d.resize(760, 560)
        d.show()
        d.tabs.setCurrentIndex(2)
        return d

    return make


@needs_voice
def test_installed_voices_are_listed_with_their_problems(voices, dialog):
    listed = lite_voices(str(voices["chosen"]))
    by_name = {v.name: v for v in listed}
    assert listed[0].path == "" and listed[0].source == "comes with Parley" and not listed[0].problem
    assert by_name["en_GB-amy-low"].label == "Amy · English (Great Britain) · low quality"
    assert by_name["en_GB-amy-low"].source == "voices folder"
    assert "broken.onnx.json is missing" in by_name["broken"].problem
    assert by_name["en_US-kim-medium"].source == "chosen file"

    s = Settings()
    s.model.lite_voice = str(voices["chosen"])
    d = dialog(s)
    texts = [d.lite_voice.itemText(i) for i in range(d.lite_voice.count())]
    assert len(texts) == 4 and texts[0].startswith("Joe · English (United States)")
    assert d.lite_voice.currentData() == str(voices["chosen"])          # the saved choice is selected
    d.lite_voice.setCurrentIndex(d.lite_voice.findData(str(voices["broken"])))
    assert not d.play_sample_button.isEnabled() and "cannot be used" in d.lite_voice_note.text()
    assert "~/.local/share/parley/voices" in d.lite_voice_note.text()
    d.lite_voice.setCurrentIndex(d.lite_voice.findData(str(voices["amy"])))
    assert d.play_sample_button.isEnabled()
    d.voice_speed.setValue(150)
    assert "1.50× (faster)" == d.voice_speed_label.text()
    new = d.collect()
    assert new.model.lite_voice == str(voices["amy"]) and new.model.voice_speed == 1.5
    assert d.problems() == []


def test_voice_speed_is_validated():
    s, warnings = Settings.from_dict({"version": 1, "model": {"voice_speed": 3.0}})
    assert s.model.voice_speed == 1.0 and any("voice_speed" in w for w in warnings)
    s.model.voice_speed = 0.2
    assert any("Voice speed must be between 0.5 and 2" in p for p in s.validate(check_paths=False))
    with pytest.raises(ValueError, match="between 0.5 and 2"):
        synthesize_sample("", speed=2.5)


@needs_voice
def test_speed_reaches_the_voice():
    slow, rate = synthesize_sample("", speed=0.75, text="One two three four five six.")
    fast, _ = synthesize_sample("", speed=1.5, text="One two three four five six.")
    assert rate == 22050 and len(fast) < 0.8 * len(slow)


@pytest.fixture(scope="module")
def private_sink():
    yield from private_loop("voice", "parec")


@needs_voice
@pytest.mark.audio
def test_play_sample_plays_the_chosen_voice_on_the_sink(voices, dialog, qtbot, private_sink, tmp_path):
    monitor = Monitor(private_sink.monitor, tmp_path / "monitor.raw")
    try:
        d = dialog(Settings())                     # output device: the default one, i.e. the private sink
        d.lite_voice.setCurrentIndex(d.lite_voice.findData(str(voices["amy"])))
        heard = {}
        for speed in (100, 150):
            d.voice_speed.setValue(speed)
            mark = monitor.mark()
            with qtbot.waitSignal(d.sample_played, timeout=60_000) as sig:
                d.play_sample_button.click()
            assert not d.play_sample_button.isEnabled() or sig.args
            name, played_speed, samples = sig.args
            assert name == "Amy" and played_speed == speed / 100
            seconds = samples / 22050
            assert f"Playing Amy at {speed / 100:.2f}×" in d.sample_status.text()
            qtbot.wait(int(seconds * 1000) + 800)
            got = sound(monitor.audio(mark))
            assert got is not None, "nothing reached the sink"
            onset, duration, _, _, peak = got
            assert peak > 0.05 and abs(duration - seconds) < 0.5, (duration, seconds)
            heard[speed] = duration
        assert heard[150] < 0.85 * heard[100]
        _shot(d)
    finally:
        monitor.close()


def _shot(d: SettingsDialog) -> None:
    from PySide6.QtWidgets import QApplication

    for _ in range(5):
        QApplication.processEvents()
    OUT.mkdir(parents=True, exist_ok=True)
    assert d.grab().save(str(OUT / "settings_voice_picker.png"))


def test_devices_this_machine_cannot_run_are_disabled_with_the_reason(dialog):
    s = Settings()
    assert s.model.device == default_device() == ("cuda" if machine_has_cuda() else "cpu")
    s.model.device = "cuda"
    s.model.profile = "freeze-omni"
    d = dialog(s)
    model = d.device.model()
    rows = {d.device.itemData(i): i for i in range(d.device.count())}
    assert model.item(rows["cpu"]).isEnabled()
    if machine_has_cuda():
        assert model.item(rows["cuda"]).isEnabled()
    else:
        i = rows["cuda"]
        assert not model.item(i).isEnabled()
        assert "not available here" in d.device.itemText(i)
        assert NO_GPU_REASON in d.device.itemData(i, 3)                 # Qt.ToolTipRole
        assert not d.lite_device.model().item(1).isEnabled()
        assert any("cannot run here" in p for p in d.problems())        # the saved "cuda" is not accepted
        d.device.setCurrentIndex(rows["cpu"])
        assert not any("cannot run here" in p for p in d.problems())
