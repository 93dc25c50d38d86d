"""A small crash-safe streaming WAV writer, and a header repair for WAV files cut short.

soundfile writes the RIFF and data chunk sizes only when a file is closed, so a file that is still growing when the
process is killed has a header claiming zero (or garbage) samples. :class:`StreamingWavWriter` instead writes a
complete, valid header at once and rewrites the three size fields (RIFF, ``fact``, ``data``) every
``sync_interval_s`` after the data they describe has reached the file. The header therefore never claims more samples
than the file holds: a kill at any moment leaves a readable file that ends at the last header update (at most
``sync_interval_s`` earlier than the kill); :func:`repair_wav_header` recovers the rest from the file length.

Layout (little endian), always the same for one sample format so the data offset is fixed:

* PCM16: ``RIFF`` + ``WAVE`` + ``fmt `` (16 bytes, tag 1) + ``data``: 44 byte header.
* float32: ``RIFF`` + ``WAVE`` + ``fmt `` (18 bytes, tag 3, cbSize 0) + ``fact`` (4 bytes) + ``data``: 58 byte header.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

FORMAT_PCM16 = "pcm16"
FORMAT_FLOAT32 = "float32"
_TAG_PCM = 1
_TAG_FLOAT = 3
_MAX_DATA_BYTES = 0xFFFFFFFF - 64  # RIFF sizes are 32 bit


@dataclass
class WavLayout:
    """Where the size fields of a header written by :class:`StreamingWavWriter` (or found by parsing) are."""

    data_offset: int            # first byte of sample data
    data_size_pos: int          # offset of the data chunk's size field
    fact_pos: int | None        # offset of the fact chunk's sample-count field, if any
    block_align: int            # bytes per frame
    rate: int
    channels: int
    format_tag: int
    bits: int


def _header(fmt: str, rate: int, channels: int) -> tuple[bytes, WavLayout]:
    if fmt == FORMAT_PCM16:
        bits, tag = 16, _TAG_PCM
        block = 2 * channels
        fmt_chunk = struct.pack("<4sIHHIIHH", b"fmt ", 16, tag, channels, rate, rate * block, block, bits)
        fact_chunk = b""
    elif fmt == FORMAT_FLOAT32:
        bits, tag = 32, _TAG_FLOAT
        block = 4 * channels
        fmt_chunk = struct.pack("<4sIHHIIHHH", b"fmt ", 18, tag, channels, rate, rate * block, block, bits, 0)
        fact_chunk = struct.pack("<4sII", b"fact", 4, 0)
    else:
        raise ValueError(f"unknown sample format {fmt!r} (use {FORMAT_PCM16!r} or {FORMAT_FLOAT32!r})")
    head = b"RIFF" + struct.pack("<I", 0) + b"WAVE" + fmt_chunk + fact_chunk
    fact_pos = 12 + len(fmt_chunk) + 8 if fact_chunk else None
    data_size_pos = len(head) + 4
    head += struct.pack("<4sI", b"data", 0)
    head = head[:4] + struct.pack("<I", len(head) - 8) + head[8:]
    return head, WavLayout(len(head), data_size_pos, fact_pos, block, rate, channels, tag, bits)


def _write_sizes(fd: int, layout: WavLayout, data_bytes: int) -> None:
    os.pwrite(fd, struct.pack("<I", layout.data_offset - 8 + data_bytes), 4)
    if layout.fact_pos is not None:
        os.pwrite(fd, struct.pack("<I", data_bytes // layout.block_align), layout.fact_pos)
    os.pwrite(fd, struct.pack("<I", data_bytes), layout.data_size_pos)


class StreamingWavWriter:
    """Append-only WAV file whose header is kept valid while it grows (see the module docstring).

    Not thread-safe: one writer thread owns it. ``write`` takes float samples in [-1, 1], shape ``(n,)`` for mono or
    ``(n, channels)``. Raises ``OSError`` (ENOSPC, EFBIG, EIO...) from the file system unchanged; the caller decides.
    """

    def __init__(self, path: str | os.PathLike, rate: int, channels: int = 1, sample_format: str = FORMAT_FLOAT32,
                 sync_interval_s: float = 0.25, fsync: bool = True, mode: int = 0o600) -> None:
        self.path = Path(path)
        self.rate = int(rate)
        self.channels = int(channels)
        self.sample_format = sample_format
        self.sync_interval_s = sync_interval_s
        self._fsync = fsync
        header, self._layout = _header(sample_format, self.rate, self.channels)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(self._fd, mode)
            _write_all(self._fd, header)
        except BaseException:
            os.close(self._fd)
            raise
        self._data_bytes = 0      # bytes of sample data written to the file
        self._synced_bytes = 0    # bytes of sample data the header claims
        self._last_sync = time.monotonic()
        self._full = False

    @property
    def frames(self) -> int:
        """Frames written so far (the header may claim fewer until the next sync)."""
        return self._data_bytes // self._layout.block_align

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def write(self, samples: np.ndarray) -> None:
        if self._fd < 0:
            raise ValueError(f"{self.path.name} is closed")
        data = np.asarray(samples, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if data.shape[1] != self.channels:
            raise ValueError(f"{self.path.name}: got {data.shape[1]} channels, file has {self.channels}")
        if self.sample_format == FORMAT_PCM16:
            raw = (np.clip(data, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        else:
            raw = data.astype("<f4", copy=False).tobytes()
        if self._data_bytes + len(raw) > _MAX_DATA_BYTES:
            if not self._full:
                log.warning("%s reached the 4 GiB WAV limit; further audio is dropped", self.path.name)
                self._full = True
            return
        if raw:
            _write_all(self._fd, raw)
            self._data_bytes += len(raw)
        if time.monotonic() - self._last_sync >= self.sync_interval_s:
            self.sync()

    def sync(self) -> None:
        """Make the header describe every sample written so far, durably when ``fsync`` is on."""
        if self._fd < 0 or self._synced_bytes == self._data_bytes:
            self._last_sync = time.monotonic()
            return
        if self._fsync:
            os.fsync(self._fd)  # the data first: a header must never claim samples that are not on disk
        _write_sizes(self._fd, self._layout, self._data_bytes)
        if self._fsync:
            os.fsync(self._fd)
        self._synced_bytes = self._data_bytes
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def parse_wav_layout(path: str | os.PathLike) -> WavLayout:
    """Walk the RIFF chunks of a WAV file and return where its data starts. Tolerates wrong size fields."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"{path}: not a RIFF/WAVE file")
        pos = 12
        fmt: tuple[int, int, int, int, int] | None = None
        fact_pos: int | None = None
        while True:
            f.seek(pos)
            chunk = f.read(8)
            if len(chunk) < 8:
                raise ValueError(f"{path}: no data chunk")
            cid, size = struct.unpack("<4sI", chunk)
            if cid == b"fmt ":
                body = f.read(16)
                if len(body) < 16:
                    raise ValueError(f"{path}: truncated fmt chunk")
                tag, channels, rate, _, block, bits = struct.unpack("<HHIIHH", body)
                if tag == 0xFFFE and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: the real tag is in the sub-format GUID
                    f.seek(pos + 8 + 24)
                    tag = struct.unpack("<H", f.read(2))[0]
                fmt = (tag, channels, rate, block, bits)
            elif cid == b"fact":
                fact_pos = pos + 8
            elif cid == b"data":
                if fmt is None:
                    raise ValueError(f"{path}: data chunk before fmt chunk")
                tag, channels, rate, block, bits = fmt
                return WavLayout(pos + 8, pos + 4, fact_pos, block, rate, channels, tag, bits)
            pos += 8 + size + (size & 1)


