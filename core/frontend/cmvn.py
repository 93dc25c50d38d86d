"""Global cepstral mean and variance normalisation (CMVN) statistics.

Two file formats hold the same accumulated statistics over ``N`` frames of ``D``-dimensional features:

* JSON: ``{"mean_stat": [D sums], "var_stat": [D sums of squares], "frame_num": N}``;
* Kaldi text matrix (2 x (D+1)): ``[ sum_1 .. sum_D N`` / ``sumsq_1 .. sumsq_D 0 ]``.

mean = sum / N, var = sumsq / N - mean^2 floored at 1e-20, istd = 1 / sqrt(var). Applying: y = (x - mean) * istd.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

VARIANCE_FLOOR = 1e-20


class CmvnError(ValueError):
    """The CMVN file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class CmvnStats:
    mean: torch.Tensor  # (D,) float32
    istd: torch.Tensor  # (D,) float32

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """Normalise features whose last dimension is D."""
        return (features - self.mean.to(features)) * self.istd.to(features)


def stats_from_sums(sums: list[float], sumsq: list[float], count: float, source: str = "CMVN") -> CmvnStats:
    if len(sums) != len(sumsq) or not sums:
        raise CmvnError(f"{source}: {len(sums)} sums but {len(sumsq)} sums of squares")
    if not (count > 0) or not math.isfinite(count):
        raise CmvnError(f"{source}: frame count must be positive, got {count}")
    mean = [s / count for s in sums]
    var = [max(q / count - m * m, VARIANCE_FLOOR) for q, m in zip(sumsq, mean)]
    istd = [1.0 / math.sqrt(v) for v in var]
    return CmvnStats(mean=torch.tensor(mean, dtype=torch.float32), istd=torch.tensor(istd, dtype=torch.float32))


def parse_json_cmvn(text: str, source: str = "CMVN") -> CmvnStats:
    try:
        data = json.loads(text)
        sums = [float(v) for v in data["mean_stat"]]
        sumsq = [float(v) for v in data["var_stat"]]
        count = float(data["frame_num"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CmvnError(f"{source}: not a JSON CMVN file with mean_stat/var_stat/frame_num ({exc})") from exc
    return stats_from_sums(sums, sumsq, count, source)


def parse_kaldi_cmvn(text: str, source: str = "CMVN") -> CmvnStats:
    tokens = text.replace("[", " [ ").replace("]", " ] ").split()
    if len(tokens) < 2 or tokens[0] != "[" or tokens[-1] != "]":
        raise CmvnError(f"{source}: not a Kaldi text matrix '[ ... ]'")
    try:
        values = [float(t) for t in tokens[1:-1]]
    except ValueError as exc:
        raise CmvnError(f"{source}: non-numeric entry in Kaldi CMVN matrix ({exc})") from exc
    if len(values) % 2 or len(values) < 4:
        raise CmvnError(f"{source}: a Kaldi CMVN matrix has 2 rows of D+1 numbers, got {len(values)} numbers")
    width = len(values) // 2
    first, second = values[:width], values[width:]
    return stats_from_sums(first[:-1], second[:-1], first[-1], source)


def load_cmvn(path: str | Path, is_json: bool) -> CmvnStats:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CmvnError(f"cannot read CMVN file {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise CmvnError(f"CMVN file {path} is not text ({exc})") from exc
    return parse_json_cmvn(text, str(path)) if is_json else parse_kaldi_cmvn(text, str(path))
