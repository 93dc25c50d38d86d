"""Conversation history: finished conversations kept on disk so that they can be reread, exported and deleted.

One JSON file per conversation in ``<user data dir>/history`` (``$PARLEY_DATA_DIR/history`` when set): the folder
is owner-only (0700), each file 0600, written atomically. What is kept is text only: what the user said (the
recogniser's final transcript or the typed message), what the assistant said *as heard* (an answer cut off by the
user keeps only the part that was played; the rest is stored apart as ``unheard``), and wall-clock times. No audio.

The ``history`` settings decide whether anything is kept (``keep``) and for how long (the newest
``max_conversations``, none older than ``max_days``; 0 days = no age limit). Only files that this module wrote
(named ``<date>_<time>_<id>.json``) are ever listed, pruned or deleted; a file that does not parse is skipped with a
warning and left where it is.

API for the app::

    store = HistoryStore.from_settings(settings)
    store.save(turns, persona="Parley", profile="lite")      # list[TurnRecord]; None when nothing is kept
    for conv in store.list(): ...                            # newest first
    store.delete(conv.id); store.delete_all()
    to_markdown(conv) / to_text(conv) / export(conv, path)
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from core.fsutil import atomic_write_text

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DIR_MODE = 0o700
FILE_MODE = 0o600
_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_[0-9a-f]{6}\.json$")


def history_root() -> Path:
    from core.settings.store import data_dir

    return data_dir() / "history"


@dataclass
class TurnRecord:
    """One exchange: what the user said and what the assistant said back, as heard."""

    user: str = ""
    assistant: str = ""               # what was played (an interrupted answer: the heard part only)
    user_time: float | None = None    # wall clock (seconds since the epoch)
    assistant_time: float | None = None
    interrupted: bool = False
    unheard: str = ""                 # the rest of an interrupted answer, never played
    latency_ms: float | None = None
    typed: bool = False               # the user typed the message instead of saying it

    @classmethod
    def from_dict(cls, data: Any) -> "TurnRecord":
        if not isinstance(data, dict):
            raise ValueError("a turn must be an object")
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        rec = cls(**known)
        if not isinstance(rec.user, str) or not isinstance(rec.assistant, str) or not isinstance(rec.unheard, str):
            raise ValueError("turn texts must be text")
        for name in ("user_time", "assistant_time", "latency_ms"):
            value = getattr(rec, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{name} must be a number")
        return rec

    @property
    def empty(self) -> bool:
        return not (self.user.strip() or self.assistant.strip() or self.unheard.strip())


@dataclass
class Conversation:
    id: str
    started: float
    ended: float
    turns: list[TurnRecord] = field(default_factory=list)
    persona: str = "Parley"
    profile: str = ""
    path: Path | None = None

    @property
    def title(self) -> str:
        """The first thing the user said, shortened."""
        for t in self.turns:
            text = " ".join(t.user.split())
            if text:
                return text if len(text) <= 60 else text[:57].rstrip() + "…"
        return "(nothing said)"

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "id": self.id, "started": self.started, "ended": self.ended,
                "persona": self.persona, "profile": self.profile, "turns": [asdict(t) for t in self.turns]}

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> "Conversation":
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown format version {data.get('version')!r}")
        turns = data.get("turns")
        if not isinstance(turns, list):
            raise ValueError("'turns' must be a list")
        started, ended = data.get("started"), data.get("ended")
        if not isinstance(started, (int, float)) or not isinstance(ended, (int, float)):
            raise ValueError("'started' and 'ended' must be times")
        return cls(id=str(data.get("id") or ""), started=float(started), ended=float(ended),
                   turns=[TurnRecord.from_dict(t) for t in turns], persona=str(data.get("persona") or "Parley"),
                   profile=str(data.get("profile") or ""), path=path)


class HistoryStore:
    def __init__(self, root: str | os.PathLike | None = None, keep: bool = True, max_conversations: int = 100,
                 max_days: int = 90) -> None:
        self.root = Path(root) if root is not None else history_root()
        self.keep = keep
        self.max_conversations = max_conversations
        self.max_days = max_days
        self.warnings: list[str] = []       # corrupt files seen by the last list()

    @classmethod
    def from_settings(cls, settings: Any, root: str | os.PathLike | None = None) -> "HistoryStore":
        h = settings.history
        return cls(root, keep=h.keep, max_conversations=h.max_conversations, max_days=h.max_days)

    # -- writing ----------------------------------------------------------------------------------------------

    def save(self, turns: Iterable[TurnRecord], *, persona: str = "Parley", profile: str = "",
             started: float | None = None, ended: float | None = None) -> Conversation | None:
        """Keep a finished conversation. Returns it (with its file), or None when history is off or nothing was
        said. Raises OSError when the disk refuses (the caller shows it; nothing else is lost)."""
        turns = [t for t in turns if not t.empty]
        if not self.keep or not turns:
            return None
        times = [x for t in turns for x in (t.user_time, t.assistant_time) if x is not None]
        now = time.time()
        started = started if started is not None else (min(times) if times else now)
        ended = ended if ended is not None else max(times + [started]) if times else now
        conv = Conversation(id="", started=started, ended=ended, turns=turns, persona=persona, profile=profile)
        self._make_root()
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(started))
        for _ in range(100):
            conv.id = f"{stamp}_{secrets.token_hex(3)}"
            path = self.root / f"{conv.id}.json"
            if not path.exists():
                break
        atomic_write_text(path, json.dumps(conv.to_dict(), ensure_ascii=False, indent=1) + "\n", FILE_MODE)
        conv.path = path
        log.info("conversation kept in the history (%d turns)", len(turns))
        self.prune()
        return conv

    def _make_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        os.chmod(self.root, DIR_MODE)

    # -- reading ----------------------------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted((p for p in self.root.iterdir() if _NAME.match(p.name) and p.is_file()), reverse=True)

    def list(self) -> list[Conversation]:
        """Every readable conversation, newest first; unreadable files are skipped with a warning."""
        self.warnings = []
        out = []
        for path in self._files():
            try:
                out.append(self._read(path))
            except (OSError, ValueError, TypeError) as exc:
                msg = f"history file {path.name} cannot be read ({exc}); skipped"
                log.warning("%s", msg)
                self.warnings.append(msg)
        out.sort(key=lambda c: c.started, reverse=True)
        return out

    def _read(self, path: Path) -> Conversation:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg}") from None
        except UnicodeDecodeError:
            raise ValueError("not text") from None
        conv = Conversation.from_dict(data, path)
        conv.id = path.stem
        return conv

    def load(self, conv_id: str) -> Conversation:
        path = self._path_of(conv_id)
        if path is None or not path.is_file():
            raise KeyError(f"no conversation {conv_id!r} in the history")
        return self._read(path)

    def _path_of(self, conv_id: str) -> Path | None:
        name = f"{conv_id}.json"
        return self.root / name if _NAME.match(name) else None

    # -- deleting ---------------------------------------------------------------------------------------------

    def delete(self, conv_id: str) -> bool:
        path = self._path_of(conv_id)
        if path is None:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def delete_all(self) -> int:
        """Delete every conversation file this store wrote (unreadable ones included). Returns how many."""
        n = 0
        for path in self._files():
            try:
                path.unlink()
                n += 1
            except FileNotFoundError:
                pass
        return n

    def prune(self, now: float | None = None) -> int:
        """Apply the limits: the newest ``max_conversations``, none older than ``max_days``. Unreadable files are
        left alone. Returns how many were deleted."""
        now = time.time() if now is None else now
        convs = [c for c in self.list()]
        doomed = []
        if self.max_conversations > 0:
            doomed += convs[self.max_conversations:]
        if self.max_days > 0:
            cutoff = now - self.max_days * 86400
            doomed += [c for c in convs[: self.max_conversations or None] if c.ended < cutoff]
        n = 0
        for c in doomed:
            if c.path is not None:
                try:
                    c.path.unlink()
                    n += 1
                except FileNotFoundError:
                    pass
        if n:
            log.info("history: %d old conversation(s) deleted", n)
        return n


# ------------------------------------------------------------------------------------------------ export ----


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t is not None else ""


def _date(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _assistant_line(t: TurnRecord) -> str:
    text = t.assistant.strip()
    if t.interrupted:
        text += (" " if text else "") + "(interrupted)"
    return text


def to_markdown(conv: Conversation) -> str:
    lines = [f"# Conversation with {conv.persona}", "", f"{_date(conv.started)} – {_clock(conv.ended)}", ""]
    for t in conv.turns:
        if t.user.strip():
            lines += [f"**You** ({_clock(t.user_time)}): {t.user.strip()}", ""]
        said = _assistant_line(t)
        if said:
            lines += [f"**{conv.persona}** ({_clock(t.assistant_time)}): {said}", ""]
    return "\n".join(lines).rstrip() + "\n"


def to_text(conv: Conversation) -> str:
    lines = [f"Conversation with {conv.persona}, {_date(conv.started)} – {_clock(conv.ended)}", ""]
    for t in conv.turns:
        if t.user.strip():
            lines.append(f"[{_clock(t.user_time)}] You: {t.user.strip()}")
        said = _assistant_line(t)
        if said:
            lines.append(f"[{_clock(t.assistant_time)}] {conv.persona}: {said}")
    return "\n".join(lines).rstrip() + "\n"


def export(conv: Conversation, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``conv`` as Markdown (``.md``) or plain text (anything else, or ``fmt="text"``). The file is the
    user's: written atomically, readable by the user only."""
    path = Path(path)
    fmt = fmt or ("markdown" if path.suffix.lower() in (".md", ".markdown") else "text")
    text = to_markdown(conv) if fmt == "markdown" else to_text(conv)
    atomic_write_text(path, text, FILE_MODE)
    return path
