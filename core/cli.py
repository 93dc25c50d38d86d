"""The ``parley`` command: the desktop app when run bare, subcommands for headless work.

Each subcommand's handler lives next to the code it drives and is imported lazily (``"module:function"``), so
``parley --help`` stays fast and a broken optional part cannot stop the others. Handlers take the parsed
``argparse.Namespace`` and return an exit code. Errors that the user can fix are raised as :class:`UserError` and
printed as one clear line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable

from core import __version__
from core.errors import BackendError, UserError, first_line

log = logging.getLogger(__name__)

APP_HINT = "Run `parley` with no command to open the desktop app."


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_SEED = 2 ** 63 - 1   # torch and numpy generators take seeds up to this


def _seed(text: str) -> int:
    """A seed option: a whole number from 0 to 2**63 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be between 0 and {MAX_SEED} (2**63 - 1), not {text}")
    return value


def _system_prompt(text: str) -> str:
    from core.settings.schema import SYSTEM_PROMPT_MAX_CHARS

    if len(text) > SYSTEM_PROMPT_MAX_CHARS:
        raise argparse.ArgumentTypeError(f"is {len(text)} characters long; at most {SYSTEM_PROMPT_MAX_CHARS} "
                                         "are allowed")
    return text


def _log_level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"unknown level {text!r} (choose {', '.join(LOG_LEVELS)})")
    return text.upper()


def _undecodable_argument(argv: list[str]) -> str | None:
    """A one-line complaint about the first argument holding bytes that are not UTF-8 (Python keeps them as lone
    surrogates, which file names, tokenizers and JSON files cannot take), else None."""
    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            option, _, value = arg.partition("=") if arg.startswith("--") and "=" in arg else ("", "", arg)
            if not option:
                option = argv[i - 1] if i and argv[i - 1].startswith("-") else "an argument"
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return (f"{option} holds bytes that are not UTF-8 text ('{shown}'); Parley needs file names and text in "
                    "UTF-8: rename the file or type the text again")
    return None


