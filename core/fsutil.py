"""Small file-system helpers shared by settings and session storage, and the checks of output paths."""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from core.errors import UserError


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (not possible on every platform; then it is skipped)."""
    try:
        dfd = os.open(str(folder), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


@contextmanager
def atomic_file(path: Path, mode: int = 0o600) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` only when the ``with`` block succeeds: a reader (or a crash) sees either
    the old or the new content, never a mix; on failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a whole text file atomically (see :func:`atomic_file`)."""
    with atomic_file(path, mode) as f:
        f.write(text.encode("utf-8"))


# --------------------------------------------------------------------------------------------- output checks

MIN_FREE_BYTES = 64 * 1024   # less than this on an output's disk counts as a full disk


def check_output_file(path: str | os.PathLike, what: str, suffix: str | None = None) -> Path:
    """Refuse an output file that cannot be written, before anything expensive runs (a model load): a name without
    ``suffix``, a folder, a place that is not writable, a full disk. Raises :class:`~core.errors.UserError` (one line
    starting with ``what``, e.g. ``--output``); returns the path. Nothing is created or changed. An existing file
    that is not a regular file (``/dev/null``) is accepted as it is."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir() and not p.is_file():
        return p
    if p.is_dir() or not p.name:
        raise UserError(f"{what} {p} is a folder; name a file in it, e.g. {p / ('answer' + (suffix or '.txt'))}")
    if suffix and p.suffix.lower() != suffix:
        raise UserError(f"{what} {p} must be a {suffix} file name (Parley writes {suffix[1:].upper()} files)")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{what} {p} cannot be written (permission denied)")
    check_output_place(p.parent, what, p)
    return p


def check_output_place(folder: str | os.PathLike, what: str, shown: str | os.PathLike | None = None) -> None:
    """Refuse a folder Parley could not write into (it, or the nearest folder above it that exists, when it still
    has to be created): not a folder, not writable, or on a full disk. One-line :class:`~core.errors.UserError`
    naming ``what`` and ``shown`` (default: the folder)."""
    shown = Path(shown) if shown is not None else Path(folder)
    place = Path(folder).expanduser().absolute()
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise UserError(f"{what} {shown} cannot be written: {place} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".parley-write-check-", dir=str(place))
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"{what} {shown} cannot be written: the disk holding {place} is full") from None
        raise UserError(f"{what} {shown} cannot be written: {place} is not writable "
                        f"({exc.strerror or exc})") from None
    try:
        st = os.statvfs(place)
    except (OSError, AttributeError):  # no statvfs (Windows): the write itself will tell
        return
    free = st.f_bavail * st.f_frsize
    if free < MIN_FREE_BYTES:
        raise UserError(f"{what} {shown} cannot be written: the disk holding {place} is full "
                        f"({free // 1024} KB free)")
