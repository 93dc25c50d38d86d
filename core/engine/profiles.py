"""Building what the engine needs for a profile: the backend (with the engine's early-speech options mapped onto
its constructor knobs), the VAD, and the engine settings.

Engine settings come from :class:`~core.engine.config.EngineConfig` defaults, overridden by the environment variable
``PARLEY_ENGINE_SETTINGS``: a JSON object, or ``@/path/to/file.json``. Its keys are EngineConfig fields, ``early``
(EarlySpeech fields) and ``backend`` (extra keyword options for the backend constructor, e.g.
``{"max_new_tokens": 24}``). ``parley chat`` and ``parley bench engine`` read it, so tests and benchmarks can set
small context limits or short answers without more command-line flags.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

from core.audio.interfaces import StreamingVad
from core.engine.backend import Backend
from core.engine.config import EngineConfig

log = logging.getLogger(__name__)

SETTINGS_ENV = "PARLEY_ENGINE_SETTINGS"


def settings_from_env(env: dict[str, str] | None = None) -> tuple[EngineConfig, dict[str, Any]]:
    """(engine config, backend options) from ``PARLEY_ENGINE_SETTINGS`` (defaults when unset)."""
    raw = (env if env is not None else os.environ).get(SETTINGS_ENV, "").strip()
    if not raw:
        return EngineConfig(), {}
    if raw.startswith("@"):
        raw = Path(raw[1:]).read_text(encoding="utf-8")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{SETTINGS_ENV} must hold a JSON object")
    backend_opts = dict(data.pop("backend", {}) or {})
    return EngineConfig.from_dict(data), backend_opts


def build_vad() -> StreamingVad:
    """The echo-aware silero VAD of the audio layer, with its default thresholds."""
    from core.audio.vad import EchoAwareVad

    return EchoAwareVad()


def _accepted(cls: Any, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The options ``cls(...)`` accepts, and the names it does not have."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return dict(options), []
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(options), []
    ok = {k: v for k, v in options.items() if k in params}
    return ok, [k for k in options if k not in params]


def early_speech_options(profile: str, config: EngineConfig) -> dict[str, Any]:
    """The backend knobs that make speech start early (or not, when ``config.early.enabled`` is off)."""
    early = config.early
    if profile == "lite":
        if early.enabled:
            return {"first_segment_max_tokens": early.first_segment_max_tokens, "first_segment_clause": True}
        return {"first_segment_max_tokens": 0, "first_segment_clause": False}
    if early.enabled:
        return {"decoder_first_chunk_size": early.first_codec_chunk, "decoder_chunk_size": early.codec_chunk,
                "first_segment_max_tokens": early.first_segment_max_tokens, "first_segment_clause": True}
    return {"decoder_first_chunk_size": early.codec_chunk, "decoder_chunk_size": early.codec_chunk,
            "first_segment_max_tokens": 0, "first_segment_clause": False}


def build_backend(profile: str, args: argparse.Namespace | None = None, config: EngineConfig | None = None,
                  options: dict[str, Any] | None = None) -> Backend:
    """Load the backend of ``profile`` ("lite" | "freeze-omni") with the CLI's model arguments, the engine's
    early-speech knobs and extra ``options``. Knobs a backend does not have are logged and skipped."""
    config = config or EngineConfig()
    wanted: dict[str, Any] = dict(early_speech_options(profile, config))
    wanted.update(_cli_options(profile, args))
    wanted.update(options or {})
    if profile == "lite":
        from core.model.lite.backend import LiteBackend as cls
    elif profile == "freeze-omni":
        from core.model.freeze_omni.backend import FreezeOmniBackend as cls
    else:
        raise ValueError(f"unknown profile {profile!r}")
    kwargs, missing = _accepted(cls, wanted)
    if missing:
        log.info("%s backend has no option(s) %s; left at its defaults", profile, ", ".join(missing))
    log.info("building %s backend with %s", profile, kwargs)
    return cls(**kwargs)


def _cli_options(profile: str, args: argparse.Namespace | None) -> dict[str, Any]:
    if args is None:
        return {}
    out: dict[str, Any] = {}
    for name in ("checkpoint", "llm", "device", "dtype", "seed", "greedy"):
        value = getattr(args, name, None)
        if value is not None and value is not False:
            out[name] = value
    return out
