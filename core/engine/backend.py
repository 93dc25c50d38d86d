"""The interface between the dialogue engine and a speech model ("profile").

Both profiles (Freeze-Omni and Lite) implement :class:`Backend`. The engine never sees a model's internals: it
feeds 160 ms chunks of 16 kHz mono float32 audio (with the capture chain's speech probability for each 32 ms window
of the chunk) to :meth:`Backend.listen`, gets a :class:`ListenResult` with a
turn decision (``cl`` keep listening, ``ss`` the user finished: answer, ``el`` ignore this input) and the three
probabilities, and pulls the answer from the iterator returned by :meth:`Backend.reply` one small step at a time
(each ``next()`` is one *speak step*: a few text tokens and/or one audio piece), so it can interleave listen steps
with speak steps and stop between any two of them.

Barge-in: the engine may call :meth:`Backend.start_turn` and :meth:`Backend.listen` while a reply iterator of the
same conversation is still alive (the user speaks over the answer). Such a *candidate* turn must not disturb the
running reply (listen on a branch of the dialogue memory). The engine then either drops the candidate (the backend
said ``el``, or the engine judged it too short: the next ``start_turn`` discards it) or interrupts: it cancels the
reply, calls :meth:`Backend.interrupted` with the text the user actually heard, then calls ``start_turn`` again and
re-listens to the candidate's audio from its pre-roll on the corrected memory. A candidate is therefore never merged
into the dialogue memory by the backend itself.

Text and audio of a reply are aligned per speech segment: a segment's text is all ``ReplyPiece.text`` emitted after
the previous ``segment_end`` piece up to and including the piece with ``segment_end=True``, and its audio is the
audio of those same pieces. The engine uses this to compute what was heard when an answer is cut off.

This module is the engine's contract with the models: ``core.model`` imports nothing else of the engine. Backends
inherit from :class:`Backend` to get the defaults of its optional methods.

Model objects hold no conversation state. Everything that belongs to one conversation (front-end carry-over,
encoder/adapter caches, LLM KV cache, history) lives in the :class:`Conversation` object the backend creates; one
backend can serve several conversations, and a session can be replayed exactly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import numpy as np

from core.errors import BackendError

TurnState = Literal["cl", "ss", "el"]
# How a loading backend reports progress: (step, fraction of that step done or None, a sentence for the user).
ProgressFn = Callable[[str, "float | None", str], None]


def no_progress(step: str, fraction: float | None, message: str) -> None:
    """A :data:`ProgressFn` that reports nowhere."""
TURN_STATES: tuple[TurnState, ...] = ("cl", "ss", "el")


@dataclass
class ListenResult:
    """Outcome of one listen step (one 160 ms chunk)."""

    state: TurnState
    probs: tuple[float, float, float]  # P(keep listening), P(answer now), P(ignore)
    user_text: str | None = None       # live transcript of the user's turn so far, when the profile has one
    final: bool = False                # user_text is the final transcript of the turn
    text_logprob: float | None = None  # the recogniser's mean token log-probability for user_text (None: unknown)


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


class Backend:
    """What a profile implements. The methods without a body are required; the others are optional capabilities
    whose defaults here are right for a profile that lacks them."""

    name: str = "?"       # "freeze-omni" | "lite"
    output_rate: int = 0  # Hz of ReplyPiece.audio
    transcribes: bool = False  # listen() gives the user's words (ListenResult.user_text): no words, no barge-in

    def new_conversation(self, system_prompt: str | None = None) -> Conversation:
        """Fresh conversation (system prompt prefilled)."""
        raise NotImplementedError

    def start_turn(self, conv: Conversation) -> None:
        """A new user turn begins (VAD onset): reset the listening caches, keep the dialogue memory."""
        raise NotImplementedError

    def listen(self, conv: Conversation, chunk_16k: np.ndarray,
               speech_probs: np.ndarray | None = None) -> ListenResult:
        """One listen step on exactly 2560 samples of 16 kHz mono float32. ``speech_probs``: the capture chain's
        speech probability of each of the chunk's five 512-sample windows (None: not known)."""
        raise NotImplementedError

    def end_of_input(self, conv: Conversation) -> ListenResult:
        """The input ended (file end or forced turn end): finish the user's turn and return its final decision."""
        raise NotImplementedError

    def reply(self, conv: Conversation, cancel: threading.Event) -> Iterator[ReplyPiece]:
        """Generate the answer to the turn just listened to. Stops early (cleanly) when ``cancel`` is set."""
        raise NotImplementedError

    def interrupted(self, conv: Conversation, heard_text: str) -> None:
        """The last answer was cut off; only ``heard_text`` of it reached the user. Keep history honest."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the model's memory."""

    # --- optional capabilities ---------------------------------------------------------------------------------
    def rebuild_context(self, conv: Conversation, history: list[dict[str, str]]) -> Conversation:
        """Replace the conversation's context (KV cache) by the system prompt plus ``history`` as text.

        ``history`` is ``[{"role": "user"|"assistant", "content": ...}]``, oldest first, already cut to what should
        be kept; assistant entries hold the text as actually heard when an answer was interrupted; user entries may
        be empty when the profile has no transcript. Returns the conversation to use from now on (the same object
        or a new one) with ``context_tokens`` and ``history`` updated. Called only between turns (no reply alive).
        The default: :func:`default_rebuild_context` (a fresh conversation whose system prompt carries the turns).
        """
        return default_rebuild_context(self, conv, history)

    def retract_turn(self, conv: Conversation) -> None:
        """Forget the latest user turn and its answer, which nobody heard (the user went on speaking: the turn is
        listened to again, whole). The default tells the backend that nothing of the answer was heard."""
        self.interrupted(conv, "")

    def submit_text(self, conv: Conversation, text: str) -> bool:
        """A typed user message: the next :meth:`reply` answers ``text`` as if the user had said it. Returns False
        when the profile cannot take text (it listens to audio only)."""
        return False

    def set_system_prompt(self, conv: Conversation, prompt: str) -> bool:
        """Change the persona of a running conversation, keeping its memory. False: only a new conversation can."""
        return False

    def set_voice(self, voice: str | None, tokens: list[int] | None = None) -> str | None:
        """Speak with another voice from the next answer on (Lite: a Piper ``.onnx``; Freeze-Omni: the codec's
        global ``tokens``; None: the default voice). Returns why it could not, or None."""
        return "this profile cannot change its voice while it runs"


