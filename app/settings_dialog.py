"""The settings dialog: devices (with a test), profile and model folders, precision/device, voices, persona,
sampling, VAD thresholds and end-of-turn silence, echo cancellation/noise suppression, recording, history.

The Lite voice is picked from the voices installed on this machine (:func:`core.settings.voices.lite_voices`), with
a speed and a *Play sample* button (the sentence is synthesised in the background and played on the output device
of the Audio tab). Compute devices this machine cannot run (CUDA without an NVIDIA GPU) are listed, disabled, with
the reason.

Nothing is accepted unchecked: *Apply*/*OK* build a :class:`~core.settings.Settings`, run its validation (values,
folders, files) and show every problem in the dialog; only valid settings are emitted (``applied``), and the main
window applies them live (reloading the model only when the model side changed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QEvent, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.tasks import BackgroundTask
from app.widgets.duplex import LevelMeter
from app.widgets.theme import PALETTE_EVENTS, css, theme_for
from core.settings import PRECISIONS, Settings
from core.settings.schema import VOICE_SPEED_RANGE, check_global_tokens, machine_has_cuda

log = logging.getLogger(__name__)

DEFAULT_DEVICE = "(system default)"
NO_GPU_REASON = "no NVIDIA GPU with a working CUDA driver was found on this machine"


def _short(path: str | Path) -> str:
    """A path as people write it: ~ for the home folder."""
    p, home = Path(path), Path.home()
    return f"~/{p.relative_to(home)}" if p.is_relative_to(home) else str(p)


def compute_devices() -> list[tuple[str, str]]:
    """(device, reason it cannot run here or "") for the device choices, CPU first."""
    cuda = machine_has_cuda()
    count = 1
    if cuda:
        import sys

        torch = sys.modules.get("torch")
        try:
            count = max(1, int(torch.cuda.device_count())) if torch is not None else 1
        except Exception:  # noqa: BLE001
            count = 1
    reason = "" if cuda else NO_GPU_REASON
    out = [("cpu", ""), ("cuda", reason)]
    out += [(f"cuda:{i}", reason) for i in range(count)]
    return out


def fill_device_combo(combo: QComboBox, current: str) -> None:
    """The device choices, the ones this machine cannot run disabled with the reason (in the item and its tool
    tip); a saved value that is not among them is still shown, and selected."""
    combo.blockSignals(True)
    combo.clear()
    for device, reason in compute_devices():
        combo.addItem(device if not reason else f"{device} (not available here)", device)
        i = combo.count() - 1
        if reason:
            combo.model().item(i).setEnabled(False)
            combo.setItemData(i, f"{device} is not available: {reason}", Qt.ItemDataRole.ToolTipRole)
    i = combo.findData(current)
    if i < 0:
        combo.addItem(current, current)
        i = combo.count() - 1
    combo.setCurrentIndex(i)
    combo.blockSignals(False)


def device_problem(combo: QComboBox, what: str) -> str | None:
    i = combo.currentIndex()
    if i >= 0 and not combo.model().item(i).isEnabled():
        return f"{what} {combo.currentData()} cannot run here ({NO_GPU_REASON}): choose cpu."
    return None


def _hbox(parent: QWidget) -> tuple[QWidget, QHBoxLayout]:
    """A row of widgets for a form: a plain widget with a margin-less horizontal layout."""
    row = QWidget(parent)
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
    return row, lay


def _folder_row(edit: QLineEdit, parent: QWidget, title: str, file_filter: str | None = None) -> QWidget:
    row, lay = _hbox(parent)
    lay.addWidget(edit, 1)
    btn = QPushButton("Browse…", row)

    def browse() -> None:
        start = edit.text() or str(Path.home())
        if file_filter:
            path, _ = QFileDialog.getOpenFileName(parent, title, start, file_filter)
        else:
            path = QFileDialog.getExistingDirectory(parent, title, start)
        if path:
            edit.setText(path)

    btn.clicked.connect(browse)
    lay.addWidget(btn)
    return row


class SettingsDialog(QDialog):
    applied = Signal(object)   # a validated Settings
    sample_played = Signal(str, float, int)     # voice label, speed, samples played

    def __init__(self, settings: Settings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Parley settings")
        self.setMinimumSize(620, 520)
        self.original = settings.copy()
        self.voices: dict[str, list[int]] = {k: list(v) for k, v in settings.model.voices.items()}
        self._tasks: list[BackgroundTask] = []
        lay = QVBoxLayout(self)
        self.tabs = QTabWidget(self)
        lay.addWidget(self.tabs, 1)
        self.tabs.addTab(self._audio_tab(), "Audio")
        self.tabs.addTab(self._model_tab(), "Model")
        self.tabs.addTab(self._voice_tab(), "Voice")
        self.tabs.addTab(self._persona_tab(), "Persona")
        self.tabs.addTab(self._turns_tab(), "Turn-taking && sampling")
        self.tabs.addTab(self._recording_tab(), "Recording")
        self.errors = QLabel("", self)
        self.errors.setObjectName("errors")
        self.errors.setWordWrap(True)
        self.errors.hide()
        lay.addWidget(self.errors)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Apply
            | QDialogButtonBox.StandardButton.Cancel, self)
        self.buttons.accepted.connect(self.on_ok)
        self.buttons.rejected.connect(self.reject)
        self.buttons.button(QDialogButtonBox.StandardButton.Apply).clicked.connect(self.on_apply)
        lay.addWidget(self.buttons)
        self._player = None          # plays voice samples (app.session_browser.SoundDevicePlayer by default)
        self._sampling = False
        self.load(settings)
        self._refresh_devices()
        self.restyle()

    # ------------------------------------------------------------------------------------------ tabs ----

    def _audio_tab(self) -> QWidget:
        w = QWidget(self)
        form = QFormLayout(w)
        self.in_device = QComboBox(w)
        self.in_device.setEditable(True)
        self.out_device = QComboBox(w)
        self.out_device.setEditable(True)
        form.addRow("Microphone (input)", self.in_device)
        form.addRow("Speakers (output)", self.out_device)
        test_row, tl = _hbox(w)
        self.test_button = QPushButton("Test devices", test_row)
        self.test_button.setToolTip("Plays a tone on the output and shows the input level")
        self.test_button.clicked.connect(self.test_devices)
        self.test_meter = LevelMeter("input", test_row)
        tl.addWidget(self.test_button)
        tl.addWidget(self.test_meter, 1)
        form.addRow("", test_row)
        self.test_status = QLabel("", w)
        self.test_status.setWordWrap(True)
        form.addRow("", self.test_status)
        self.aec = QCheckBox("Echo cancellation (needed on speakers, for barge-in)", w)
        self.ns = QCheckBox("Noise suppression", w)
        self.ready_sound = QCheckBox("Play a short sound when Parley starts listening", w)
        self.ready_sound.setToolTip("A soft whoosh when the audio opens. It also lets the echo cancellation learn "
                                    "your room before the first answer, so you can interrupt that one too.")
        form.addRow("", self.aec)
        form.addRow("", self.ns)
        form.addRow("", self.ready_sound)
        return w

    def _model_tab(self) -> QWidget:
        w = QWidget(self)
        form = QFormLayout(w)
        self.profile = QComboBox(w)
        self.profile.addItem("Freeze-Omni (speech-to-speech, GPU)", "freeze-omni")
        self.profile.addItem("Lite (Whisper + SmolLM2 + Piper, CPU)", "lite")
        self.profile.currentIndexChanged.connect(self._profile_changed)
        form.addRow("Profile", self.profile)
        self.checkpoint_dir = QLineEdit(w)
        self.checkpoint_dir.setPlaceholderText("folder with checkpoints/ (audiollm, decoder, codec)")
        form.addRow("Freeze-Omni checkpoints", _folder_row(self.checkpoint_dir, self, "Freeze-Omni checkpoints"))
        self.backbone_dir = QLineEdit(w)
        self.backbone_dir.setPlaceholderText("Qwen2-7B-Instruct folder")
        form.addRow("Backbone LLM", _folder_row(self.backbone_dir, self, "Backbone LLM folder"))
        self.precision = QComboBox(w)
        for p in PRECISIONS:
            self.precision.addItem(p, p)
        form.addRow("Precision", self.precision)
        self.device = QComboBox(w)
        form.addRow("Device", self.device)
        self.lite_backbone = QLineEdit(w)
        self.lite_backbone.setPlaceholderText("empty: bundled SmolLM2-135M-Instruct")
        form.addRow("Lite chat model", _folder_row(self.lite_backbone, self, "Lite chat model folder"))
        self.lite_device = QComboBox(w)
        form.addRow("Lite device", self.lite_device)
        note = QLabel("Changing the profile, folders, precision or device reloads the model: the old one is "
                      "unloaded first; if the new one fails, the previous profile is loaded again.", w)
        note.setWordWrap(True)
        note.setObjectName("note")
        form.addRow(note)
        return w

    def _voice_tab(self) -> QWidget:
        w = QWidget(self)
        form = QFormLayout(w)
        row, rl = _hbox(w)
        self.voice = QComboBox(row)
        rl.addWidget(self.voice, 1)
        self.voice_from_wav = QPushButton("From recording…", row)
        self.voice_from_wav.setToolTip("Derive a voice (codec global tokens) from a reference recording")
        self.voice_from_wav.clicked.connect(self.derive_voice)
        self.voice_add = QPushButton("Add tokens…", row)
        self.voice_add.clicked.connect(self.add_voice_tokens)
        self.voice_remove = QPushButton("Remove", row)
        self.voice_remove.clicked.connect(self.remove_voice)
        for b in (self.voice_from_wav, self.voice_add, self.voice_remove):
            rl.addWidget(b)
        form.addRow("Freeze-Omni voice", row)
        self.voice_tokens = QLabel("", w)
        self.voice_tokens.setObjectName("note")
        self.voice.currentIndexChanged.connect(self._show_tokens)
        form.addRow("", self.voice_tokens)
        self.voice_status = QLabel("", w)
        self.voice_status.setWordWrap(True)
        form.addRow("", self.voice_status)
        form.addRow(QLabel("<b>Lite voice</b>", w))
        lite_row, ll = _hbox(w)
        self.lite_voice = QComboBox(lite_row)
        self.lite_voice.setMinimumWidth(320)
        ll.addWidget(self.lite_voice, 1)
        self.lite_voice_add = QPushButton("Add voice file…", lite_row)
        self.lite_voice_add.setToolTip("A Piper voice: a .onnx file with its .onnx.json beside it")
        self.lite_voice_add.clicked.connect(self.add_lite_voice)
        ll.addWidget(self.lite_voice_add)
        form.addRow("Voice", lite_row)
        speed_row, sl = _hbox(w)
        self.voice_speed = QSlider(Qt.Orientation.Horizontal, speed_row)
        lo, hi = VOICE_SPEED_RANGE
        self.voice_speed.setRange(int(lo * 100), int(hi * 100))
        self.voice_speed.setSingleStep(5)
        self.voice_speed.setPageStep(25)
        self.voice_speed.setTickInterval(25)
        self.voice_speed.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.voice_speed_label = QLabel(speed_row)
        self.voice_speed_label.setMinimumWidth(110)
        self.voice_speed.valueChanged.connect(self._speed_changed)
        sl.addWidget(self.voice_speed, 1)
        sl.addWidget(self.voice_speed_label)
        form.addRow("Speed", speed_row)
        sample_row, pl = _hbox(w)
        self.play_sample_button = QPushButton("Play sample", sample_row)
        self.play_sample_button.setToolTip("Hear the chosen voice at this speed, on the speakers of the Audio tab")
        self.play_sample_button.clicked.connect(self.play_sample)
        pl.addWidget(self.play_sample_button)
        self.sample_status = QLabel("", sample_row)
        self.sample_status.setWordWrap(True)
        pl.addWidget(self.sample_status, 1)
        form.addRow("", sample_row)
        self.lite_voice_note = QLabel("", w)
        self.lite_voice_note.setObjectName("note")
        self.lite_voice_note.setWordWrap(True)
        form.addRow("", self.lite_voice_note)
        self.lite_voice.currentIndexChanged.connect(self._lite_voice_changed)
        return w

    def _persona_tab(self) -> QWidget:
        w = QWidget(self)
        form = QFormLayout(w)
        self.persona_name = QLineEdit(w)
        form.addRow("Name", self.persona_name)
        self.system_prompt = QPlainTextEdit(w)
        self.system_prompt.setMinimumHeight(140)
        form.addRow("System prompt", self.system_prompt)
        return w

    def _dspin(self, lo: float, hi: float, step: float, decimals: int = 2) -> QDoubleSpinBox:
        s = QDoubleSpinBox(self)
        s.setRange(lo, hi)
        s.setSingleStep(step)
        s.setDecimals(decimals)
        return s

    def _ispin(self, lo: int, hi: int, step: int = 1, suffix: str = "") -> QSpinBox:
        s = QSpinBox(self)
        s.setRange(lo, hi)
        s.setSingleStep(step)
        if suffix:
            s.setSuffix(suffix)
        return s

    def _turns_tab(self) -> QWidget:
        w = QWidget(self)
        outer = QHBoxLayout(w)
        vad = QFormLayout()
        vad.addRow(QLabel("<b>Voice activity</b>"))
        self.onset = self._dspin(0.0, 1.0, 0.05)
        self.barge_in = self._dspin(0.0, 1.0, 0.05)
        self.offset = self._dspin(0.0, 1.0, 0.05)
        self.min_speech = self._ispin(0, 5000, 50, " ms")
        self.eot_silence = self._ispin(0, 10000, 100, " ms")
        vad.addRow("Speech onset threshold", self.onset)
        vad.addRow("Barge-in threshold (while speaking)", self.barge_in)
        vad.addRow("Speech offset threshold", self.offset)
        vad.addRow("Minimum speech", self.min_speech)
        vad.addRow("End-of-turn silence", self.eot_silence)
        samp = QFormLayout()
        samp.addRow(QLabel("<b>Sampling</b>"))
        self.temperature = self._dspin(0.0, 5.0, 0.05)
        self.top_k = self._ispin(0, 100000)
        self.top_p = self._dspin(0.0, 1.0, 0.05)
        self.rep_penalty = self._dspin(0.5, 5.0, 0.01)
        self.max_tokens = self._ispin(1, 100000, 16)
        self.greedy = QCheckBox("Greedy (deterministic)", w)
        self.decoder_top_k = self._ispin(0, 100000)
        samp.addRow("Temperature", self.temperature)
        samp.addRow("Top-k", self.top_k)
        samp.addRow("Top-p", self.top_p)
        samp.addRow("Repetition penalty", self.rep_penalty)
        samp.addRow("Max answer tokens", self.max_tokens)
        samp.addRow("", self.greedy)
        samp.addRow("Speech decoder top-k", self.decoder_top_k)
        outer.addLayout(vad, 1)
        outer.addLayout(samp, 1)
        return w

    def _recording_tab(self) -> QWidget:
        w = QWidget(self)
        form = QFormLayout(w)
        self.rec_enabled = QCheckBox("Record every session (audio streams, events, transcript)", w)
        form.addRow("", self.rec_enabled)
        self.rec_folder = QLineEdit(w)
        self.rec_folder.setPlaceholderText("empty: the default sessions folder")
        form.addRow("Folder", _folder_row(self.rec_folder, self, "Recording folder"))
        self.retention = self._ispin(0, 3650, 1, " days")
        self.retention.setSpecialValueText("keep forever")
        form.addRow("Delete recordings older than", self.retention)
        form.addRow(QLabel("<b>Conversation history</b>", w))
        self.history_keep = QCheckBox("Keep finished conversations (text only, readable by you only)", w)
        form.addRow("", self.history_keep)
        self.history_count = self._ispin(1, 100_000, 10, " conversations")
        form.addRow("Keep at most", self.history_count)
        self.history_days = self._ispin(0, 3650, 1, " days")
        self.history_days.setSpecialValueText("no age limit")
        form.addRow("Delete conversations older than", self.history_days)
        self.history_keep.toggled.connect(self.history_count.setEnabled)
        self.history_keep.toggled.connect(self.history_days.setEnabled)
        note = QLabel("Turning history off keeps what is already there; delete it in History…", w)
        note.setWordWrap(True)
        note.setObjectName("note")
        form.addRow("", note)
        return w

    # ------------------------------------------------------------------------------------------ load/collect ----

    def load(self, s: Settings) -> None:
        self._set_combo(self.in_device, s.audio.input_device)
        self._set_combo(self.out_device, s.audio.output_device)
        self.aec.setChecked(s.audio.aec)
        self.ns.setChecked(s.audio.noise_suppression)
        self.ready_sound.setChecked(s.audio.ready_sound)
        self.profile.setCurrentIndex(max(0, self.profile.findData(s.model.profile)))
        self.checkpoint_dir.setText(s.model.checkpoint_dir)
        self.backbone_dir.setText(s.model.backbone_dir)
        self.precision.setCurrentIndex(max(0, self.precision.findData(s.model.precision)))
        fill_device_combo(self.device, s.model.device)
        self.lite_backbone.setText(s.model.lite_backbone)
        fill_device_combo(self.lite_device, s.model.lite_device)
        self._fill_voices(s.model.voice)
        self._fill_lite_voices(s.model.lite_voice)
        self.voice_speed.setValue(int(round(s.model.voice_speed * 100)))
        self._speed_changed(self.voice_speed.value())
        self.persona_name.setText(s.persona.name)
        self.system_prompt.setPlainText(s.persona.system_prompt)
        self.onset.setValue(s.vad.onset_threshold)
        self.barge_in.setValue(s.vad.barge_in_threshold)
        self.offset.setValue(s.vad.offset_threshold)
        self.min_speech.setValue(s.vad.min_speech_ms)
        self.eot_silence.setValue(s.vad.end_of_turn_silence_ms)
        self.temperature.setValue(s.sampling.temperature)
        self.top_k.setValue(s.sampling.top_k)
        self.top_p.setValue(s.sampling.top_p)
        self.rep_penalty.setValue(s.sampling.repetition_penalty)
        self.max_tokens.setValue(s.sampling.max_new_tokens)
        self.greedy.setChecked(s.sampling.greedy)
        self.decoder_top_k.setValue(s.sampling.decoder_top_k)
        self.rec_enabled.setChecked(s.recording.enabled)
        self.rec_folder.setText(s.recording.folder)
        self.retention.setValue(s.recording.retention_days)
        self.history_keep.setChecked(s.history.keep)
        self.history_count.setValue(s.history.max_conversations)
        self.history_days.setValue(s.history.max_days)
        self.history_count.setEnabled(s.history.keep)
        self.history_days.setEnabled(s.history.keep)
        self._profile_changed()

    def collect(self) -> Settings:
        s = self.original.copy()
        s.audio.input_device = self._combo_value(self.in_device)
        s.audio.output_device = self._combo_value(self.out_device)
        s.audio.aec = self.aec.isChecked()
        s.audio.noise_suppression = self.ns.isChecked()
        s.audio.ready_sound = self.ready_sound.isChecked()
        s.model.profile = self.profile.currentData()
        s.model.checkpoint_dir = self.checkpoint_dir.text().strip()
        s.model.backbone_dir = self.backbone_dir.text().strip()
        s.model.precision = self.precision.currentData()
        s.model.device = self.device.currentData() or "cpu"
        s.model.lite_backbone = self.lite_backbone.text().strip()
        s.model.lite_device = self.lite_device.currentData() or "cpu"
        s.model.voices = {k: list(v) for k, v in self.voices.items()}
        s.model.voice = self.voice.currentData() or ""
        s.model.lite_voice = self.lite_voice.currentData() or ""
        s.model.voice_speed = self.speed()
        s.persona.name = self.persona_name.text().strip()
        s.persona.system_prompt = self.system_prompt.toPlainText().strip()
        s.vad.onset_threshold = round(self.onset.value(), 4)
        s.vad.barge_in_threshold = round(self.barge_in.value(), 4)
        s.vad.offset_threshold = round(self.offset.value(), 4)
        s.vad.min_speech_ms = self.min_speech.value()
        s.vad.end_of_turn_silence_ms = self.eot_silence.value()
        s.sampling.temperature = round(self.temperature.value(), 4)
        s.sampling.top_k = self.top_k.value()
        s.sampling.top_p = round(self.top_p.value(), 4)
        s.sampling.repetition_penalty = round(self.rep_penalty.value(), 4)
        s.sampling.max_new_tokens = self.max_tokens.value()
        s.sampling.greedy = self.greedy.isChecked()
        s.sampling.decoder_top_k = self.decoder_top_k.value()
        s.recording.enabled = self.rec_enabled.isChecked()
        s.recording.folder = self.rec_folder.text().strip()
        s.recording.retention_days = self.retention.value()
        s.history.keep = self.history_keep.isChecked()
        s.history.max_conversations = self.history_count.value()
        s.history.max_days = self.history_days.value()
        return s

    def problems(self) -> list[str]:
        s = self.collect()
        out = s.validate(check_paths=True)
        if not s.persona.name:
            out.append("The persona needs a name.")
        combo, what = (self.device, "The Freeze-Omni device") if s.model.profile == "freeze-omni" else \
            (self.lite_device, "The Lite device")
        problem = device_problem(combo, what)
        if problem:
            out.append(problem)
        return out

    # ------------------------------------------------------------------------------------------ buttons ----

    def on_apply(self) -> bool:
        problems = self.problems()
        if problems:
            self.errors.setText("Not applied:\n• " + "\n• ".join(problems))
            self.errors.show()
            return False
        self.errors.hide()
        s = self.collect()
        self.original = s.copy()
        self.applied.emit(s)
        return True

    def on_ok(self) -> None:
        if self.on_apply():
            self.accept()

    def done(self, r: int) -> None:  # noqa: D401 - Qt override
        for t in self._tasks:
            t.cancel()
        if self._player is not None:
            self._player.stop()
        super().done(r)

    # ------------------------------------------------------------------------------------------ theme ----

    def restyle(self) -> None:
        th = theme_for(self.palette())
        bg, fg, border = th.banners["error"]
        self.errors.setStyleSheet(f"QLabel#errors {{ color: {css(fg)}; background: {css(bg)}; padding: 6px; "
                                  f"border: 1px solid {css(border)}; border-radius: 4px; }}")
        for label in self.findChildren(QLabel, "note"):
            label.setStyleSheet(f"color: {css(th.muted)};")

    def changeEvent(self, ev: QEvent) -> None:  # noqa: N802
        super().changeEvent(ev)
        if ev.type() in PALETTE_EVENTS and hasattr(self, "errors"):
            self.restyle()

    # ------------------------------------------------------------------------------------------ Lite voice ----

    def speed(self) -> float:
        return round(self.voice_speed.value() / 100.0, 2)

    def _speed_changed(self, value: int) -> None:
        speed = value / 100.0
        word = "normal" if abs(speed - 1.0) < 0.001 else ("faster" if speed > 1 else "slower")
        self.voice_speed_label.setText(f"{speed:.2f}× ({word})")

    def _fill_lite_voices(self, current: str) -> None:
        from core.settings.voices import lite_voices

        self.lite_voice.blockSignals(True)
        self.lite_voice.clear()
        self._lite_voices = lite_voices(current)
        for v in self._lite_voices:
            text = f"{v.label} — {v.source}" + (" (cannot be used)" if v.problem else "")
            self.lite_voice.addItem(text, v.path)
            i = self.lite_voice.count() - 1
            self.lite_voice.setItemData(i, v.problem or v.path or v.name, Qt.ItemDataRole.ToolTipRole)
        i = self.lite_voice.findData(current.strip())
        self.lite_voice.setCurrentIndex(max(0, i))
        self.lite_voice.blockSignals(False)
        self._lite_voice_changed()

    def _lite_voice_changed(self, *_args) -> None:
        v = self.current_lite_voice()
        if v is None:
            return
        from core.settings.voices import voices_dir

        if v.problem:
            text = f"This voice cannot be used: {v.problem}."
        elif not v.path:
            text = "The voice that comes with Parley."
        else:
            text = "In your voices folder." if v.source == "voices folder" else f"File: {_short(v.path)}"
        self.lite_voice_note.setText(f"{text}\nMore voices: put Piper voices (a .onnx file with its .onnx.json) "
                                     f"in {_short(voices_dir())}")
        self.play_sample_button.setEnabled(not v.problem and not self._sampling)

    def current_lite_voice(self):
        i = self.lite_voice.currentIndex()
        voices = getattr(self, "_lite_voices", [])
        return voices[i] if 0 <= i < len(voices) else None

    def add_lite_voice(self, path: str | None = None) -> bool:
        if not path:
            path, _ = QFileDialog.getOpenFileName(self, "A Piper voice (.onnx, with its .onnx.json beside it)",
                                                  str(Path.home()), "Piper voices (*.onnx)")
        if not path:
            return False
        self._fill_lite_voices(path)
        v = self.current_lite_voice()
        return v is not None and not v.problem

    def set_sample_player(self, player) -> None:
        """Where samples play (an object with ``play(data, rate)`` and ``stop()``)."""
        self._player = player

    def play_sample(self) -> None:
        """Synthesise the sample sentence with the chosen voice and speed (in the background), then play it on the
        output device of the Audio tab."""
        from core.settings.voices import synthesize_sample

        v = self.current_lite_voice()
        if v is None or v.problem or self._sampling:
            return
        if self._player is None:
            from app.session_browser import SoundDevicePlayer

            self._player = SoundDevicePlayer()
        self._player.device = self._combo_value(self.out_device) if hasattr(self._player, "device") else ""
        path, speed, name = v.path, self.speed(), v.label.split(" · ")[0]
        self._sampling = True
        self.play_sample_button.setEnabled(False)
        self.sample_status.setText(f"Preparing a sample of {name}…")
        self._sample_what = (name, speed)
        self._run(lambda _t: synthesize_sample(path, speed), "voice-sample", self._sample_ready, self._sample_failed)

    @Slot(object)
    def _sample_ready(self, result) -> None:
        audio, rate = result
        name, speed = self._sample_what
        self._sampling = False
        self._lite_voice_changed()
        try:
            self._player.play(audio, rate)
        except Exception as exc:  # noqa: BLE001 - no device, device gone: say so in the dialog
            self.sample_status.setText(f"The sample could not be played: {exc}")
            return
        self.sample_status.setText(f"Playing {name} at {speed:.2f}× ({len(audio) / rate:.1f} s).")
        self.sample_played.emit(name, speed, len(audio))

    @Slot(str)
    def _sample_failed(self, message: str) -> None:
        self._sampling = False
        self._lite_voice_changed()
        self.sample_status.setText(f"No sample: {message}")

    # ------------------------------------------------------------------------------------------ helpers ----

    def _run(self, work, name: str, done, failed=None, progress=None) -> BackgroundTask:
        """Run ``work(task)`` off the GUI thread; the slots get its result, error or progress in the GUI thread.
        Cancelled when the dialog closes."""
        task = BackgroundTask(work, name, self)
        task.done.connect(done)
        if failed is not None:
            task.failed.connect(failed)
        if progress is not None:
            task.progress.connect(progress)
        self._tasks.append(task)
        task.start()
        return task

    @staticmethod
    def _set_combo(combo: QComboBox, name: str) -> None:
        if combo.count() == 0 or combo.itemText(0) != DEFAULT_DEVICE:
            combo.insertItem(0, DEFAULT_DEVICE, "")
        if not name:
            combo.setCurrentIndex(0)
            return
        i = combo.findText(name)
        if i < 0:
            combo.addItem(name, name)
            i = combo.findText(name)
        combo.setCurrentIndex(i)

    @staticmethod
    def _combo_value(combo: QComboBox) -> str:
        text = combo.currentText().strip()
        return "" if text in ("", DEFAULT_DEVICE) else text

    def _refresh_devices(self) -> None:
        from core.settings.device_test import device_names

        def work(_task: BackgroundTask):
            return device_names("input"), device_names("output")

        self._run(work, "list-devices", self._fill_devices)

    @Slot(object)
    def _fill_devices(self, result) -> None:
        ins, outs = result
        for combo, names in ((self.in_device, ins), (self.out_device, outs)):
            current = self._combo_value(combo)
            combo.blockSignals(True)
            combo.clear()
            combo.addItem(DEFAULT_DEVICE, "")
            for n in names:
                combo.addItem(n, n)
            self._set_combo(combo, current)
            combo.blockSignals(False)
        if not ins or not outs:
            self.test_status.setText("No audio " + ("input" if not ins else "output") + " device found. "
                                     "Check the sound server (PulseAudio/PipeWire) and cables; "
                                     "`parley doctor` says more.")

    def test_devices(self) -> None:
        from core.settings.device_test import run_device_test

        ins, outs = self._combo_value(self.in_device), self._combo_value(self.out_device)
        self.test_button.setEnabled(False)
        self.test_status.setText("Playing a tone… speak into the microphone.")

        def work(task: BackgroundTask):
            return run_device_test(ins, outs, task.report, task.cancel_event)

        self._run(work, "device-test", self._test_done, self._test_failed, self._test_level)

    @Slot(object)
    def _test_level(self, db: float) -> None:
        self.test_meter.set_level(db)
        self.test_meter.update()

    @Slot(object)
    def _test_done(self, peak_db: float) -> None:
        self.test_button.setEnabled(True)
        if peak_db < -70:
            self.test_status.setText(f"Tone played. The microphone heard nothing (peak {peak_db:.0f} dBFS): "
                                     "check that it is not muted and is the right device.")
        else:
            self.test_status.setText(f"Tone played. Microphone peak level {peak_db:.0f} dBFS.")

    @Slot(str)
    def _test_failed(self, message: str) -> None:
        self.test_button.setEnabled(True)
        self.test_status.setText(f"Device test failed: {message}")

    def _profile_changed(self) -> None:
        fo = self.profile.currentData() == "freeze-omni"
        for wdg in (self.checkpoint_dir, self.backbone_dir, self.precision, self.device):
            wdg.setEnabled(fo)
        for wdg in (self.lite_backbone, self.lite_device):
            wdg.setEnabled(not fo)

    def _fill_voices(self, current: str) -> None:
        self.voice.blockSignals(True)
        self.voice.clear()
        for name in self.voices:
            self.voice.addItem(name + (" (official)" if name == "release" else ""), name)
        i = self.voice.findData(current)
        self.voice.setCurrentIndex(max(0, i))
        self.voice.blockSignals(False)
        self._show_tokens()

    def _show_tokens(self) -> None:
        name = self.voice.currentData()
        tokens = self.voices.get(name, [])
        self.voice_tokens.setText("global tokens: " + " ".join(str(t) for t in tokens) if tokens else "")
        self.voice_remove.setEnabled(name not in (None, "release"))

    def _unique_name(self, base: str) -> str:
        name, n = base, 2
        while name in self.voices:
            name, n = f"{base} {n}", n + 1
        return name

    def add_voice(self, name: str, tokens: list[int]) -> str | None:
        problem = check_global_tokens(tokens)
        if problem:
            self.voice_status.setText(f"Voice not added: {problem}.")
            return None
        name = self._unique_name(name.strip() or "voice")
        self.voices[name] = list(tokens)
        self._fill_voices(name)
        self.voice_status.setText(f"Voice {name!r} added.")
        return name

    def add_voice_tokens(self) -> None:
        from core.settings.voices import parse_tokens

        text, ok = QInputDialog.getText(self, "Add a voice", "Name and tokens, e.g.  calm: 473 975 419 219 565 121 "
                                        "550 616")
        if not ok or not text.strip():
            return
        name, _, rest = text.partition(":")
        if not rest:
            name, rest = "voice", text
        try:
            tokens = parse_tokens(rest)
        except ValueError as exc:
            self.voice_status.setText(str(exc))
            return
        self.add_voice(name, tokens)

    @Slot(object)
    def _voice_derived(self, tokens) -> None:
        self.voice_from_wav.setEnabled(True)
        self.add_voice(self._voice_name, list(tokens))

    @Slot(str)
    def _voice_failed(self, message: str) -> None:
        self.voice_from_wav.setEnabled(True)
        self.voice_status.setText(f"Could not derive a voice: {message}")

    def remove_voice(self) -> None:
        name = self.voice.currentData()
        if name and name != "release":
            self.voices.pop(name, None)
            self._fill_voices("release")

    def derive_voice(self, wav_path: str | None = None) -> None:
        from core.settings.voices import derive_freeze_omni_voice

        if not wav_path:
            wav_path, _ = QFileDialog.getOpenFileName(self, "Reference recording (a few seconds of one speaker)",
                                                      str(Path.home()), "Audio (*.wav *.flac *.ogg)")
        if not wav_path:
            return
        ckpt = self.checkpoint_dir.text().strip()
        if not ckpt:
            self.voice_status.setText("Set the Freeze-Omni checkpoint folder (Model tab) first: the codec's "
                                      "encoder derives the voice.")
            return
        self.voice_from_wav.setEnabled(False)
        self.voice_status.setText(f"Deriving a voice from {Path(wav_path).name}…")
        self._voice_name = Path(wav_path).stem
        self._run(lambda _t: derive_freeze_omni_voice(wav_path, ckpt), "derive-voice", self._voice_derived,
                  self._voice_failed)
