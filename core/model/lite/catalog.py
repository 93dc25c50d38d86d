"""Curated upgrades for the Lite profile: bigger chat models and Whisper models, one click each.

Each entry names a Hugging Face repository and the files Parley needs from it. A download goes through
:func:`core.settings.download.download_upgrade` (progress, resume, sha256 of every weight file against the Hub's
LFS record), into
``<models dir>/lite/<key>/``; a marker file (``.parley-download.json``, written last) says the folder is complete.
Chat models are then converted once for the Lite runtime (:mod:`core.model.lite.convert`); Whisper models are
loaded as they are. The Lite profile uses the best installed model of each kind unless Settings name one.

Figures: ``download_mb`` is the size of the listed files on the Hub (bf16/fp32 safetensors); ``ram_mb`` what the
converted model needs to run; ``convert_ram_mb`` the peak while converting once (the float32 weights are held);
``tokens_per_s`` the decode speed measured here (2-core x86-64 with AVX2, one onnxruntime thread, other jobs on
the machine: load average 2.5-4) on a model of the same architecture and size with random weights: speed does not
depend on the weights' values (docs/lite.md, "Upgrades"). Chat models of 0.5B and more are converted "auto": int4
when it agrees with the original weights on at least 90 % of a probe's next tokens, else int8 (RAM and speed of
both are listed). Nothing here touches the network.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = ".parley-download.json"
MODELS_DIR_ENV = "PARLEY_MODELS_DIR"

CHAT_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt")
WHISPER_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")


@dataclass(frozen=True)
class Upgrade:
    key: str                    # folder name under <models dir>/lite
    kind: str                   # "chat" | "asr"
    title: str
    repo: str                   # Hugging Face repository
    files: tuple[str, ...]      # wanted files (those the repository has are fetched)
    download_mb: int
    params_m: int
    rank: int                   # higher is better: the best installed one is used by default
    precision: str = "int8"     # chat models: how they are converted ("auto": int4 if it measures as good, else int8)
    ram_mb: int = 0             # the converted model running, its context (2048 tokens) included
    ram_int8_mb: int = 0        # ...if "auto" chose int8
    convert_ram_mb: int = 0
    tokens_per_s: float | None = None       # chat models: decode speed here at the expected precision
    tokens_per_s_int8: float | None = None  # ...and at int8
    asr_rtf: float | None = None            # Whisper: compute time / audio time on this CPU class
    gated: bool = False         # the repository asks users to accept a licence and to log in (HF token)
    license: str = ""
    note: str = ""

    @property
    def speed(self) -> str:
        if self.tokens_per_s is not None:
            return f"about {self.tokens_per_s:.0f} tokens/s"
        if self.asr_rtf is not None:
            return f"about {1 / self.asr_rtf:.0f}x real time"
        return "not measured"


CATALOG: tuple[Upgrade, ...] = (
    Upgrade("smollm2-360m-instruct", "chat", "SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-360M-Instruct",
            CHAT_FILES, download_mb=724, params_m=362, rank=10, precision="int8", ram_mb=900, ram_int8_mb=900,
            convert_ram_mb=2200, tokens_per_s=26.0, tokens_per_s_int8=26.0, license="Apache-2.0",
            note="the built-in model's family, 2.7x larger"),
    Upgrade("qwen2.5-0.5b-instruct", "chat", "Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct",
            CHAT_FILES, download_mb=988, params_m=494, rank=20, precision="auto", ram_mb=500, ram_int8_mb=1300,
            convert_ram_mb=3000, tokens_per_s=21.8, tokens_per_s_int8=18.9, license="Apache-2.0",
            note="good instruction following for its size"),
    Upgrade("llama-3.2-1b-instruct", "chat", "Llama-3.2-1B-Instruct", "meta-llama/Llama-3.2-1B-Instruct",
            CHAT_FILES, download_mb=2471, params_m=1236, rank=30, precision="auto", ram_mb=1100, ram_int8_mb=2800,
            convert_ram_mb=7500, tokens_per_s=11.7, tokens_per_s_int8=7.9, gated=True,
            license="Llama 3.2 Community License",
            note="gated: accept the licence on huggingface.co and log in (HF_TOKEN) before downloading"),
    Upgrade("smollm2-1.7b-instruct", "chat", "SmolLM2-1.7B-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
            CHAT_FILES, download_mb=3423, params_m=1711, rank=35, precision="auto", ram_mb=2000, ram_int8_mb=3300,
            convert_ram_mb=10500, tokens_per_s=8.0, tokens_per_s_int8=5.5, license="Apache-2.0",
            note="no grouped-query attention: its context alone takes 0.8 GB"),
    Upgrade("qwen2.5-1.5b-instruct", "chat", "Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct",
            CHAT_FILES, download_mb=3087, params_m=1544, rank=40, precision="auto", ram_mb=1300, ram_int8_mb=3000,
            convert_ram_mb=9500, tokens_per_s=8.6, tokens_per_s_int8=5.3, license="Apache-2.0",
            note="the strongest here; slow on 2 cores"),
    Upgrade("whisper-base.en", "asr", "Whisper base.en", "openai/whisper-base.en", WHISPER_FILES,
            download_mb=290, params_m=74, rank=10, ram_mb=400, license="Apache-2.0",
            note="fewer recognition errors than the built-in tiny.en (not measured here: no weights)"),
    Upgrade("whisper-small.en", "asr", "Whisper small.en", "openai/whisper-small.en", WHISPER_FILES,
            download_mb=967, params_m=242, rank=20, ram_mb=1200, license="Apache-2.0",
            note="fewer errors again; about 3x the compute of base.en"),
)


def by_key(key: str) -> Upgrade:
    for upgrade in CATALOG:
        if upgrade.key == key:
            return upgrade
    raise KeyError(key)


def upgrades_dir(models_dir: str | os.PathLike | None = None) -> Path:
    """``<models dir>/lite``: ``models_dir``, else ``$PARLEY_MODELS_DIR``, else the app's default models folder
    (``core.settings.store.default_models_dir()``: ``$PARLEY_DATA_DIR/models`` or the platform's user data folder;
    the same rule, written here because the model layer does not import the settings layer)."""
    if models_dir is not None:
        return Path(models_dir).expanduser() / "lite"
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override).expanduser() / "lite"
    data = os.environ.get("PARLEY_DATA_DIR")
    if not data:
        from platformdirs import user_data_dir

        from core.constants import APP_AUTHOR, APP_NAME

        data = user_data_dir(APP_NAME, APP_AUTHOR)
    return Path(data) / "models" / "lite"


def install_dir(upgrade: Upgrade, root: Path) -> Path:
    return Path(root) / upgrade.key


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_installed(upgrade: Upgrade, root: Path) -> bool:
    """Downloaded completely: the marker exists and every file it lists has its recorded size."""
    folder = install_dir(upgrade, root)
    marker = read_marker(folder)
    if marker is None or marker.get("repo") != upgrade.repo:
        return False
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return False
    for name, size in files.items():
        try:
            if (folder / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def mark_installed(upgrade: Upgrade, folder: Path, paths: list[Path]) -> None:
    """Record a finished download (file sizes), atomically: the marker is what makes the folder count."""
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in paths}
    data = {"repo": upgrade.repo, "key": upgrade.key, "kind": upgrade.kind, "files": files, "time": time.time()}
    tmp = folder / (MARKER + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, folder / MARKER)


def installed(root: Path, kind: str | None = None) -> list[Upgrade]:
    return [u for u in CATALOG if (kind is None or u.kind == kind) and is_installed(u, root)]


def best_installed(kind: str, root: Path, ram_bytes: int | None = None) -> Upgrade | None:
    """The highest-ranked installed upgrade of ``kind`` that fits ``ram_bytes`` (when given)."""
    fitting = [u for u in installed(root, kind) if ram_bytes is None or u.ram_mb * 1e6 <= ram_bytes]
    return max(fitting, key=lambda u: u.rank) if fitting else None


def available_ram() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().total)
