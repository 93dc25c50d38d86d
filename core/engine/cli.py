"""``parley chat``: a whole multi-turn conversation from a WAV file through the engine, headless.

Prints one JSON object (turns, answers, interruptions, latencies, scheduler overhead) on stdout. With ``--record``
the run is also recorded as a session folder (``core.session``), which ``parley replay`` can run again:
:func:`build_engine_parts` rebuilds the same backend, VAD and settings from the session's ``meta.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from core.cli import UserError

log = logging.getLogger(__name__)

_CLI_KEYS = ("checkpoint", "llm", "device", "dtype", "seed", "greedy")


def _session_settings(args: argparse.Namespace, config: Any, backend_opts: dict[str, Any]) -> dict[str, Any]:
    return {
        "engine": config.to_dict(),
        "backend": dict(backend_opts),
        "cli": {k: getattr(args, k, None) for k in _CLI_KEYS},
        "system_prompt": getattr(args, "system_prompt", None),
    }


def build_engine_parts(profile: str | None, settings: dict[str, Any]):
    """Backend, VAD and engine settings as ``parley chat`` built them, from a recorded session's settings."""
    from core.engine.config import EngineConfig
    from core.engine.profiles import build_backend, build_vad
    from core.session.replay import EngineParts

    profile = profile or "lite"
    config = EngineConfig.from_dict(settings.get("engine"))
    backend_opts = dict(settings.get("backend") or {})
    cli = argparse.Namespace(**{k: (settings.get("cli") or {}).get(k) for k in _CLI_KEYS})
    backend = build_backend(profile, cli, config, backend_opts)
    return EngineParts(backend=backend, vad=build_vad(), config=config,
                       system_prompt=settings.get("system_prompt"), profile=profile, settings=dict(settings))


def run_chat(args: argparse.Namespace) -> int:
    from core.engine.filemode import load_wav_16k, run_conversation
    from core.engine.profiles import build_backend, build_vad, settings_from_env
    from core.runtime import configure_torch_threads

    src = Path(args.input)
    if not src.is_file():
        raise UserError(f"input file not found: {src}")
    try:
        config, backend_opts = settings_from_env()
    except (ValueError, OSError) as exc:
        raise UserError(f"bad engine settings: {exc}") from exc
    try:
        audio = load_wav_16k(src)
    except Exception as exc:  # soundfile raises its own error types
        raise UserError(f"cannot read {src}: {exc}") from exc
    backend = build_backend(args.profile, args, config, backend_opts)
    configure_torch_threads()
    recorder = tap = None
    subscribers: list = []
    on_engine = None
    if getattr(args, "record", None):
        from core.session import SessionRecorder
        from core.session.filetap import ChatRecording, read_input

        recorder = SessionRecorder(args.record, profile=args.profile, mode="file",
                                   settings=_session_settings(args, config, backend_opts))
        if recorder.start():
            raw, raw_rate = read_input(str(src))
            tap = ChatRecording(recorder, raw, raw_rate, audio)
            subscribers, on_engine = tap.subscribers, tap.on_engine
        else:
            log.warning("recording disabled: %s", recorder.error)
            recorder = None
    try:
        result = run_conversation(backend, build_vad(), audio, args.output, events_path=args.events,
                                  realtime=bool(args.realtime), config=config,
                                  system_prompt=getattr(args, "system_prompt", None), subscribers=subscribers,
                                  on_engine=on_engine)
        if tap is not None:
            tap.finish()
    finally:
        if recorder is not None:
            recorder.close()
        try:
            backend.close()
        except Exception:  # closing must not hide the result
            log.debug("backend close failed", exc_info=True)
    summary = result.to_dict()
    summary.update(profile=args.profile, input=str(src), events=str(args.events), realtime=bool(args.realtime))
    if recorder is not None:
        summary["session"] = str(recorder.path)
    print(json.dumps(summary, indent=1))
    return 0
