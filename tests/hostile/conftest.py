"""Bad input and faults: every test here runs with a private home.

``HOME`` and the XDG folders point into the test's own temporary folder and the ``PARLEY_*_DIR`` overrides are
removed, so Parley's code finds its settings, sessions, logs and caches where it would on a user's machine
(platformdirs' defaults) -- but inside the test. A user's real state cannot be touched, and a test can check the
exact places a user would look. The ``home`` fixture names those places; subprocesses inherit the environment.
Helpers for the tests are in ``_hostile.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from _hostile import REPO, Home


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Home:
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("HOME", str(root))
    for var, sub in (("XDG_CONFIG_HOME", ".config"), ("XDG_DATA_HOME", ".local/share"),
                     ("XDG_STATE_HOME", ".local/state"), ("XDG_CACHE_HOME", ".cache")):
        monkeypatch.setenv(var, str(root / sub))
    for var in ("PARLEY_CONFIG_DIR", "PARLEY_DATA_DIR", "PARLEY_LOG_DIR", "PARLEY_CACHE_DIR", "PARLEY_LOG_SPEECH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return Home(root)


@pytest.fixture
def without_root_file_access() -> list[str]:
    """A command prefix under which file permissions apply as they do to a normal user.

    Tests run as root in CI, and root reads a mode-000 file. ``setpriv`` drops the two capabilities that let root
    ignore permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) for the child process only: it stays uid 0 and may
    still replace files in folders it owns, exactly like a user facing a root-owned file after ``sudo parley``.
    Not root: no prefix is needed.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("running as root without setpriv (util-linux): cannot make a file unreadable")
    caps = "-dac_override,-dac_read_search"
    prefix = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.decode(errors='replace').strip()}")
    return prefix
