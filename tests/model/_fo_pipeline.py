"""Shared, cached loading of the tiny Freeze-Omni fixture for the listen/generate/pipeline/CLI tests.

The pipeline is loaded once per test process through the public loader (``load_freeze_omni``) and reused: the
models are stateless, every test builds its own dialogue state.
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest

from _paths import TINY_A, TINY_A_CHECKPOINTS, TINY_A_EXPECTED

LLM_DIR = TINY_A / "llm"
ROLE = "You are a helpful assistant."  # the recording's system role (parity.FIXTURE_ROLE)
CHUNK = 2560

requires_fixture = pytest.mark.skipif(not (TINY_A_CHECKPOINTS / "audiollm" / "final.pt").is_file(),
                                      reason=f"parity fixture not found at {TINY_A}")


@lru_cache(maxsize=1)
def pipeline():
    from core.model.freeze_omni.loader import load_freeze_omni
    from core.runtime import configure_torch_threads

    configure_torch_threads(1)
    return load_freeze_omni(TINY_A_CHECKPOINTS, LLM_DIR, device="cpu", dtype="float32")


@lru_cache(maxsize=None)
def expected(name: str) -> dict[str, np.ndarray]:
    with np.load(TINY_A_EXPECTED / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


@lru_cache(maxsize=1)
def meta() -> dict:
    return json.loads((TINY_A_EXPECTED / "meta.json").read_text())


def fixture_settings():
    """The recording's settings: greedy LLM and decoder, codec windows 8/2, N 2401, threshold 0.01, offline rule."""
    from core.model.freeze_omni.parity import fixture_settings as settings

    return settings()


def listened_state(name: str = "listen"):
    """Dialogue state after the system role and the fixture's listened chunks (honouring the decisions)."""
    from core.model.freeze_omni.parity import listen_until_decided

    return listen_until_decided(pipeline(), expected(name)["wav_input"], ROLE)


def max_abs(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())
