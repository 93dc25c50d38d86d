"""Why weights or a model folder were not loaded, in one line that says what Parley refused and why.

torch and transformers explain their refusals at length and end with advice that would switch the safety off
("Re-running torch.load with weights_only set to False...", "pass trust_remote_code=True", a hf.co link for a local
folder). Parley never follows that advice, so its messages must not repeat it: these helpers turn the exceptions of
a failed load into one line for :class:`~core.errors.BackendError` / checkpoint errors, and look for the two cases
that are refused on purpose before anything is loaded:

* a pickle (``.pt``/``.bin``) that holds more than tensors and plain containers: it could run code when unpickled,
  so ``torch.load(weights_only=True)`` refuses it;
* a model folder that asks for its own Python code (``auto_map`` in ``config.json`` for a model type transformers
  does not know): Parley never runs code that comes with a model.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

from core.errors import first_line

PICKLE_REFUSAL = ("Parley unpickles weights only with torch.load(weights_only=True), which accepts tensors and plain "
                  "containers: use safetensors weights instead")


def pickle_detail(exc: BaseException) -> str:
    """What torch's weights-only unpickler found in a refused pickle, e.g. ``it refers to posix.system``."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    match = re.search(r"unsupported GLOBAL:? (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE)
    if match:
        return f"it refers to {match.group(1)}"
    match = re.search(r"Unsupported operand (\d+)", text)
    if match:
        return f"it uses pickle opcode {match.group(1)}, which files saved by torch.save do not"
    return "it holds objects other than tensors"


def pickle_refusal(exc: BaseException) -> str:
    """One line for a pickle that ``torch.load(weights_only=True)`` refused."""
    return f"refused: the weights are a pickle that could run code when loaded ({pickle_detail(exc)}); {PICKLE_REFUSAL}"


def remote_code_problem(folder: str | Path) -> str | None:
    """Why a Hugging Face model folder would need its own Python code to load, else None: its ``config.json`` maps
    the model to code in the folder (``auto_map``) for a model type transformers does not know. (A known type loads
    with transformers' own code, whatever ``auto_map`` says.)"""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        return None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if config.get("model_type") in CONFIG_MAPPING_NAMES:
        return None
    targets = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
    files = sorted({str(t[0] if isinstance(t, list) and t else t).split(".")[0] + ".py" for t in targets})
    return (f"refused: the model in {folder} needs its own Python code to load (config.json names "
            f"{', '.join(files)} for the model type {config.get('model_type')!r}); Parley never runs code that comes "
            "with a model: choose a model that transformers supports without it")


def load_failure(exc: BaseException) -> str:
    """One line for an exception raised while transformers/torch/safetensors loaded weights."""
    if isinstance(exc, pickle.UnpicklingError):
        return pickle_refusal(exc)
    name = type(exc).__name__
    text = first_line(exc)
    if "trust_remote_code" in str(exc) or "custom code" in str(exc):
        return ("refused: the model needs its own Python code to load; Parley never runs code that comes with a "
                "model")
    if name == "SafetensorError" or "safetensors" in type(exc).__module__:
        return f"a weights file is damaged or cut short ({text}); copy or download it again"
    return f"{name}: {text}"
