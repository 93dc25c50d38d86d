"""The interface between the dialogue engine and a speech model ("profile").

Both profiles (Freeze-Omni and Lite) implement :class:`Backend`. The engine never sees a model's internals: it
feeds 160 ms chunks of 16 kHz mono float32 audio to :meth:`Backend.listen`, gets a :class:`ListenResult` with a
turn decision (``cl`` keep listening, ``ss`` the user finished: answer, ``el`` ignore this input) and the three
probabilities, and pulls the answer from the iterator returned by :meth:`Backend.reply` one small step at a time
(each ``next()`` is one *speak step*: a few text tokens and/or one audio piece), so it can interleave listen steps
with speak steps and stop between any two of them.

Model objects hold no conversation state. Everything that belongs to one conversation (front-end carry-over,
encoder/adapter caches, LLM KV cache, history) lives in the :class:`Conversation` object the backend creates; one
backend can serve several conversations, and a session can be replayed exactly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Protocol, runtime_checkable

import numpy as np

TurnState = Literal["cl", "ss", "el"]
TURN_STATES: tuple[TurnState, ...] = ("cl", "ss", "el")


@dataclass
class ListenResult:
    """Outcome of one listen step (one 160 ms chunk)."""

    state: TurnState
    probs: tuple[float, float, float]  # P(keep listening), P(answer now), P(ignore)
    user_text: str | None = None       # live transcript of the user's turn so far, when the profile has one
    final: bool = False                # user_text is the final transcript of the turn


@dataclass
class ReplyPiece:
    """One increment of an answer. Either field may be empty."""

    text: str = ""                      # new assistant text (not cumulative)
    audio: np.ndarray | None = None      # float32 mono in [-1, 1] at Backend.output_rate
    segment_end: bool = False           # the audio of a speech segment (sentence/clause) is complete


@dataclass
class Conversation:
    """Per-conversation state. Backends subclass it (or put their caches in ``state``)."""

    system_prompt: str
    state: Any = None
    history: list[dict[str, str]] = field(default_factory=list)  # [{"role": "user"|"assistant", "content": ...}]
    context_tokens: int = 0  # current LLM context length (KV cache length), for memory management and the UI


class BackendError(RuntimeError):
    """A model failed in a way the user must be told about (bad weights, out of memory...)."""


@runtime_checkable
class Backend(Protocol):
    name: str         # "freeze-omni" | "lite"
    output_rate: int  # Hz of ReplyPiece.audio

    def new_conversation(self, system_prompt: str | None = None) -> Conversation:
        """Fresh conversation (system prompt prefilled)."""

    def start_turn(self, conv: Conversation) -> None:
        """A new user turn begins (VAD onset): reset the listening caches, keep the dialogue memory."""

    def listen(self, conv: Conversation, chunk_16k: np.ndarray) -> ListenResult:
        """One listen step on exactly 2560 samples of 16 kHz mono float32."""

    def end_of_input(self, conv: Conversation) -> ListenResult:
        """The input ended (file end or forced turn end): finish the user's turn and return its final decision."""

    def reply(self, conv: Conversation, cancel: threading.Event) -> Iterator[ReplyPiece]:
        """Generate the answer to the turn just listened to. Stops early (cleanly) when ``cancel`` is set."""

    def interrupted(self, conv: Conversation, heard_text: str) -> None:
        """The last answer was cut off; only ``heard_text`` of it reached the user. Keep history honest."""

    def close(self) -> None:
        """Free the model's memory."""
