"""Downloading model folders: from the Hugging Face Hub (for users with internet) or from a local folder.

The program is offline by default (``core.runtime.force_offline``); a download is the one thing that goes online,
and only when the user asks for it. :func:`download` works on any :class:`Source`, so the progress, resume,
cancel and checksum logic is the same (and tested) for a local folder and for the Hub.

* Progress: ``on_progress(DownloadProgress)`` after every chunk.
* Resume: a file already complete (size, and sha256 when known) is skipped; a partial file is continued (``.part``
  files for local copies, huggingface_hub's own ``.incomplete`` files for the Hub).
* Cancel: set the ``cancel`` event; :class:`DownloadCancelled` is raised within one chunk.
* Checksums: every file with a known sha256 is verified; a mismatch is moved aside (``*.bad``) and reported.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol
from urllib.parse import urlparse

from core.settings.models import FREEZE_OMNI_CHECKSUMS, FREEZE_OMNI_REPO, QWEN2_7B_REPO, sha256_file

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
DEFAULT_ENDPOINT = "https://huggingface.co"


class DownloadError(RuntimeError):
    """The download cannot go on; the message says why and what to do."""


class DownloadCancelled(Exception):
    pass


@dataclass
class RemoteFile:
    path: str                  # relative, with "/" separators
    size: int | None = None
    sha256: str | None = None


@dataclass
class DownloadProgress:
    file: str
    file_index: int
    file_count: int
    done_bytes: int
    total_bytes: int
    phase: str = "download"   # "download" | "verify" | "skip"


class Source(Protocol):
    description: str

    def list_files(self) -> list[RemoteFile]: ...

    def fetch(self, f: RemoteFile, dest_root: Path, on_bytes: Callable[[int], None],
              cancel: threading.Event) -> Path: ...


# ---------------------------------------------------------------------------------------------------------------


class LocalFolderSource:
    """Copy a model folder that is already on disk (a USB drive, a mounted share...)."""

    def __init__(self, folder: str | Path, patterns: tuple[str, ...] = ("*",),
                 checksums: dict[str, str] | None = None) -> None:
        self.folder = Path(folder).expanduser()
        self.patterns = patterns
        self.checksums = checksums or {}
        self.description = str(self.folder)

    def list_files(self) -> list[RemoteFile]:
        if not self.folder.is_dir():
            raise DownloadError(f"source folder {self.folder} does not exist")
        out = []
        for p in sorted(self.folder.rglob("*")):
            if not p.is_file() or ".cache" in p.parts or p.name.endswith((".part", ".bad")):
                continue
            rel = p.relative_to(self.folder).as_posix()
            if any(fnmatch.fnmatch(rel, pat) for pat in self.patterns):
                out.append(RemoteFile(rel, p.stat().st_size, self.checksums.get(rel)))
        return out

    def fetch(self, f: RemoteFile, dest_root: Path, on_bytes: Callable[[int], None],
              cancel: threading.Event) -> Path:
        src = self.folder / f.path
        target = dest_root / f.path
        part = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        offset = part.stat().st_size if part.exists() else 0
        if offset:
            on_bytes(offset)
        try:
            with open(src, "rb") as fin, open(part, "ab") as fout:
                fin.seek(offset)
                while True:
                    if cancel.is_set():
                        raise DownloadCancelled(f.path)
                    block = fin.read(CHUNK_BYTES)
                    if not block:
                        break
                    fout.write(block)
                    on_bytes(len(block))
        except OSError as exc:
            raise DownloadError(f"cannot copy {src}: {exc}") from exc
        os.replace(part, target)
        return target


# ---------------------------------------------------------------------------------------------------------------

_online_lock = threading.Lock()


@contextlib.contextmanager
def _hub_online() -> Iterator[None]:
    """Lift huggingface_hub's offline mode for an explicit, user-requested download (and use plain HTTP so that
    resume and cancel behave the same everywhere)."""
    from huggingface_hub import constants

    with _online_lock:
        saved = (constants.HF_HUB_OFFLINE, getattr(constants, "HF_HUB_DISABLE_XET", False))
        constants.HF_HUB_OFFLINE = False
        constants.HF_HUB_DISABLE_XET = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_XET = saved


def check_reachable(endpoint: str, timeout: float = 5.0) -> None:
    """Fail fast, with a clear message, when the Hub cannot be reached (no network, DNS, firewall)."""
    url = urlparse(endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise DownloadError(
            f"cannot reach {endpoint} ({exc.strerror or exc}). Check the internet connection, or download the "
            "files on another computer and choose their folder instead.") from exc


class HubSource:
    """A Hugging Face model repository, fetched with huggingface_hub into a plain folder."""

    def __init__(self, repo_id: str, patterns: tuple[str, ...] = ("*",), revision: str | None = None,
                 endpoint: str | None = None, checksums: dict[str, str] | None = None,
                 connect_timeout: float = 5.0) -> None:
        self.repo_id = repo_id
        self.patterns = patterns
        self.revision = revision
        self.endpoint = endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
        self.checksums = checksums or {}
        self.connect_timeout = connect_timeout
        self.description = f"{self.endpoint.rstrip('/')}/{repo_id}"

    def list_files(self) -> list[RemoteFile]:
        check_reachable(self.endpoint, self.connect_timeout)
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        try:
            with _hub_online():
                entries = list(HfApi(endpoint=self.endpoint).list_repo_tree(
                    self.repo_id, recursive=True, expand=True, revision=self.revision))
        except Exception as exc:
            raise DownloadError(f"cannot list {self.description}: {exc}") from exc
        out = []
        for e in entries:
            if not isinstance(e, RepoFile):
                continue
            if not any(fnmatch.fnmatch(e.path, pat) for pat in self.patterns):
                continue
            sha = self.checksums.get(e.path)
            lfs = getattr(e, "lfs", None)
            if sha is None and lfs is not None:
                sha = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
            out.append(RemoteFile(e.path, e.size, sha))
        return out

    def fetch(self, f: RemoteFile, dest_root: Path, on_bytes: Callable[[int], None],
              cancel: threading.Event) -> Path:
        from huggingface_hub import hf_hub_download

        progress_class = _progress_class(on_bytes, cancel)
        try:
            with _hub_online():
                path = hf_hub_download(self.repo_id, f.path, revision=self.revision, local_dir=str(dest_root),
                                       endpoint=self.endpoint, tqdm_class=progress_class)
        except DownloadCancelled:
            raise
        except Exception as exc:
            if cancel.is_set():
                raise DownloadCancelled(f.path) from exc
            raise DownloadError(f"download of {f.path} from {self.description} failed: {exc}") from exc
        return Path(path)


def _progress_class(on_bytes: Callable[[int], None], cancel: threading.Event) -> type:
    """A tqdm subclass that reports bytes and raises DownloadCancelled when asked to stop."""
    from tqdm.auto import tqdm

    class _Progress(tqdm):  # type: ignore[misc]
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if cancel.is_set():
                raise DownloadCancelled("cancelled")
            if n:
                on_bytes(int(n))
            return super().update(n)

    return _Progress


# ---------------------------------------------------------------------------------------------------------------


def freeze_omni_source(endpoint: str | None = None) -> HubSource:
    checks = {f"checkpoints/{rel}": sha for rel, (_, sha) in FREEZE_OMNI_CHECKSUMS.items()}
    return HubSource(FREEZE_OMNI_REPO, patterns=("checkpoints/*",), endpoint=endpoint, checksums=checks)


def qwen2_source(endpoint: str | None = None) -> HubSource:
    return HubSource(QWEN2_7B_REPO, patterns=("*.json", "*.safetensors", "*.txt", "merges.txt", "LICENSE"),
                     endpoint=endpoint)


def download(source: Source, dest_root: Path, on_progress: Callable[[DownloadProgress], None] | None = None,
             cancel: threading.Event | None = None) -> list[Path]:
    """Fetch every file of ``source`` into ``dest_root``, skipping complete ones, verifying known checksums."""
    cancel = cancel or threading.Event()
    dest_root = Path(dest_root).expanduser()
    try:
        dest_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {dest_root}: {exc}") from exc
    files = source.list_files()
    if not files:
        raise DownloadError(f"{source.description} has no files to download")
    total = sum(f.size or 0 for f in files)
    needed = total - sum(_complete_size(dest_root, f) for f in files)
    try:
        free = shutil.disk_usage(dest_root).free
    except OSError:
        free = None
    if free is not None and needed > free:
        raise DownloadError(f"not enough disk space in {dest_root}: needs {needed / 1e9:.1f} GB, "
                            f"{free / 1e9:.1f} GB free")
    done = 0
    last_report = 0.0
    out: list[Path] = []

    def report(name: str, index: int, phase: str, force: bool = False) -> None:
        nonlocal last_report
        now = time.monotonic()
        if on_progress and (force or now - last_report > 0.05):
            last_report = now
            on_progress(DownloadProgress(name, index, len(files), done, total, phase))

    for index, f in enumerate(files):
        if cancel.is_set():
            raise DownloadCancelled(f.path)
        target = dest_root / f.path
        if _complete_size(dest_root, f) and (f.sha256 is None or _verify(target, f, cancel)):
            done += f.size or 0
            out.append(target)
            report(f.path, index, "skip", force=True)
            continue
        start_done = done

        def on_bytes(n: int, _name=f.path, _i=index) -> None:
            nonlocal done
            done += n
            report(_name, _i, "download")

        path = source.fetch(f, dest_root, on_bytes, cancel)
        done = start_done + (f.size if f.size is not None else path.stat().st_size)
        if f.size is not None and path.stat().st_size != f.size:
            raise DownloadError(f"{f.path}: got {path.stat().st_size:,} bytes, expected {f.size:,}")
        if f.sha256:
            report(f.path, index, "verify", force=True)
            if not _verify(path, f, cancel):
                bad = path.with_name(path.name + ".bad")
                os.replace(path, bad)
                raise DownloadError(f"{f.path}: checksum mismatch (kept as {bad.name}); download it again")
        out.append(path)
        report(f.path, index, "download", force=True)
    return out


def _complete_size(dest_root: Path, f: RemoteFile) -> int:
    target = dest_root / f.path
    try:
        size = target.stat().st_size
    except OSError:
        return 0
    return size if f.size is None or size == f.size else 0


def _verify(path: Path, f: RemoteFile, cancel: threading.Event) -> bool:
    from core.settings.models import ChecksumCancelled

    try:
        return sha256_file(path, cancel=cancel) == f.sha256
    except ChecksumCancelled as exc:
        raise DownloadCancelled(f.path) from exc


def download_upgrade(upgrade, root: Path, on_progress: Callable[[DownloadProgress], None] | None = None,
                     cancel: threading.Event | None = None, endpoint: str | None = None) -> Path:
    """Fetch a curated Lite upgrade (:mod:`core.model.lite.catalog`) from its Hugging Face repository into
    ``root/<key>`` (resumes, verifies the sha256 of every weight file) and mark it installed; returns the folder."""
    from core.model.lite import catalog

    folder = catalog.install_dir(upgrade, root)
    source = HubSource(upgrade.repo, patterns=upgrade.files, endpoint=endpoint)
    paths = download(source, folder, on_progress=on_progress, cancel=cancel)
    names = {p.name for p in paths}
    if "model.safetensors" not in names or "config.json" not in names:
        raise DownloadError(f"{upgrade.repo} has no model.safetensors/config.json: not the expected model layout")
    catalog.mark_installed(upgrade, folder, paths)
    return folder
