"""A scripted stand-in for the engine stack, so window/worker logic is tested without audio or models."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

from core.engine.events import Event
from core.settings import Settings


class _Sub:
    def __init__(self, owner: "FakeStack", cb: Callable[[Any], None]) -> None:
        self.owner, self.cb = owner, cb

    def close(self) -> None:
        if self.cb in self.owner.subscribers:
            self.owner.subscribers.remove(self.cb)


class FakeStack:
    """Records every call; ``emit`` publishes events like the engine's bus (from any thread)."""

    instances: list["FakeStack"] = []

    def __init__(self, settings: Settings, fail_on: Callable[[Settings], bool] | None = None,
                 raise_on: set[str] | None = None) -> None:
        if fail_on is not None and fail_on(settings):
            raise RuntimeError("simulated load failure: weights do not match the model")
        self.settings = settings
        self.profile = settings.model.profile
        self.description = f"{settings.model.profile} (fake)"
        self.subscribers: list[Callable[[Any], None]] = []
        self.calls: list[tuple] = []
        self.closed = False
        self.raise_on = raise_on or set()
        self.t0 = time.monotonic()
        self.turn = 0
        FakeStack.instances.append(self)

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.raise_on:
            raise RuntimeError(f"simulated {name} failure")

    def emit(self, type: str, turn: int | None = None, **data: Any) -> Event:
        ev = Event(type, time.monotonic() - self.t0, self.turn if turn is None else turn, data)
        for cb in list(self.subscribers):
            cb(ev)
        return ev

    def emit_from_thread(self, events: list[tuple[str, dict]]) -> threading.Thread:
        def run() -> None:
            for type_, data in events:
                self.emit(type_, **data)
                time.sleep(0.001)

        th = threading.Thread(target=run, daemon=True)
        th.start()
        return th

    # -- the EngineStack protocol --
    def subscribe(self, callback):
        self.subscribers.append(callback)
        return _Sub(self, callback)

    def start_listening(self) -> None:
        self._call("start_listening")
        self.emit("state", state="listening")

    def stop_listening(self) -> None:
        self._call("stop_listening")
        self.emit("state", state="idle")

    def set_muted(self, muted: bool) -> None:
        self._call("set_muted", muted)

    def stop_speaking(self) -> None:
        self._call("stop_speaking")

    def set_push_to_talk(self, enabled: bool) -> None:
        self._call("set_push_to_talk", enabled)

    def push_to_talk(self, pressed: bool) -> None:
        self._call("push_to_talk", pressed)

    def new_conversation(self) -> None:
        self._call("new_conversation")

    def set_recording(self, enabled: bool) -> None:
        self._call("set_recording", enabled)

    def apply_settings(self, settings: Settings) -> list[str]:
        self._call("apply_settings", settings)
        self.settings = settings
        return []

    def close(self) -> None:
        self._call("close")
        self.closed = True
