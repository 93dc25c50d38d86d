"""``parley replay`` and ``parley session repair|export|list|prune``: handlers and their arguments.

Wiring (core/cli.py)::

    from core.session.cli import add_session_parsers   # or lazily: it only builds argparse parsers
    add_session_parsers(sub)

adds ``replay`` (its arguments only: replaying rebuilds an engine, so the composition root sets its handler,
``core.compose.commands.run_replay``) and ``session {repair,export,list,prune}`` with ``func`` set to
:func:`run_session_repair`, :func:`run_session_export`, :func:`run_session_list`, :func:`run_session_prune`.
Each handler prints its result (JSON with ``--json``) and returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

from core.session.store import MAX_RETENTION_DAYS

log = logging.getLogger(__name__)


def _user_error(message: str) -> Exception:
    from core.errors import UserError

    return UserError(message)


def _lazy(name: str):
    def run(args: argparse.Namespace) -> int:
        return getattr(sys.modules[__name__], name)(args)

    return run


def add_session_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add ``replay`` and ``session`` (repair/export/list/prune) to the ``parley`` sub-command parsers."""
    p = subparsers.add_parser("replay", help="replay a recorded session headless and compare it with the original")
    p.add_argument("session", help="session folder")
    p.add_argument("--profile", choices=["freeze-omni", "lite"], help="default: the profile the session used")
    p.add_argument("--output", help="folder for the new session (default: next to the original, *_replay_<time>)")
    p.add_argument("--source", choices=["auto", "raw", "clean"], default="auto",
                   help="raw: mic_raw.wav; clean: mic_clean.wav (after AEC); auto: raw for file-driven sessions, "
                        "clean for live ones")
    p.add_argument("--realtime", action="store_true", help="pace the replay with the wall clock")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")

    s = subparsers.add_parser("session", help="recorded sessions: repair, export, list, prune")
    ssub = s.add_subparsers(dest="session_command", required=True)
    r = ssub.add_parser("repair", help="fix a session left by a crash (WAV sizes, torn JSONL line, transcript)")
    r.add_argument("session", help="session folder")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_lazy("run_session_repair"))
    e = ssub.add_parser("export", help="zip a session folder")
    e.add_argument("session", help="session folder")
    e.add_argument("output", help="zip file to write")
    e.set_defaults(func=_lazy("run_session_export"))
    ls = ssub.add_parser("list", help="list sessions with their size and location")
    ls.add_argument("--folder", help="sessions folder (default: settings, $PARLEY_DATA_DIR/sessions, user data dir)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_lazy("run_session_list"))
    pr = ssub.add_parser("prune", help="delete sessions older than N days (the retention setting by default)")
    pr.add_argument("--days", metavar="DAYS",
                    help=f"0 to {MAX_RETENTION_DAYS}; default: recording.retention_days from the settings")
    pr.add_argument("--folder")
    pr.set_defaults(func=_lazy("run_session_prune"))


def _number_option(value: str, option: str, lo: float, hi: float) -> float:
    """A numeric command-line value that must be finite and within [lo, hi]; one-line UserError otherwise."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not lo <= number <= hi:
        raise _user_error(f"{option} must be a number from {lo:g} to {hi:g} (got {value!r})")
    return number


def _session_arg(path: str) -> Path:
    from core.session.store import is_session_dir

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise _user_error(f"no such session folder: {folder}")
    if not is_session_dir(folder):
        raise _user_error(f"{folder} is not a session folder (no meta.json or events.jsonl)")
    return folder


def _settings_folder() -> tuple[str | None, float | None]:
    """(recording folder, retention days) from the settings file; (None, None) when there is none."""
    try:
        from core.settings import load_settings

        loaded = load_settings(keep_aside=False)  # only reads: a broken file is the app's to keep aside
        settings = getattr(loaded, "settings", loaded)
        rec = settings.recording
        return (rec.folder or None), float(rec.retention_days)
    except Exception as exc:  # noqa: BLE001 - settings trouble must not stop a session command
        log.debug("settings not available: %s", exc)
        return None, None


def run_session_repair(args: argparse.Namespace) -> int:
    from core.session.repair import repair_session

    folder = Path(args.session).expanduser()
    if not folder.is_dir():
        raise _user_error(f"no such session folder: {folder}")
    report = repair_session(folder)
    if getattr(args, "json", False):
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        if not report.actions and not report.problems:
            print(f"{folder}: nothing to repair")
        for action in report.actions:
            print(f"fixed: {action}")
        for problem in report.problems:
            print(f"not fixed: {problem}")
    return 0 if report.ok else 1


def run_session_export(args: argparse.Namespace) -> int:
    from core.session.repair import export_session

    folder = _session_arg(args.session)
    skipped: list[str] = []
    try:
        out = export_session(folder, args.output, skipped=skipped)
    except (ValueError, OSError) as exc:
        raise _user_error(f"export failed: {exc}") from exc
    print(f"exported {folder} to {out} ({out.stat().st_size} bytes)")
    if skipped:
        print(f"skipped {len(skipped)} link(s) or special file(s) (only the folder's own files are exported): "
              + ", ".join(skipped))
    return 0


def run_session_list(args: argparse.Namespace) -> int:
    from core.session.store import list_sessions, sessions_root

    folder = args.folder or _settings_folder()[0]
    infos = list_sessions(folder)
    if args.json:
        print(json.dumps({"root": str(sessions_root(folder)), "sessions": [i.to_dict() for i in infos]}, indent=2))
        return 0
    print(f"sessions in {sessions_root(folder)}:")
    for i in infos:
        when = i.start_time.strftime("%Y-%m-%d %H:%M:%S") if i.start_time else "?"
        dur = f"{i.duration_s:7.1f} s" if i.duration_s is not None else "      ? s"
        print(f"  {when}  {dur}  {i.size_bytes / 1e6:8.2f} MB  {'' if i.complete else '(incomplete) '}{i.path}")
    return 0


def run_session_prune(args: argparse.Namespace) -> int:
    from core.session.store import apply_retention, sessions_root

    days = None if args.days is None else _number_option(args.days, "--days", 0, MAX_RETENTION_DAYS)
    folder, setting_days = _settings_folder()
    folder = args.folder or folder
    days = setting_days if days is None else days
    if not days:
        print("retention is off (0 days): nothing deleted")
        return 0
    try:
        result = apply_retention(days, root=folder)
    except ValueError as exc:  # a retention setting outside the range (the settings file is checked, but still)
        raise _user_error(str(exc)) from exc
    print(f"deleted {len(result.deleted)} session(s) older than {days:g} days in {sessions_root(folder)}")
    for path in result.deleted:
        print(f"  {path}")
    if result.skipped:
        print(f"kept {len(result.skipped)} old folder(s) that Parley may not delete by itself "
              "(delete them yourself if you no longer need them):")
        for path, reason in result.skipped:
            print(f"  {path}: {reason}")
    for path, reason in result.failed:
        print(f"could not delete {path}: {reason}")
    return 1 if result.failed else 0