def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def _add_reply(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reply", help="answer one spoken input file with a spoken reply (headless)")
    p.add_argument("--profile", choices=["freeze-omni", "lite"], default="lite")
    p.add_argument("--input", required=True, help="input WAV (any rate, any channel count)")
    p.add_argument("--output", required=True, help="output WAV (the spoken answer)")
    p.add_argument("--trace", help="write a JSON trace of every decision")
    p.add_argument("--checkpoint", help="Freeze-Omni checkpoint folder (audiollm/, decoder/, codec/)")
    p.add_argument("--llm", help="backbone LLM folder (Qwen2-7B-Instruct for Freeze-Omni; any chat model for Lite)")
    p.add_argument("--system-prompt", type=_system_prompt, help="system prompt / persona")
    p.add_argument("--greedy", action="store_true", help="top-k 1 for the LLM and the speech decoder")
    p.add_argument("--turn-end", choices=["model", "input"], default="model",
                   help="model: honour the turn-state head; input: listen to the whole file, then answer")
    p.add_argument("--codec-chunk", type=int, help="codec window size in tokens")
    p.add_argument("--codec-padding", type=int, help="codec look-ahead/left context in tokens")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--voice", help="voice (Lite: Piper .onnx file; Freeze-Omni: named global tokens)")
    p.add_argument("--asr", help="Lite: a Whisper folder (CTranslate2) for speech recognition")
    p.add_argument("--rebuild-cache", action="store_true",
                   help="Lite: rebuild the converted-weights cache (repairs a damaged cache)")
    p.set_defaults(func=_dispatch_reply)


def _dispatch_reply(args: argparse.Namespace) -> int:
    if args.profile == "freeze-omni":
        return _handler("core.model.freeze_omni.cli:run_reply")(args)
    return _handler("core.model.lite.cli:run_reply")(args)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks; each prints one JSON object")
    bsub = p.add_subparsers(dest="bench", required=True)
    m = bsub.add_parser("model", help="Freeze-Omni model core timings")
    m.add_argument("--checkpoint", help="checkpoint folder (default: the tiny fixture, if found)")
    m.add_argument("--llm", help="LLM folder (default: the tiny fixture LLM)")
    m.add_argument("--synthetic", choices=["release"], help="random weights with the release dimensions")
    m.add_argument("--device", default="cpu")
    m.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    m.add_argument("--chunks", type=int, default=20, help="listen steps to time")
    m.add_argument("--tokens", type=int, default=32, help="LLM tokens to time")
    m.set_defaults(func=_handler_lazy("core.model.freeze_omni.bench:run_bench"))
    a = bsub.add_parser("audio", help="audio chain on the PulseAudio loop (ERLE, false onsets, flush...)")
    a.add_argument("--seconds", type=float, default=20.0)
    a.set_defaults(func=_handler_lazy("core.compose.bench:run_audio_bench"))
    lite = bsub.add_parser("lite", help="Lite profile: load, ASR/LLM/TTS speed, first-audio latency")
    lite.add_argument("--runs", type=int, default=5)
    lite.set_defaults(func=_handler_lazy("core.model.lite.bench:run_bench"))
    eng = bsub.add_parser("engine", help="dialogue engine: per-turn latency and scheduler overhead")
    eng.add_argument("--profile", choices=["freeze-omni", "lite"], default="lite")
    eng.add_argument("--turns", type=int, default=5)
    eng.add_argument("--checkpoint", help="Freeze-Omni checkpoint folder (default: the tiny fixture)")
    eng.add_argument("--llm", help="backbone folder")
    eng.add_argument("--device", help="cpu | cuda")
    eng.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    rooms = bsub.add_parser("rooms", help="the simulated rooms' figures and AEC3's echo cancellation in each (JSON)")
    rooms.add_argument("--seconds", type=float, default=20.0, help="far-end speech to use (default 20 s)")
    rooms.add_argument("--seed", type=int, default=0)
    rooms.add_argument("--far", help="a WAV file as the far end (default: the Lite voice, or espeak-ng speech)")
    rooms.add_argument("--latency-ms", type=float, action="append", default=[],
                       help="also measure each echo preset with this output latency (repeatable)")
    rooms.set_defaults(func=_handler_lazy("core.compose.bench:run_rooms_bench"))
    tt = bsub.add_parser("turns", help="turn-taking: the conversation suite in simulated rooms, scored (JSON)")
    tt.add_argument("--profile", choices=["freeze-omni", "lite"], default="lite")
    tt.add_argument("--rooms", default="laptop,speakerphone", help="comma-separated: none, headset, laptop, "
                                                                    "speakerphone")
    tt.add_argument("--scripts", help="folder of conversation scripts (default: the repository's suite)")
    tt.add_argument("--only", help="comma-separated parts of script names to run")
    tt.add_argument("--seed", type=_seed, default=0, help="room seed")
    tt.add_argument("--echo-minutes", type=float, default=0.0,
                    help="also the echo alone: the assistant talks this long in --echo-room")
    tt.add_argument("--echo-room", choices=["headset", "laptop", "speakerphone"], default="speakerphone",
                    help="the room of --echo-minutes (default speakerphone)")
    tt.add_argument("--echo-glitches", default=None, metavar="MS/PER_MIN",
                    help="in --echo-room, the loudspeaker's latency jumps by up to MS milliseconds PER_MIN times a "
                         "minute on average, as a loaded machine's sound server does (e.g. 30/6; default: steady)")
    tt.add_argument("--keep", help="a new or empty folder to keep each run's events (JSONL), report (JSON) and "
                    "audio in")
    tt.add_argument("--checkpoint")
    tt.add_argument("--llm")
    tt.set_defaults(func=_handler_lazy("core.compose.bench:run_turns_bench"))
    gui = bsub.add_parser("gui", help="the window's event-loop lateness beside a thread busy in Python (JSON)")
    gui.add_argument("--seconds", type=float, default=3.0, help="length of each measurement (default 3 s)")
    gui.set_defaults(func=_handler_lazy("app.bench:run_gui_bench"))
    eng.add_argument("--question-wav", help="a spoken question (WAV) to repeat instead of espeak-ng's questions")
    eng.set_defaults(func=_handler_lazy("core.compose.bench:run_bench"))


def _handler_lazy(spec: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return _handler(spec)(args)

    return run


def _add_chat(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="a conversation from a WAV file or a script through the engine (headless); "
                                    "without --input/--script: a text chat in the terminal")
    p.add_argument("--profile", choices=["freeze-omni", "lite"], default="lite")
    p.add_argument("--input", help="conversation WAV (speech, pauses, interruptions)")
    p.add_argument("--script", help="or a conversation script (JSON, docs/conversations.md): a scripted user speaks "
                                    "it with espeak-ng, reacting to the assistant; the run is scored")
    p.add_argument("--report", help="with --script: write the scoring report (JSON) here")
    p.add_argument("--output", help="what the assistant played, on the input's timeline (with --input/--script)")
    p.add_argument("--events", help="events JSONL (with --input/--script)")
    p.add_argument("--realtime", action="store_true", help="run at the speed of the input instead of a virtual clock")
    p.add_argument("--checkpoint")
    p.add_argument("--llm")
    p.add_argument("--system-prompt", type=_system_prompt)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--record", help="also record the conversation as a session folder")
    p.add_argument("--echo", choices=["none", "headset", "laptop", "speakerphone"], default="none",
                   help="simulated room: the assistant's playback comes back into the input through it (default: "
                        "none, as with a headset)")
    p.add_argument("--echo-seed", type=_seed, default=0, help="seed of the simulated room (same seed, same room)")
    p.set_defaults(func=_handler_lazy("core.compose.commands:run_chat"))


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check audio, display, GPU and weights; say what to do about each problem")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_handler_lazy("core.doctor:run_doctor"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Parley: a local full-duplex voice assistant. "
                                     + APP_HINT, epilog=APP_HINT)
    parser.add_argument("--version", action="version", version=f"parley {__version__}")
    parser.add_argument("--self-test", action="store_true",
                        help="import every module, open the main window offscreen, load Lite if present, exit")
    parser.add_argument("--log-level", default="INFO", type=_log_level, metavar="LEVEL",
                        help=f"console log level: {', '.join(LOG_LEVELS)} (the log file keeps DEBUG)")
    parser.add_argument("--install-desktop-entry", action="store_true",
                        help="add Parley to the desktop's application menu (a .desktop entry and its icon), then exit")
    sub = parser.add_subparsers(dest="command")
    _add_reply(sub)
    _add_bench(sub)
    _add_chat(sub)
    _add_doctor(sub)
    from core.session.cli import add_session_parsers

    add_session_parsers(sub)
    # replay rebuilds the engine: the composition root's handler (the session package does not compose engines)
    sub.choices["replay"].set_defaults(func=_handler_lazy("core.compose.commands:run_replay"))
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.log import setup_logging
    from core.runtime import force_offline

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    log_path = setup_logging(args.log_level)
    force_offline()
    try:
        undecodable = _undecodable_argument(argv)
        if undecodable:
            raise UserError(undecodable)
        if args.self_test:
            return _handler("app.selftest:run_self_test")(args)
        if args.install_desktop_entry:
            return _handler("app.commands:run_install")(args)
        if args.command is None:
            return _handler("app.main:run_app")(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"parley: {first_line(exc, limit=2000)}", file=sys.stderr)
        return exc.exit_code
    except BackendError as exc:  # a model failed; the profile already said why in one line
        log.debug("backend error", exc_info=True)
        print(f"parley: {first_line(exc, limit=2000)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an unexpected failure: one line on the console, the traceback in the log file
        log.debug("unhandled error", exc_info=True)
        where = f" (details in {log_path})" if log_path else ""
        print(f"parley: internal error: {type(exc).__name__}: {first_line(exc, limit=2000)}{where}",
              file=sys.stderr)
        return 1



if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
