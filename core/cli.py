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
from core.errors import UserError

log = logging.getLogger(__name__)

APP_HINT = "Run `parley` with no command to open the desktop app."


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
    p.add_argument("--system-prompt", help="system prompt / persona")
    p.add_argument("--greedy", action="store_true", help="top-k 1 for the LLM and the speech decoder")
    p.add_argument("--turn-end", choices=["model", "input"], default="model",
                   help="model: honour the turn-state head; input: listen to the whole file, then answer")
    p.add_argument("--codec-chunk", type=int, help="codec window size in tokens")
    p.add_argument("--codec-padding", type=int, help="codec look-ahead/left context in tokens")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--seed", type=int, default=0)
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
    tt.add_argument("--seed", type=int, default=0, help="room seed")
    tt.add_argument("--echo-minutes", type=float, default=0.0,
                    help="also the echo alone: the assistant talks this long in the speakerphone room")
    tt.add_argument("--keep", help="a folder to keep each run's events (JSONL), report (JSON) and audio in")
    tt.add_argument("--checkpoint")
    tt.add_argument("--llm")
    tt.set_defaults(func=_handler_lazy("core.compose.bench:run_turns_bench"))
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
    p.add_argument("--system-prompt")
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record", help="also record the conversation as a session folder")
    p.add_argument("--echo", choices=["none", "headset", "laptop", "speakerphone"], default="none",
                   help="simulated room: the assistant's playback comes back into the input through it (default: "
                        "none, as with a headset)")
    p.add_argument("--echo-seed", type=int, default=0, help="seed of the simulated room (same seed, same room)")
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
    parser.add_argument("--log-level", default="INFO")
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
    args = parser.parse_args(argv)
    log_path = setup_logging(args.log_level)
    force_offline()
    try:
        if args.self_test:
            return _handler("app.selftest:run_self_test")(args)
        if args.install_desktop_entry:
            return _handler("app.commands:run_install")(args)
        if args.command is None:
            return _handler("app.main:run_app")(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # an unexpected failure: one line on the console, the traceback in the log file
        log.debug("unhandled error", exc_info=True)
        where = f" (details in {log_path})" if log_path else ""
        print(f"parley: internal error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
