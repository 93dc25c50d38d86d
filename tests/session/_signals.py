"""Small signal makers and a JSONL reader for the session tests (import as ``from _signals import ...``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(n: int, seed: int = 0, amp: float = 0.2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-amp, amp, n).astype(np.float32)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
