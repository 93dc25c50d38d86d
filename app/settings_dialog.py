"""The settings dialog: devices (with a test), profile and model folders, precision/device, voices, persona,
sampling, VAD thresholds and end-of-turn silence, echo cancellation/noise suppression, recording.

Nothing is accepted unchecked: *Apply*/*OK* build a :class:`~core.settings.Settings`, run its validation (values,
folders, files) and show every problem in the dialog; only valid settings are emitted (``applied``), and the main
window applies them live (reloading the model only when the model side changed).
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal, Slot
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
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.tasks import BackgroundTask
from app.widgets.duplex import LevelMeter
from core.settings import PRECISIONS, Settings
from core.settings.schema import check_global_tokens

log = logging.getLogger(__name__)

DEFAULT_DEVICE = "(system default)"


def _folder_row(edit: QLineEdit, parent: QWidget, title: str, file_filter: str | None = None) -> QWidget:
    row = QWidget(parent)
    lay = QHBoxLayout(row)
    lay.setContentsMargins(0, 0, 0, 0)
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
        self.errors.setStyleSheet("QLabel#errors { color: #b3261e; background: #fdecea; padding: 6px; "
                                  "border-radius: 4px; }")
        self.errors.hide()
        lay.addWidget(self.errors)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Apply
            | QDialogButtonBox.StandardButton.Cancel, self)
        self.buttons.accepted.connect(self.on_ok)
        self.buttons.rejected.connect(self.reject)
        self.buttons.button(QDialogButtonBox.StandardButton.Apply).clicked.connect(self.on_apply)
        lay.addWidget(self.buttons)
        self.load(settings)
        self._refresh_devices()

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
        test_row = QWidget(w)
        tl = QHBoxLayout(test_row)
        tl.setContentsMargins(0, 0, 0, 0)
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
        form.addRow("", self.aec)
        form.addRow("", self.ns)
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
        self.device.setEditable(True)
        self.device.addItems(["cuda", "cpu", "cuda:0", "cuda:1"])
        form.addRow("Device", self.device)
        self.lite_backbone = QLineEdit(w)
        self.lite_backbone.setPlaceholderText("empty: bundled SmolLM2-135M-Instruct")
        form.addRow("Lite chat model", _folder_row(self.lite_backbone, self, "Lite chat model folder"))
        self.lite_device = QComboBox(w)
        self.lite_device.setEditable(True)
        self.lite_device.addItems(["cpu", "cuda"])
        form.addRow("Lite device", self.lite_device)
        note = QLabel("Changing the profile, folders, precision or device reloads the model: the old one is "
                      "unloaded first; if the new one fails, the previous profile is loaded again.", w)
        note.setWordWrap(True)
        note.setStyleSheet("color: #666;")
        form.addRow(note)
        return w

    def _voice_tab(self) -> QWidget:
        w = QWidget(self)
        form = QFormLayout(w)
        row = QWidget(w)
        rl = QHBoxLayout(row)
        rl.setContentsMargins(0, 0, 0, 0)
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
        self.voice_tokens.setStyleSheet("color: #666;")
        self.voice.currentIndexChanged.connect(self._show_tokens)
        form.addRow("", self.voice_tokens)
        self.voice_status = QLabel("", w)
        self.voice_status.setWordWrap(True)
        form.addRow("", self.voice_status)
        self.lite_voice = QLineEdit(w)
        self.lite_voice.setPlaceholderText("empty: bundled Piper en_US-joe-medium")
        form.addRow("Lite voice (Piper .onnx)",
                    _folder_row(self.lite_voice, self, "Piper voice", "Piper voices (*.onnx)"))
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
        return w

    # ------------------------------------------------------------------------------------------ load/collect ----

    def load(self, s: Settings) -> None:
        self._set_combo(self.in_device, s.audio.input_device)
        self._set_combo(self.out_device, s.audio.output_device)
        self.aec.setChecked(s.audio.aec)
        self.ns.setChecked(s.audio.noise_suppression)
        self.profile.setCurrentIndex(max(0, self.profile.findData(s.model.profile)))
        self.checkpoint_dir.setText(s.model.checkpoint_dir)
        self.backbone_dir.setText(s.model.backbone_dir)
        self.precision.setCurrentIndex(max(0, self.precision.findData(s.model.precision)))
        self.device.setCurrentText(s.model.device)
        self.lite_backbone.setText(s.model.lite_backbone)
        self.lite_device.setCurrentText(s.model.lite_device)
        self._fill_voices(s.model.voice)
        self.lite_voice.setText(s.model.lite_voice)
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
        self._profile_changed()

    def collect(self) -> Settings:
        s = self.original.copy()
        s.audio.input_device = self._combo_value(self.in_device)
        s.audio.output_device = self._combo_value(self.out_device)
        s.audio.aec = self.aec.isChecked()
        s.audio.noise_suppression = self.ns.isChecked()
        s.model.profile = self.profile.currentData()
        s.model.checkpoint_dir = self.checkpoint_dir.text().strip()
        s.model.backbone_dir = self.backbone_dir.text().strip()
        s.model.precision = self.precision.currentData()
        s.model.device = self.device.currentText().strip()
        s.model.lite_backbone = self.lite_backbone.text().strip()
        s.model.lite_device = self.lite_device.currentText().strip()
        s.model.voices = {k: list(v) for k, v in self.voices.items()}
        s.model.voice = self.voice.currentData() or ""
        s.model.lite_voice = self.lite_voice.text().strip()
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
        return s

    def problems(self) -> list[str]:
        s = self.collect()
        out = s.validate(check_paths=True)
        if not s.persona.name:
            out.append("The persona needs a name.")
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
        super().done(r)

    # ------------------------------------------------------------------------------------------ helpers ----

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

        task = BackgroundTask(work, "list-devices", self)
        task.done.connect(self._fill_devices)
        self._tasks.append(task)
        task.start()

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

        task = BackgroundTask(work, "device-test", self)
        task.progress.connect(self._test_level)
        task.done.connect(self._test_done)
        task.failed.connect(self._test_failed)
        self._tasks.append(task)
        task.start()

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
        task = BackgroundTask(lambda _t: derive_freeze_omni_voice(wav_path, ckpt), "derive-voice", self)
        task.done.connect(self._voice_derived)
        task.failed.connect(self._voice_failed)
        self._tasks.append(task)
        task.start()
