"""The one interpreter of an event stream into conversation turns.

:class:`TurnLog` folds events, one at a time, into per-turn summaries (what the user said, how the turn was decided,
what the assistant said and what of it was heard, latencies, problems). The app's transcript view feeds it live;
the session transcript, the replay comparison and the session browser feed it a recorded ``events.jsonl``; so they
always agree on what a turn was.

Text events: ``user_text`` with ``partial`` carries the whole hypothesis so far (it replaces the turn's user text);
without it, ``text`` is a new piece appended to it; ``final`` marks the transcript final (``full`` then holds all of
it). ``assistant_text`` pieces are appended. ``interruption`` (emitted on the interrupting turn) names the cut-off
answer's turn in ``reply_turn`` and carries ``heard_text``/``unheard_text``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from core.engine.events import (
    AssistantText,
    ErrorEvent,
    Event,
    Interruption,
    Latency,
    TurnDecision,
    UserText,
    WarningEvent,
    event_from_dict,
)


@dataclass
class TurnSummary:
    turn: int
    t_start: float | None = None                # first event of the turn
    decisions: list[str] = field(default_factory=list)   # every turn_decision state, in order
    reasons: list[str] = field(default_factory=list)     # ... and its reason
    user_text: str = ""
    user_final: bool = False
    typed: bool = False
    assistant_text: str = ""
    unheard_text: str = ""
    interrupted: bool = False
    latencies: dict[str, float] = field(default_factory=dict)  # first_audio_ms, first_played_ms, ...
    first_user_t: float | None = None
    first_assistant_t: float | None = None
    warnings: list[str] = field(default_factory=list)
    heard: str | None = None                      # heard part of a cut-off answer, as the engine computed it

    @property
    def decision(self) -> str | None:
        """The decision that closed the turn: the last non-``cl`` one (``cl`` if that is all there was)."""
        final = [d for d in self.decisions if d != "cl"]
        if final:
            return final[-1]
        return self.decisions[-1] if self.decisions else None

    @property
    def ignored(self) -> bool:
        """The user's input was not taken as a turn (noise, a backchannel, a candidate that did not interrupt).
        A command that stopped the answer ("Wait.", reason ``command``) was heard and acted on: not ignored."""
        final = [r for d, r in zip(self.decisions, self.reasons) if d != "cl"]
        return self.decision == "el" and not self.assistant_text and not (final and final[-1] == "command")

    @property
    def heard_text(self) -> str:
        if self.heard is not None:
            return self.heard
        text = self.assistant_text
        if self.unheard_text and text.endswith(self.unheard_text):
            return text[: len(text) - len(self.unheard_text)]
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn, "t_start": self.t_start, "decision": self.decision,
            "decisions": [d for d in self.decisions if d != "cl"],
            "user_text": self.user_text, "assistant_text": self.assistant_text,
            "interrupted": self.interrupted, "unheard_text": self.unheard_text, "latencies": dict(self.latencies),
        }


class TurnLog:
    """Per-turn summaries of an event stream, built incrementally (:meth:`apply`) or at once (:func:`summarize`)."""

    def __init__(self) -> None:
        self.turns: dict[int, TurnSummary] = {}

    def summary(self, turn: int, t: float | None = None) -> TurnSummary:
        s = self.turns.get(turn)
        if s is None:
            s = self.turns[turn] = TurnSummary(turn=turn, t_start=t)
        return s

    def apply(self, ev: Event) -> TurnSummary | None:
        """Fold one event in; returns the turn it changed (None when it changed none)."""
        t = ev.t
        if isinstance(ev, TurnDecision):
            s = self.summary(ev.turn, t)
            s.decisions.append(ev.state)
            s.reasons.append(ev.reason)
            return s
        if isinstance(ev, UserText):
            s = self.summary(ev.turn, t)
            if s.first_user_t is None and ev.text:
                s.first_user_t = t
            if ev.partial or ev.get("replace"):
                s.user_text = ev.text
            else:
                s.user_text += ev.text
            if ev.full is not None:
                s.user_text = ev.full
            s.user_final = s.user_final or ev.final
            s.typed = s.typed or bool(ev.typed)
            return s
        if isinstance(ev, AssistantText):
            s = self.summary(ev.turn, t)
            if s.first_assistant_t is None and ev.text:
                s.first_assistant_t = t
            s.assistant_text += ev.text
            return s
        if isinstance(ev, Interruption):
            self.summary(ev.turn, t)
            target = self.summary(ev.reply_turn, t)
            target.interrupted = True
            target.unheard_text = ev.unheard_text
            target.heard = ev.heard_text
            return target
        if isinstance(ev, Latency):
            s = self.summary(ev.turn, t)
            for key in ("first_audio_ms", "first_played_ms", "decision_ms", "compute_ms", "first_audio_est_ms"):
                s.latencies[key] = float(getattr(ev, key))
            return s
        if isinstance(ev, (WarningEvent, ErrorEvent)):
            s = self.summary(ev.turn, t)
            if ev.message:
                s.warnings.append(f"{ev.type}: {ev.message}")
            return s
        if ev.turn not in self.turns:
            self.summary(ev.turn, t)
        return None

    def ordered(self) -> list[TurnSummary]:
        """Summaries in order of first appearance."""
        return list(self.turns.values())


def as_event(ev: Event | Mapping[str, Any]) -> Event | None:
    """An event, or the event of its dict form (None when the dict is not an event)."""
    if isinstance(ev, Event):
        return ev
    try:
        return event_from_dict(ev)
    except ValueError:
        return None


def summarize_turns(events: Iterable[Event | Mapping[str, Any]]) -> list[TurnSummary]:
    """Group events (Event objects, or dicts as in events.jsonl) by turn id, in order of first appearance."""
    log = TurnLog()
    for ev in events:
        event = as_event(ev)
        if event is not None:
            log.apply(event)
    return log.ordered()
