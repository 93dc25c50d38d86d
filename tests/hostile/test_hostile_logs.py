"""The log file is private: owner-only, bounded in size and age, and free of what the user or the assistant said
unless the user asks for it (PARLEY_LOG_SPEECH=1) (issue 15, item 16)."""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

from _hostile import REPO, run_python

SETUP = "import logging\nfrom core.log import setup_logging\npath = setup_logging('WARNING', console=False)\n"
DAY = 86400


def test_log_file_and_folder_are_owner_only_where_a_user_has_them(home):
    proc = run_python(SETUP + "logging.getLogger('core.test').info('x' * 1000)\nprint(path)")
    assert proc.returncode == 0, proc.stderr
    path = Path(proc.stdout.strip())
    assert path == home.logs / "parley.log"
    assert path.stat().st_mode & 0o777 == 0o600
    assert home.logs.stat().st_mode & 0o777 == 0o700


def test_files_left_by_an_older_version_become_owner_only_and_rotation_keeps_it(home):
    home.logs.mkdir(parents=True, mode=0o755)
    os.chmod(home.logs, 0o755)
    for name in ("parley.log", "parley.log.1"):
        (home.logs / name).write_text("old line\n")
        os.chmod(home.logs / name, 0o644)
    # about 2.5 MB: the 2 MB file rotates once
    proc = run_python(SETUP + "for i in range(2500):\n"
                              "    logging.getLogger('core.test').info('%04d %s', i, 'y' * 1000)")
    assert proc.returncode == 0, proc.stderr
    assert home.logs.stat().st_mode & 0o777 == 0o700
    files = sorted(home.logs.iterdir())
    assert [f.name for f in files] == ["parley.log", "parley.log.1", "parley.log.2"]
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)


def test_a_log_folder_chosen_with_parley_log_dir_keeps_its_mode(tmp_path, monkeypatch):
    shared = tmp_path / "shared-logs"
    shared.mkdir()
    os.chmod(shared, 0o755)
    monkeypatch.setenv("PARLEY_LOG_DIR", str(shared))
    proc = run_python(SETUP + "print(path)")
    assert proc.returncode == 0, proc.stderr
    assert shared.stat().st_mode & 0o777 == 0o755
    assert (shared / "parley.log").stat().st_mode & 0o777 == 0o600


def test_old_log_files_are_deleted_at_start_and_nothing_else(home):
    home.logs.mkdir(parents=True)
    old = time.time() - 60 * DAY
    files = {"parley.log": old, "parley.log.1": old, "parley.log.2": time.time() - DAY,
             "parley.log.5": old, "notes.txt": old, "parley.log.keep": old}
    for name, when in files.items():
        (home.logs / name).write_text(name)
        os.utime(home.logs / name, (when, when))
    proc = run_python(SETUP + "logging.getLogger('core.test').warning('fresh start')")
    assert proc.returncode == 0, proc.stderr
    left = sorted(p.name for p in home.logs.iterdir())
    assert left == ["notes.txt", "parley.log", "parley.log.2", "parley.log.keep"]
    assert "fresh start" in (home.logs / "parley.log").read_text()
    assert "parley.log" not in (home.logs / "parley.log").read_text().splitlines()[0]   # the old content is gone


def test_speech_appears_only_when_the_user_asks_for_it(monkeypatch):
    from core import log as parley_log

    monkeypatch.delenv(parley_log.SPEECH_ENV, raising=False)
    assert "my bank password" not in parley_log.speech("my bank password")
    assert "16" in parley_log.speech("my bank password")            # its length, which helps debugging
    monkeypatch.setenv(parley_log.SPEECH_ENV, "1")
    assert "my bank password" in parley_log.speech("my bank password")
    monkeypatch.setenv(parley_log.SPEECH_ENV, "0")
    assert "my bank password" not in parley_log.speech("my bank password")
    parley_log.set_speech_logging(True)      # the settings' debug option
    try:
        assert "my bank password" in parley_log.speech("my bank password")
    finally:
        parley_log.set_speech_logging(None)


# Names under which code holds what the user or the assistant said (or whole events, which carry it).
SPEECH_NAMES = {"text", "user_text", "assistant_text", "transcript", "answer", "prompt", "system_prompt", "ev",
                "utterance", "words", "reply_text"}
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
SAFE_WRAPPERS = {"speech", "len"}
# Calls the name rule flags although they print no speech, with the reason.
NOT_SPEECH = {("app/widgets/notify.py", "text"): "a notice is Parley's own message (warnings, errors), never speech"}


def _speech_in(node: ast.AST) -> str | None:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SAFE_WRAPPERS:
        return None
    if isinstance(node, ast.IfExp):   # `a if text else b`: the test decides, it is not printed
        return _speech_in(node.body) or _speech_in(node.orelse)
    if isinstance(node, ast.Name) and node.id in SPEECH_NAMES:
        return node.id
    if isinstance(node, ast.Attribute) and node.attr in SPEECH_NAMES:
        return ast.unparse(node)
    for child in ast.iter_child_nodes(node):
        found = _speech_in(child)
        if found:
            return found
    return None


def test_no_log_call_prints_speech_without_the_speech_helper():
    offenders = []
    for path in sorted([*(REPO / "core").rglob("*.py"), *(REPO / "app").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LOG_METHODS and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in {"log", "logger", "logging"}):
                continue
            for arg in node.args[1:]:
                found = _speech_in(arg)
                if found and (str(path.relative_to(REPO)), found) not in NOT_SPEECH:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {found}")
    assert offenders == [], "log calls that print speech; wrap it in core.log.speech():\n" + "\n".join(offenders)


def test_speech_logging_is_a_setting_that_is_off_by_default(home):
    """``ui.log_speech`` (off by default) is what the app applies at start (app/main.py); the environment variable
    still works when the setting is off."""
    code = ("import json, logging\n"
            "from core.log import set_speech_logging, speech, speech_logging\n"
            "from core.settings import Settings\n"
            "assert Settings().ui.log_speech is False\n"
            "on, warnings = Settings.from_dict({'ui': {'log_speech': True}})\n"
            "assert not warnings and on.ui.log_speech is True\n"
            "for s in (Settings(), on):\n"
            "    set_speech_logging(s.ui.log_speech or None)   # the line app/main.py runs at start\n"
            "    print(speech('hello there'))\n")
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["<11", "chars>", "'hello", "there'"]
    app_main = (REPO / "app" / "main.py").read_text()
    assert "set_speech_logging(loaded.settings.ui.log_speech or None)" in app_main
