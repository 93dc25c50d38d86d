"""Typed, timestamped, JSON-serialisable engine events.

In JSONL every line is an object with ``t`` (monotonic seconds since session start), ``turn`` (turn id) and ``type``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

EVENT_TYPES = (
    "state",           # duplex state change: idle/listening/user_speaking/thinking/speaking/interrupted
    "vad_onset", "vad_offset",
    "state_probs",     # per-chunk probabilities: probs=[p_cl, p_ss, p_el]
    "turn_decision",   # state = cl|ss|el
    "user_text",       # text = new piece (or full partial with partial=True)
    "assistant_text",  # text = new piece
    "audio_out",       # samples handed to playback
    "audio_played",    # samples actually played
    "interruption",    # unheard_text
    "latency",         # first_audio_ms (handed to playback), first_played_ms
    "levels",
    "warning", "error", "info",
)


@dataclass
class Event:
    type: str
    t: float
    turn: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"t": round(self.t, 6), "turn": self.turn, "type": self.type}
        out.update(self.data)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Event":
        d = dict(d)
        return cls(type=d.pop("type"), t=float(d.pop("t")), turn=int(d.pop("turn")), data=d)


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
