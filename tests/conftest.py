"""Suite-wide test set-up: isolated config/data/log folders, torch pinned to one thread, marker policy.

Markers (registered in pyproject.toml): ``slow``, ``audio`` (needs the PulseAudio loop from
``scripts/testenv.sh start``), ``ui``. All of them run in CI.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))   # the _shared helpers

_ISOLATED = tempfile.mkdtemp(prefix="parley-tests-")
for _var, _sub in (("PARLEY_CONFIG_DIR", "config"), ("PARLEY_DATA_DIR", "data"), ("PARLEY_LOG_DIR", "log")):
    os.environ.setdefault(_var, str(Path(_ISOLATED) / _sub))
os.environ.setdefault("PARLEY_TORCH_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config: pytest.Config) -> None:
    from core.runtime import configure_torch_threads

    configure_torch_threads()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
