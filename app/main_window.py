"""The main window: transcript on the left, duplex-state panel on the right, controls in the tool bar.

``MainWindow(settings)`` only builds widgets and starts an idle worker thread: it needs no audio device and no model,
so it works offscreen (self-test, tests). :meth:`MainWindow.start_engine` loads the profile (``run_app`` calls it).
Engine events arrive in :meth:`handle_event` (batched by the worker); tests may call it directly with
:class:`core.engine.events.Event` objects.

Keys: Esc stops the assistant speaking; with push-to-talk on, hold Space to talk (while the window has focus).
"""

from __future__ import annotations

import atexit
import copy
import logging
import sys
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QEvent, QObject, Qt, QThread, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QMainWindow,
    QSplitter,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app import gcguard
from app.desktop import app_icon
from app.widgets.debug import EngineeringPanel
from app.widgets.cards import LoadingCard, WelcomeCard
from app.widgets.duplex import DuplexPanel
from app.widgets.geometry import fit_window_to_screen
from app.widgets.notify import NotificationArea
from app.widgets.theme import PALETTE_EVENTS, css, restyle_tree, theme_for
from app.widgets.transcript import TranscriptView
from app.worker import EngineWorker, StackFactory, keeps_memory, needs_reload
from core.engine.events import (
    AssistantText,
    ContextUpdate,
    ErrorEvent,
    Event,
    InfoEvent,
    Interruption,
    Latency,
    MeterLevels,
    Progress,
    SessionStart,
    StateChange,
    StateProbs,
    TurnDecision,
    UserText,
    VadLevel,
    VadOnset,
    WarningEvent,
)
from core.engine.turns import TurnLog, as_event
from core.settings import Settings, save_settings

log = logging.getLogger(__name__)

# The engine's threads run Python between their torch/onnxruntime calls. With CPython's default 5 ms GIL switch
# interval the GUI thread can wait tens of ms for the GIL on every callback; 1 ms keeps the event loop's lateness
# under 50 ms at a negligible cost to the engine (`parley bench gui`, docs/benchmarks.md: beside a thread busy in
# Python, p99 135-154 ms with 5 ms, 37 ms with 1 ms).
GUI_SWITCH_INTERVAL_S = 0.001
# X11 auto-repeat can deliver a held key as release/press pairs ~30-50 ms apart: a release counts after this long.
PTT_RELEASE_DEBOUNCE_MS = 150
# "Getting ready" lasts until the ready sound has left the speakers (its length plus this, for the output buffer),
# and never longer than the second figure.
READY_SOUND_MARGIN_MS = 250
GETTING_READY_MAX_MS = 15_000
# At interpreter exit, how long to wait for a closed window's engine to finish closing.
EXIT_WAIT_MS = 30_000


