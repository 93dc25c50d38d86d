"""Errors shared by the Freeze-Omni loaders (audiollm, speech decoder, codec)."""

from __future__ import annotations

from pathlib import Path


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
