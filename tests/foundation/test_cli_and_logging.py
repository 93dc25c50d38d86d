"""The ``parley`` entry point and the one logging set-up."""

from __future__ import annotations

import logging
import logging.handlers
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARLEY = Path(sys.executable).with_name("parley")


def test_console_script_help_lists_subcommands():
    out = subprocess.run([str(PARLEY), "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("reply", "bench", "chat", "doctor", "--self-test"):
        assert sub in out


def test_version():
    from core import __version__

    out = subprocess.run([str(PARLEY), "--version"], capture_output=True, text=True, check=True).stdout
    assert __version__ in out


def test_user_error_is_one_clear_line_without_traceback(tmp_path):
    missing = tmp_path / "nope.wav"
    proc = subprocess.run([str(PARLEY), "reply", "--profile", "freeze-omni", "--checkpoint", str(tmp_path / "ckpt"),
                           "--llm", str(tmp_path / "llm"), "--input", str(missing), "--output", str(tmp_path / "o.wav")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "parley:" in proc.stderr


def test_setup_logging_writes_rotating_file(tmp_path, monkeypatch):
    code = (
        "import logging, os\n"
        "from core.log import setup_logging\n"
        "path = setup_logging('INFO', console=False)\n"
        "logging.getLogger('core.test').info('hello from the test')\n"
        "print(path)\n"
    )
    env = dict(os.environ, PARLEY_LOG_DIR=str(tmp_path / "logs"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=REPO)
    path = Path(out.stdout.strip())
    assert path.parent == tmp_path / "logs"
    assert "hello from the test" in path.read_text()


def test_setup_logging_survives_unwritable_log_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = (
        "from core.log import setup_logging\n"
        "print(setup_logging('INFO', console=False))\n"
    )
    env = dict(os.environ, PARLEY_LOG_DIR=str(blocker / "logs"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, cwd=REPO)
    assert out.stdout.strip() == "None"
