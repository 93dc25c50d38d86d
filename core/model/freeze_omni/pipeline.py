"""The Freeze-Omni speech-to-speech pipeline: listen, think (LLM tokens) and speak (decoder + codec).

See docs/freeze-omni.md, "The model at a glance", "Dialogue stages", "Speech decoder" and "Streaming rules".

:class:`FreezeOmni` holds the models (weights only) and the fixed settings; all conversation state is in
:class:`DialogueState` (LLM KV cache handle + listening state), which every call takes and returns:

* :meth:`FreezeOmni.new_dialogue` - 'pre': prefill ``<|im_start|>system\\n`` + persona (no closing ``<|im_end|>``);
* :meth:`FreezeOmni.start_turn` - a user turn begins: fresh front-end/encoder/adapter caches, ``pe_index = 0``;
* :meth:`FreezeOmni.listen` - one 160 ms chunk ('sl' for the first chunk of a turn, then 'cl') -> decision
  ``cl``/``ss``/``el`` and the three probabilities;
* :meth:`FreezeOmni.generate` - 'ss' then 'cs' steps: yields each sampled token with the hidden state that
  predicted it; ``<|im_end|>`` ends the reply and is not fed to the LLM;
* :meth:`FreezeOmni.speech_inputs` / :meth:`FreezeOmni.synthesize` - one text segment -> decoder inputs (the
  896-wide reshape of LLM vectors) -> codec tokens -> streamed waveform pieces.

The KV cache is appended to in place (no per-step copies); a state handed to a step is consumed by it, and
:meth:`DialogueState.fork` copies the cache at a branch point (e.g. listening to a barge-in while a reply runs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.engine.backend import check_prompt_tokens
from core.frontend.chunker import FrontendState, StreamingFbank
from core.model.freeze_omni.adapter import AdapterState
from core.model.freeze_omni.audiollm import (
    IM_START, AudioLLM, ChatTokens, Decision, LLMCache, SamplingSettings, sample_token, tokenize, turn_decision,
)
from core.model.freeze_omni.encoder import EncoderState
from core.model.freeze_omni.text import TextSegment, post_process

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ states
@dataclass(frozen=True)
class ListenState:
    """Listening caches of one user turn."""

    frontend: FrontendState
    encoder: EncoderState = EncoderState()
    adapter: AdapterState = AdapterState()
    chunks: int = 0  # chunks consumed in this turn; 0 means the next chunk opens the turn ('sl')


@dataclass(frozen=True)
class DialogueState:
    """Everything one conversation carries between steps."""

    llm: LLMCache
    listen: ListenState
    system_length: int  # KV positions of the system prompt

    @property
    def context_tokens(self) -> int:
        return self.llm.length

    def fork(self) -> "DialogueState":
        """An independent copy (the KV cache is cloned): for branch points only."""
        return replace(self, llm=self.llm.fork())


@dataclass(frozen=True)
class ListenStep:
    """Outcome of one listen step, with the intermediate values for tracing and parity tests."""

    state: DialogueState
    decision: Decision
    probs: tuple[float, float, float]
    features: Tensor          # (1, 19, 80) raw fbank block
    encoder_out: Tensor       # (1, 4, enc_dim)
    embeddings: Tensor        # (1, 2, llm_dim) adapter output
    inputs_embeds: Tensor     # what was appended to the LLM
    state_logits: Tensor | None
    hidden: Tensor            # (1, llm_dim) last-position post-norm hidden state
    pe_index_before: int
    pe_index_after: int
    kv_before: int
    kv_after: int


@dataclass(frozen=True)
class TokenStep:
    """One LLM decode step of a reply."""

    token: int
    hidden: Tensor            # (1, llm_dim): the state that predicted ``token`` (goes to the speech decoder)
    logits: Tensor            # (vocab,)
    kv_before: int
    is_end: bool              # ``token`` is <|im_end|>: the reply is over and the token was not fed to the LLM
    state: DialogueState      # the state after this step (valid until the next step consumes it)
    inputs_embeds: Tensor     # what this step appended (the suffix for the first step, the previous token after)


@dataclass(frozen=True)
class SpeechInputs:
    """Speech-decoder inputs of one text segment (docs/freeze-omni.md, "Speech decoder")."""

    text: str                 # post-processed text
    text_ids: list[int]       # its re-tokenisation
    hidden_rows: Tensor       # (1, 4M, idim): backbone input embeddings of text_ids, split into idim-wide rows
    prefix_rows: Tensor       # (1, 4N, idim): the segment's LLM hidden states, split the same way


@dataclass
class SegmentTrace:
    """What happened while one segment was spoken (filled by :meth:`FreezeOmni.synthesize`)."""

    text: str = ""                                   # post-processed text (what the decoder was given)
    raw_text: str = ""                               # the segment as the LLM wrote it
    codec_tokens: list[int] = field(default_factory=list)
    pieces: list[int] = field(default_factory=list)  # samples per yielded piece

    @property
    def samples(self) -> int:
        return int(sum(self.pieces))


def split_rows(vectors: Tensor, row_width: int) -> Tensor:
    """(n, D) or (1, n, D) -> (1, n * D / row_width, row_width): each vector becomes D / row_width consecutive rows
    (row-major split, the original's ``reshape(-1, 896)``)."""
    flat = vectors.reshape(-1, vectors.shape[-1])
    if flat.shape[-1] % row_width:
        raise ValueError(f"vectors of width {flat.shape[-1]} cannot be split into rows of {row_width}")
    return flat.reshape(1, flat.shape[0] * (flat.shape[-1] // row_width), row_width)  # no -1: n may be 0


# ------------------------------------------------------------------------------------------------ pipeline
class FreezeOmni:
    """Models + fixed settings; stateless between calls."""

    def __init__(self, audiollm: AudioLLM, tokenizer: Any, chat: ChatTokens, decoder: Any = None, codec: Any = None,
                 frontend: StreamingFbank | None = None) -> None:
        self.audiollm = audiollm
        self.tokenizer = tokenizer
        self.chat = chat
        self.decoder = decoder
        self.codec = codec
        self.frontend = frontend or StreamingFbank()

    # -- dialogue -------------------------------------------------------------------------------------------
    def role_ids(self, system_prompt: str | None) -> list[int]:
        """Token ids of the 'pre' input: ``<|im_start|>system\\n`` + prompt (the template's own when None)."""
        if system_prompt is None:
            return list(self.chat.default_role[:-1])
        return tokenize(self.tokenizer, IM_START + "system\n" + system_prompt)

    @property
    def context_tokens(self) -> int:
        """The backbone's context window in tokens (its ``max_position_embeddings``)."""
        return int(getattr(self.audiollm.llm_decoder.config, "max_position_embeddings", 0) or 32768)

    def new_listen_state(self) -> ListenState:
        return ListenState(frontend=self.frontend.initial_state())

    @torch.inference_mode()
    def new_dialogue(self, system_prompt: str | None = None) -> tuple[DialogueState, tuple[float, float, float]]:
        """'pre': prefill the system role. Returns the state and the (ignored) state-head probabilities."""
        model = self.audiollm
        ids = self.role_ids(system_prompt)
        check_prompt_tokens(len(ids), self.context_tokens)   # BackendError naming the limit
        emb = model.embed_ids(ids)
        step = model.append(LLMCache(), emb)
        logits = model.state_logits(step.hidden)
        probs = turn_decision(logits)[1] if logits is not None else (1.0, 0.0, 0.0)
        state = DialogueState(llm=step.cache, listen=self.new_listen_state(), system_length=step.cache.length)
        return state, probs

    def start_turn(self, state: DialogueState, keep_frontend: bool = False) -> DialogueState:
        """A new user turn: encoder/adapter caches and pe_index reset; the dialogue memory is kept.

        ``keep_frontend`` keeps the fbank carry-over (when the chunks continue one uninterrupted audio stream)."""
        frontend = state.listen.frontend if keep_frontend else self.frontend.initial_state()
        return replace(state, listen=ListenState(frontend=frontend))

    @torch.inference_mode()
    def listen(self, state: DialogueState, chunk_16k: np.ndarray | Tensor) -> ListenStep:
        """One listen step on exactly 2560 samples of 16 kHz mono float audio."""
        model = self.audiollm
        ls = state.listen
        frontend_state, features = self.frontend.step(ls.frontend, chunk_16k)
        enc = model.encode_chunk(features, ls.encoder, ls.adapter)
        if ls.chunks == 0:
            inputs = model.turn_start_embeddings(self.chat, enc.embeddings)
        else:
            inputs = enc.embeddings
        kv_before = state.llm.length
        step = model.append(state.llm, inputs)
        logits = model.state_logits(step.hidden)
        if logits is not None:
            decision, probs = turn_decision(logits)
        else:
            decision, probs = "cl", (1.0, 0.0, 0.0)
        new_listen = ListenState(frontend=frontend_state, encoder=enc.encoder_state, adapter=enc.adapter_state,
                                 chunks=ls.chunks + 1)
        new_state = replace(state, llm=step.cache, listen=new_listen)
        return ListenStep(
            state=new_state, decision=decision, probs=probs, features=features, encoder_out=enc.encoder_out,
            embeddings=enc.embeddings, inputs_embeds=step.inputs_embeds, state_logits=logits, hidden=step.hidden,
            pe_index_before=ls.encoder.pe_index, pe_index_after=enc.encoder_state.pe_index,
            kv_before=kv_before, kv_after=step.cache.length,
        )

    def generate(self, state: DialogueState, sampling: SamplingSettings,
                 generator: torch.Generator | None = None) -> Iterator[TokenStep]:
        """'ss' then 'cs' steps. Yields every sampled token; the last one has ``is_end`` when it is <|im_end|>.

        Stops after ``sampling.max_tokens`` non-end tokens. The end token is never fed to the LLM (the next user turn
        opens with ``<|im_end|>``, which closes the assistant turn), as in the original.
        """
        model = self.audiollm
        state = replace(state, listen=self.new_listen_state())
        inputs = model.answer_start_embeddings(self.chat)
        emitted = 0
        while True:
            with torch.inference_mode():
                kv_before = state.llm.length
                step = model.append(state.llm, inputs)
                logits = model.lm_logits(step.hidden)
                token = sample_token(logits, sampling, generator)
            state = replace(state, llm=step.cache)
            is_end = token == self.chat.im_end
            yield TokenStep(token=token, hidden=step.hidden, logits=logits, kv_before=kv_before, is_end=is_end,
                            state=state, inputs_embeds=step.inputs_embeds)
            if is_end:
                return
            emitted += 1
            if emitted >= sampling.max_tokens:
                log.info("reply stopped at the cap of %d tokens", sampling.max_tokens)
                return
            with torch.inference_mode():
                inputs = model.embed_ids([token])

    def decode_text(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    # -- speech ---------------------------------------------------------------------------------------------
    @property
    def decoder_row_width(self) -> int:
        if self.decoder is None:
            raise RuntimeError("no speech decoder loaded")
        return int(self.decoder.config.idim)

    @torch.inference_mode()
    def speech_inputs(self, segment: TextSegment) -> SpeechInputs:
        """Post-process and re-tokenise the segment text; split its embeddings and the LLM states into rows."""
        width = self.decoder_row_width
        text = post_process(segment.text)
        ids = tokenize(self.tokenizer, text)
        emb = self.audiollm.embed_ids(ids)  # (1, 0, dim) for an empty segment
        hidden = torch.cat([h.reshape(1, -1) for h in segment.hidden], dim=0)
        return SpeechInputs(text=text, text_ids=ids, hidden_rows=split_rows(emb, width),
                            prefix_rows=split_rows(hidden, width))

    def synthesize_steps(self, inputs: SpeechInputs, streamer: Any, *, top_k: int, max_tokens: int = 1000,
                         penalty_window: int = -1, penalty: float = 1.1, generator: torch.Generator | None = None,
                         trace: SegmentTrace | None = None) -> Iterator[np.ndarray | None]:
        """Speech decoder + streamed codec for one segment, one decoder token per item: yields a float32 24 kHz
        piece when the streamer releases one, else None (so a caller can interleave other work between tokens).

        ``streamer`` is a :class:`~core.model.freeze_omni.streaming.CodecStreamer` whose reply life cycle the caller
        owns (``start_reply()`` once per reply). A segment with no text after post-processing is skipped.
        """
        if self.decoder is None or self.codec is None:
            raise RuntimeError("speech output needs the speech decoder and the codec")
        if trace is not None:
            trace.text = inputs.text
        if not inputs.text_ids:
            log.info("segment with no text after post-processing: nothing to say")
            return
        streamer.start_segment()
        tokens = self.decoder.generate(inputs.hidden_rows, inputs.prefix_rows, top_k=top_k, max_tokens=max_tokens,
                                       penalty_window=penalty_window, penalty=penalty, generator=generator)
        for token in tokens:
            if trace is not None:
                trace.codec_tokens.append(int(token))
            piece = streamer.push(token)
            if piece is not None and piece.size:
                if trace is not None:
                    trace.pieces.append(int(piece.size))
                yield piece
            else:
                yield None
        piece = streamer.finish_segment()
        if piece is not None and piece.size:
            if trace is not None:
                trace.pieces.append(int(piece.size))
            yield piece

    def synthesize(self, inputs: SpeechInputs, streamer: Any, **kwargs: Any) -> Iterator[np.ndarray]:
        """:meth:`synthesize_steps` without the empty steps: only the waveform pieces."""
        for piece in self.synthesize_steps(inputs, streamer, **kwargs):
            if piece is not None:
                yield piece

    # -- a whole reply ----------------------------------------------------------------------------------------
    def reply(self, state: DialogueState, settings: "ReplySettings", generator: torch.Generator | None = None,
              decoder_generator: torch.Generator | None = None, cancel: Any = None) -> Iterator["ReplyEvent"]:
        """Generate and speak the answer to the turn just listened to, one small step per item.

        Items, in order: a ``token`` event per LLM token (with its text delta), then for each finished text segment
        its decoder steps (``audio`` events, with ``audio`` None while no piece is ready) and a ``segment_end``
        event; finally one ``end`` event (reason ``im_end``, ``max_tokens`` or ``cancelled``). Every event carries
        the latest :class:`DialogueState`. ``cancel`` (anything with ``is_set()``) stops between two steps.
        """
        from core.model.freeze_omni.streaming import CodecStreamer
        from core.model.freeze_omni.text import SentenceSegmenter

        speak = settings.speak and self.decoder is not None and self.codec is not None
        streamer = CodecStreamer(self.codec, settings.stream, settings.global_tokens) if speak else None
        if streamer is not None:
            streamer.start_reply()
        segmenter = SentenceSegmenter(settings.segmentation)
        tokens: list[int] = []
        emitted = ""
        reply_start: int | None = None
        reason = "max_tokens"

        def cancelled() -> bool:
            return cancel is not None and cancel.is_set()

        def speak_segment(segment: TextSegment, current: DialogueState) -> Iterator[ReplyEvent]:
            trace = SegmentTrace(raw_text=segment.text)
            if streamer is not None:
                inputs = self.speech_inputs(segment)
                for piece in self.synthesize_steps(inputs, streamer, top_k=settings.decoder_top_k,
                                                   max_tokens=settings.decoder_max_tokens,
                                                   penalty_window=settings.penalty_window, penalty=settings.penalty,
                                                   generator=decoder_generator, trace=trace):
                    if piece is not None:
                        segmenter.note_audio()
                    yield ReplyEvent("audio", current, audio=piece)
                    if cancelled():
                        return
            else:
                trace.text = post_process(segment.text)
            yield ReplyEvent("segment_end", current, segment=trace)

        current = state
        for step in self.generate(state, settings.sampling, generator):
            current = step.state
            if reply_start is None:
                reply_start = step.kv_before + step.inputs_embeds.shape[1]
            if step.is_end:
                reason = "im_end"
                break
            tokens.append(step.token)
            text = self.decode_text(tokens)
            delta = ""
            if not text.endswith("\ufffd") and text.startswith(emitted):
                delta, emitted = text[len(emitted):], text
            yield ReplyEvent("token", current, token=step.token, text=delta, reply_start=reply_start)
            if cancelled():
                reason = "cancelled"
                break
            segment = segmenter.push(step.hidden, text if len(tokens) > 1 else None)
            if segment is not None:
                yield from speak_segment(segment, current)
                if cancelled():
                    reason = "cancelled"
                    break
        if reason != "cancelled":
            rest = segmenter.flush()
            if rest is not None:
                yield from speak_segment(rest, current)
                if cancelled():
                    reason = "cancelled"
        yield ReplyEvent("end", current, reason=reason, token_ids=list(tokens), reply_start=reply_start)


@dataclass(frozen=True)
class ReplySettings:
    """How one reply is generated and spoken."""

    sampling: SamplingSettings = SamplingSettings()
    decoder_top_k: int = 2
    decoder_max_tokens: int = 1000
    penalty_window: int = -1
    penalty: float = 1.1
    stream: Any = None                 # streaming.StreamOptions (None: its defaults)
    segmentation: str = "offline"      # text.SentenceSegmenter rule: "offline" (bin/inference.py) or "server"
    global_tokens: list[int] | None = None  # the voice (None: the codec's release tokens)
    speak: bool = True                 # False: text only


@dataclass(frozen=True)
class ReplyEvent:
    """One step of :meth:`FreezeOmni.reply`."""

    kind: str                          # token | audio | segment_end | end
    state: DialogueState
    token: int | None = None
    text: str = ""                     # new text (token events)
    audio: np.ndarray | None = None    # float32 24 kHz piece (audio events; None while nothing is ready)
    segment: SegmentTrace | None = None
    reason: str = ""                   # end events: im_end | max_tokens | cancelled
    token_ids: list[int] = field(default_factory=list)
    reply_start: int | None = None     # KV length before the first reply token was fed (after the suffix)
