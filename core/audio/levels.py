"""Signal levels shared by the audio chain's users: the harness sets a voice's level with it, Lite decides on it
whether a turn's audio begins in sound."""

from __future__ import annotations

import math

import numpy as np


def rms_dbfs(x: np.ndarray) -> float:
    """Mean-square level of ``x`` in dBFS (about -200 for digital silence or no samples)."""
    x = np.asarray(x)
    power = float(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return 10.0 * math.log10(power + 1e-20)
