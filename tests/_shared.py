"""Helpers several test folders share (importable as ``_shared``: tests/ is on sys.path through its conftest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def fixtures_root() -> Path:
    """The tiny Freeze-Omni parity sets: ``PARLEY_FIXTURES`` or ``<repo>/../shared/fixtures``."""
    return Path(os.environ.get("PARLEY_FIXTURES") or (REPO / ".." / "shared" / "fixtures")).resolve()


def default_fixture() -> Path:
    return fixtures_root() / "freeze_omni_tiny_a"


def fixture_spec(**overrides: Any):
    """A ProfileSpec for the tiny Freeze-Omni fixture (greedy, CPU, float32)."""
    from core.compose.spec import ProfileSpec, SamplingSpec

    fixture = default_fixture()
    spec = ProfileSpec(profile="freeze-omni", checkpoint=str(fixture / "checkpoints"), llm=str(fixture / "llm"),
                       sampling=SamplingSpec(greedy=True))
    for key, value in overrides.items():
        setattr(spec, key, value)
    return spec


def chunks(audio_16k: np.ndarray, chain=None, t0: float = 0.0):
    """The capture chain's chunks for a signal (no echo: the canceller off), capture times from ``t0``."""
    from core.constants import CHUNK_SAMPLES_16K, CHUNK_SECONDS
    from core.engine.filemode import file_chain

    chain = chain or file_chain(None)
    out = []
    chain.on_chunk = out.append
    audio = np.asarray(audio_16k, dtype=np.float32)
    n = -(-len(audio) // CHUNK_SAMPLES_16K) * CHUNK_SAMPLES_16K
    padded = np.zeros(n, dtype=np.float32)
    padded[:len(audio)] = audio
    chain.process(padded, np.zeros_like(padded))
    for i, c in enumerate(out):
        c.t_start = t0 + i * CHUNK_SECONDS
    return out


def event(type_: str, t: float | None, turn: int, fields: dict | None = None):
    """An engine event from its JSONL form (type, time, turn and fields); ``t`` None: the bus stamps it."""
    import dataclasses

    from core.engine.events import event_from_dict

    ev = event_from_dict({"type": type_, "t": 0.0 if t is None else t, "turn": turn, **(fields or {})})
    return dataclasses.replace(ev, t=None) if t is None else ev


def require_espeak() -> None:
    """Skip the calling test (or fixture) when espeak-ng, the scripted users' voice, is not installed."""
    import pytest

    from core.harness.voices import SpeechError, espeak_path

    try:
        espeak_path()
    except SpeechError as exc:
        pytest.skip(str(exc))


def require_lite_weights() -> None:
    """Skip the calling test (or fixture) when the Lite profile's weight packages are not installed."""
    import pytest

    from core.settings.models import lite_missing_packages

    if lite_missing_packages():
        pytest.skip("Lite weight packages not installed")
