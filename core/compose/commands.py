"""Command-line handlers that build a conversation: ``parley chat`` and ``parley replay``.

``parley chat`` runs a whole multi-turn conversation from a WAV file through the engine, headless, and prints one
JSON object (turns, answers, interruptions, latencies, scheduler overhead). ``--echo ROOM`` puts the assistant's own
voice back into the input through a simulated room (``core.audio.room``). With ``--record`` the run is also recorded
as a session folder, which ``parley replay`` runs again with the same parts (:func:`~core.compose.build.
build_engine_parts` rebuilds them from the session's ``meta.json``).

The environment variable ``PARLEY_ENGINE_SETTINGS`` (a JSON object, or ``@/path/to/file.json``) overrides engine
settings for these commands and ``parley bench engine`` only (never the app): its keys are EngineConfig fields,
``early`` (EarlySpeech fields) and ``backend`` (backend options, e.g. ``{"max_new_tokens": 24}``, and the model
arguments ``checkpoint``, ``llm``, ``device``, ``dtype``, ``seed``, ``greedy`` where no flag gave them). Tests and
benchmarks use it for small context limits, short answers or other weights without more flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from core.compose.build import build_backend, build_engine_parts, session_settings
from core.compose.spec import ProfileSpec, apply_options
from core.engine.config import EngineConfig
from core.engine.events import Event, WarningEvent
from core.errors import BackendError, ConfigError, UserError
from core.fsutil import check_output_file, check_output_place

log = logging.getLogger(__name__)

SETTINGS_ENV = "PARLEY_ENGINE_SETTINGS"


def settings_from_env(env: dict[str, str] | None = None) -> tuple[EngineConfig, dict[str, Any]]:
    """(engine config, backend options) from ``PARLEY_ENGINE_SETTINGS`` (defaults when unset)."""
    raw = (env if env is not None else os.environ).get(SETTINGS_ENV, "").strip()
    if not raw:
        return EngineConfig(), {}
    try:
        if raw.startswith("@"):
            raw = Path(raw[1:]).read_text(encoding="utf-8")
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise UserError(f"bad {SETTINGS_ENV}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{SETTINGS_ENV} must hold a JSON object")
    backend_opts = dict(data.pop("backend", {}) or {})
    return EngineConfig.from_dict(data), backend_opts


def spec_from_args(args: argparse.Namespace, backend_opts: dict[str, Any]) -> ProfileSpec:
    """The profile of ``parley chat``'s flags; backend options from the environment fill what no flag gave."""
    spec = ProfileSpec(profile=args.profile, system_prompt=getattr(args, "system_prompt", None))
    apply_options(spec, backend_opts)
    for key in ("checkpoint", "llm", "device", "dtype"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(spec, key, str(value))
    if getattr(args, "seed", None) is not None:
        spec.seed = int(args.seed)
    if getattr(args, "greedy", False):
        spec.sampling.greedy = True
    return spec


def run_chat(args: argparse.Namespace) -> int:
    from core.engine.filemode import load_wav_16k, run_conversation
    from core.runtime import configure_torch_threads, quiet_progress_bars

    src = Path(args.input)
    if not src.is_file():
        raise UserError(f"input file not found: {src}")
    config, backend_opts = settings_from_env()
    spec = spec_from_args(args, backend_opts)
    try:
        spec.validate()
    except ConfigError as exc:
        raise UserError(str(exc)) from exc
    check_chat_outputs(args)
    room_name = getattr(args, "echo", None) or "none"
    room_seed = int(getattr(args, "echo_seed", 0) or 0)
    room = make_room(room_name, room_seed)
    audio = load_wav_16k(src)   # a file that cannot be used is refused in one line (core.audio.wavin)
    quiet_progress_bars()
    try:
        backend = build_backend(spec, config)
    except BackendError as exc:
        raise UserError(str(exc)) from None
    configure_torch_threads()
    recorder = tap = record_error = None
    problems: list[Event] = []          # the recorder's warning (also on the bus while the engine runs)
    on_bus: list[Event] = []
    subscribers: list = [lambda ev: on_bus.append(ev) if _is_recording_stopped(ev) else None]
    on_engine = on_chunk = None
    if getattr(args, "record", None):
        from core.session import SessionRecorder
        from core.session.filetap import ChatRecording, read_input

        recorder = SessionRecorder(args.record, profile=spec.profile, mode="file", on_problem=problems.append,
                                   settings=session_settings(spec, config, room_name, room_seed))
        if recorder.start():
            raw, raw_rate = read_input(str(src))
            tap = ChatRecording(recorder, raw, raw_rate, audio)
            subscribers += tap.subscribers
            on_engine, on_chunk = tap.on_engine, tap.on_chunk
        else:
            log.warning("recording disabled: %s", recorder.error)
            record_error, recorder = recorder.error, None
    try:
        result = run_conversation(backend, audio, args.output, events_path=args.events,
                                  realtime=bool(args.realtime), config=config, system_prompt=spec.system_prompt,
                                  room=room, subscribers=subscribers, on_engine=on_engine, on_chunk=on_chunk)
        if tap is not None:
            tap.finish()
    except BackendError as exc:   # the conversation could not start (a system prompt too long for the model...)
        raise UserError(str(exc)) from None
    finally:
        if recorder is not None:
            recorder.close()
        try:
            backend.close()
        except Exception:  # closing must not hide the result
            log.debug("backend close failed", exc_info=True)
    summary = result.to_dict()
    summary.update(profile=spec.profile, input=str(src), events=str(args.events), realtime=bool(args.realtime),
                   echo=room_name, echo_seed=room_seed)
    if recorder is not None:
        summary["session"] = str(recorder.path)
        record_error = recorder.error
    if record_error:
        summary["recording_error"] = record_error
        # a failure before the engine ran or while the files were finished is not in the events file yet
        _append_events(Path(args.events), [ev for ev in problems if not on_bus])
    print(json.dumps(summary, indent=1))
    return 0


def _is_recording_stopped(event: Event) -> bool:
    return isinstance(event, WarningEvent) and event.source == "session" and event.code == "recording_stopped"


def _append_events(path: Path, events: list[Event]) -> None:
    if not events:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.writelines(ev.to_json() + "\n" for ev in events)
    except OSError as exc:
        log.warning("could not add the recorder's warning to %s: %s", path, exc.strerror or exc)


def check_chat_outputs(args: argparse.Namespace) -> None:
    """Every file ``parley chat`` will write, checked before the model loads (one line naming the option)."""
    check_output_file(args.output, "--output", suffix=".wav")
    check_output_file(args.events, "--events")
    if getattr(args, "record", None):
        from core.session.recorder import check_record_folder

        record = Path(args.record).expanduser()
        try:        # a folder that cannot take the session is refused at once
            check_record_folder(record)
        except OSError as exc:
            raise UserError(str(exc)) from exc
        check_output_place(record, "--record")


def make_room(name: str | None, seed: int = 0) -> Any:
    """The simulated room of ``--echo`` (None for ``none``)."""
    if not name or name == "none":
        return None
    try:
        from core.audio.room import EchoRoom
    except ImportError as exc:  # pragma: no cover - pyroomacoustics is a dependency
        raise UserError(f"simulated rooms need pyroomacoustics: {exc}") from exc
    try:
        return EchoRoom(name, seed=seed)
    except (KeyError, ValueError) as exc:
        raise UserError(f"unknown room {name!r}: {exc}") from exc


def run_replay(args: argparse.Namespace) -> int:
    from core.session.replay import ReplayError, replay_session

    session = Path(args.session).expanduser()
    from core.session.store import is_session_dir

    if not session.is_dir():
        raise UserError(f"no such session folder: {session}")
    if not is_session_dir(session):
        raise UserError(f"{session} is not a session folder (no meta.json or events.jsonl)")
    if args.output and Path(args.output).exists() and any(Path(args.output).iterdir()):
        raise UserError(f"{args.output} exists and is not empty; choose a new folder for the replay")
    try:
        report = replay_session(session, build_engine_parts, args.output, profile=args.profile,
                                source=args.source, realtime=args.realtime)
    except (ReplayError, ConfigError) as exc:
        raise UserError(str(exc)) from exc
    except BackendError as exc:   # e.g. the model folders named in the session's meta.json are gone
        raise UserError(f"cannot replay {session}: its model does not load ({exc}); replay uses the model the "
                        f"session names in {session / 'meta.json'}") from None
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        print(f"replay: {report['verdict']}  ({report['counts']['original']} original turns, "
              f"{report['counts']['replay']} replayed)")
        for reason in report["reasons"]:
            print(f"  - {reason}")
        print(f"new session: {report['replay']['path']}")
        print(f"report: {Path(report['replay']['path']) / 'report.md'}")
    return 0 if report["verdict"] == "match" else 1

