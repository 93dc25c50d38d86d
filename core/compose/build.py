"""Building what a conversation needs from typed settings: the backend of a :class:`ProfileSpec`, the engine's
settings and the capture chain's VAD settings (from the app's :class:`~core.settings.Settings`), and the parts a
file-driven run or a replay takes (:class:`EngineParts`)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from core.audio.vad import VadConfig
from core.compose.spec import ProfileSpec, spec_from_session
from core.engine.backend import Backend, ProgressFn
from core.engine.config import EngineConfig
from core.settings import Settings

log = logging.getLogger(__name__)


def engine_config(settings: Settings) -> EngineConfig:
    """The engine's settings for the app (the file's VAD section tunes the turn timing)."""
    config = EngineConfig()
    config.silence_timeout_s = max(config.silence_timeout_s, settings.vad.end_of_turn_silence_ms / 1000.0 + 0.3)
    config.barge_in_min_voiced_s = max(0.1, settings.vad.min_speech_ms / 1000.0)
    return config


def vad_config(settings: Settings) -> VadConfig:
    """The capture chain's VAD settings from the app's settings."""
    v = settings.vad
    return VadConfig(threshold=v.onset_threshold, speaking_threshold=v.barge_in_threshold,
                     offset_threshold=v.offset_threshold, min_speech_ms=float(min(v.min_speech_ms, 300)))


def build_backend(spec: ProfileSpec, config: EngineConfig | None = None,
                  progress: ProgressFn | None = None) -> Backend:
    """Load the backend of ``spec`` (slow). ``config.early`` maps the engine's early-speech settings onto the
    profile's knobs; ``progress`` hears of each loading step. Raises :class:`~core.errors.ConfigError` for a spec
    that cannot work, before loading."""
    spec.validate()
    config = config or EngineConfig()
    if spec.profile == "freeze-omni":
        return _build_freeze_omni(spec, config, progress)
    return _build_lite(spec, progress)


def _build_freeze_omni(spec: ProfileSpec, config: EngineConfig, progress: ProgressFn | None = None) -> Backend:
    """Freeze-Omni with early speech = the official server's behaviour: the first segment cut at the first clause
    (segmentation rule "server"), a small first codec window (``decoder_first_chunk_size``) with the first-pack
    split threshold and the leading-silence cut. Off = the offline inference script's behaviour. There is no
    token-budget cut for the first segment in Freeze-Omni (the server only widens the punctuation set after 20
    tokens), so ``first_segment_max_tokens`` does not apply to this profile."""
    from core.model.freeze_omni.audiollm import SamplingSettings
    from core.model.freeze_omni.backend import FreezeOmniBackend
    from core.model.freeze_omni.pipeline import ReplySettings
    from core.model.freeze_omni.streaming import StreamOptions, load_server_config

    options = dict(spec.options)
    checkpoint = Path(spec.checkpoint or "")
    server = load_server_config(checkpoint)
    early = config.early
    chunk = int(options.pop("codec_chunk", early.codec_chunk))
    padding = int(options.pop("codec_padding", server.decoder_chunk_overlap_size))
    if early.enabled:
        stream = StreamOptions(chunk_size=chunk, padding=padding, window=server.decoder_N,
                               threshold=server.decoder_seg_threshold, first_chunk_size=early.first_codec_chunk,
                               first_threshold=server.decoder_seg_threshold_first_pack, trim_leading_silence=True)
        segmentation = "server"
    else:
        stream = StreamOptions(chunk_size=chunk, padding=padding, window=server.decoder_N,
                               threshold=server.decoder_seg_threshold)
        segmentation = "offline"
    s = spec.sampling
    max_tokens = int(s.max_new_tokens or 500)
    sampling = SamplingSettings.greedy(max_tokens) if s.greedy else SamplingSettings(max_tokens=max_tokens)
    decoder_top_k = s.decoder_top_k if s.decoder_top_k is not None else (1 if s.greedy else server.decoder_top_k)
    settings = ReplySettings(sampling=sampling, decoder_top_k=int(decoder_top_k),
                             penalty_window=server.decoder_penalty_window_size, penalty=server.decoder_penalty,
                             stream=stream, segmentation=options.pop("segmentation", segmentation))
    if options:
        log.info("freeze-omni backend has no option(s) %s; ignored", ", ".join(sorted(options)))
    log.info("building freeze-omni backend: checkpoint %s, llm %s, early speech %s", checkpoint, spec.llm,
             early.enabled)
    backend = FreezeOmniBackend.load(checkpoint, Path(spec.llm or ""), device=spec.device, dtype=spec.dtype,
                                     settings=settings, seed=spec.seed, quantize_bits=spec.quantize_bits,
                                     progress=progress)
    problem = apply_voice(backend, spec)
    if problem:
        log.warning("voice: %s", problem)
    return backend


def apply_voice(backend: Backend, spec: ProfileSpec) -> str | None:
    """Make ``backend`` speak with the voice of ``spec`` from its next answer on; returns why it could not."""
    if spec.profile == "freeze-omni":
        return backend.set_voice(spec.voice, spec.voice_tokens)
    return backend.set_voice(spec.voice)


def _build_lite(spec: ProfileSpec, progress: ProgressFn | None = None) -> Backend:
    """Lite: the chat model (``llm``), voice, persona, sampling, turn rule, and any other
    :class:`~core.model.lite.backend.LiteSettings` field through ``spec.options``.

    Early speech is built into Lite's clause segmenter (first clause: a comma after 2 words, or 8 words); it has no
    constructor knob, so ``config.early`` does not change this profile."""
    from core.model.lite.backend import LiteBackend, LiteSettings

    settings = LiteSettings(seed=spec.seed)
    if spec.llm:
        settings.llm = str(spec.llm)
    if spec.voice:
        settings.voice = str(spec.voice)
    if spec.asr:
        settings.asr = str(spec.asr)
    if spec.system_prompt is not None:
        settings.system_prompt = spec.system_prompt
    settings.voice_speed = spec.voice_speed
    apply_lite_generation(settings, spec)
    options = dict(spec.options)
    for key in list(options):
        if hasattr(settings, key):
            setattr(settings, key, options.pop(key))
    if options:
        log.info("lite backend has no option(s) %s; ignored", ", ".join(sorted(options)))
    if spec.device != "cpu":
        log.info("the lite profile runs on the CPU; device %s ignored", spec.device)
    return LiteBackend(settings, progress=progress)


def apply_lite_generation(settings: Any, spec: ProfileSpec) -> None:
    """Put the spec's sampling and end-of-turn rule into Lite's settings (at build time, or live: Lite reads them
    at every step)."""
    sampling = {k: v for k, v in dataclasses.asdict(spec.sampling).items()
                if v is not None and k != "decoder_top_k" and hasattr(settings.sampling, k)}
    if not spec.sampling.greedy:
        sampling.pop("greedy", None)
    if sampling:
        settings.sampling = dataclasses.replace(settings.sampling, **sampling)
    turn = {k: v for k, v in dataclasses.asdict(spec.turn).items() if v is not None}
    if turn:
        settings.turn = dataclasses.replace(settings.turn, **turn)


@dataclass
class EngineParts:
    """Everything a file-driven run (``core.engine.filemode.run_conversation``) needs besides the audio."""

    backend: Backend
    config: EngineConfig = field(default_factory=EngineConfig)
    system_prompt: str | None = None
    profile: str | None = None
    backbone: str | None = None
    voice: str | None = None
    room: str | None = None
    room_seed: int = 0
    vad: VadConfig | None = None
    settings: dict[str, Any] | None = None   # what a session's meta records (to replay it again)
    ready_sound: bool = False                # the run began with the ready sound (its input came READY_LEAD_S later)


def session_settings(spec: ProfileSpec, config: EngineConfig, room: str | None = None,
                     room_seed: int = 0, ready_sound: bool = False) -> dict[str, Any]:
    """What a session records in ``meta.json`` ``settings`` so that a replay rebuilds the same parts."""
    return {"engine": config.to_dict(), "spec": spec.to_dict(), "system_prompt": spec.system_prompt,
            "room": room, "room_seed": room_seed, "ready_sound": ready_sound}


def _session_room(settings: Mapping[str, Any]) -> tuple[str | None, int, bool]:
    """(room, seed, ready sound) as a session's ``meta.json`` recorded them, checked: a hand-edited value is a
    clear error, not a replay of something else (``"false"`` is not true, a seed is a whole number)."""
    from core.audio.room import PRESETS
    from core.errors import ConfigError

    room, seed, ready = settings.get("room"), settings.get("room_seed"), settings.get("ready_sound", False)
    if room is not None and (not isinstance(room, str) or room not in PRESETS):
        raise ConfigError(f"meta.json: settings.room must be one of {', '.join(PRESETS)} or null, not {room!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"meta.json: settings.room_seed must be a whole number >= 0, not {seed!r}")
    if not isinstance(ready, bool):   # sessions recorded before the ready sound have none: False
        raise ConfigError(f"meta.json: settings.ready_sound must be true or false, not {ready!r}")
    return room, int(seed or 0), ready


def build_engine_parts(profile: str | None, settings: Mapping[str, Any]) -> EngineParts:
    """The parts a recorded session ran with (a replay's builder; see ``core.session.replay``)."""
    spec = spec_from_session(profile, settings)
    config = EngineConfig.from_dict(settings.get("engine"))
    room, room_seed, ready = _session_room(settings)   # before the (slow) model load
    backend = build_backend(spec, config)
    return EngineParts(backend=backend, config=config, system_prompt=spec.system_prompt, profile=spec.profile,
                       backbone=spec.llm, voice=spec.voice, room=room, room_seed=room_seed, ready_sound=ready,
                       settings=session_settings(spec, config, room, room_seed, ready))
