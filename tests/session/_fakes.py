"""A deterministic toy backend and an energy VAD, to drive the real Engine without model weights.

The backend "hears" energy: after a voiced chunk followed by two quiet chunks it says 'ss' and answers with a text
that names the turn and how many voiced chunks it heard, plus a tone per sentence. Same input -> same events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from core.audio.interfaces import VadEvent
from core.engine.backend import Conversation, ListenResult, ReplyPiece

RATE_OUT = 24_000


@dataclass
class _State:
    voiced: int = 0
    quiet: int = 0
    turns: int = 0


class ToyBackend:
    name = "toy"
    output_rate = RATE_OUT

    def __init__(self, sentence_s: float = 0.4) -> None:
        self.sentence_s = sentence_s

    def new_conversation(self, system_prompt: str | None = None) -> Conversation:
        return Conversation(system_prompt=system_prompt or "", state=_State())

    def start_turn(self, conv: Conversation) -> None:
        conv.state.voiced = conv.state.quiet = 0

    def _result(self, conv: Conversation, final: bool = False) -> ListenResult:
        st = conv.state
        text = f"voiced {st.voiced}"
        if st.voiced >= 2 and (st.quiet >= 2 or final):
            return ListenResult("ss", (0.0, 1.0, 0.0), user_text=text, final=True)
        if final:
            return ListenResult("el", (0.0, 0.0, 1.0), user_text=text, final=True)
        return ListenResult("cl", (1.0, 0.0, 0.0), user_text=text)

    def listen(self, conv: Conversation, chunk_16k: np.ndarray) -> ListenResult:
        st = conv.state
        if float(np.sqrt(np.mean(chunk_16k ** 2))) > 0.02:
            st.voiced += 1
            st.quiet = 0
        else:
            st.quiet += 1
        return self._result(conv)

    def end_of_input(self, conv: Conversation) -> ListenResult:
        return self._result(conv, final=True)

    def reply(self, conv: Conversation, cancel: threading.Event) -> Iterator[ReplyPiece]:
        st = conv.state
        st.turns += 1
        n = int(self.sentence_s * RATE_OUT)
        t = np.arange(n) / RATE_OUT
        for i, sentence in enumerate([f"Answer {st.turns}. ", f"I heard {st.voiced} chunks. "]):
            if cancel.is_set():
                return
            yield ReplyPiece(text=sentence)
            yield ReplyPiece(audio=(0.1 * np.sin(2 * np.pi * (300 + 100 * i) * t)).astype(np.float32),
                             segment_end=True)
        conv.history.append({"role": "assistant", "content": f"Answer {st.turns}."})

    def interrupted(self, conv: Conversation, heard_text: str) -> None:
        pass

    def close(self) -> None:
        pass


class EnergyVad:
    """StreamingVad on frame energy: onset after 3 loud 32 ms windows, offset after 10 quiet ones."""

    def __init__(self, threshold: float = 0.02) -> None:
        self.threshold = threshold
        self._pos = 0
        self._loud = 0
        self._quiet = 0
        self._speech = False
        self._buf = np.zeros(0, np.float32)
        self._prob = 0.0
        self._history = np.zeros(8000, np.float32)

    def process(self, samples_16k: np.ndarray, assistant_speaking: bool,
                reference_16k: np.ndarray | None = None) -> list[VadEvent]:
        events = []
        self._history = np.concatenate([self._history, samples_16k])[-8000:]
        self._buf = np.concatenate([self._buf, samples_16k])
        while len(self._buf) >= 512:
            win, self._buf = self._buf[:512], self._buf[512:]
            loud = float(np.sqrt(np.mean(win ** 2))) > self.threshold
            self._prob = 1.0 if loud else 0.0
            if loud:
                self._loud += 1
                self._quiet = 0
            else:
                self._quiet += 1
                self._loud = 0
            if not self._speech and self._loud >= 3:
                self._speech = True
                events.append(VadEvent("onset", self._pos - 2 * 512, 1.0))
            elif self._speech and self._quiet >= 10:
                self._speech = False
                events.append(VadEvent("offset", self._pos - 9 * 512, 0.0))
            self._pos += 512
        return events

    @property
    def probability(self) -> float:
        return self._prob

    def pre_roll(self) -> np.ndarray:
        return self._history[-4000:].copy()

    def reset(self) -> None:
        self._loud = self._quiet = 0
        self._speech = False


def conversation_audio(rate: int = 48_000, seed: int = 3) -> np.ndarray:
    """Two 'utterances' (noise bursts) separated by long pauses, at ``rate``."""
    rng = np.random.default_rng(seed)
    parts = []
    for speech_s, pause_s in ((0.8, 2.5), (1.2, 3.0)):
        parts.append(np.zeros(int(0.5 * rate), np.float32))
        parts.append(rng.uniform(-0.3, 0.3, int(speech_s * rate)).astype(np.float32))
        parts.append(np.zeros(int(pause_s * rate), np.float32))
    return np.concatenate(parts)
