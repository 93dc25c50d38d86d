"""The live conversation: the backend of a profile, AudioIO (devices, echo cancellation, the one VAD, levels), the
dialogue Engine on its one loop, and, when asked, a session recording. No Qt: the app's worker drives it, and the
tests drive it directly.

Threads: the caller (the app's worker thread) builds the stack and calls its control methods; the engine runs in
its own thread (:meth:`Engine.run`), because every Engine method must be called from the engine's thread. Control
methods therefore only *queue* commands with :meth:`Engine.call_soon` (stop speaking, push-to-talk release, new
conversation, recording on/off, live settings); the loop runs them between two steps, so a stop takes effect within
one speak step.

Input gating (mute, push-to-talk) closes the capture chain's gate: the chain hears silence (the VAD and the model
never get the gated speech) while the timeline and the echo logic stay continuous.

Latency: each chunk reaches the engine with its capture time on the session clock (AudioIO's ``time.monotonic()``
capture estimate, mapped through :meth:`WallClock.from_monotonic`), so "first audio after N ms" is measured from
when the user's speech really ended, not from when its chunk was processed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Callable

from core.audio.interfaces import AudioChunk
from core.compose.build import apply_lite_generation, apply_voice, build_backend, engine_config, vad_config
from core.compose.spec import ProfileSpec, spec_from_settings
from core.engine.backend import ProgressFn
from core.engine.clock import WallClock
from core.engine.engine import Engine, QueueChunkSource
from core.engine.sink import NullSink
from core.engine.events import ErrorEvent, Event, EventBus, InfoEvent, MeterLevels, Subscription, WarningEvent
from core.settings import Settings

log = logging.getLogger(__name__)

LEVELS_EVERY_S = 0.05


class LiveStack:
    """Backend + AudioIO + Engine for one profile. Construction loads the model (slow)."""

    def __init__(self, settings: Settings, spec: ProfileSpec | None = None,
                 progress: ProgressFn | None = None) -> None:
        self.settings = settings.copy()
        self.spec = spec or spec_from_settings(settings)
        self.profile = self.spec.profile
        self.clock = WallClock()
        self.bus = EventBus(self.clock)
        self.config = engine_config(settings)
        t0 = time.perf_counter()
        self.backend = build_backend(self.spec, self.config, progress)
        self.load_s = time.perf_counter() - t0
        where = self.spec.device if self.profile == "freeze-omni" else "cpu"
        self.description = f"{self.backend.name} on {where}" + (
            f" ({settings.model.precision})" if self.profile == "freeze-omni" else "")
        self.engine = Engine(self.backend, NullSink(), bus=self.bus, config=self.config,
                             system_prompt=self.spec.system_prompt)
        self._ui_subscribers: list[Callable[[Event], None]] = []
        self.audio: Any = None
        self.recorder: Any = None
        self.tap: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._source: QueueChunkSource | None = None
        self.muted = False
        self.ptt_mode = False
        self.ptt_down = False
        self.chunks_in = 0
        self._last_levels = 0.0
        log.info("%s loaded in %.1f s", self.description, self.load_s)

    # -- events -------------------------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Event], None]) -> "_UiSubscription":
        """Every bus event, plus the meter levels (UI-only, never recorded)."""
        self._ui_subscribers.append(callback)
        return _UiSubscription(self, self.bus.subscribe(callback), callback)

    def _ui_event(self, event: Event) -> None:
        """An event for the UI only (meter levels): not on the bus, so session recordings stay reproducible."""
        for cb in list(self._ui_subscribers):
            try:
                cb(event)
            except Exception:
                log.exception("UI subscriber failed")

    def _on_audio_event(self, aev: Any) -> None:
        if aev.type in ("warning", "error"):
            cls = WarningEvent if aev.type == "warning" else ErrorEvent
            self.bus.emit(cls(turn=self.engine.turn, source="audio", code=aev.code, message=aev.message or aev.code))
        elif aev.code == "reopened":   # audio back after a device loss (the user was told it was gone)
            self.bus.emit(InfoEvent(turn=self.engine.turn, notify=True, kind="audio_back", source="audio",
                                    message=aev.message))
        elif aev.code == "ready_sound" or (aev.code == "first_input" and not self.settings.audio.ready_sound):
            # The microphone delivers and the echo cancellers have heard the room: the window may say
            # "Listening" once the ready sound (``seconds``) has played. UI only: a replay has no such moment.
            self._ui_event(InfoEvent(turn=self.engine.turn, kind="audio_ready", source="audio",
                                     message=aev.message, seconds=float(aev.data.get("seconds") or 0.0)))

    # -- listening ----------------------------------------------------------------------------------------------

    def start_listening(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        from core.audio.aec import AecConfig
        from core.audio.audio_io import AudioConfig, AudioIO
        from core.audio.vad import EchoAwareVad

        s = self.settings
        cfg = AudioConfig(input_device=s.audio.input_device or None, output_device=s.audio.output_device or None,
                          aec=AecConfig(echo_cancellation=s.audio.aec, noise_suppression=s.audio.noise_suppression),
                          ready_sound=s.audio.ready_sound)
        audio = AudioIO(cfg, on_chunk=self._on_chunk, vad=EchoAwareVad(vad_config(s)))
        audio.chain.on_onset = self.engine.hold_for_onset   # the answer stops at the onset, not at its chunk
        self._source = QueueChunkSource(restart_vad=audio.restart_vad)
        audio.events.subscribe(self._on_audio_event)
        audio.set_input_gate(self._gate_closed())
        audio.start()            # raises AudioDeviceError with a readable message when no device opens
        self.audio = audio
        self.engine.sink = audio.player if self.tap is None else self.tap.wrap_sink(audio.player)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="parley-engine", daemon=True)
        self._thread.start()

    def stop_listening(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            if self._thread.is_alive():
                log.warning("the engine thread is still in a model step; it will stop after it")
            self._thread = None
        if self._source is not None:
            self._source.close()
        if self.audio is not None:
            try:
                self.audio.stop()
            finally:
                self.audio = None

    def is_listening(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _gate_closed(self) -> bool:
        return self.muted or (self.ptt_mode and not self.ptt_down)

    def _on_chunk(self, chunk: AudioChunk) -> None:
        """Audio worker thread: record, hand to the engine with its capture time on the session clock."""
        tap = self.tap
        if tap is not None:
            try:
                tap.on_chunk(chunk, muted=self._gate_closed())
            except Exception:
                log.exception("recording a chunk failed")
        self.chunks_in += 1
        if chunk.t_start is not None:
            chunk = dataclasses.replace(chunk, t_start=self.clock.from_monotonic(chunk.t_start))
        if self._source is not None:
            self._source.push(chunk)

    def _run(self) -> None:
        eng = self.engine
        try:
            eng.run(self._source, self._stop, idle=self._meters)
        except Exception as exc:
            log.exception("engine loop crashed")
            self.bus.emit(ErrorEvent(turn=eng.turn, where="engine", kind="crash",
                                     message=f"{type(exc).__name__}: {exc}"))
        finally:
            try:
                eng.close(flush=True)      # stop listening: no answer keeps playing
            except Exception:
                log.exception("closing the engine failed")

    def _meters(self) -> None:
        now = time.monotonic()
        audio = self.audio
        if audio is None or now - self._last_levels < LEVELS_EVERY_S:
            return
        self._last_levels = now
        lv = audio.levels()
        self._ui_event(MeterLevels(t=self.clock.now(), turn=self.engine.turn, mic_db=lv.mic_rms_db,
                                   clean_db=lv.clean_rms_db, out_db=lv.output_rms_db, vad=lv.speech_prob,
                                   muted=self.muted))

    def _command(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` in the engine thread, or right here when the engine thread is not running."""
        if self.is_listening():
            self.engine.call_soon(fn)
        else:
            fn()

    # -- controls -----------------------------------------------------------------------------------------------

    def set_muted(self, muted: bool) -> None:
        self.muted = bool(muted)
        self._apply_gate()

    def _apply_gate(self) -> None:
        if self.audio is not None:
            self.audio.set_input_gate(self._gate_closed())

    def stop_speaking(self) -> None:
        self._command(lambda: self.engine.stop_reply("user"))

    def set_push_to_talk(self, enabled: bool) -> None:
        self.ptt_mode = bool(enabled)
        self.ptt_down = False
        self._apply_gate()

    def push_to_talk(self, pressed: bool) -> None:
        """The key went down (the answer stops, the microphone opens, the turn stays open however long the user
        pauses) or up (the microphone closes, the turn gets its final decision). Repeated states are ignored."""
        if pressed and not self.ptt_down:
            self.ptt_down = True
            self._apply_gate()
            self._command(lambda: self.engine.set_push_to_talk(True))
        elif not pressed and self.ptt_down:
            self.ptt_down = False
            self._apply_gate()
            self._command(lambda: self.engine.set_push_to_talk(False))

    def submit_text(self, text: str) -> None:
        """A typed message: a user turn answered by voice. Before listening starts it waits for the engine's loop
        (the answer needs the loop to be spoken)."""
        self.engine.call_soon(lambda: self.engine.submit_text(text))

    def history(self) -> list[dict[str, str]]:
        """The conversation so far as text (user and assistant turns, the assistant's as heard)."""
        return [dict(m) for m in self.engine.history]

    def restore_history(self, history: list[dict[str, str]]) -> None:
        """Carry a conversation over from an earlier stack of the same language model (after a reload)."""
        self._command(lambda: self.engine.restore_history(history))

    def new_conversation(self) -> None:
        self._command(self.engine.reset_conversation)

    def set_recording(self, enabled: bool, folder: str | None = None) -> None:
        """Record the session (``folder``: exactly there; default: a new folder under the settings' recording
        folder) or stop recording it."""
        if enabled and self.recorder is None:
            from core.compose.build import session_settings
            from core.session.livetap import LiveRecording
            from core.session.recorder import SessionRecorder

            meta_settings = dict(self.settings.to_dict())
            meta_settings.update(session_settings(self.spec, self.config))
            rec_settings = self.settings.recording
            rec = SessionRecorder(folder, root=rec_settings.folder or None, retention_days=rec_settings.retention_days,
                                  profile=self.profile, mode="live", settings=meta_settings)
            if not rec.start():
                raise RuntimeError(f"cannot record the session: {rec.error}")
            rec.attach(self.bus)
            self.recorder = rec
            self.tap = LiveRecording(rec, clock=self.clock,
                                     reference_lead_ms=self.audio.config.reference_lead_ms if self.audio else None)
            if self.audio is not None:
                sink = self.tap.wrap_sink(self.audio.player)
                self._command(lambda: setattr(self.engine, "sink", sink))
            self.bus.emit(InfoEvent(turn=self.engine.turn, notify=True, source="session", kind="recording_started",
                                    path=str(rec.path), message=f"Recording this session to {rec.path}"))
        elif not enabled and self.recorder is not None:
            rec, self.recorder, self.tap = self.recorder, None, None
            if self.audio is not None:
                player = self.audio.player
                self._command(lambda: setattr(self.engine, "sink", player))
            rec.close()
            self.bus.emit(InfoEvent(turn=self.engine.turn, source="session", kind="recording_saved",
                                    path=str(rec.path), message=f"Saved to {rec.path}"))

    def apply_settings(self, settings: Settings) -> list[str]:
        """Apply what can change live; return what waits for the next conversation."""
        old, self.settings = self.settings, settings.copy()
        new_spec = spec_from_settings(settings)
        pending: list[str] = []
        if self.audio is not None and (old.audio.aec, old.audio.noise_suppression) != (
                settings.audio.aec, settings.audio.noise_suppression):
            from core.audio.aec import AecConfig

            self.audio.set_aec(AecConfig(echo_cancellation=settings.audio.aec,
                                         noise_suppression=settings.audio.noise_suppression))
        if self.audio is not None:
            self.audio.config.ready_sound = settings.audio.ready_sound   # heard at the next start or re-open
        new_cfg = engine_config(settings)
        vc = vad_config(settings)

        def engine_side() -> None:
            eng = self.engine
            eng.config.silence_timeout_s = new_cfg.silence_timeout_s
            eng.config.barge_in_min_voiced_s = new_cfg.barge_in_min_voiced_s
            if self.audio is not None:
                cfg = self.audio.vad.config
                for k in ("threshold", "speaking_threshold", "offset_threshold", "min_speech_ms"):
                    setattr(cfg, k, getattr(vc, k))
            self._apply_generation(new_spec)

        self._command(engine_side)
        if old.persona.system_prompt != settings.persona.system_prompt:
            prompt = settings.persona.system_prompt

            def persona() -> None:
                self.engine.system_prompt = prompt
                conv = self.engine.conv
                if conv is None or not self.backend.set_system_prompt(conv, prompt):
                    self.bus.emit(InfoEvent(turn=self.engine.turn, notify=True, kind="persona_pending",
                                            message="The new persona applies from the next conversation."))
                else:
                    self.engine.set_persona(prompt)

            self._command(persona)
        if (old.audio.input_device, old.audio.output_device) != (settings.audio.input_device,
                                                                 settings.audio.output_device):
            if self.is_listening():
                self.stop_listening()
                self.start_listening()
        if self.profile == "lite" and self.spec.voice_speed != new_spec.voice_speed:
            speed = new_spec.voice_speed
            self._command(lambda: self.backend.set_voice_speed(speed))
        if (self.spec.voice, self.spec.voice_tokens) != (new_spec.voice, new_spec.voice_tokens):
            def voice() -> None:
                problem = apply_voice(self.backend, new_spec)
                if problem:
                    self.bus.emit(WarningEvent(turn=self.engine.turn, source="settings", code="voice",
                                               message=problem))

            self._command(voice)
        self.spec = new_spec
        return pending

    def _apply_generation(self, spec: ProfileSpec) -> None:
        """Sampling and the end-of-turn rule of a running Lite backend (engine thread)."""
        if self.profile == "lite":
            apply_lite_generation(self.backend.settings, spec)

    def close(self) -> None:
        try:
            self.stop_listening()
        finally:
            if self.recorder is not None:
                self.recorder.close()
                self.recorder = None
            backend, self.backend = self.backend, None
            if backend is not None:
                backend.close()


class _UiSubscription:
    def __init__(self, stack: LiveStack, sub: Subscription, callback: Callable[[Event], None]) -> None:
        self._stack = stack
        self._sub = sub
        self._callback = callback

    def close(self) -> None:
        self._sub.close()
        if self._callback in self._stack._ui_subscribers:
            self._stack._ui_subscribers.remove(self._callback)


def build_stack(settings: Settings, progress: ProgressFn | None = None) -> LiveStack:
    return LiveStack(settings, progress=progress)
