"""The transcript.md of a session, written from the per-turn summaries of its events.

The summaries come from the one event interpreter, :mod:`core.engine.turns`, which also feeds the app's transcript
view, the replay comparison and the session browser, so they always agree.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from core.engine.turns import TurnSummary, summarize_turns

log = logging.getLogger(__name__)


def read_events(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Events of an events.jsonl; a torn or garbled line is skipped (logged), never fatal."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                log.warning("%s:%d: unreadable event line skipped", path, lineno)
                continue
            if isinstance(ev, dict) and "type" in ev:
                yield ev


def _clock(t: float | None) -> str:
    if t is None:
        return "?"
    m, s = divmod(max(0.0, t), 60.0)
    return f"{int(m)}:{s:04.1f}"


def render_transcript(turns: list[TurnSummary], meta: dict[str, Any] | None = None) -> str:
    meta = meta or {}
    lines = [f"# Parley session {meta.get('session_id') or ''}".rstrip(), ""]
    details = []
    if meta.get("start_time"):
        details.append(f"started {meta['start_time']}")
    if meta.get("profile"):
        details.append(f"profile {meta['profile']}")
    if meta.get("backbone"):
        details.append(f"backbone {meta['backbone']}")
    if meta.get("voice"):
        details.append(f"voice {meta['voice']}")
    if details:
        lines += ["_" + ", ".join(details) + "_", ""]
    for s in turns:
        if not (s.user_text or s.assistant_text):
            continue
        if s.ignored:
            continue                  # a backchannel or noise, not a turn of the conversation
        if s.user_text.strip():
            typed = " (typed)" if s.typed else ""
            lines.append(f"**User** [{_clock(s.first_user_t or s.t_start)}, turn {s.turn}]{typed}: "
                         f"{s.user_text.strip()}")
            lines.append("")
        if s.assistant_text:
            head = f"**Assistant** [{_clock(s.first_assistant_t)}, turn {s.turn}]: "
            if s.interrupted and s.unheard_text:
                lines.append(head + s.heard_text.rstrip() + f" ~~{s.unheard_text.strip()}~~ _(interrupted; not heard)_")
            elif s.interrupted:
                lines.append(head + s.assistant_text + " _(interrupted)_")
            else:
                lines.append(head + s.assistant_text.strip())
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def transcript_from_events_file(path: str | os.PathLike, meta: dict[str, Any] | None = None) -> str:
    return render_transcript(summarize_turns(read_events(path)), meta)


def events_path(session: str | os.PathLike) -> Path:
    return Path(session) / "events.jsonl"