@dataclass
class WavRepair:
    path: Path
    claimed_frames: int   # what the header said
    frames: int           # what the file holds (whole frames)
    changed: bool


def repair_wav_header(path: str | os.PathLike, dry_run: bool = False) -> WavRepair:
    """Set the RIFF/fact/data sizes of a WAV file from its length (whole frames; a torn last frame is cut off).

    Assumes the data chunk is the last chunk, as in every file :class:`StreamingWavWriter` writes.
    """
    path = Path(path)
    layout = parse_wav_layout(path)
    length = path.stat().st_size
    available = max(0, length - layout.data_offset)
    available = min(available - available % layout.block_align, _MAX_DATA_BYTES)
    with open(path, "rb") as f:
        f.seek(layout.data_size_pos)
        claimed = struct.unpack("<I", f.read(4))[0]
    changed = claimed != available or length != layout.data_offset + available
    if changed and not dry_run:
        fd = os.open(path, os.O_RDWR)
        try:
            _write_sizes(fd, layout, available)
            if length > layout.data_offset + available:
                os.ftruncate(fd, layout.data_offset + available)
            os.fsync(fd)
        finally:
            os.close(fd)
    return WavRepair(path, min(claimed, 0xFFFFFFFF) // layout.block_align, available // layout.block_align, changed)