def check_prompt_tokens(tokens: int, context: int) -> None:
    """Refuse a system prompt of ``tokens`` for a model with a ``context``-token window: it may fill at most half of
    it (the rest holds what is said and answered). Raises :class:`BackendError` naming the limit in tokens."""
    limit = context // 2
    if tokens > limit:
        raise BackendError(f"the system prompt is {tokens} tokens long; this model takes at most {limit} tokens "
                           f"(half of its {context}-token context, the rest is for the conversation): shorten it")


def history_as_text(history: list[dict[str, str]]) -> str:
    """``history`` rendered as plain dialogue lines ("User: ..." / "Assistant: ...")."""
    lines = []
    for msg in history:
        who = "User" if msg.get("role") == "user" else "Assistant"
        content = (msg.get("content") or "").strip() or "(inaudible)"
        lines.append(f"{who}: {content}")
    return "\n".join(lines)


def default_rebuild_context(backend: Backend, conv: Conversation, history: list[dict[str, str]],
                            persona: str | None = None) -> Conversation:
    """Rebuild for any backend: a fresh conversation whose system prompt is the persona (``persona``, else
    ``conv.system_prompt``) followed by the recent turns as text.

    The new conversation's ``system_prompt`` is that whole text (a backend that renders its prompt from
    ``system_prompt`` + ``history`` on every turn, like Lite, keeps the turns) and its ``history`` restarts empty
    (so they are not seen twice). The caller keeps the persona for the next rebuild."""
    base = conv.system_prompt if persona is None else persona
    prompt = f"{base}\n\nThe conversation so far:\n{history_as_text(history)}" if history else base
    new = backend.new_conversation(prompt)
    new.history = []
    return new


def rebuild_context(backend: Backend, conv: Conversation, history: list[dict[str, str]],
                    persona: str | None = None) -> Conversation:
    """The backend's own ``rebuild_context`` when it overrides it, else :func:`default_rebuild_context` with
    ``persona`` (the session's base system prompt)."""
    if type(backend).rebuild_context is not Backend.rebuild_context:
        return backend.rebuild_context(conv, history)
    return default_rebuild_context(backend, conv, history, persona)


__all__ = ["Backend", "BackendError", "Conversation", "ListenResult", "ProgressFn", "ReplyPiece", "TURN_STATES",
           "TurnState", "no_progress", "check_prompt_tokens",
           "default_rebuild_context", "history_as_text", "rebuild_context"]
