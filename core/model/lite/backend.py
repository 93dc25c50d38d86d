"""The Lite profile: Whisper tiny.en -> SmolLM2-135M-Instruct -> Piper, behind the engine's Backend protocol.

Listening: silero-vad on every chunk, a live Whisper transcript while the user speaks, a candidate final
transcript as soon as a pause starts, and a turn decision from the silence length and that transcript (see
:mod:`core.model.lite.turn`). While the pause lasts, the prompt for the candidate is prefilled into the LLM's KV
cache, so the answer starts without a prefill when the turn does end.

Speaking: the answer is generated token by token; every ``next()`` of :meth:`LiteBackend.reply` is one token
(a text piece) or one synthesised clause (an audio piece), so the engine can interleave listening and stop
between any two steps.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from core.constants import MODEL_INPUT_RATE
from core.engine.backend import (
    Backend,
    BackendError,
    Conversation,
    ListenResult,
    ProgressFn,
    ReplyPiece,
    check_prompt_tokens,
    no_progress,
)
from core.log import speech
from core.model.lite import cache as cachemod
from core.model.lite.asr import WhisperAsr
from core.model.lite.llm import ChatLlm, Generation, LlmState, SamplingConfig
from core.model.lite.text import ClauseSegmenter, speakable
from core.model.lite.tts import PiperVoice
from core.model.lite.turn import TurnConfig, TurnTracker, Transcript
from core.model.lite.vad import SileroVad, VadState
from core.runtime import collect_garbage

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = ("You are a helpful AI assistant. Keep your answers short: one or two sentences, "
                         "no lists.")


@dataclass
class LiteSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    llm: str | None = None              # local HF chat-model folder or .gguf; None: SmolLM2 from its wheel
    llm_dtype: str = "float32"          # or "bfloat16" (half the memory; speed: see ChatLlm.load)
    voice: str | None = None            # Piper .onnx (with .onnx.json beside it); None: joe-medium from its wheel
    voice_speed: float = 1.0            # speaking rate (Piper's length_scale is divided by it); settable live
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    cache_dir: str | None = None        # default: $PARLEY_CACHE_DIR or the platform cache dir
    packages_dir: str | None = None     # default: $PARLEY_LITE_PACKAGES_DIR or the installed packages
    rebuild_cache: bool = False         # also: PARLEY_REBUILD_CACHE=1
    espeak: str | None = None           # espeak-ng program; default: $PARLEY_ESPEAK or espeak-ng on PATH
    max_context_tokens: int = 2048      # older turns are dropped beyond this
    speculate: bool = True              # during the end-of-turn silence: prefill the candidate's prompt and
    speculate_budget_s: float = 0.12    # ...generate its first tokens, within this much time per listen step
    speculate_max_tokens: int = 12
    asr_margin_s: float | None = 1.0    # Whisper encoder window = audio + margin (None: the full 30 s)
    seed: int = 0
    torch_threads: int | None = None    # None: core.runtime default (1, or PARLEY_TORCH_THREADS)


@dataclass
class ReplyRecord:
    """What the latest answer was: for traces, interruption handling and timings."""

    user_text: str
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    segments: list[dict[str, Any]] = field(default_factory=list)   # {"text", "samples"}
    prefill_tokens: int = 0
    speculative_tokens: int = 0         # tokens already generated during the end-of-turn silence
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False


@dataclass
class LiteState:
    """Everything one conversation owns (the models own nothing of it)."""

    vad: VadState
    turn: TurnTracker
    llm: LlmState
    generator: torch.Generator
    samples_fed: int = 0
    user_text: str | None = None        # final transcript waiting for reply()
    speech_end_abs: int | None = None   # stream sample where the user's latest speech ended
    decided_at_abs: int | None = None   # stream sample (end of the chunk) where the turn was decided
    spec: Generation | None = None      # answer started speculatively for spec_text
    reply_cancel: threading.Event | None = None  # set while a reply() is running: its cancel event
    spec_text: str | None = None
    last_reply: ReplyRecord | None = None
    asr_calls: deque[dict[str, float]] = field(default_factory=lambda: deque(maxlen=512))  # recent, for timings


class LiteBackend(Backend):
    """The Lite profile (name ``"lite"``). Models are loaded in the constructor; see :class:`LiteSettings`."""

    name = "lite"

    def __init__(self, settings: LiteSettings | None = None, progress: ProgressFn | None = None,
                 **overrides: Any) -> None:
        from core.runtime import configure_torch_threads

        self.settings = settings or LiteSettings()
        for key, value in overrides.items():
            if not hasattr(self.settings, key):
                raise TypeError(f"unknown Lite setting {key!r}")
            setattr(self.settings, key, value)
        s = self.settings
        rebuild = s.rebuild_cache or cachemod.rebuild_requested()
        self.load_times: dict[str, float] = {}
        self._vad: SileroVad | None = None     # only for callers that give listen() no speech probabilities
        self.threads = configure_torch_threads(s.torch_threads)
        cachemod.clean_stale_tmp(cachemod.lite_cache_dir(s.cache_dir))
        report = progress or no_progress
        t0 = time.perf_counter()
        report("voice", None, "Loading the voice")
        self.voice = PiperVoice(s.voice, espeak=s.espeak, packages_dir=s.packages_dir, speed=s.voice_speed)
        self.load_times["tts_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report("speech recognition", None, "Loading speech recognition (converted once on the first start)")
        self.asr = WhisperAsr.load(s.cache_dir, s.packages_dir, rebuild=rebuild, audio_ctx_margin_s=s.asr_margin_s)
        self.load_times["asr_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        report("language model", None, "Loading the language model (converted once on the first start)")
        self.llm = ChatLlm.load(s.llm, s.cache_dir, s.packages_dir, rebuild=rebuild, dtype=s.llm_dtype)
        self.load_times["llm_s"] = time.perf_counter() - t0
        self.output_rate = self.voice.sample_rate
        t0 = time.perf_counter()
        report("warm-up", None, "Warming up")
        self._warm_up()
        self.load_times["warmup_s"] = time.perf_counter() - t0
        log.info("Lite profile ready (LLM %s, voice %s, torch threads %d): %s", self.llm.name,
                 self.voice.onnx_path.name, self.threads,
                 ", ".join(f"{k} {v:.2f}" for k, v in self.load_times.items()))

    def _warm_up(self) -> None:
        """One tiny pass through every model: the first real answer must not pay for lazy initialisation."""
        self.voice.synthesize("Hello there.")
        self.asr.transcribe(np.zeros(MODEL_INPUT_RATE // 2, dtype=np.float32), max_tokens=2)
        state = LlmState()
        gen = self.llm.start(state, self.llm.render([{"role": "user", "content": "Hi"}]))
        self.llm.advance(state, gen, SamplingConfig(greedy=True, max_new_tokens=2))
        self.llm.advance(state, gen, SamplingConfig(greedy=True, max_new_tokens=2))

    # -------------------------------------------------------------------------------------------- conversation

    def new_conversation(self, system_prompt: str | None = None) -> Conversation:
        prompt = self.settings.system_prompt if system_prompt is None else system_prompt
        self._check_system_prompt(prompt)
        gen = torch.Generator().manual_seed(self.settings.seed)
        state = LiteState(vad=VadState(), turn=TurnTracker(self.settings.turn), llm=LlmState(),
                          generator=gen)
        conv = Conversation(system_prompt=prompt, state=state)
        if prompt:
            try:
                ids = self.llm.render([{"role": "system", "content": prompt}], add_generation_prompt=False)
            except Exception as exc:  # noqa: BLE001 - some templates refuse a system-only chat: prefill later
                log.debug("system prompt not prefilled (%s)", exc)
                ids = []
            if len(ids) > 1:
                self.llm.prefill(state.llm, ids)
        conv.context_tokens = len(state.llm)
        return conv

    def _check_system_prompt(self, prompt: str) -> None:
        """BackendError naming the limit in tokens when ``prompt`` would fill more than half the context."""
        if prompt:
            context = min(self.settings.max_context_tokens, self.llm.max_context)
            check_prompt_tokens(self.llm.count_tokens(prompt), context)

    def start_turn(self, conv: Conversation) -> None:
        st: LiteState = conv.state
        st.turn.reset()

    def submit_text(self, conv: Conversation, text: str) -> bool:
        """Text mode: the next :meth:`reply` answers ``text`` instead of a spoken turn."""
        st: LiteState = conv.state
        st.user_text = text.strip()
        st.turn.consumed = True
        st.speech_end_abs = st.decided_at_abs = None
        st.spec, st.spec_text = None, None
        return True

    def retract_turn(self, conv: Conversation) -> None:
        """Forget the latest user message and its unheard answer (the user went on speaking; the whole utterance
        comes again as one turn)."""
        st: LiteState = conv.state
        while conv.history and conv.history[-1]["role"] == "assistant":
            conv.history.pop()
        if conv.history and conv.history[-1]["role"] == "user":
            conv.history.pop()
        st.spec, st.spec_text = None, None
        st.user_text = None
        if st.last_reply is not None:
            st.last_reply.cancelled = True

    def set_system_prompt(self, conv: Conversation, prompt: str) -> bool:
        """A new persona for the running conversation: the history stays; the next answer's prompt starts with it
        (only the changed part of the KV cache is computed again)."""
        self._check_system_prompt(prompt)   # a prompt too long for the context keeps the old one
        conv.system_prompt = prompt
        self.settings.system_prompt = prompt
        st: LiteState = conv.state
        st.spec, st.spec_text = None, None
        return True

    def set_voice(self, voice: str | None, tokens: list[int] | None = None) -> str | None:
        """Another Piper voice (``.onnx`` with its ``.onnx.json``; None: the bundled one) from the next answer on."""
        try:
            new = PiperVoice(voice, espeak=self.settings.espeak, packages_dir=self.settings.packages_dir,
                             speed=self.voice.speed)
        except Exception as exc:  # noqa: BLE001 - a bad voice file keeps the current voice
            return f"cannot use the voice {voice or 'bundled'}: {exc}"
        self.voice = new
        self.settings.voice = voice
        self.output_rate = new.sample_rate
        return None

    def set_voice_speed(self, speed: float) -> str | None:
        """The speaking rate from the next synthesised clause on (1.0 as trained, 2.0 twice as fast); a problem
        as text, the current speed kept."""
        try:
            self.voice.speed = speed
        except ValueError as exc:
            return str(exc)
        self.settings.voice_speed = float(speed)
        return None

    # -------------------------------------------------------------------------------------------- listening

    def listen(self, conv: Conversation, chunk_16k: np.ndarray,
               speech_probs: np.ndarray | None = None) -> ListenResult:
        """One listen step. ``speech_probs``: the capture chain's VAD probabilities for the chunk's windows (the
        engine always gives them); without them (a standalone caller) Lite runs silero itself."""
        t_step = time.perf_counter()
        st: LiteState = conv.state
        chunk = np.asarray(chunk_16k, dtype=np.float32).reshape(-1)
        if speech_probs is not None:
            probs = np.asarray(speech_probs, dtype=np.float32).reshape(-1)
        else:
            if self._vad is None:
                self._vad = SileroVad()
            probs = self._vad.probabilities(st.vad, chunk)
        turn = st.turn
        was_decided = turn.phase == "decided"
        turn.feed(chunk, probs)
        st.samples_fed += len(chunk)
        if turn.phase in ("speech", "pause"):
            st.speech_end_abs = st.samples_fed - (turn.n_samples - turn.speech_end)
            if was_decided:   # the user went on: the turn is open again
                st.user_text = None
        if turn.too_long():
            return self._finish(conv, force=True)
        if turn.needs_candidate():
            self._transcribe(st, candidate=True)
        elif turn.needs_partial():
            self._transcribe(st, candidate=False)
        result = self._finish(conv, force=False)
        if (self.settings.speculate and result.state == "cl" and turn.phase == "pause"
                and turn.candidate is not None and not turn.ignorable()):
            self._speculate(conv, turn.candidate.text.strip(), t_step)
        return result

    def end_of_input(self, conv: Conversation) -> ListenResult:
        st: LiteState = conv.state
        turn = st.turn
        if turn.phase == "decided":
            if turn.consumed or turn.decision != "ss":   # no open turn: nothing (more) to answer
                return ListenResult("el", (0.05, 0.05, 0.9), user_text=None, final=True)
            return ListenResult("ss", (0.05, 0.9, 0.05), user_text=turn.live_text, final=True)
        if turn.phase in ("speech", "pause") and (turn.candidate is None or turn.candidate.end_sample
                                                  < turn.candidate_end()):
            self._transcribe(st, candidate=True)
        return self._finish(conv, force=True)

    def _finish(self, conv: Conversation, force: bool) -> ListenResult:
        st: LiteState = conv.state
        turn = st.turn
        if force and turn.phase in ("speech", "pause") and (turn.candidate is None or turn.candidate.end_sample
                                                            < turn.speech_end):
            self._transcribe(st, candidate=True)
        state, probs = turn.decide(force=force)
        final = state != "cl"
        if final:
            st.decided_at_abs = st.samples_fed
            st.user_text = turn.candidate.text.strip() if (state == "ss" and turn.candidate) else None
        return ListenResult(state, probs, user_text=turn.live_text, final=final)

    def _transcribe(self, st: LiteState, candidate: bool) -> None:
        turn = st.turn
        end = turn.candidate_end() if candidate else turn.n_samples
        audio = turn.turn_audio(end)
        result = self.asr.transcribe(audio)
        st.asr_calls.append({"audio_s": len(audio) / MODEL_INPUT_RATE, "compute_s": result.seconds})
        t = Transcript(result.text, end, result.no_speech_prob, result.avg_logprob)
        if candidate:
            turn.candidate = t
            turn.partial = t
        else:
            turn.partial = t
            turn.last_partial_at = turn.n_samples
        log.debug("%s transcript (%.2f s audio, %.0f ms): %s", "candidate" if candidate else "partial",
                  len(audio) / MODEL_INPUT_RATE, result.seconds * 1000, speech(result.text))

    def _speculate(self, conv: Conversation, text: str, t_step: float) -> None:
        """Start answering the candidate transcript while the end-of-turn silence runs, within the step's budget.

        If the turn ends with this transcript, :meth:`reply` continues this generation; if the user goes on, the
        tokens are dropped (the KV cache is cropped at the next prefill)."""
        st: LiteState = conv.state
        s = self.settings
        if st.reply_cancel is not None and not st.reply_cancel.is_set():
            return  # an answer is being spoken: its KV cache must not be touched (the turn may be a backchannel)
        if st.spec is None or st.spec_text != text:
            if time.perf_counter() - t_step > s.speculate_budget_s:
                return
            st.spec = self.llm.start(st.llm, self.llm.render(self._messages(conv, extra_user=text)))
            st.spec_text = text
        while (time.perf_counter() - t_step < s.speculate_budget_s and not st.spec.finished
               and len(st.spec.answer) < s.speculate_max_tokens):
            self.llm.advance(st.llm, st.spec, s.sampling, st.generator)
        conv.context_tokens = len(st.llm)

    # -------------------------------------------------------------------------------------------- speaking

    def _messages(self, conv: Conversation, extra_user: str | None = None) -> list[dict[str, str]]:
        """System prompt + history (+ a pending user message), oldest turns dropped to fit the context."""
        history = list(conv.history)
        if extra_user is not None:
            history.append({"role": "user", "content": extra_user})
        budget = min(self.settings.max_context_tokens, self.llm.max_context) - self.settings.sampling.max_new_tokens
        system = [{"role": "system", "content": conv.system_prompt}] if conv.system_prompt else []
        dropped = 0
        while len(history) > 1 and len(self.llm.render(system + history)) > budget:
            history.pop(0)
            dropped += 1
            while len(history) > 1 and history[0]["role"] != "user":
                history.pop(0)
                dropped += 1
        if dropped and extra_user is None:
            log.info("context full: dropped the %d oldest message(s)", dropped)
            conv.history[:] = history
        return system + history

    def reply(self, conv: Conversation, cancel: threading.Event) -> Iterator[ReplyPiece]:
        st: LiteState = conv.state
        user_text = st.user_text
        st.user_text = None
        st.turn.consumed = True
        if not user_text:
            log.info("reply() without a user turn to answer")
            return iter(())
        conv.history.append({"role": "user", "content": user_text})
        record = ReplyRecord(user_text=user_text)
        st.last_reply = record
        return self._reply_steps(conv, record, cancel)

    def _reply_steps(self, conv: Conversation, record: ReplyRecord, cancel: threading.Event
                     ) -> Iterator[ReplyPiece]:
        st: LiteState = conv.state
        t0 = time.perf_counter()
        timings = record.timings
        segmenter = ClauseSegmenter()
        clauses: deque[str] = deque()
        emitted = ""
        done = False
        st.reply_cancel = cancel
        try:
            prompt_ids = self.llm.render(self._messages(conv))
            gen = st.spec if st.spec is not None and self.llm.resumable(st.llm, st.spec, prompt_ids) else None
            st.spec, st.spec_text = None, None
            replay: list[int] = []
            if gen is not None:
                replay = list(gen.answer)
                record.speculative_tokens = len(replay)
            else:
                gen = self.llm.start(st.llm, prompt_ids)
                record.prefill_tokens = st.llm.last_prefill_tokens
            while not cancel.is_set():
                if clauses:
                    clause = clauses.popleft()
                    t_tts = time.perf_counter()
                    audio = self.voice.synthesize(speakable(clause))
                    timings["tts_s"] = timings.get("tts_s", 0.0) + time.perf_counter() - t_tts
                    timings["audio_s"] = timings.get("audio_s", 0.0) + len(audio) / self.output_rate
                    record.segments.append({"text": clause, "samples": int(len(audio))})
                    if len(audio):
                        timings.setdefault("first_audio_s", time.perf_counter() - t0)
                        yield ReplyPiece(audio=audio, segment_end=True)
                    continue
                if done:
                    break
                if replay:
                    new_tokens, replay = replay, []
                else:
                    token = self.llm.advance(st.llm, gen, self.settings.sampling, st.generator)
                    if token is None:
                        done = True
                        clauses.extend(segmenter.flush())
                        continue
                    new_tokens = [token]
                if not record.token_ids:
                    timings["first_token_s"] = time.perf_counter() - t0
                record.token_ids.extend(new_tokens)
                text = self.llm.decode(record.token_ids).lstrip()
                if text.endswith("\ufffd") or not text.startswith(emitted):
                    continue  # half a UTF-8 character, or a retokenisation: wait for the next token
                delta, emitted = text[len(emitted):], text
                clauses.extend(segmenter.feed(delta))
                if delta:
                    yield ReplyPiece(text=delta)
        finally:
            if st.reply_cancel is cancel:
                st.reply_cancel = None
            record.cancelled = cancel.is_set() or not done
            record.text = emitted.strip()
            timings["total_s"] = time.perf_counter() - t0
            timings["tokens"] = len(record.token_ids)
            conv.history.append({"role": "assistant", "content": record.text})
            conv.context_tokens = len(st.llm)

    def interrupted(self, conv: Conversation, heard_text: str) -> None:
        heard = heard_text.strip()
        for i in range(len(conv.history) - 1, -1, -1):
            if conv.history[i]["role"] == "assistant":
                if heard:
                    conv.history[i] = {"role": "assistant", "content": heard}
                else:
                    del conv.history[i]
                break
        st: LiteState = conv.state
        if st.last_reply is not None:
            st.last_reply.cancelled = True

    def rebuild_context(self, conv: Conversation, history: list[dict[str, str]]) -> Conversation:
        """The engine's memory management (``core.engine.backend.ContextRebuilder``), called between turns: keep
        only ``history`` (the recent turns, assistant text as heard) and bring the KV cache to the system prompt
        plus those turns (the cached system-prompt prefix is reused)."""
        st: LiteState = conv.state
        conv.history[:] = [dict(m) for m in history if (m.get("content") or "").strip()]
        st.spec, st.spec_text = None, None
        ids = self.llm.render(self._messages(conv), add_generation_prompt=False)
        if len(ids) > 1:
            self.llm.prefill(st.llm, ids)
        conv.context_tokens = len(st.llm)
        return conv

    def close(self) -> None:
        self._vad = None
        for attr in ("asr", "llm", "voice"):
            if hasattr(self, attr):
                delattr(self, attr)
        collect_garbage()


def repair_cache(cache_dir: str | os.PathLike | None = None, packages_dir: str | os.PathLike | None = None,
                 rebuild: bool = True) -> list[str]:
    """Delete the Lite conversion cache and (by default) rebuild it from the installed weight packages.

    Returns the names of the entries that were removed. Raises :class:`BackendError` if a package is missing.
    """
    root = cachemod.lite_cache_dir(cache_dir)
    removed = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.is_dir():
                cachemod.remove_entry(entry)
                removed.append(entry.name)
    if rebuild:
        WhisperAsr.load(cache_dir, packages_dir)
        ChatLlm.load(None, cache_dir, packages_dir)
    return removed


__all__ = ["LiteBackend", "LiteSettings", "ReplyRecord", "LiteState", "DEFAULT_SYSTEM_PROMPT", "repair_cache",
           "BackendError"]
