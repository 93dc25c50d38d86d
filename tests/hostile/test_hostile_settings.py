"""A settings file that cannot be read or parsed: defaults with a visible warning, the user's file never overwritten,
kept aside once; ``doctor`` and ``--self-test`` change nothing (issue 15, items 3, 6, 7)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from _hostile import run_parley, run_python, tree
from core.settings import Settings, load_settings, save_settings

USER_SETTINGS = {"version": 1, "persona": {"name": "Ada", "system_prompt": "Answer in French."},
                 "ui": {"first_run_done": False}}

BROKEN = {
    "non-utf8": b'{"persona": {"name": "Caf\xe9"}}',
    "binary": bytes(range(256)) * 4,
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": b'{"persona": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5001,
    "torn-json": b'{"persona": {"name": "Ada",,,',
}


def write_settings(home, content: bytes | dict) -> bytes:
    home.config.mkdir(parents=True, exist_ok=True)
    raw = content if isinstance(content, bytes) else json.dumps(content, indent=2).encode()
    home.settings.write_bytes(raw)
    return raw


def asides(home) -> list:
    return sorted(p for p in home.config.iterdir() if p.name.startswith("settings.json.broken-"))


# ------------------------------------------------------------------------------------------- 3: unreadable file


def test_unreadable_settings_file_is_never_replaced(home, without_root_file_access):
    raw = write_settings(home, USER_SETTINGS)
    os.chmod(home.settings, 0)
    code = textwrap.dedent("""
        from core.settings import Settings, load_settings, save_settings
        res = load_settings()
        print("WARN", res.warnings)
        assert res.settings == Settings()
        try:
            save_settings(res.settings)
        except OSError as exc:
            print("REFUSED", exc)
    """)
    proc = run_python(code, prefix=without_root_file_access)
    assert proc.returncode == 0, proc.stderr
    assert home.settings.read_bytes() == raw and home.settings.stat().st_mode & 0o777 == 0
    assert "cannot be read (Permission denied)" in proc.stdout and "REFUSED" in proc.stdout
    refusal = proc.stdout.split("REFUSED", 1)[1].strip()
    assert len(refusal.splitlines()) == 1 and str(home.settings) in refusal
    assert [p.name for p in home.config.iterdir()] == ["settings.json"]   # no copy and no temporary file either


@pytest.mark.ui
def test_closing_the_window_over_an_unreadable_settings_file_says_so_and_saves_nothing(home,
                                                                                     without_root_file_access):
    raw = write_settings(home, USER_SETTINGS)
    os.chmod(home.settings, 0)
    code = textwrap.dedent("""
        import os
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
        import app
        from PySide6.QtWidgets import QApplication
        from app.main_window import MainWindow
        from core.settings import load_settings
        qapp = QApplication([])
        w = MainWindow(load_settings())
        w.show(); qapp.processEvents()
        w.close(); qapp.processEvents()
        for text in w.notices.texts():
            print("NOTICE", text)
    """)
    proc = run_python(code, prefix=without_root_file_access)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert home.settings.read_bytes() == raw
    notices = [line for line in proc.stdout.splitlines() if line.startswith("NOTICE")]
    assert any("cannot be read" in n for n in notices)               # at start: defaults, and why
    assert any("Cannot save the settings" in n for n in notices)    # at close: nothing saved, and why


def test_settings_path_that_is_a_folder_or_a_fifo_is_reported_not_fatal(home):
    home.config.mkdir(parents=True)
    home.settings.mkdir()
    res = load_settings()
    assert res.settings == Settings() and res.warnings and "settings.json" in res.warnings[0]
    with pytest.raises(OSError):
        save_settings(Settings())
    home.settings.rmdir()
    os.mkfifo(home.settings)    # reading a fifo would block the start forever: in a subprocess, with a time limit
    code = textwrap.dedent("""
        from core.settings import Settings, load_settings, save_settings
        res = load_settings()
        print("WARN", res.warnings)
        try:
            save_settings(Settings())
        except OSError as exc:
            print("REFUSED", exc)
    """)
    try:
        proc = run_python(code, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("reading a fifo in place of settings.json blocked the start")
    assert "not a regular file" in proc.stdout and "REFUSED" in proc.stdout, proc.stderr


def test_saving_through_a_settings_link_keeps_the_link(home, tmp_path):
    dotfiles = tmp_path / "dotfiles" / "parley.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text(json.dumps(USER_SETTINGS))
    home.config.mkdir(parents=True)
    home.settings.symlink_to(dotfiles)
    res = load_settings()
    assert res.settings.persona.name == "Ada"
    res.settings.persona.name = "Grace"
    save_settings(res.settings)
    assert home.settings.is_symlink()
    assert json.loads(dotfiles.read_text())["persona"]["name"] == "Grace"


# ------------------------------------------------------------------------------------------- 6: broken content


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_broken_settings_give_defaults_a_warning_and_one_copy(home, kind):
    raw = write_settings(home, BROKEN[kind])
    res = load_settings()
    assert res.settings == Settings()
    assert res.warnings and "broken" in res.warnings[0] and len(res.warnings[0].splitlines()) == 1
    assert [p.read_bytes() for p in asides(home)] == [raw]
    assert not home.settings.exists()
    load_settings()
    assert len(asides(home)) == 1


def test_invalid_values_are_copied_aside_once_not_on_every_start(home):
    raw = write_settings(home, {"version": 1, "vad": {"onset_threshold": 7}, "persona": {"name": "Ada"}})
    for _ in range(3):
        res = load_settings()
        assert res.settings.persona.name == "Ada" and res.warnings
    assert [p.read_bytes() for p in asides(home)] == [raw]
    assert home.settings.read_bytes() == raw


def test_a_utf8_byte_order_mark_is_valid(home):
    write_settings(home, b"\xef\xbb\xbf" + json.dumps(USER_SETTINGS).encode())
    res = load_settings()
    assert res.warnings == [] and res.settings.persona.name == "Ada"
    assert asides(home) == []


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_doctor_diagnoses_broken_settings_without_changing_anything(home, kind):
    from core.doctor import WARN, run_checks

    write_settings(home, BROKEN[kind])
    before = tree(home.config)
    checks = run_checks(include=())
    assert tree(home.config) == before
    assert checks[0].name == "settings" and checks[0].status == WARN and "broken" in checks[0].detail


def test_doctor_command_with_a_non_utf8_settings_file(home):
    write_settings(home, BROKEN["non-utf8"])
    before = tree(home.config)
    proc = run_parley("doctor", "--json")
    assert "internal error" not in proc.stderr and proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    settings = next(c for c in report["checks"] if c["name"] == "settings")
    assert settings["status"] == "warn" and "broken" in settings["detail"]
    assert tree(home.config) == before


@pytest.mark.parametrize("kind", ["non-utf8", "torn-json"])
def test_session_commands_read_a_broken_settings_file_without_moving_it(home, kind):
    write_settings(home, BROKEN[kind])
    before = tree(home.config)
    proc = run_parley("session", "list")
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    assert tree(home.config) == before      # only the app, which then saves its own, keeps a broken file aside


# ------------------------------------------------------------------------------------------- 7: self-test


@pytest.mark.ui
@pytest.mark.parametrize("existing", [True, False])
def test_self_test_window_leaves_the_settings_alone(home, existing):
    if existing:
        write_settings(home, USER_SETTINGS)
    home.config.mkdir(parents=True, exist_ok=True)
    before = tree(home.config)
    proc = run_python("import os; os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
                      "from app.selftest import open_main_window\nprint(open_main_window())")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree(home.config) == before


@pytest.mark.ui
def test_self_test_window_leaves_a_broken_settings_file_in_place(home):
    write_settings(home, BROKEN["torn-json"])
    before = tree(home.config)
    proc = run_python("import os; os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
                      "from app.selftest import open_main_window\nprint(open_main_window())")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tree(home.config) == before
