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

    script_path = getattr(args, "script", None)
    if script_path and getattr(args, "input", None):
        raise UserError("give the conversation as --input WAV or as --script JSON (a scripted user), not both")
    if not script_path and not getattr(args, "input", None):
        return run_text_chat(args)
    if not args.output or not args.events:
        raise UserError("a conversation from --input or --script needs --output WAV and --events JSONL")
    user = None
    if script_path:
        from core.harness import ScriptedInput, ScriptedUser, ScriptError, load_script

        try:
            script = load_script(script_path)
        except (OSError, ScriptError) as exc:
            raise UserError(f"cannot use the script {script_path}: {exc}") from exc
        user = ScriptedUser(script)
        src = Path(script_path)
    else:
        src = Path(args.input)
        if not src.is_file():
            raise UserError(f"input file not found: {src}")
    config, spec = _validated_spec(args)
    if user is not None and getattr(args, "record", None):
        raise UserError("--record needs a recorded --input WAV (a scripted user reacts to each run anew)")
    check_chat_outputs(args)
    room_name = getattr(args, "echo", None) or "none"
    room_seed = int(getattr(args, "echo_seed", 0) or 0)
    room = make_room(room_name, room_seed)
    if user is None:
        audio = load_wav_16k(src)   # a file that cannot be used is refused in one line (core.audio.wavin)
    else:
        audio = None
    quiet_progress_bars()
    try:
        backend = build_backend(spec, config)
    except BackendError as exc:
        raise UserError(str(exc)) from None
    configure_torch_threads()
    recorder = tap = record_error = None
    stopped = _RecordingStopped()
    subscribers: list = [stopped]
    on_engine = on_chunk = None
    ready = room is not None      # in a room the session begins with the app's ready sound (it teaches the cancellers)
    if getattr(args, "record", None):
        from core.engine.filemode import input_offset_s
        from core.session import SessionRecorder
        from core.session.filetap import ChatRecording, read_input

        recorder = SessionRecorder(args.record, profile=spec.profile, mode="file",
                                   settings=session_settings(spec, config, room_name, room_seed, ready),
                                   on_problem=stopped.problems.append)
        if recorder.start():
            raw, raw_rate = read_input(str(src))
            tap = ChatRecording(recorder, raw, raw_rate, audio, offset_s=input_offset_s(ready))
            subscribers += tap.subscribers
            on_engine, on_chunk = tap.on_engine, tap.on_chunk
        else:
            log.warning("recording disabled: %s", recorder.error)
            record_error, recorder = recorder.error, None
    events_path = args.events
    try:
        result = run_conversation(backend, audio if user is None else ScriptedInput(user), args.output,
                                  events_path=events_path,
                                  realtime=bool(args.realtime), config=config, system_prompt=spec.system_prompt,
                                  room=room, subscribers=subscribers, on_engine=on_engine, on_chunk=on_chunk,
                                  ready_sound=ready)
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
    if user is not None:
        from core.harness import read_events, score

        report = score(user.script, user.timeline(), read_events(events_path), offset_s=result.input_offset_s)
        summary["score"] = report["aggregate"]
        if getattr(args, "report", None):
            Path(args.report).write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
            summary["report"] = str(args.report)
    if recorder is not None:
        summary["session"] = str(recorder.path)
        record_error = recorder.error
    if record_error:
        summary["recording_error"] = record_error
        stopped.complete(Path(events_path))
    print(json.dumps(summary, indent=1))
    return 0


class _RecordingStopped:
    """The recorder's ``recording_stopped`` warning (a full disk) belongs in the events file. While the engine runs
    it arrives on the bus (this object subscribes to it); one from before the run or from finishing the files after
    it (``problems``, the recorder's ``on_problem``) is added to the file afterwards by :meth:`complete`."""

    def __init__(self) -> None:
        self.problems: list[Event] = []
        self.on_bus: list[Event] = []

    def __call__(self, event: Event) -> None:
        if isinstance(event, WarningEvent) and event.source == "session" and event.code == "recording_stopped":
            self.on_bus.append(event)

    def complete(self, events_path: Path) -> None:
        if self.on_bus or not self.problems:
            return
        try:
            with open(events_path, "a", encoding="utf-8") as f:
                f.writelines(ev.to_json() + "\n" for ev in self.problems)
        except OSError as exc:
            log.warning("could not add the recorder's warning to %s: %s", events_path, exc.strerror or exc)


