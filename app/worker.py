"""The worker: a QObject living in its own QThread that owns the engine stack (backend + AudioIO + Engine).

The GUI thread never touches a model or an audio stream. It talks to the worker through queued signals (the
worker's slots run in the worker thread), and the worker talks back with signals:

* engine events: the engine's :class:`~core.engine.events.EventBus` calls :meth:`EngineWorker._on_event` in the
  engine's thread; events are appended to a bounded buffer and ``events_ready`` is emitted only when the buffer goes
  from empty to non-empty, so a burst of events costs the GUI one wake-up; the GUI takes the whole batch with
  :meth:`take_events` (thread-safe).
* ``notice(level, text)``: problems as non-blocking notifications. Every slot catches its own exceptions: a failure
  in the worker becomes a notice, never a crash.
* ``profile_ready(info)`` / ``profile_failed(message)`` / ``loading(bool, text)`` / ``listening(bool)``.

Swapping profile, backbone or voice (:meth:`load`): the new settings are checked first (folders, files, GPU fit) and
refused without touching the running stack if they cannot work; otherwise the old stack is closed (its memory freed)
before the new one is built; if building fails, the previous working settings are loaded again and the notice
says why.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any, Callable, Protocol

from PySide6.QtCore import QObject, Signal, Slot

from core.engine.events import Event, Progress
from core.queues import DropOldestQueue
from core.runtime import collect_garbage, free_cuda_cache
from core.settings import Settings

log = logging.getLogger(__name__)

MAX_PENDING_EVENTS = 20_000


class EngineStack(Protocol):
    """What the worker needs from the engine side (:class:`core.compose.live.LiveStack` is the real one)."""

    profile: str
    description: str

    def subscribe(self, callback: Callable[[Event], None]) -> Any: ...
    def start_listening(self) -> None: ...
    def stop_listening(self) -> None: ...
    def set_muted(self, muted: bool) -> None: ...
    def stop_speaking(self) -> None: ...
    def set_push_to_talk(self, enabled: bool) -> None: ...
    def push_to_talk(self, pressed: bool) -> None: ...
    def new_conversation(self) -> None: ...
    def submit_text(self, text: str) -> None: ...
    def history(self) -> list[dict[str, str]]: ...
    def restore_history(self, history: list[dict[str, str]]) -> None: ...
    def set_recording(self, enabled: bool) -> None: ...
    def apply_settings(self, settings: Settings) -> list[str]: ...
    def close(self) -> None: ...


# factory(settings, progress) -> stack; ``progress(step, fraction, message)`` hears of each loading step
StackFactory = Callable[[Settings, Callable[[str, "float | None", str], None]], EngineStack]


def needs_reload(old: Settings | None, new: Settings) -> bool:
    """True when ``new`` changes what is loaded (profile, weights, precision, device). A voice, its speed, the
    persona, sampling and audio devices change on the running stack (``LiveStack.apply_settings``)."""
    if old is None:
        return True
    a, b = old.model, new.model
    if a.profile != b.profile or a.device != b.device or a.precision != b.precision:
        return True
    if b.profile == "freeze-omni":
        if (a.checkpoint_dir, a.backbone_dir) != (b.checkpoint_dir, b.backbone_dir):
            return True
    else:
        if (a.lite_backbone, a.lite_asr, a.lite_device) != (b.lite_backbone, b.lite_asr, b.lite_device):
            return True
    return False


def keeps_memory(old: Settings | None, new: Settings) -> bool:
    """A reload from ``old`` to ``new`` can carry the conversation over (as text): the language model is the same."""
    if old is None or old.model.profile != new.model.profile:
        return False
    if new.model.profile == "lite":
        return old.model.lite_backbone == new.model.lite_backbone
    return old.model.backbone_dir == new.model.backbone_dir


def preflight(settings: Settings) -> list[str]:
    """Problems that make a profile certainly fail to load, found without loading anything."""
    from core.settings.models import fit_message, gpu_info, lite_inventory

    problems = settings.validate(check_paths=True)
    m = settings.model
    if m.profile == "lite":
        problems += lite_inventory(m).problems
    elif m.device.startswith("cuda"):
        fits, msg = fit_message(m.profile, m.precision, m.device, gpu_info())
        if fits is False:
            problems.append(f"Freeze-Omni {m.precision} {msg}")
    return problems


class EngineWorker(QObject):
    events_ready = Signal()
    notice = Signal(str, str)            # level (info|warning|error), text
    loading = Signal(bool, str)          # busy?, what
    profile_ready = Signal(dict)         # {"profile", "description", "settings": Settings}
    profile_failed = Signal(str)
    listening = Signal(bool)
    recording = Signal(bool)             # whether the session is being recorded (after a switch, or a failure)
    stopped = Signal()

    def __init__(self, stack_factory: StackFactory | None = None) -> None:
        super().__init__()
        self._factory = stack_factory
        self.stack: EngineStack | None = None
        self.active_settings: Settings | None = None   # settings of the running stack (last working)
        self._pending: DropOldestQueue[Event] = DropOldestQueue(MAX_PENDING_EVENTS)
        self._subscription: Any = None
        self._listening = False

    # -- events from the engine (any thread) -------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if self._pending.put(event):
            self.events_ready.emit()     # one wake-up per batch: only when the buffer was empty

    def take_events(self) -> list[Event]:
        return self._pending.drain()

    @property
    def dropped_events(self) -> int:
        return self._pending.dropped

    # -- helpers -----------------------------------------------------------------------------------------------

    def _factory_or_default(self) -> StackFactory:
        if self._factory is None:
            from core.compose.live import build_stack

            self._factory = build_stack
        return self._factory

    def _guard(self, what: str, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """Run ``fn``; on an exception log it, tell the user, and return (False, None)."""
        try:
            return True, fn()
        except Exception as exc:
            log.error("%s failed: %s\n%s", what, exc, traceback.format_exc())
            self.notice.emit("error", f"{what[0].upper()}{what[1:]} failed: {exc}")
            return False, None

    def _close_stack(self) -> None:
        stack, self.stack = self.stack, None
        if self._subscription is not None:
            try:
                self._subscription.close()
            except Exception:
                log.exception("unsubscribe failed")
            self._subscription = None
        if stack is not None:
            try:
                stack.close()
            except Exception as exc:
                log.exception("closing the engine failed")
                self.notice.emit("warning", f"closing the previous model failed: {exc}")
        del stack
        collect_garbage()    # in the GUI thread while a window is open (app/gcguard.py)
        free_cuda_cache()
        if self._listening:
            self._listening = False
            self.listening.emit(False)

    def _build(self, settings: Settings) -> EngineStack:
        profile = settings.model.profile
        started = time.monotonic()

        def progress(step: str, fraction: float | None, message: str) -> None:
            self._on_event(Progress(t=0.0, step=f"{profile}: {step}", fraction=fraction, message=message))

        self._on_event(Progress(t=0.0, step=f"{profile}: start", fraction=0.0,
                                message=f"Loading the {profile} voice model"))
        stack = self._factory_or_default()(settings, progress)
        self._on_event(Progress(t=0.0, step=f"{profile}: ready", fraction=1.0, done=True,
                                message=f"Loaded in {time.monotonic() - started:.0f} s"))
        self._subscription = stack.subscribe(self._on_event)
        return stack

    # -- slots (worker thread) ---------------------------------------------------------------------------------

    @Slot(object)
    def load(self, settings: Settings) -> None:
        """Load (or swap to) the profile of ``settings``; see the module docstring for the failure rules."""
        settings = settings.copy()
        if self.stack is not None and not needs_reload(self.active_settings, settings):
            self.apply(settings)
            return
        ok, problems = self._guard("checking the model settings", lambda: preflight(settings))
        if not ok:
            return
        if problems:
            msg = "; ".join(problems)
            keep = (f" Still using {self.active_settings.model.profile}."
                    if self.stack is not None and self.active_settings is not None else "")
            self.profile_failed.emit(f"cannot load the {settings.model.profile} profile: {msg}{keep}")
            return
        previous = self.active_settings
        was_listening = self._listening
        memory = self.stack.history() if self.stack is not None and keeps_memory(previous, settings) else []
        self.loading.emit(True, f"Loading the {settings.model.profile} profile…")
        try:
            self._close_stack()          # free the old model's memory before loading the new one
            try:
                self.stack = self._build(settings)
            except Exception as exc:
                log.error("loading %s failed:\n%s", settings.model.profile, traceback.format_exc())
                reason = f"loading the {settings.model.profile} profile failed: {exc}"
                self.stack = None
                if previous is not None:
                    try:
                        self.stack = self._build(previous)
                        self.active_settings = previous
                        reason += f". Went back to the previous {previous.model.profile} profile."
                        self.profile_ready.emit(self._info(previous))
                        if was_listening:
                            self.start_listening()
                    except Exception as exc2:
                        log.error("reloading the previous profile failed:\n%s", traceback.format_exc())
                        reason += f". The previous profile could not be reloaded either: {exc2}"
                        self.active_settings = None
                self.profile_failed.emit(reason)
                return
            self.active_settings = settings
            if memory:
                self.stack.restore_history(memory)     # the same language model: the conversation goes on
            self.profile_ready.emit(self._info(settings))
            if was_listening:
                self.start_listening()
        finally:
            self.loading.emit(False, "")

    def _info(self, settings: Settings) -> dict:
        stack = self.stack
        return {"profile": settings.model.profile, "settings": settings,
                "description": getattr(stack, "description", settings.model.profile)}

    @Slot(object)
    def apply(self, settings: Settings) -> None:
        """Apply settings that do not need a reload (thresholds, persona, sampling...) to the running stack."""
        if self.stack is None:
            return
        if needs_reload(self.active_settings, settings):
            self.load(settings)
            return
        ok, pending = self._guard("applying the settings", lambda: self.stack.apply_settings(settings.copy()))
        if not ok:
            return
        self.active_settings = settings.copy()
        if pending:
            self.notice.emit("info", "Takes effect from the next conversation: " + ", ".join(pending))

    @Slot()
    def start_listening(self) -> None:
        if self.stack is None:
            self.notice.emit("warning", "No model is loaded yet: cannot listen.")
            self.listening.emit(False)
            return
        ok, _ = self._guard("starting the microphone", self.stack.start_listening)
        self._listening = ok
        self.listening.emit(ok)

    @Slot()
    def stop_listening(self) -> None:
        if self.stack is not None:
            self._guard("stopping the microphone", self.stack.stop_listening)
        self._listening = False
        self.listening.emit(False)

    @Slot(bool)
    def set_muted(self, muted: bool) -> None:
        if self.stack is not None:
            self._guard("muting the microphone", lambda: self.stack.set_muted(muted))

    @Slot()
    def stop_speaking(self) -> None:
        if self.stack is not None:
            self._guard("stopping the answer", self.stack.stop_speaking)

    @Slot(bool)
    def set_push_to_talk(self, enabled: bool) -> None:
        if self.stack is not None:
            self._guard("switching push-to-talk", lambda: self.stack.set_push_to_talk(enabled))

    @Slot(bool)
    def push_to_talk(self, pressed: bool) -> None:
        if self.stack is not None:
            self._guard("push-to-talk", lambda: self.stack.push_to_talk(pressed))

    @Slot(str)
    def submit_text(self, text: str) -> None:
        if self.stack is None:
            self.notice.emit("warning", "No voice model is loaded yet: your message could not be sent.")
            return
        self._guard("sending your message", lambda: self.stack.submit_text(text))

    @Slot()
    def new_conversation(self) -> None:
        if self.stack is not None:
            self._guard("starting a new conversation", self.stack.new_conversation)

    @Slot(bool)
    def set_recording(self, enabled: bool) -> None:
        if self.stack is not None:
            ok, _ = self._guard("switching session recording", lambda: self.stack.set_recording(enabled))
            self.recording.emit(getattr(self.stack, "recorder", None) is not None if ok else False)

    @Slot()
    def shutdown(self) -> None:
        self._close_stack()
        self.stopped.emit()
