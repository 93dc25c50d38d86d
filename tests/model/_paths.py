"""Where the shared parity fixtures live: ``PARLEY_FIXTURES`` or ``<repo>/../shared/fixtures``.

Import from a test module in this folder with ``from _paths import FIXTURES, TINY_A``.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("PARLEY_FIXTURES") or (REPO_ROOT / ".." / "shared" / "fixtures")).resolve()
TINY_A = FIXTURES / "freeze_omni_tiny_a"
TINY_A_CHECKPOINTS = TINY_A / "checkpoints"
TINY_A_EXPECTED = TINY_A / "expected"