class _WorkerKeeper(QObject):
    """Holds the worker threads of closed windows until they have ended: the window is gone at once, while its
    engine (model, audio streams, recorder) still closes in the worker thread; then the window's callback runs in
    the GUI thread."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[tuple[QThread, QObject, Any]] = []

    def keep(self, thread: QThread, worker: QObject, on_stopped: Any) -> None:
        self._held.append((thread, worker, on_stopped))
        thread.finished.connect(self._finished)
        if not thread.isRunning():
            self.reap()

    @Slot()
    def _finished(self) -> None:
        thread = self.sender()
        if isinstance(thread, QThread):
            thread.wait()             # it emitted ``finished`` as its last act; let it end completely
        self.reap()

    def reap(self) -> None:
        for entry in [e for e in self._held if not e[0].isRunning()]:
            self._held.remove(entry)
            thread, _worker, on_stopped = entry
            thread.wait()
            try:
                on_stopped()
            except RuntimeError:      # the window's C++ side is already deleted: nothing to tell
                log.debug("closed window gone before its worker stopped", exc_info=True)

    def pending(self) -> int:
        return len(self._held)

    def wait_all(self, timeout_ms: int = EXIT_WAIT_MS) -> None:
        """Let the engines of closed windows finish closing before the interpreter ends: a QThread destroyed while it
        runs aborts the process (and an audio stream or recording would be cut mid-write). Runs at exit."""
        for thread, _worker, _cb in list(self._held):
            try:
                _wait_for_thread(thread, timeout_ms)
            except RuntimeError:                  # Qt's side already gone
                continue
        self.reap()


_KEEPER: _WorkerKeeper | None = None


def _keeper() -> _WorkerKeeper:
    global _KEEPER
    if _KEEPER is None:
        _KEEPER = _WorkerKeeper()
        atexit.register(_wait_for_closed_windows)  # registered after PySide's own exit hook, so it runs before it
    return _KEEPER


def _wait_for_thread(thread: QThread, timeout_ms: int) -> bool:
    """Block the GUI thread until a worker thread has ended (False: not within ``timeout_ms``); meanwhile the
    worker collects its own garbage, since the GUI thread cannot serve its requests."""
    if not thread.isRunning():
        return True
    with gcguard.gui_blocked():
        ok = thread.wait(timeout_ms)
    if not ok:
        log.warning("the worker thread did not stop within %d ms", timeout_ms)
    return ok


def _wait_for_closed_windows() -> None:
    if _KEEPER is not None and _KEEPER.pending():
        _KEEPER.wait_all()


def _as_settings(settings: Any) -> tuple[Settings, list[str]]:
    """Accept a Settings or a core.settings.LoadResult (what load_settings() returns)."""
    if settings is None:
        return Settings(), []
    if isinstance(settings, Settings):
        return settings, []
    inner = getattr(settings, "settings", None)
    if isinstance(inner, Settings):
        return inner, list(getattr(settings, "warnings", []) or [])
    raise TypeError(f"MainWindow needs Settings, got {type(settings).__name__}")


class MainWindow(QMainWindow):
    # requests to the worker (queued into the worker thread)
    req_load = Signal(object)
    req_apply = Signal(object)
    req_start = Signal()
    req_stop = Signal()
    req_mute = Signal(bool)
    req_stop_speaking = Signal()
    req_ptt_mode = Signal(bool)
    req_ptt = Signal(bool)
    req_new_conversation = Signal()
    req_text = Signal(str)
    req_record = Signal(bool)
    req_shutdown = Signal()
    # for observers/tests
    event_handled = Signal(object)
    state_changed = Signal(str)
    shut_down = Signal()                # after close: the worker has closed the engine and its thread has ended

    def __init__(self, settings: Any = None, stack_factory: StackFactory | None = None,
                 persist: bool = True, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        if sys.getswitchinterval() > GUI_SWITCH_INTERVAL_S:
            sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)
        self.settings, load_warnings = _as_settings(settings)
        self.persist = persist
        self.state = "idle"
        self.states_seen: list[str] = []
        self.profile_loaded: str | None = None
        self._active_model: Any = None       # the model settings of the profile that runs
        self.loading = False
        self.listening = False
        self._latency_by_turn: dict[int, float] = {}
        self.turns = TurnLog()              # the one interpreter of events into turns (core.engine.turns)
        self._ptt_down = False
        self._ptt_release = QTimer(self)
        self._ptt_release.setSingleShot(True)
        self._ptt_release.setInterval(PTT_RELEASE_DEBOUNCE_MS)
        self._ptt_release.timeout.connect(self._ptt_released)
        # Between "start listening" and the moment the microphone delivers and the ready sound has played, the
        # badge says "Getting ready": a user who talks at once would talk over the sound the cancellers learn from.
        self._getting_ready = False
        self._ready_timer = QTimer(self)
        self._ready_timer.setSingleShot(True)
        self._ready_timer.timeout.connect(self._audio_ready)
        self._closing = False
        self._queued_messages: list[str] = []
        self._recording_active = False
        self.recording_path: Path | None = None   # the session folder being recorded, when known
        self.saved_recording_url: QUrl | None = None
        self.setWindowTitle("Parley")
        self.setWindowIcon(app_icon())
        self.setMinimumSize(760, 480)
        self._build_ui()
        self._restore_geometry()
        for w in load_warnings:
            self.notify("warning", f"Settings: {w}")
        # the worker thread (idle until start_engine)
        gcguard.acquire()              # Python's garbage collection in this (GUI) thread only
        self._gc_held = True
        self.thread_ = QThread()        # no parent: it may outlive a closed window while the engine shuts down
        self.thread_.setObjectName("parley-worker")
        self.worker = EngineWorker(stack_factory)
        self.worker.moveToThread(self.thread_)
        self._connect_worker()
        self.thread_.start()
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)
        self._update_controls()

    # ------------------------------------------------------------------------------------------------ UI ----

    def _build_ui(self) -> None:
        tb = QToolBar("Controls", self)
        tb.setObjectName("controls")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.addToolBar(tb)

        def action(text: str, shortcut: str | QKeySequence.StandardKey | None, tip: str,
                   checkable: bool = False, slot=None, toolbar: bool = True) -> QAction:
            a = QAction(text, self)
            a.setCheckable(checkable)
            if shortcut:
                a.setShortcut(QKeySequence(shortcut))
                a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.setToolTip(f"{tip} ({QKeySequence(shortcut).toString()})" if shortcut else tip)
            if slot is not None:
                (a.toggled if checkable else a.triggered).connect(slot)
            if toolbar:
                tb.addAction(a)
            else:
                self.addAction(a)      # the shortcut works without a tool-bar button
            return a

        self.act_listen = action("Start listening", "Ctrl+L", "Start or stop listening to the microphone", True,
                                 self._on_listen_toggled)
        self.act_mute = action("Mute mic", "Ctrl+M", "Mute the microphone (the assistant keeps talking)", True,
                               self._on_mute_toggled)
        self.act_stop = action("Stop speaking", "Esc", "Stop the assistant speaking now", False,
                               self.stop_speaking)
        tb.addSeparator()
        self.act_ptt = action("Push-to-talk", "Ctrl+T", "Push-to-talk: hold Space while the window has focus",
                              True, self._on_ptt_toggled)
        self.act_new = action("New conversation", "Ctrl+N", "Forget this conversation and start afresh", False,
                              self.new_conversation)
        self.act_history = action("History…", "Ctrl+H", "Earlier conversations: reread, export, delete", False,
                                  self.open_history)
        tb.addSeparator()
        self.act_record = action("Record session", "Ctrl+R", "Record this session (audio + events) to disk",
                                 True, self._on_record_toggled)
        self.act_sessions = action("Sessions…", None, "Recorded sessions: listen, export, delete", False,
                                   self.open_sessions)
        self.act_copy = action("Copy conversation", "Ctrl+Shift+C", "Copy the whole conversation as text", False,
                               lambda: self.transcript.copy_all(), toolbar=False)
        self.act_export = action("Export conversation…", "Ctrl+E", "Save the conversation as Markdown or text",
                                 False, lambda: self.transcript.export_dialog(), toolbar=False)
        tb.addSeparator()
        self.act_settings = action("Settings…", "Ctrl+,", "Devices, profile, voice, persona, thresholds", False,
                                   self.open_settings)
        self.act_models = action("Models…", None, "Model files, checksums, downloads, GPU fit", False,
                                 self.open_model_manager, toolbar=False)
        self.act_doctor = action("Check setup…", None, "Check audio, display, GPU and model files", False,
                                 self.open_doctor, toolbar=False)
        for a in tb.actions():
            w = tb.widgetForAction(a)
            if w is not None:
                w.setFocusPolicy(Qt.FocusPolicy.NoFocus)   # Space must reach push-to-talk, not a button
        self.act_ptt.blockSignals(True)
        self.act_ptt.setChecked(self.settings.ui.push_to_talk)
        self.act_ptt.blockSignals(False)
        self.act_record.blockSignals(True)
        self.act_record.setChecked(self.settings.recording.enabled)
        self.act_record.blockSignals(False)

        central = QWidget(self)
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        self.notices = NotificationArea(central)
        outer.addWidget(self.notices)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, central)
        left = QWidget(self.splitter)
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(4)
        self.welcome = WelcomeCard(left)
        self.welcome.dismissed.connect(self._welcome_read)
        self.loading_card = LoadingCard(left)
        self.transcript = TranscriptView(left)
        self.transcript.set_persona(self.settings.persona.name)
        column.addWidget(self.welcome)
        column.addWidget(self.loading_card)
        column.addWidget(self.transcript, 1)
        typing = QHBoxLayout()
        typing.setContentsMargins(6, 0, 6, 6)
        self.message = QLineEdit(left)
        self.message.setObjectName("message")
        self.message.setPlaceholderText("Type a message and press Enter: Parley answers out loud")
        self.message.setClearButtonEnabled(True)
        self.message.returnPressed.connect(self.send_message)
        self.send_button = QPushButton("Send", left)
        self.send_button.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.send_button.clicked.connect(self.send_message)
        typing.addWidget(self.message, 1)
        typing.addWidget(self.send_button)
        column.addLayout(typing)
        self.panel = DuplexPanel(self.splitter)
        self.panel.chart.seconds = self.settings.ui.chart_seconds
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.panel)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        outer.addWidget(self.splitter, 1)
        self.setCentralWidget(central)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)

        sb = self.statusBar()
        self.status_profile = QLabel("no model loaded")
        self.status_context = QLabel("")
        self.status_record = QLabel("")
        sb.addWidget(self.status_profile, 1)
        sb.addPermanentWidget(self.status_context)
        sb.addPermanentWidget(self.status_record)
        self._update_record_label()
        self._build_details_dock()
        self._build_menus()

    def _build_details_dock(self) -> None:
        """Engineering figures and notices, in a dock that is hidden unless asked for (View menu)."""
        self.details = EngineeringPanel(self)
        self.details_dock = QDockWidget("Engineering details", self)
        self.details_dock.setObjectName("engineeringDetails")
        self.details_dock.setWidget(self.details)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, self.details_dock)
        self.details_dock.setVisible(self.settings.ui.engineering_panel)
        self.act_details = self.details_dock.toggleViewAction()
        self.act_details.setText("Engineering details")
        self.act_details.setShortcut(QKeySequence("Ctrl+D"))
        self.act_details.setToolTip("Latency, context size, turn decisions and every technical notice (Ctrl+D)")
        self.act_details.toggled.connect(self._on_details_toggled)
        self.addAction(self.act_details)
        self.notices.technical.connect(self.details.add_notice)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        conv = bar.addMenu("&Conversation")
        for a in (self.act_listen, self.act_mute, self.act_stop, self.act_ptt, None, self.act_new, self.act_copy,
                  self.act_export, self.act_history):
            conv.addSeparator() if a is None else conv.addAction(a)
        sessions = bar.addMenu("&Sessions")
        sessions.addAction(self.act_record)
        sessions.addAction(self.act_sessions)
        view = bar.addMenu("&View")
        view.addAction(self.act_details)
        tools = bar.addMenu("&Tools")
        for a in (self.act_settings, self.act_models, self.act_doctor):
            tools.addAction(a)

    def _on_details_toggled(self, shown: bool) -> None:
        if self.settings.ui.engineering_panel != shown and not self._closing:
            self.settings.ui.engineering_panel = shown
            self._save()

    def _connect_worker(self) -> None:
        # Every receiver here is a @Slot: PySide6 delivers a signal from another thread to a plain (undecorated)
        # method in the sender's thread, not the receiver's; slots are queued to the GUI thread as they must be.
        w = self.worker
        self.req_load.connect(w.load)
        self.req_apply.connect(w.apply)
        self.req_start.connect(w.start_listening)
        self.req_stop.connect(w.stop_listening)
        self.req_mute.connect(w.set_muted)
        self.req_stop_speaking.connect(w.stop_speaking)
        self.req_ptt_mode.connect(w.set_push_to_talk)
        self.req_ptt.connect(w.push_to_talk)
        self.req_new_conversation.connect(w.new_conversation)
        self.req_text.connect(w.submit_text)
        self.req_record.connect(w.set_recording)
        self.req_shutdown.connect(w.shutdown)
        w.events_ready.connect(self._drain_events)
        w.notice.connect(self.notify)
        w.loading.connect(self._on_loading)
        w.profile_ready.connect(self._on_profile_ready)
        w.profile_failed.connect(self._on_profile_failed)
        w.listening.connect(self._on_listening)
        w.recording.connect(self._on_recording)
        w.stopped.connect(self.thread_.quit, Qt.ConnectionType.DirectConnection)

    # ------------------------------------------------------------------------------------------ engine ----

    def start_engine(self, listen: bool = True) -> None:
        """Load the configured profile in the worker, then start listening. If it cannot load and another
        profile worked last time (``ui.last_profile``), that one is loaded instead and the banner says why."""
        self._listen_after_load = listen
        self._fallback_tried = False
        self.req_load.emit(self.settings.copy())

    @Slot(bool, str)
    def _on_loading(self, busy: bool, text: str) -> None:
        self.loading = busy
        if busy:
            self.panel.set_state("loading", text)
            self.status_profile.setText(text)
        else:
            if self.loading_card.isVisible():
                self.loading_card.finish()        # a failed load ends here too
            if self.state in ("idle", "loading"):
                self.panel.set_state("idle", "")
        self._update_controls()

    def _on_progress(self, ev: Progress) -> None:
        """Loading steps: the card shows each step, a bar and an estimate from the last load of the profile."""
        profile, _, step = ev.step.partition(": ")
        if step == "start":
            self.loading_card.start(profile, self.settings.ui.load_seconds.get(profile))
        elif ev.done:
            seconds = self.loading_card.finish()
            if profile in ("lite", "freeze-omni") and seconds > 0:
                self.settings.ui.load_seconds[profile] = round(seconds, 1)
                self._save()
        else:
            self.loading_card.set_step(ev.message, step, ev.fraction)
        self.details.set_figure("loading", f"{ev.step}: {ev.message}")

    @Slot(dict)
    def _on_profile_ready(self, info: dict) -> None:
        if self._closing:        # loaded while the window was closing: the worker closes it again
            return
        active: Settings = info["settings"]
        self.profile_loaded = info["profile"]
        self.status_profile.setText(f"Profile: {info.get('description') or info['profile']}")
        self.settings.ui.last_profile = info["profile"]
        self._active_model = copy.deepcopy(active.model)
        if self.settings.model.profile != info["profile"]:
            # a fallback is running: the settings show what actually runs (the other profile's folders are kept)
            self.settings.model.profile = info["profile"]
        self._save()
        self.req_ptt_mode.emit(self.act_ptt.isChecked())
        if self.act_record.isChecked():
            self.req_record.emit(True)
        if getattr(self, "_listen_after_load", False) and not self.listening:
            self._listen_after_load = False
            self.act_listen.setChecked(True)
        self.notify("info", f"{active.model.profile} profile ready")
        self._send_queued_messages()
        self._update_controls()

    @Slot(str)
    def _on_profile_failed(self, message: str) -> None:
        if "freeze-omni" in message.lower():   # missing or broken weights: the Model manager can fetch them
            self.notices.notify("error", message, action_text="Open the Model manager",
                                action=self.open_model_manager)
        else:
            self.notify("error", message)
        if self.profile_loaded is not None and self._active_model is not None:
            # refused, or failed and the previous model loaded again: the settings (and the saved file) show what
            # runs, not the refused folders, which would fail again at the next start
            self.settings.model = copy.deepcopy(self._active_model)
            self._save()
        if self.profile_loaded is None:
            self.status_profile.setText("no model loaded")
            last = self.settings.ui.last_profile
            if last and last != self.settings.model.profile and not getattr(self, "_fallback_tried", True):
                self._fallback_tried = True
                fallback = self.settings.copy()
                fallback.model.profile = last
                self.notify("warning", f"Starting with the {last} profile, which worked last time.")
                self.req_load.emit(fallback)
        self._update_controls()

    @Slot(bool)
    def _on_listening(self, on: bool) -> None:
        self.listening = on
        self._getting_ready = on
        if on:     # if no word ever comes (a sound server that says nothing), the badge does not wait forever
            self._ready_timer.start(GETTING_READY_MAX_MS)
        else:
            self._ready_timer.stop()
        self.act_listen.blockSignals(True)
        self.act_listen.setChecked(on)
        self.act_listen.blockSignals(False)
        if not on:
            self._set_state("idle")
        elif self.state == "idle":
            self._set_state("listening")
        self._update_controls()

    @Slot()
    def _drain_events(self) -> None:
        for ev in self.worker.take_events():
            self.handle_event(ev)

    # ------------------------------------------------------------------------------------------ events ----

    def handle_event(self, ev: Event | dict) -> None:
        """Render one engine event (a :class:`core.engine.events.Event`, or its dict form as in events.jsonl)."""
        event = as_event(ev)
        if event is not None:
            try:
                self._dispatch(event)
            except Exception:  # a malformed event must never take the window down
                log.exception("cannot render a %s event of turn %s", event.type, event.turn)
        self.event_handled.emit(ev)

    def _dispatch(self, ev: Event) -> None:
        t = ev.t
        changed = self.turns.apply(ev)
        if isinstance(ev, StateChange):
            self._set_state(ev.state, t)
        elif isinstance(ev, StateProbs):
            self.panel.add_probs([float(x) for x in ev.probs][:3], t)
        elif isinstance(ev, TurnDecision):
            if ev.state == "el" and changed is not None and changed.ignored:
                self.transcript.remove(ev.turn, "user")   # a backchannel or a noise: not a turn of the conversation
            labels = {"cl": "keep listening", "ss": "answer", "el": "ignore"}
            self.details.set_figure("turn decision", f"turn {ev.turn}: {labels.get(ev.state, ev.state)} "
                                                     f"({ev.reason}, {ev.voiced_s:.2f} s voiced)")
        elif isinstance(ev, UserText) and changed is not None:
            self.transcript.user_text(ev.turn, changed.user_text, partial=True, final=changed.user_final,
                                      wall=self._wall_time(t))
        elif isinstance(ev, AssistantText):
            self.transcript.assistant_text(ev.turn, ev.text, wall=self._wall_time(t))
        elif isinstance(ev, Interruption):   # emitted on the barge-in turn; reply_turn names the cut-off answer
            if ev.reason == "joined":        # nobody heard it: the user went on, the turn continues
                self.transcript.remove(ev.reply_turn, "assistant")
            else:
                self.transcript.interrupted(ev.reply_turn, ev.unheard_text)
        elif isinstance(ev, Latency):
            ms = ev.first_played_ms
            self._latency_by_turn[ev.turn] = float(ms)
            self.transcript.entry(ev.turn, "assistant").data.latency_ms = None
            self.transcript.latency(ev.turn, float(ms))
            self.panel.latency.values = list(self._latency_by_turn.values())
            self.panel.latency_label.setText(self.panel.latency.summary())
            self.details.set_figure("latency", f"turn {ev.turn}: first audio {ev.first_audio_ms:.0f} ms, played "
                                               f"{ev.first_played_ms:.0f} ms, decision {ev.decision_ms:.0f} ms, "
                                               f"compute {ev.compute_ms:.0f} ms")
        elif isinstance(ev, MeterLevels):
            self.panel.set_levels(mic=ev.mic_db, clean=ev.clean_db, out=ev.out_db)
            self.panel.add_vad(float(ev.vad), t)
        elif isinstance(ev, VadLevel):
            self.panel.add_vad(float(ev.vad), t)
        elif isinstance(ev, VadOnset):
            self.panel.add_vad(float(ev.prob), t)
        elif isinstance(ev, (WarningEvent, ErrorEvent)):
            code = ev.code or ev.kind or ev.where or ""
            self.notices.notify_code(code, ev.type, ev.message, where=ev.where, source=ev.source,
                                     key=f"{ev.source or ''}:{code}")
            if ev.source == "session" and ev.code == "recording_stopped":
                if ev.path:
                    self.recording_path = Path(ev.path)
                self._on_recording(False)    # disk full, folder gone: the button says so...
                self.req_record.emit(False)  # ...and the stack lets go of the stopped recorder
        elif isinstance(ev, InfoEvent):
            if ev.kind == "audio_ready" and self._getting_ready:
                self._ready_timer.start(int(1000 * (ev.seconds or 0.0)) + READY_SOUND_MARGIN_MS)
            if ev.kind == "recording_started" and ev.path:
                self.recording_path = Path(ev.path)   # where "Recording saved to ..." will point
            if ev.notify:
                self.notify("info", ev.message)
        elif isinstance(ev, ContextUpdate):
            if ev.context_tokens is not None:
                self.status_context.setText(f"context {int(ev.context_tokens)} tokens")
                self.details.set_figure("context", f"{int(ev.context_tokens)} of {ev.limit} tokens")
        elif isinstance(ev, SessionStart):
            self.status_context.setText(f"context {int(ev.context_tokens)} tokens")
        elif isinstance(ev, Progress):
            self._on_progress(ev)

    def _wall_time(self, t: float | None) -> float | None:
        """Wall-clock time of a session time (the engine's clock), via the chart's session clock."""
        if t is None:
            return None
        chart = self.panel.chart
        chart.stamp(t)
        return time.time() - (chart.clock.now() - t)

    def _display_state(self, state: str) -> str:
        if state in ("idle", "listening") and self.listening:
            if self.act_mute.isChecked():
                return "muted"
            if self.act_ptt.isChecked():
                return "user_speaking" if self._ptt_down else "push_to_talk"
            return "getting_ready" if self._getting_ready else "listening"
        return state

    @Slot()
    def _audio_ready(self) -> None:
        """The ready sound has played (or the microphone delivers, without it): now the badge says "Listening"."""
        if self._getting_ready:
            self._getting_ready = False
            self._set_state(self.state)      # the badge, and the hint with it (_update_controls)

    def _set_state(self, state: str, t: float | None = None) -> None:
        if not state:
            return
        self.state = state
        if not self.states_seen or self.states_seen[-1] != state:
            self.states_seen.append(state)
        self.panel.set_state(self._display_state(state), t=t)
        self.state_changed.emit(state)
        self._update_controls()

    # ------------------------------------------------------------------------------------------ controls ----

    def _update_controls(self) -> None:
        have = self.profile_loaded is not None and not self.loading
        self.act_listen.setEnabled(have)
        self.act_listen.setText("Stop listening" if self.listening else "Start listening")
        self.act_mute.setEnabled(have)
        self.act_stop.setEnabled(have)
        self.act_new.setEnabled(have)
        self.transcript.set_placeholder(self.hint())

    def hint(self) -> str:
        """What the empty transcript tells the user to do now (it matches the buttons and the state)."""
        if self.loading:
            return "Loading the voice model… Settings and the history can be opened meanwhile."
        if self.profile_loaded is None:
            return "No voice model is loaded yet."
        if not self.listening:
            return "Press Start listening (Ctrl+L), then just talk."
        if self.act_mute.isChecked():
            return "The microphone is muted: press Unmute mic (Ctrl+M) to talk."
        if self.act_ptt.isChecked():
            return "Hold Space while you talk, and let go when you are done."
        if self._getting_ready:
            after = "after the short whoosh, " if self.settings.audio.ready_sound else ""
            return f"Getting ready: talk {after}when the badge says Listening."
        return "Just talk: Parley answers when you pause. Interrupt it any time, or press Esc to stop it."

    def _on_listen_toggled(self, on: bool) -> None:
        (self.req_start if on else self.req_stop).emit()

    def _on_mute_toggled(self, on: bool) -> None:
        self.act_mute.setText("Unmute mic" if on else "Mute mic")
        self.req_mute.emit(on)
        self._set_state(self.state)
        self._update_controls()

    def _on_ptt_toggled(self, on: bool) -> None:
        self.settings.ui.push_to_talk = on
        self._save()
        self.req_ptt_mode.emit(on)
        if on:
            self.notify("info", "Push-to-talk: hold Space while the Parley window has focus.")
        self._set_state(self.state)
        self._update_controls()

    def _on_record_toggled(self, on: bool) -> None:
        self.settings.recording.enabled = on
        self._save()
        self.req_record.emit(on)
        self._update_record_label()

    @Slot(bool)
    def _on_recording(self, on: bool) -> None:
        """What the worker reports: a recording that could not start (or stopped) unchecks the button, and the
        saved setting follows, so the next start does not fail the same way unnoticed. A recording that ended
        says where it was saved."""
        was, self._recording_active = self._recording_active, on
        if was and not on:
            self.recording_saved(self.recording_path or self._newest_session())
        if not on:
            self.recording_path = None
        if on == self.act_record.isChecked() and on == self.settings.recording.enabled:
            return
        self.act_record.blockSignals(True)
        self.act_record.setChecked(on)
        self.act_record.blockSignals(False)
        self.settings.recording.enabled = on
        self._save()
        self._update_record_label()

    def _update_record_label(self) -> None:
        self.status_record.setText("● recording" if self.settings.recording.enabled else "")
        self.status_record.setStyleSheet(f"color: {css(theme_for(self.palette()).record)}; font-weight: bold;")

    def _newest_session(self) -> Path | None:
        from core.session.store import list_sessions

        try:
            sessions = list_sessions(self.settings.recording.folder or None)
        except OSError:
            return None
        return sessions[0].path if sessions else None

    def recording_saved(self, path: Path | str | None) -> None:
        """A notice that says where the recording that just ended is, with a button that opens the folder."""
        if path is None:
            self.notify("info", "Recording stopped.")
            return
        self.saved_recording_url = QUrl.fromLocalFile(str(path))
        url = self.saved_recording_url
        self.notices.notify("info", f"Recording saved to {path}", action_text="Open folder",
                            action=lambda: self.open_url(url), key="recording saved")

    def open_url(self, url: QUrl) -> bool:
        """Open a folder or file with the desktop's own program (a seam for tests, which check the URL)."""
        return QDesktopServices.openUrl(url)

    def stop_speaking(self) -> None:
        self.req_stop_speaking.emit()

    def send_message(self) -> None:
        """The message box: a typed turn, answered by voice. While the model loads it waits, and goes when ready."""
        text = " ".join(self.message.text().split())
        if not text:
            return
        self.message.clear()
        if self.profile_loaded is None or self.loading:
            self._queued_messages.append(text)
            self.notify("info", "Your message will be sent as soon as the voice model is ready.")
            return
        self.req_text.emit(text)

    def _send_queued_messages(self) -> None:
        queued, self._queued_messages = self._queued_messages, []
        for text in queued:
            self.req_text.emit(text)

    def archive_conversation(self) -> None:
        """Keep the conversation on screen in the history (when the settings keep one) — called when it ends: New
        conversation, closing the window. A disk that refuses costs a notice, never the conversation on screen."""
        from core.history import HistoryStore

        turns = self.transcript.conversation()
        if self.transcript.read_only or not turns:
            return
        try:
            HistoryStore.from_settings(self.settings).save(turns, persona=self.settings.persona.name,
                                                           profile=self.profile_loaded or "")
        except OSError as exc:
            self.notify("error", f"This conversation could not be kept in the history: {exc.strerror or exc}")

    def new_conversation(self) -> None:
        self.archive_conversation()
        self.req_new_conversation.emit()
        self.transcript.clear()
        self.panel.reset()
        self._latency_by_turn.clear()
        self.turns = TurnLog()

    def set_push_to_talk_pressed(self, pressed: bool) -> None:
        if pressed == self._ptt_down:
            return
        self._ptt_down = pressed
        self.req_ptt.emit(pressed)
        self._set_state(self.state)

    def eventFilter(self, obj: QObject, ev: QEvent) -> bool:  # noqa: N802
        t = ev.type()
        if t in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease) and self.act_ptt.isChecked():
            typing = isinstance(QApplication.focusWidget(), QLineEdit)    # a space typed in a text field
            if ev.key() == Qt.Key.Key_Space and not typing and isinstance(obj, QWidget) and obj.window() is self:
                if not ev.isAutoRepeat():
                    self._ptt_key(t == QEvent.Type.KeyPress)
                return True
        return False

    def _ptt_key(self, pressed: bool) -> None:
        """Space for push-to-talk. Key auto-repeat on some X servers arrives as release/press pairs that Qt does not
        mark as repeats: a release only counts when no press follows within ``PTT_RELEASE_DEBOUNCE_MS``."""
        if pressed:
            self._ptt_release.stop()          # the release just before was auto-repeat: the key is still held
            self.set_push_to_talk_pressed(True)
        else:
            self._ptt_release.start()

    def _ptt_released(self) -> None:
        self.set_push_to_talk_pressed(False)

    def focusOutEvent(self, ev) -> None:  # noqa: N802
        if self._ptt_down:   # never leave the mic open when the window loses focus mid-press
            self.set_push_to_talk_pressed(False)
        super().focusOutEvent(ev)

    def changeEvent(self, ev: QEvent) -> None:  # noqa: N802
        if ev.type() == QEvent.Type.ActivationChange and not self.isActiveWindow() and self._ptt_down:
            self.set_push_to_talk_pressed(False)
        if ev.type() in PALETTE_EVENTS and hasattr(self, "status_record"):
            self._update_record_label()       # the system switched between light and dark
            restyle_tree(self)
        super().changeEvent(ev)

    # ------------------------------------------------------------------------------------------ notices ----

    @Slot(str, str)
    def notify(self, level: str, text: str) -> None:
        self.notices.notify(level, text)

    # ------------------------------------------------------------------------------------------ dialogs ----

    def open_settings(self) -> None:
        from app.settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.settings, self)
        dlg.applied.connect(self.apply_settings)
        self._pause_listening_while(dlg)
        dlg.open()
        self._settings_dialog = dlg

    def _pause_listening_while(self, dlg: QWidget) -> None:
        """Parley does not listen (nor answer what the device test plays) while ``dlg`` is open: the microphone is
        muted for the engine and unmuted again when the dialog closes, unless the user had muted it."""
        if self.act_mute.isChecked() or not self.listening:
            return
        self.req_mute.emit(True)
        self.panel.set_state("muted", "Paused while Settings is open")
        self.statusBar().showMessage("Listening is paused while Settings is open", 0)

        def resume() -> None:
            if not self.act_mute.isChecked():
                self.req_mute.emit(False)
            self.statusBar().clearMessage()
            self._set_state(self.state)

        dlg.finished.connect(resume)

    def open_model_manager(self) -> None:
        from app.model_manager import ModelManagerDialog

        dlg = ModelManagerDialog(self.settings, self)
        dlg.use_folders.connect(self._use_model_folders)
        dlg.open()
        self._model_dialog = dlg

    def open_sessions(self) -> None:
        from app.session_browser import SessionBrowser

        dlg = getattr(self, "_sessions_dialog", None)
        if dlg is None or not dlg.isVisible():
            dlg = SessionBrowser(root=self.settings.recording.folder or None, parent=self)
            self._sessions_dialog = dlg
        dlg.show()
        dlg.raise_()
        dlg.activateWindow()

    def open_history(self) -> None:
        from app.history_dialog import HistoryDialog

        dlg = getattr(self, "_history_dialog", None)
        if dlg is None or not dlg.isVisible():
            dlg = HistoryDialog(self.settings, parent=self)
            self._history_dialog = dlg
        else:
            dlg.refresh()
        dlg.show()
        dlg.raise_()
        dlg.activateWindow()

    def open_doctor(self) -> None:
        from app.doctor_dialog import DoctorDialog

        dlg = DoctorDialog(self.settings, self)
        dlg.open()
        self._doctor_dialog = dlg

    def run_startup_checks(self, first_run: bool = False) -> None:
        """Check audio, weights and espeak-ng in the background (the window stays usable). A failure becomes a
        banner with what to do; on the first start it opens the setup check instead, and when everything passes
        the status bar only shows a quiet tick. The first start also shows the welcome card."""
        self._first_run = first_run
        if first_run:
            self.welcome.show()
        from app.tasks import BackgroundTask
        from core.doctor import run_checks

        settings = self.settings.copy()
        task = BackgroundTask(lambda _t: run_checks(settings, [], include=("audio", "weights", "espeak")),
                              "startup-check", self)
        task.done.connect(self._startup_checks_done)
        task.start()
        self._startup_task = task

    @Slot(object)
    def _startup_checks_done(self, checks: list) -> None:
        failing = [c for c in checks if c.status == "fail"]
        if not failing:
            self.statusBar().showMessage("✓ Setup check passed", 8000)
            return
        if getattr(self, "_first_run", False):
            from app.doctor_dialog import DoctorDialog

            dlg = DoctorDialog(self.settings, self, first_run=True)
            dlg.open()
            self._doctor_dialog = dlg
            return
        for c in failing:
            self.notify("error", f"{c.name}: {c.detail}. What to do: {c.fix}")

    def _welcome_read(self) -> None:
        self.settings.ui.first_run_done = True
        self._save()

    def _use_model_folders(self, changes: dict) -> None:
        from core.settings.schema import check_backbone_dir, check_freeze_omni_checkpoints

        new = self.settings.copy()
        problems: list[str] = []
        for key, value in changes.items():
            setattr(new.model, key, value)
            if key == "checkpoint_dir":
                problems += check_freeze_omni_checkpoints(value)
            elif key == "backbone_dir":
                problems += check_backbone_dir(value)
        problems += new.validate()
        if problems:
            self.notify("error", "Cannot use these folders: " + " ".join(problems))
            return
        self.apply_settings(new)

    def apply_settings(self, new: Settings) -> None:
        """Settings accepted by a dialog: persist them, apply live, reload the model when needed."""
        old = self.settings
        new = new.copy()
        new.ui = old.ui            # window state is owned here
        new.ui.push_to_talk = self.act_ptt.isChecked()
        self.settings = new
        self.transcript.set_persona(new.persona.name)
        self.panel.chart.seconds = new.ui.chart_seconds
        if new.recording.enabled != self.act_record.isChecked():
            self.act_record.setChecked(new.recording.enabled)
        self._save()
        if self.profile_loaded is not None or self.loading:
            if needs_reload(self.worker.active_settings, new):
                keeps = keeps_memory(self.worker.active_settings, new)
                estimate = self.settings.ui.load_seconds.get(new.model.profile)
                about = f" (about {estimate:.0f} s)" if estimate else ""
                self.notify("info", f"Reloading the voice model to apply your changes{about}. " + (
                    "The conversation is kept." if keeps else
                    "Another language model cannot continue this conversation: a new one starts."))
                if not keeps:
                    self.archive_conversation()
                    self.transcript.clear()
                    self.panel.reset()
                    self._latency_by_turn.clear()
                    self.turns = TurnLog()
            self.req_load.emit(new.copy())   # the worker reloads only when the model side changed

    # ------------------------------------------------------------------------------------------ persistence ----

    def _restore_geometry(self) -> None:
        geo = self.settings.ui.geometry
        restored = False
        if geo:
            try:
                restored = self.restoreGeometry(QByteArray.fromBase64(geo.encode("ascii")))
            except Exception:
                restored = False
        if not restored:
            self.resize(1100, 680)
        fit_window_to_screen(self)    # a geometry from a bigger (or unscaled) screen, or the default on a small one
        if self.settings.ui.splitter:
            try:
                self.splitter.restoreState(QByteArray.fromBase64(self.settings.ui.splitter.encode("ascii")))
            except Exception:
                log.debug("splitter state not restored", exc_info=True)

    def _capture_geometry(self) -> None:
        self.settings.ui.geometry = bytes(self.saveGeometry().toBase64()).decode("ascii")
        self.settings.ui.splitter = bytes(self.splitter.saveState().toBase64()).decode("ascii")

    def _save(self) -> None:
        if not self.persist:
            return
        try:
            save_settings(self.settings)
        except OSError as exc:
            self.notify("error", f"Cannot save the settings: {exc}")

    def showEvent(self, ev) -> None:  # noqa: N802
        super().showEvent(ev)
        if not getattr(self, "_fitted_on_show", False):
            self._fitted_on_show = True       # now the real frame (title bar) and screen are known
            fit_window_to_screen(self)

    def closeEvent(self, ev: QCloseEvent) -> None:  # noqa: N802
        """The window disappears at once; the engine shuts down behind it (``shut_down`` says when it is done)."""
        if not self._closing:
            self._closing = True
            self.archive_conversation()
            self._capture_geometry()
            self.settings.ui.first_run_done = True
            self._save()
            app = QApplication.instance()
            if app is not None:
                app.removeEventFilter(self)
            _keeper().keep(self.thread_, self.worker, self._worker_stopped)
            self.req_shutdown.emit()            # the worker closes the engine, then quits its thread
        super().closeEvent(ev)                  # accepted: Qt hides the window now

    def _worker_stopped(self) -> None:
        if self._gc_held:
            self._gc_held = False
            gcguard.release()
        self.shut_down.emit()

    def wait_shut_down(self, timeout_ms: int = 30_000) -> bool:
        """Block until the worker thread has ended (after :meth:`close`). False when it did not within
        ``timeout_ms``."""
        if not _wait_for_thread(self.thread_, timeout_ms):
            return False
        _keeper().reap()
        return True

    def shutdown_worker(self, timeout_ms: int = 30_000) -> bool:
        """Close the engine (in the worker thread) and stop the thread, blocking. Returns False when it did not
        stop."""
        if self.thread_.isRunning() and not self._closing:
            self.req_shutdown.emit()
        return self.wait_shut_down(timeout_ms)

    # ------------------------------------------------------------------------------------------ helpers ----

    def latency_values(self) -> dict[int, float]:
        return dict(self._latency_by_turn)
