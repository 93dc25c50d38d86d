"""Repair of a session folder left behind by a killed process, and export of a session as a zip file."""

from __future__ import annotations

import json
import logging
import os
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.fsutil import atomic_file
from core.session.store import (
    EVENTS_NAME, FILE_MODE, META_FORMAT, META_NAME, STREAM_FILES, TRANSCRIPT_NAME, atomic_write_text, is_session_dir,
    read_meta,
)
from core.session.transcript import read_events, render_transcript, summarize_turns
from core.session.wavfile import parse_wav_layout, repair_wav_header

log = logging.getLogger(__name__)


@dataclass
class RepairReport:
    path: Path
    actions: list[str] = field(default_factory=list)    # what was changed
    problems: list[str] = field(default_factory=list)   # what could not be fixed

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "actions": self.actions, "problems": self.problems}


def _repair_events(path: Path, report: RepairReport) -> None:
    """Drop a torn last line (and any garbled line) so that every line is one JSON object."""
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    kept: list[bytes] = []
    dropped = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
            if not isinstance(obj, dict) or "type" not in obj:
                raise ValueError("not an event")
        except (ValueError, UnicodeDecodeError):
            dropped += 1
            where = "last" if i >= len(lines) - 2 else f"line {i + 1}"
            report.actions.append(f"{EVENTS_NAME}: removed unreadable {where} line ({len(line)} bytes)")
            continue
        kept.append(line)
    new = b"".join(line + b"\n" for line in kept)
    if new != raw:
        if not dropped:
            report.actions.append(f"{EVENTS_NAME}: completed the last line")
        atomic_write_text(path, new.decode("utf-8"))


def _not_regular(file: Path) -> str | None:
    """Why an existing session file must be left alone (a link, possibly out of the folder; a fifo...), else None."""
    try:
        st = file.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return (f"{file.name} is a link (to {os.readlink(file)}); left alone: repair works only on the folder's own "
                "files")
    if not stat.S_ISREG(st.st_mode):
        return f"{file.name} is not a regular file; left alone"
    return None


