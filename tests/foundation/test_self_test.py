"""``parley --self-test`` in the installed environment (CI also runs it inside the PyInstaller bundle)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PARLEY = Path(sys.executable).with_name("parley")


@pytest.mark.slow
def test_self_test_passes_offscreen_with_one_summary_line():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run([str(PARLEY), "--self-test", "--log-level", "WARNING"], capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("parley self-test: OK")
    assert "main window" in lines[0] and "lite profile loaded" in lines[0]
