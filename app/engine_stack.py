"""The live engine stack the app's worker owns: the backend of a profile, AudioIO (devices, echo cancellation,
VAD, levels), the dialogue Engine and, when asked, a SessionRecorder.

Threads: the worker (Qt) thread builds the stack and calls its control methods; the engine runs in its own thread
(:meth:`LiveStack._run`, a copy of ``Engine.run``'s loop plus a command queue), because every ``Engine`` method
must be called from the engine's thread. Control methods therefore only *queue* commands (stop speaking, push-to-
talk release, new conversation, recording on/off, live settings); the loop runs them between two steps, so a stop
takes effect within one speak step.

Input gating (mute, push-to-talk) replaces the microphone chunks by silence rather than dropping them, so the
engine's timeline and echo logic stay continuous.

This is app code (a worker-thread object) but holds no Qt: the worker forwards its events as Qt signals.
"""

from __future__ import annotations

import argparse
import logging
import queue
import threading
import time
from typing import Any, Callable

import numpy as np

from core.engine.backend import BackendError
from core.settings import Settings

log = logging.getLogger(__name__)

LEVELS_EVERY_S = 0.05
_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class StackUnavailable(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------------------
# settings -> engine/backend/audio configuration


def engine_config(settings: Settings):
    from core.engine.config import EngineConfig
    from core.engine.profiles import settings_from_env

    config, _ = settings_from_env()
    if not isinstance(config, EngineConfig):
        config = EngineConfig()
    config.silence_timeout_s = max(config.silence_timeout_s, settings.vad.end_of_turn_silence_ms / 1000.0 + 0.3)
    config.barge_in_min_voiced_s = max(0.1, settings.vad.min_speech_ms / 1000.0)
    return config


def vad_config(settings: Settings):
    from core.audio.vad import VadConfig

    v = settings.vad
    return VadConfig(threshold=v.onset_threshold, speaking_threshold=v.barge_in_threshold,
                     offset_threshold=v.offset_threshold, min_speech_ms=float(min(v.min_speech_ms, 300)))


def lite_options(settings: Settings) -> dict[str, Any]:
    from core.model.lite.llm import SamplingConfig
    from core.model.lite.turn import TurnConfig

    s, v = settings.sampling, settings.vad
    opts: dict[str, Any] = {
        "system_prompt": settings.persona.system_prompt,
        "sampling": SamplingConfig(greedy=s.greedy, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                   repetition_penalty=s.repetition_penalty,
                                   max_new_tokens=min(s.max_new_tokens, 256)),
        "turn": TurnConfig(vad_on=v.onset_threshold, vad_off=v.offset_threshold,
                           silence_ms=v.end_of_turn_silence_ms, min_speech_ms=v.min_speech_ms),
    }
    if settings.model.lite_backbone:
        opts["llm"] = settings.model.lite_backbone
    if settings.model.lite_voice:
        opts["voice"] = settings.model.lite_voice
    return opts


def build_backend_for(settings: Settings, config) -> Any:
    """Load the backend of ``settings.model.profile`` (slow: runs in the worker thread)."""
    from core.engine.profiles import build_backend, settings_from_env

    _, env_opts = settings_from_env()
    m = settings.model
    if m.profile == "lite":
        opts = lite_options(settings)
        opts.update(env_opts)
        return build_backend("lite", argparse.Namespace(seed=0), config, opts)
    from core.settings.schema import resolve_checkpoint_dir

    cli = argparse.Namespace(checkpoint=str(resolve_checkpoint_dir(m.checkpoint_dir)), llm=m.backbone_dir,
                             device=m.device, dtype=_DTYPES.get(m.precision, "bfloat16"), seed=0,
                             greedy=settings.sampling.greedy)
    opts = {"max_new_tokens": settings.sampling.max_new_tokens, "decoder_top_k": settings.sampling.decoder_top_k}
    if m.precision in ("8-bit", "4-bit"):
        opts["quantize_bits"] = 8 if m.precision == "8-bit" else 4
    opts.update(env_opts)
    return build_backend("freeze-omni", cli, config, opts)


def set_freeze_omni_voice(backend: Any, settings: Settings) -> str | None:
    """Point the Freeze-Omni backend at the chosen voice (codec global tokens). Returns a problem, or None."""
    import dataclasses

    m = settings.model
    tokens = None if m.voice == "release" else m.voices.get(m.voice)
    current = getattr(backend, "settings", None)
    if current is None or not hasattr(current, "global_tokens"):
        return "this Freeze-Omni backend has no voice setting"
    codec = getattr(getattr(backend, "pipeline", None), "codec", None)
    n = getattr(getattr(codec, "config", None), "global_code_num", None)
    if tokens is not None and n is not None and len(tokens) != n:
        return f"voice {m.voice!r} has {len(tokens)} global tokens, this codec needs {n}; using the release voice"
    backend.settings = dataclasses.replace(current, global_tokens=list(tokens) if tokens else None)
    return None


# ---------------------------------------------------------------------------------------------------------------


class LiveStack:
    """Backend + AudioIO + Engine for one profile. Construction loads the model (slow)."""

    def __init__(self, settings: Settings) -> None:
        from core.engine.clock import WallClock
        from core.engine.events import EventBus

        self.settings = settings.copy()
        self.profile = settings.model.profile
        self.bus = EventBus(WallClock())
        self.config = engine_config(settings)
        t0 = time.perf_counter()
        self.backend = build_backend_for(settings, self.config)
        self.load_s = time.perf_counter() - t0
        if self.profile == "freeze-omni":
            problem = set_freeze_omni_voice(self.backend, settings)
            if problem:
                log.warning("voice: %s", problem)
        name = getattr(self.backend, "name", self.profile)
        where = settings.model.device if self.profile == "freeze-omni" else "cpu"
        self.description = f"{name} on {where}" + (f" ({settings.model.precision})"
                                                    if self.profile == "freeze-omni" else "")
        self._ui_subscribers: list[Callable[[Any], None]] = []
        self.audio = None
        self.engine = None
        self.recorder = None
        self.tap = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._source = None
        self.muted = False
        self.ptt_mode = False
        self.ptt_down = False
        self._zeros = None
        self.chunks_in = 0
        log.info("%s loaded in %.1f s", self.description, self.load_s)

    # -- events -------------------------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[Any], None]):
        sub = self.bus.subscribe(callback)
        self._ui_subscribers.append(callback)
        stack = self

        class _Handle:
            def close(self_inner) -> None:
                sub.close()
                if callback in stack._ui_subscribers:
                    stack._ui_subscribers.remove(callback)

        return _Handle()

    def _ui_event(self, type_: str, **data: Any) -> None:
        """An event for the UI only (meter levels): not on the bus, so session recordings stay reproducible."""
        from core.engine.events import Event

        ev = Event(type_, self.bus.now(), getattr(self.engine, "turn", 0), data)
        for cb in list(self._ui_subscribers):
            try:
                cb(ev)
            except Exception:
                log.exception("UI subscriber failed")

    def _on_audio_event(self, aev: Any) -> None:
        if aev.type in ("warning", "error"):
            self.bus.emit(aev.type, getattr(self.engine, "turn", 0), source="audio", code=aev.code,
                          message=aev.message or aev.code)

    # -- listening ----------------------------------------------------------------------------------------------

    def start_listening(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        from core.audio.aec import AecConfig
        from core.audio.audio_io import AudioConfig, AudioIO
        from core.audio.vad import EchoAwareVad
        from core.engine.engine import QueueChunkSource

        s = self.settings
        self._source = QueueChunkSource()
        cfg = AudioConfig(input_device=s.audio.input_device or None, output_device=s.audio.output_device or None,
                          aec=AecConfig(echo_cancellation=s.audio.aec, noise_suppression=s.audio.noise_suppression))
        audio = AudioIO(cfg, on_chunk=self._on_chunk, vad=EchoAwareVad(vad_config(s)))
        audio.events.add_listener(self._on_audio_event) if hasattr(audio.events, "add_listener") else None
        audio.start()            # raises AudioDeviceError with a readable message when no device opens
        self.audio = audio
        if self.engine is None:
            from core.engine.engine import Engine

            self.engine = Engine(self.backend, EchoAwareVad(vad_config(s)), audio.player, bus=self.bus,
                                 config=self.config, system_prompt=s.persona.system_prompt)
        else:
            self.engine.sink = audio.player if self.tap is None else self.tap.wrap_sink(audio.player)
        if self.tap is not None:
            self.engine.sink = self.tap.wrap_sink(audio.player)
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

    def _on_chunk(self, chunk: Any) -> None:
        """Audio worker thread: record, gate (mute / push-to-talk), hand to the engine."""
        tap = self.tap
        if tap is not None:
            try:
                tap.on_chunk(chunk)
            except Exception:
                log.exception("recording a chunk failed")
        samples = chunk.samples_16k
        if self.muted or (self.ptt_mode and not self.ptt_down):
            if self._zeros is None or len(self._zeros) != len(samples):
                self._zeros = np.zeros(len(samples), dtype=np.float32)
            samples = self._zeros
        self.chunks_in += 1
        self._source.push(samples, chunk.reference_16k)

    def _run(self) -> None:
        eng = self.engine
        try:
            eng.resume()
            last_levels = 0.0
            while not self._stop.is_set():
                self._run_commands()
                eng.tick()
                chunk = self._source.read(0.0)
                if chunk is None and not eng.wants_speak_step():
                    chunk = self._source.read(0.01)
                if chunk is not None:
                    eng.process_chunk(chunk.samples, chunk.reference)
                elif eng.wants_speak_step():
                    eng.speak_step()
                now = time.monotonic()
                if now - last_levels >= LEVELS_EVERY_S and self.audio is not None:
                    last_levels = now
                    lv = self.audio.levels()
                    self._ui_event("levels", mic_db=lv.mic_rms_db, clean_db=lv.clean_rms_db,
                                   out_db=lv.output_rms_db, vad=lv.speech_prob, muted=self.muted)
        except EOFError:
            pass
        except Exception as exc:
            log.exception("engine loop crashed")
            self.bus.emit("error", getattr(eng, "turn", 0), where="engine", kind="crash",
                          message=f"{type(exc).__name__}: {exc}")
        finally:
            try:
                eng.close(flush=True)      # stop listening: no answer keeps playing
            except Exception:
                log.exception("closing the engine failed")

    def _run_commands(self) -> None:
        while True:
            try:
                fn = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                fn()
            except Exception as exc:
                log.exception("engine command failed")
                self.bus.emit("error", getattr(self.engine, "turn", 0), where="command",
                              message=f"{type(exc).__name__}: {exc}")

    def _command(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the engine thread, or right here when the engine thread is not running."""
        if self.is_listening():
            self._commands.put(fn)
        else:
            fn()

    # -- controls -----------------------------------------------------------------------------------------------

    def set_muted(self, muted: bool) -> None:
        self.muted = bool(muted)

    def stop_speaking(self) -> None:
        self._command(lambda: self.engine.stop_reply("user") if self.engine is not None else None)

    def set_push_to_talk(self, enabled: bool) -> None:
        self.ptt_mode = bool(enabled)
        self.ptt_down = False

    def push_to_talk(self, pressed: bool) -> None:
        if pressed and not self.ptt_down:
            self.ptt_down = True
            self._command(lambda: self.engine.stop_reply("push_to_talk")
                          if self.engine is not None and self.engine.replying else None)
        elif not pressed and self.ptt_down:
            self.ptt_down = False
            self._command(lambda: self.engine.end_of_input() if self.engine is not None else None)

    def new_conversation(self) -> None:
        self._command(self.engine.reset_conversation if self.engine is not None else lambda: None)

    def set_recording(self, enabled: bool) -> None:
        if enabled and self.recorder is None:
            from core.session.livetap import LiveRecording
            from core.session.recorder import SessionRecorder

            rec = SessionRecorder.from_settings(self.settings, profile=self.profile, mode="live")
            if not rec.start():
                raise RuntimeError(f"cannot record the session: {rec.error}")
            rec.attach(self.bus)
            self.recorder = rec
            self.tap = LiveRecording(rec, clock=self.bus.clock,
                                     reference_lead_ms=getattr(self.audio, "config", None)
                                     and self.audio.config.reference_lead_ms)
            if self.audio is not None:
                sink = self.tap.wrap_sink(self.audio.player)
                self._command(lambda: setattr(self.engine, "sink", sink))
            self.bus.emit("info", getattr(self.engine, "turn", 0), notify=True,
                          message=f"Recording this session to {rec.path}")
        elif not enabled and self.recorder is not None:
            rec, self.recorder, self.tap = self.recorder, None, None
            if self.audio is not None:
                player = self.audio.player
                self._command(lambda: setattr(self.engine, "sink", player))
            rec.close()

    def apply_settings(self, settings: Settings) -> list[str]:
        """Apply what can change live; return what waits for the next conversation."""
        old, self.settings = self.settings, settings.copy()
        pending: list[str] = []
        if self.audio is not None and (old.audio.aec, old.audio.noise_suppression) != (
                settings.audio.aec, settings.audio.noise_suppression):
            from core.audio.aec import AecConfig

            self.audio.set_aec(AecConfig(echo_cancellation=settings.audio.aec,
                                         noise_suppression=settings.audio.noise_suppression))
        new_cfg = engine_config(settings)

        def engine_side() -> None:
            eng = self.engine
            if eng is not None:
                eng.config.silence_timeout_s = new_cfg.silence_timeout_s
                eng.config.barge_in_min_voiced_s = new_cfg.barge_in_min_voiced_s
                vc = vad_config(settings)
                for vad in (eng.vad, getattr(self.audio, "vad", None)):
                    cfg = getattr(vad, "config", None)
                    if cfg is not None:
                        for k in ("threshold", "speaking_threshold", "offset_threshold", "min_speech_ms"):
                            setattr(cfg, k, getattr(vc, k))
            bs = getattr(self.backend, "settings", None)
            if self.profile == "lite" and bs is not None:
                opts = lite_options(settings)
                bs.sampling, bs.turn = opts["sampling"], opts["turn"]

        self._command(engine_side)
        if old.persona.system_prompt != settings.persona.system_prompt:
            if self.engine is not None:
                self.engine.system_prompt = settings.persona.system_prompt
            bs = getattr(self.backend, "settings", None)
            if bs is not None and hasattr(bs, "system_prompt"):
                bs.system_prompt = settings.persona.system_prompt
            pending.append("persona (start a new conversation)")
        if (old.audio.input_device, old.audio.output_device) != (settings.audio.input_device,
                                                                 settings.audio.output_device):
            if self.is_listening():
                self.stop_listening()
                self.start_listening()
        if (old.model.voice, old.model.voices) != (settings.model.voice, settings.model.voices) \
                and self.profile == "freeze-omni":
            def voice() -> None:
                problem = set_freeze_omni_voice(self.backend, settings)
                if problem:
                    self.bus.emit("warning", getattr(self.engine, "turn", 0), source="settings", message=problem)

            self._command(voice)
        return pending

    def close(self) -> None:
        try:
            self.stop_listening()
        finally:
            if self.recorder is not None:
                self.recorder.close()
                self.recorder = None
            backend, self.backend = self.backend, None
            self.engine = None
            if backend is not None:
                backend.close()


def build_stack(settings: Settings) -> LiveStack:
    return LiveStack(settings)
