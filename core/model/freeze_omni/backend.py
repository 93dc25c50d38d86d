"""``FreezeOmniBackend``: the Freeze-Omni model behind the engine's :class:`~core.engine.backend.Backend` protocol.

Conversation state (:class:`FreezeOmniConversationState`) holds the dialogue memory (``main``: the LLM KV cache
after the system prompt and every finished turn) and the listening branch of the current user turn (``turn``).

* No reply running: the turn listens on ``main``'s own cache (no copy); if the turn is dropped ('el', or the engine
  starts another turn), the cache is truncated back to where the turn began.
* A reply running (barge-in candidate): the turn listens on a fork of the cache taken at ``start_turn`` (the one
  branch-point copy), so the running reply is not disturbed; the candidate is never merged by the backend.
* 'ss' (or :meth:`end_of_input`): the turn becomes the dialogue memory and :meth:`reply` answers it.
* :meth:`interrupted`: the cache is truncated to the reply tokens whose text was actually heard.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.constants import FREEZE_OMNI_OUTPUT_RATE
from core.engine.backend import Backend, BackendError, Conversation, ListenResult, ProgressFn, ReplyPiece
from core.model.freeze_omni.pipeline import DialogueState, FreezeOmni, ReplySettings
from core.runtime import collect_garbage, free_cuda_cache

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


@dataclass
class FreezeOmniConversationState:
    main: DialogueState
    turn: DialogueState | None = None          # listening state of the current user turn
    turn_is_fork: bool = False                 # the turn listens on a copy (a reply was running at start_turn)
    turn_base: int = 0                         # main's KV length when the turn started (to drop a shared turn)
    last_probs: tuple[float, float, float] = (1.0, 0.0, 0.0)
    decided: str | None = None                 # 'ss' / 'el' once the turn is decided
    reply_alive: bool = False
    reply_start: int | None = None             # KV length where the last reply's tokens begin
    reply_tokens: list[int] = field(default_factory=list)


class FreezeOmniBackend(Backend):
    """Backend over a loaded :class:`FreezeOmni` pipeline (weights only; state in the conversations)."""

    name = "freeze-omni"
    output_rate = FREEZE_OMNI_OUTPUT_RATE

    def __init__(self, pipeline: FreezeOmni, settings: ReplySettings | None = None, seed: int = 0) -> None:
        self.pipeline = pipeline
        self.settings = settings or ReplySettings()
        self.seed = seed
        self._lock = threading.Lock()

    @classmethod
    def load(cls, checkpoint: str | Path, llm: str | Path, device: str = "cpu", dtype: str = "float32",
             settings: ReplySettings | None = None, seed: int = 0,
             quantize_bits: int | None = None, progress: ProgressFn | None = None) -> "FreezeOmniBackend":
        """Load the model (``quantize_bits`` 8 or 4: bitsandbytes backbone, CUDA only; ``progress`` hears of each
        loading step)."""
        from core.model.freeze_omni.loader import load_freeze_omni

        out_of_memory = None
        try:
            pipeline = load_freeze_omni(checkpoint, llm, device=device, dtype=dtype, quantize_bits=quantize_bits,
                                        progress=progress)
        except ValueError as exc:  # CheckpointError, CmvnError, LoadError
            raise BackendError(str(exc)) from exc
        except torch.OutOfMemoryError as exc:
            out_of_memory = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        if out_of_memory is not None:
            # Raised outside the except block: no traceback keeps the half-loaded weights alive.
            collect_garbage()
            free_cuda_cache()
            raise BackendError(f"out of memory while loading Freeze-Omni on {device} in {dtype} ({out_of_memory}): "
                               "choose 8-bit or 4-bit precision, close other GPU programs, or use the Lite profile")
        return cls(pipeline, settings, seed)

    # -- conversation life cycle -------------------------------------------------------------------------
    @staticmethod
    def _state(conv: Conversation) -> FreezeOmniConversationState:
        if not isinstance(conv.state, FreezeOmniConversationState):
            raise BackendError("this conversation was not created by the freeze-omni backend")
        return conv.state

    def new_conversation(self, system_prompt: str | None = None) -> Conversation:
        prompt = system_prompt or DEFAULT_SYSTEM_PROMPT
        with self._lock:
            main, _ = self.pipeline.new_dialogue(prompt)
        conv = Conversation(system_prompt=prompt, state=FreezeOmniConversationState(main=main))
        conv.context_tokens = main.context_tokens
        return conv

    def _drop_turn(self, st: FreezeOmniConversationState) -> None:
        if st.turn is not None and not st.turn_is_fork and st.main.llm.length < st.turn.llm.length:
            st.main = DialogueState(llm=st.turn.llm.truncate(st.turn_base), listen=st.main.listen,
                                    system_length=st.main.system_length)
        st.turn = None
        st.turn_is_fork = False
        st.decided = None

    def start_turn(self, conv: Conversation) -> None:
        st = self._state(conv)
        self._drop_turn(st)
        if st.reply_alive:
            base = st.main.fork()
            st.turn_is_fork = True
        else:
            base = st.main
            st.turn_is_fork = False
        st.turn_base = st.main.llm.length
        st.turn = self.pipeline.start_turn(base)
        st.last_probs = (1.0, 0.0, 0.0)

    def listen(self, conv: Conversation, chunk_16k: np.ndarray,
               speech_probs: np.ndarray | None = None) -> ListenResult:
        """One listen step. The state head decides turns from the audio itself: ``speech_probs`` are not used."""
        st = self._state(conv)
        if st.turn is None:
            self.start_turn(conv)
        if st.decided is not None:  # already decided: further audio of this turn is ignored
            return ListenResult(state=st.decided, probs=st.last_probs)  # type: ignore[arg-type]
        with self._lock:
            step = self.pipeline.listen(st.turn, chunk_16k)
        st.turn = step.state
        st.last_probs = step.probs
        if step.decision == "ss":
            self._commit_turn(conv, st)
        elif step.decision == "el":
            self._drop_turn(st)  # the rejected input leaves no trace in the dialogue memory
            st.decided = "el"
        return ListenResult(state=step.decision, probs=step.probs)

    def _commit_turn(self, conv: Conversation, st: FreezeOmniConversationState) -> None:
        st.main = st.turn
        st.turn = None
        st.turn_is_fork = False
        st.decided = "ss"
        conv.history.append({"role": "user", "content": ""})
        conv.context_tokens = st.main.context_tokens

    def end_of_input(self, conv: Conversation) -> ListenResult:
        st = self._state(conv)
        if st.decided is not None or st.turn is None:
            return ListenResult(state=st.decided or "cl", probs=st.last_probs)  # type: ignore[arg-type]
        self._commit_turn(conv, st)
        return ListenResult(state="ss", probs=st.last_probs)

    # -- speaking ------------------------------------------------------------------------------------------
    def reply(self, conv: Conversation, cancel: threading.Event) -> Iterator[ReplyPiece]:
        st = self._state(conv)
        st.decided = None
        generator = torch.Generator().manual_seed(self.seed + len(conv.history))
        decoder_device = self.pipeline.decoder.device if self.pipeline.decoder is not None else "cpu"
        decoder_generator = torch.Generator(device=decoder_device).manual_seed(self.seed + len(conv.history))
        st.reply_alive = True
        st.reply_tokens = []
        st.reply_start = None
        message = {"role": "assistant", "content": ""}
        conv.history.append(message)
        try:
            events = self.pipeline.reply(st.main, self.settings, generator, decoder_generator, cancel)
            while True:
                with self._lock:
                    event = next(events, None)
                if event is None:
                    break
                st.main = event.state
                conv.context_tokens = st.main.context_tokens
                if event.reply_start is not None:
                    st.reply_start = event.reply_start
                if event.kind == "token":
                    st.reply_tokens.append(int(event.token))
                    message["content"] += event.text
                    yield ReplyPiece(text=event.text)
                elif event.kind == "audio":
                    yield ReplyPiece(audio=event.audio)
                elif event.kind == "segment_end":
                    yield ReplyPiece(segment_end=True)
                elif event.kind == "end":
                    log.info("reply ended (%s) after %d tokens", event.reason, len(event.token_ids))
        finally:
            st.reply_alive = False

    def interrupted(self, conv: Conversation, heard_text: str) -> None:
        """Keep only the reply tokens whose text was heard: the KV cache is truncated after them."""
        st = self._state(conv)
        if st.reply_start is None:
            return
        tokens = st.reply_tokens
        keep = 0
        for n in range(len(tokens), -1, -1):
            if heard_text.startswith(self.pipeline.decode_text(tokens[:n]).rstrip()) or n == 0:
                keep = n
                break
        # Positions: [reply_start, reply_start + fed) hold the fed reply tokens (the last sampled one is not fed).
        fed = st.main.llm.length - st.reply_start
        target = st.reply_start + min(keep, max(fed, 0))
        if target < st.main.llm.length:
            st.main = DialogueState(llm=st.main.llm.truncate(target), listen=st.main.listen,
                                    system_length=st.main.system_length)
        conv.context_tokens = st.main.context_tokens
        heard = self.pipeline.decode_text(tokens[:keep])
        for msg in reversed(conv.history):
            if msg["role"] == "assistant":
                msg["content"] = heard
                break
        log.info("interrupted: kept %d of %d reply tokens (%d KV positions)", keep, len(tokens), target)

    def retract_turn(self, conv: Conversation) -> None:
        """Forget the latest user turn and its unheard answer: the KV cache goes back to where that turn began."""
        st = self._state(conv)
        base = st.turn_base
        if st.main.system_length <= base < st.main.llm.length:
            st.main = DialogueState(llm=st.main.llm.truncate(base), listen=st.main.listen,
                                    system_length=st.main.system_length)
        while conv.history and conv.history[-1]["role"] == "assistant":
            conv.history.pop()
        if conv.history and conv.history[-1]["role"] == "user":
            conv.history.pop()
        st.reply_start, st.reply_tokens, st.decided = None, [], None
        conv.context_tokens = st.main.context_tokens

    def set_voice(self, voice: str | None, tokens: list[int] | None = None) -> str | None:
        """Speak with the codec global ``tokens`` (None: the release voice) from the next answer on. Returns why it
        could not (a token count the loaded codec does not take; the release voice stays), or None."""
        n = self.pipeline.codec.config.global_code_num
        if tokens is not None and len(tokens) != n:
            return (f"voice {voice!r} has {len(tokens)} global tokens, this codec needs {n}; "
                    "using the release voice")
        self.settings = dataclasses.replace(self.settings, global_tokens=list(tokens) if tokens else None)
        return None

    def close(self) -> None:
        device = self.pipeline.audiollm.device
        self.pipeline = None  # type: ignore[assignment]
        if device.type == "cuda":
            collect_garbage()     # cycles first, so dropped weights are really unreferenced
            free_cuda_cache()