def repair_session(session: str | os.PathLike) -> RepairReport:
    """Fix what a crash can break: WAV sizes (from the file length), a torn last JSONL line, the transcript (rebuilt
    from the events) and meta.json (stream lengths, duration; rebuilt when missing). Idempotent.

    Only regular files inside the folder are read or written: a session file that is a link (perhaps to a file
    outside) or a special file is reported as a problem and left alone."""
    path = Path(session)
    report = RepairReport(path)
    if not path.is_dir():
        report.problems.append(f"{path} is not a folder")
        return report
    if not is_session_dir(path) and not any((path / f).exists() for f in STREAM_FILES.values()):
        report.problems.append(f"{path} holds no session files")
        return report
    untouchable = set()
    for name in (EVENTS_NAME, META_NAME, TRANSCRIPT_NAME, *STREAM_FILES.values()):
        problem = _not_regular(path / name)
        if problem:
            report.problems.append(problem)
            untouchable.add(name)
    if META_NAME in untouchable:
        return report  # nothing can be recorded about the repair; the files stay as they are

    events_file = path / EVENTS_NAME
    if EVENTS_NAME in untouchable:
        pass
    elif events_file.exists():
        try:
            _repair_events(events_file, report)
        except OSError as exc:
            report.problems.append(f"{EVENTS_NAME}: {exc}")
    else:
        report.problems.append(f"{EVENTS_NAME} is missing")

    meta_ok = (path / META_NAME).exists() and bool(read_meta(path))
    meta = read_meta(path)
    if not meta_ok:
        report.actions.append(f"{META_NAME}: missing or unreadable, rebuilt from the files")
        meta = {"format": META_FORMAT, "format_version": 1, "session_id": path.name, "streams": {}}
    streams = meta.setdefault("streams", {})
    for name, filename in STREAM_FILES.items():
        wav = path / filename
        if filename in untouchable or not wav.exists():
            continue
        try:
            fix = repair_wav_header(wav)
            layout = parse_wav_layout(wav)
        except (OSError, ValueError) as exc:
            report.problems.append(f"{filename}: {exc}")
            continue
        if fix.changed:
            report.actions.append(f"{filename}: header said {fix.claimed_frames} frames, file holds {fix.frames}")
        info = streams.setdefault(name, {"file": filename, "on_mic_timeline": name != "assistant"})
        info.update({"rate": layout.rate, "channels": layout.channels, "frames": fix.frames})
        info.setdefault("start_t", 0.0 if name == "mic_raw" else None)
        info.setdefault("mic_offset", 0 if name == "mic_raw" else None)
    mic = streams.get("mic_raw") or streams.get("mic_clean")
    if mic and mic.get("rate"):
        duration = round(mic["frames"] / mic["rate"], 6)
        if meta.get("duration_s") != duration:
            meta["duration_s"] = duration
    if not meta.get("complete"):
        meta["complete"] = False
        meta["repaired"] = True
    try:
        atomic_write_text(path / META_NAME, json.dumps(meta, indent=2, ensure_ascii=False, default=str) + "\n")
    except OSError as exc:
        report.problems.append(f"{META_NAME}: {exc}")

    if events_file.exists() and not untouchable & {EVENTS_NAME, TRANSCRIPT_NAME}:
        try:
            text = render_transcript(summarize_turns(read_events(events_file)), meta)
            old = (path / TRANSCRIPT_NAME).read_text(encoding="utf-8") if (path / TRANSCRIPT_NAME).exists() else None
            if text != old:
                atomic_write_text(path / TRANSCRIPT_NAME, text)
                report.actions.append(f"{TRANSCRIPT_NAME}: regenerated from the events")
        except OSError as exc:
            report.problems.append(f"{TRANSCRIPT_NAME}: {exc}")
    for leftover in path.glob(".*.tmp"):
        if _not_regular(leftover):
            continue
        try:
            leftover.unlink()
            report.actions.append(f"removed the unfinished temporary file {leftover.name}")
        except OSError:
            pass
    log.info("repaired %s: %d actions, %d problems", path, len(report.actions), len(report.problems))
    return report


def _own_files(folder: Path, skipped: list[str]) -> list[Path]:
    """The regular files under ``folder`` (sub-folders followed, links never); everything else goes to ``skipped``
    as a path relative to ``folder``."""
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        for name in dirnames + filenames:
            p = here / name
            if p.is_symlink():
                skipped.append(str(p.relative_to(folder)))
            elif name in filenames:
                if p.is_file():
                    files.append(p)
                else:
                    skipped.append(str(p.relative_to(folder)))
    return sorted(files)


def export_session(session: str | os.PathLike, out_zip: str | os.PathLike, skipped: list[str] | None = None) -> Path:
    """Zip a session folder (its regular files, under a top folder named after the session). The zip is owner-only.

    Links (to files or folders, inside or out) and special files are not exported; their paths relative to the
    session are appended to ``skipped`` when given (and logged)."""
    path = Path(session)
    out = Path(out_zip)
    if not path.is_dir() or not is_session_dir(path):
        raise FileNotFoundError(f"{path} is not a session folder")
    if out.resolve().is_relative_to(path.resolve()):
        raise ValueError("the zip file must not be written inside the session folder")
    left_out: list[str] = []
    files = _own_files(path, left_out)
    with atomic_file(out, FILE_MODE) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in files:
            if file.name.endswith(".tmp"):
                continue
            arc = Path(path.name) / file.relative_to(path)
            # WAV data hardly compresses; store it to save time
            kind = zipfile.ZIP_STORED if file.suffix == ".wav" else zipfile.ZIP_DEFLATED
            zf.write(file, arc.as_posix(), compress_type=kind)
    if left_out:
        log.warning("export of %s: skipped %d link(s) or special file(s): %s", path, len(left_out),
                    ", ".join(left_out))
        if skipped is not None:
            skipped.extend(left_out)
    return out