def check_chat_outputs(args: argparse.Namespace) -> None:
    """Every file ``parley chat`` will write, checked before the model loads (one line naming the option)."""
    check_output_file(args.output, "--output", suffix=".wav")
    check_output_file(args.events, "--events")
    if getattr(args, "report", None):
        check_output_file(args.report, "--report")
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
        raise UserError(str(exc)) from exc


def _validated_spec(args: argparse.Namespace) -> tuple[EngineConfig, ProfileSpec]:
    """The engine settings from the environment and the profile the arguments ask for, checked."""
    config, backend_opts = settings_from_env()
    spec = spec_from_args(args, backend_opts)
    try:
        spec.validate()
    except ConfigError as exc:
        raise UserError(str(exc)) from exc
    return config, spec


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



def run_text_chat(args: argparse.Namespace) -> int:
    """``parley chat`` without ``--input``: an interactive text chat in the terminal. Typed lines go in as user
    turns, the conversation is printed as it comes, and the answers are spoken when an output device exists (else
    they are only printed). An empty line or end of input (Ctrl-D) ends it."""
    import sys
    import threading

    from core.engine.events import AssistantText, ErrorEvent, GenerationDone, InfoEvent, Interruption
    from core.runtime import configure_torch_threads

    config, spec = _validated_spec(args)
    print(f"parley: loading the {spec.profile} profile…", file=sys.stderr)
    backend = build_backend(spec, config)
    configure_torch_threads()
    done = threading.Event()
    out = sys.stdout

    def show(ev) -> None:
        if isinstance(ev, AssistantText):
            out.write(ev.text)
            out.flush()
        elif isinstance(ev, Interruption):
            out.write(" [stopped]\n")
        elif isinstance(ev, GenerationDone):
            out.write("\n")
            out.flush()
            done.set()
        elif isinstance(ev, (InfoEvent, ErrorEvent)) and (ev.get("notify") or isinstance(ev, ErrorEvent)):
            out.write(f"({ev.message})\n")
            done.set()

    session = _TextSession(backend, spec, config)
    session.bus.subscribe(show)
    print(f"Parley ({spec.profile}{', speaking' if session.speaking else ', text only: no output device'}). Type a "
          "message and press Enter; an empty line or Ctrl-D ends.", file=sys.stderr)
    try:
        for line in sys.stdin:
            text = line.strip()
            if not text:
                break
            done.clear()
            out.write("Parley: ")
            out.flush()
            session.engine.call_soon(lambda t=text: session.engine.submit_text(t))
            done.wait(300)
            session.wait_quiet(120)
    except KeyboardInterrupt:
        pass
    finally:
        session.close()
        backend.close()
    return 0


class _TextSession:
    """An engine on its loop for typed turns: the microphone stays closed; answers play on the default output
    device when one opens, else on a silent sink at real speed."""

    def __init__(self, backend, spec: ProfileSpec, config: EngineConfig) -> None:
        import threading

        from core.engine.clock import WallClock
        from core.engine.engine import Engine
        from core.engine.events import EventBus
        from core.engine.filemode import SilentSource
        from core.engine.sink import VirtualAudioSink

        self.clock = WallClock()
        self.bus = EventBus(self.clock)
        self.audio = None
        sink = None
        try:
            from core.audio.audio_io import AudioIO

            audio = AudioIO()
            audio.set_input_gate(True)          # typed turns only: the microphone is not listened to
            audio.start()
            self.audio, sink = audio, audio.player
        except Exception as exc:  # noqa: BLE001 - no sound device: text only
            log.info("no audio output (%s): text only", exc)
        self.speaking = sink is not None
        self.engine = Engine(backend, sink or VirtualAudioSink(self.clock, backend.output_rate), bus=self.bus,
                             config=config, system_prompt=spec.system_prompt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.engine.run, args=(SilentSource(self.clock), self._stop),
                                        name="parley-engine", daemon=True)
        self._thread.start()

    def wait_quiet(self, timeout: float) -> None:
        """Until the answer has been played out (or ``timeout``)."""
        import time

        deadline = time.monotonic() + timeout
        while self.engine.busy and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self.audio is not None:
            self.audio.stop()
