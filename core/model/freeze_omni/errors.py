"""Errors and checkpoint checks shared by the Freeze-Omni loaders (audiollm, speech decoder, codec)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from core.model.refusals import pickle_refusal


class CheckpointError(ValueError):
    """A checkpoint or config file cannot be used: unreadable, truncated, wrong layout, missing/unexpected key,
    wrong shape or dtype.

    ``file`` is the offending file and ``key`` the state-dict or config key (None when the whole file is at fault).
    Both are part of the message, so a log line alone tells the user what to fix.
    """

    def __init__(self, file: str | Path | None, key: str | None, message: str) -> None:
        self.file = str(file) if file is not None else None
        self.key = key
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if key is not None:
            where.append(f"key {key!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.detail = message


def read_json_file(path: str | Path, what: str = "JSON") -> Any:
    """Parse a JSON config file; any problem becomes a CheckpointError naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(path, None, "config file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, None, f"cannot read the {what}: {exc}") from exc


def load_torch_state(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with every failure turned into a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, None, "checkpoint file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(path, None, pickle_refusal(exc)) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError) as exc:
        raise CheckpointError(path, None, f"cannot read the checkpoint (truncated or not a torch file?): "
                                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(path, None, f"expected a dict, found {type(data).__name__}")
    return data


def check_state_dict(expected: dict[str, Tensor], found: dict[str, Any], path: str | Path,
                     prefix: str = "") -> None:
    """Raise CheckpointError (file + first offending key) unless ``found`` has exactly the keys and shapes of
    ``expected``, every value is a floating tensor (integer buffers such as counters may be integer) and no floating
    value is NaN or infinite (a corrupted or badly converted checkpoint would otherwise load and speak noise)."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(path, prefix + missing[0], f"missing from the checkpoint{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(path, prefix + unexpected[0], f"unexpected key in the checkpoint{more}")
    for key, ref in expected.items():
        value = found[key]
        if not isinstance(value, Tensor):
            raise CheckpointError(path, prefix + key, f"expected a tensor, found {type(value).__name__}")
        if tuple(value.shape) != tuple(ref.shape):
            raise CheckpointError(path, prefix + key, f"shape {tuple(value.shape)} does not match the expected "
                                                      f"{tuple(ref.shape)}")
        if ref.is_floating_point() and not value.is_floating_point():
            raise CheckpointError(path, prefix + key, f"expected floating-point values, found {value.dtype}")
        if value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(path, prefix + key, f"{bad} of {value.numel()} values are NaN or infinite: the "
                                                          "checkpoint is corrupted (download or convert it again)")
