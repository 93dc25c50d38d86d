"""``parley chat`` without --input: an interactive text chat in the terminal (typed lines in, the conversation
printed, answers spoken when an output device exists). Runs the real command with the Lite weights."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from _shared import REPO

pytest.importorskip("core.model.lite.backend")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("with_sound", [True, False])
def test_typed_lines_are_answered_and_printed(with_sound):
    env = dict(os.environ)
    if not with_sound:      # no sound server: answers are printed only
        env["PULSE_SERVER"] = "unix:/nonexistent/parley-no-server"
    proc = subprocess.run([sys.executable, "-m", "core.cli", "chat"], input="What is the capital of France?\n\n",
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("Parley: ")]
    assert len(lines) == 1 and "paris" in lines[0].lower()
    assert ("speaking" if with_sound else "text only") in proc.stderr
