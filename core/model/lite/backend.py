"""The Lite profile: Whisper tiny.en -> SmolLM2-135M-Instruct -> Piper, behind the engine's Backend protocol.

Listening: silero-vad on every chunk, a live Whisper transcript while the user speaks, a candidate final
transcript as soon as a pause starts, and a turn decision from the silence length and that transcript (see
:mod:`core.model.lite.turn`). While the pause lasts, the answer to the candidate is started speculatively: its
prompt is prefilled, its first tokens generated and its first clause synthesised, so the first audio is ready
when the turn does end.

Speaking: the answer is generated token by token; every ``next()`` of :meth:`LiteBackend.reply` is one token
(a text piece) or one synthesised clause (an audio piece), so the engine can interleave listening and stop
between any two steps. Small models are guarded: a loop inside an answer ends it, an answer that copies an earlier
one is regenerated with the history trimmed (:mod:`core.model.lite.guards`).

Lite's own modules raise :class:`~core.model.lite.errors.LiteError`; this module is the one place where it becomes
the engine's ``BackendError``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from core.audio.levels import rms_dbfs
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
from core.model.lite import arithmetic, cache as cachemod
from core.model.lite.asr import WhisperAsr
from core.model.lite.errors import LiteError
from core.model.lite.guards import COPY_MIN_WORDS, copies_earlier, words
from core.model.lite.llm import ChatLlm, Generation, LlmState, SamplingConfig
from core.model.lite.text import ClauseSegmenter, speakable
from core.model.lite.tts import PiperVoice
from core.model.lite.turn import TurnConfig, TurnTracker, Transcript, respelled
from core.model.lite.vad import SileroVad, VadState
from core.runtime import collect_garbage

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = ("You are a helpful AI assistant. Keep your answers short: one or two sentences, "
                         "no lists.")


@contextmanager
def backend_errors() -> Iterator[None]:
    """Lite's errors become the engine's BackendError (same one-line message)."""
    try:
        yield
    except LiteError as exc:
        raise BackendError(str(exc)) from exc


@dataclass
class LiteSettings:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    llm: str | None = None              # local HF chat-model folder or .gguf; None: SmolLM2 from its wheel
    llm_precision: str | None = None    # int8 (default), int4 or fp32: how the chat model is converted
    llm_threads: int = 1                # onnxruntime threads of the chat model
    voice: str | None = None            # Piper .onnx (with .onnx.json beside it); None: joe-medium from its wheel
    voice_speed: float = 1.0            # speaking rate (Piper's length_scale is divided by it); settable live
    asr: str | None = None              # a Whisper folder (e.g. a downloaded base.en); None: tiny.en from its wheel
    use_upgrades: bool = True           # llm/asr None: the best installed upgrade (core.model.lite.catalog), if any
    models_dir: str | None = None       # where upgrades are installed: <models_dir>/lite (default: the app's)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    cache_dir: str | None = None        # default: $PARLEY_CACHE_DIR or the platform cache dir
    packages_dir: str | None = None     # default: $PARLEY_LITE_PACKAGES_DIR or the installed packages
    rebuild_cache: bool = False         # also: PARLEY_REBUILD_CACHE=1
    espeak: str | None = None           # espeak-ng program; default: $PARLEY_ESPEAK or espeak-ng on PATH
    max_context_tokens: int = 2048      # older turns are dropped beyond this
    speculate: bool = True              # during the end-of-turn silence: prefill the candidate's prompt,
    speculate_budget_s: float = 0.13    # ...generate its first clause and synthesise it, within this much time
    speculate_max_tokens: int = 24      # per listen step (a chunk is 160 ms), at most this many tokens
    copy_guard: bool = True             # an answer that repeats an earlier one is regenerated, history trimmed
    calculator: bool = True             # a question that is only arithmetic is answered by core.model.lite.arithmetic
    asr_margin_s: float | None = 1.0    # Whisper encoder window = audio + margin (None: the full 30 s)
    asr_beam_size: int = 1              # final transcript: greedy (1) or beam search; see docs/lite.md for why 1
    asr_beam_min_speech_s: float = 1.0  # ...beam search only for at least this much speech
    asr_lead_s: float = 0.5             # final transcript: this much digital silence before the turn's audio
    asr_lead_above_dbfs: float = -60.0  # ...when its first 0.25 s is louder than this, not (near) digital silence:
                                        # a barge-in's pre-roll lies in the answer's residual echo (docs/lite.md)
    seed: int = 0
    torch_threads: int | None = None    # None: core.runtime default (1, or PARLEY_TORCH_THREADS)

    def validate(self) -> None:
        """Raise :class:`LiteError` for a numeric setting that cannot work (they come from the command line and
        ``PARLEY_ENGINE_SETTINGS`` as well as from code), before anything is loaded."""
        def check(name: str, lo: float, hi: float) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise LiteError(f"Lite setting {name} must be a number from {lo:g} to {hi:g}, not {value!r}")

        check("asr_lead_s", 0.0, MAX_ASR_LEAD_S)
        check("asr_lead_above_dbfs", -200.0, 0.0)


MAX_ASR_LEAD_S = 5.0            # more silence before a transcript only costs decoding time
LEAD_PROBE_SAMPLES = MODEL_INPUT_RATE // 4     # asr_lead_above_dbfs is measured over a turn's first 0.25 s


@dataclass
class ReplyRecord:
    """What the latest answer was: for traces, interruption handling and timings."""

    user_text: str
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    segments: list[dict[str, Any]] = field(default_factory=list)   # {"text", "samples"}
    prefill_tokens: int = 0
    speculative_tokens: int = 0         # tokens already generated during the end-of-turn silence
    speculative_audio: int = 0          # clauses already synthesised during the end-of-turn silence
    guards: list[str] = field(default_factory=list)   # "loop" / "copy-regenerated" / "copy-continued" / "copy-ended"
                                                      # / "calculator"
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False


@dataclass
class Draft:
    """An answer in the making: tokens -> text -> clauses -> audio, advanced one step at a time.

    Speculation (during the end-of-turn silence) and :meth:`LiteBackend.reply` drive the same object, so an
    answer started speculatively is simply continued."""

    user_text: str
    history_key: tuple
    prompt_ids: list[int]
    gen: Generation
    history: list[dict[str, str]] = field(default_factory=list)   # the messages before the user's (untrimmed)
    trimmed: bool = False               # regenerated with the history trimmed (copy guard)
    token_ids: list[int] = field(default_factory=list)
    text: str = ""                      # decoded answer so far
    checked_chars: int = 0              # text[:checked_chars] passed the copy guard (complete clauses)
    segmenter: ClauseSegmenter = field(default_factory=ClauseSegmenter)
    clauses: deque[str] = field(default_factory=deque)                  # complete, not yet synthesised
    held: list[str] = field(default_factory=list)   # complete first clauses too short for the copy guard to judge
    audio: deque[tuple[str, np.ndarray]] = field(default_factory=deque)  # synthesised, not yet handed out
    spoken: int = 0                     # clauses handed out as audio
    done: bool = False
    guards: list[str] = field(default_factory=list)
    tts_s: float = 0.0
    rng: np.random.Generator | None = None  # this answer's own sampling stream (see LiteBackend._draft_rng)


@dataclass
class LiteState:
    """Everything one conversation owns (the models own nothing of it)."""

    vad: VadState
    turn: TurnTracker
    llm: LlmState
    rng: np.random.Generator
    samples_fed: int = 0
    user_text: str | None = None        # final transcript waiting for reply()
    speech_end_abs: int | None = None   # stream sample where the user's latest speech ended
    decided_at_abs: int | None = None   # stream sample (end of the chunk) where the turn was decided
    spec: Draft | None = None           # answer started speculatively for spec_text
    reply_cancel: threading.Event | None = None  # set while a reply() is running: its cancel event
    spec_text: str | None = None
    last_reply: ReplyRecord | None = None
    asr_calls: deque[dict[str, float]] = field(default_factory=lambda: deque(maxlen=512))  # recent, for timings


class LiteBackend(Backend):
    """The Lite profile (name ``"lite"``). Models are loaded in the constructor; see :class:`LiteSettings`."""

    name = "lite"
    transcribes = True

    def __init__(self, settings: LiteSettings | None = None, progress: ProgressFn | None = None,
                 **overrides: Any) -> None:
        from core.runtime import configure_torch_threads

        self.settings = settings or LiteSettings()
        for key, value in overrides.items():
            if not hasattr(self.settings, key):
                raise TypeError(f"unknown Lite setting {key!r}")
            setattr(self.settings, key, value)
        s = self.settings
        with backend_errors():
            s.validate()
        rebuild = s.rebuild_cache or cachemod.rebuild_requested()
        self.load_times: dict[str, float] = {}
        self._vad: SileroVad | None = None     # only for callers that give listen() no speech probabilities
        self.threads = configure_torch_threads(s.torch_threads)
        cachemod.clean_stale_tmp(cachemod.lite_cache_dir(s.cache_dir))
        report = progress or no_progress
        llm, asr, precision = self._choose_models()
        with backend_errors():
            t0 = time.perf_counter()
            report("voice", None, "Loading the voice")
            self.voice = PiperVoice(s.voice, espeak=s.espeak, packages_dir=s.packages_dir, speed=s.voice_speed)
            self.load_times["tts_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            report("speech recognition", None, "Loading speech recognition (converted once on the first start)")
            self.asr = WhisperAsr.load(s.cache_dir, s.packages_dir, rebuild=rebuild,
                                       audio_ctx_margin_s=s.asr_margin_s, model=asr, progress=report)
            self.load_times["asr_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            # the first start converts the model (steps dequantise / export / save / check, with fractions)
            report("language model", None, "Loading the language model (converted once on the first start)")
            self.llm = ChatLlm.load(llm, s.cache_dir, s.packages_dir, rebuild=rebuild, precision=precision,
                                    threads=s.llm_threads, max_context=s.max_context_tokens, progress=report)
            self.load_times["llm_s"] = time.perf_counter() - t0
            self.output_rate = self.voice.sample_rate
            t0 = time.perf_counter()
            report("warm-up", None, "Warming up")
            self._warm_up()
            self.load_times["warmup_s"] = time.perf_counter() - t0
        log.info("Lite profile ready (LLM %s %s, voice %s, torch threads %d): %s", self.llm.name,
                 self.llm.precision, self.voice.onnx_path.name, self.threads,
                 ", ".join(f"{k} {v:.2f}" for k, v in self.load_times.items()))

    def _choose_models(self) -> tuple[str | None, str | None, str | None]:
        """The chat model, Whisper model and precision to load: the settings' choice, else the best installed
        upgrade (by rank, fitting the machine's RAM), else the built-in models (None)."""
        from core.model.lite import catalog

        s = self.settings
        llm, asr, precision = s.llm, s.asr, s.llm_precision
        if not s.use_upgrades or (llm is not None and asr is not None):
            return llm, asr, precision
        root = catalog.upgrades_dir(s.models_dir)
        ram = catalog.available_ram()
        if llm is None and (best := catalog.best_installed("chat", root, ram)) is not None:
            llm, precision = str(catalog.install_dir(best, root)), precision or best.precision
            log.info("using the installed upgrade %s (best installed chat model)", best.title)
        if asr is None and (best := catalog.best_installed("asr", root, ram)) is not None:
            asr = str(catalog.install_dir(best, root))
            log.info("using the installed upgrade %s (best installed speech recognition)", best.title)
        return llm, asr, precision

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
        state = LiteState(vad=VadState(), turn=TurnTracker(self.settings.turn), llm=LlmState(),
                          rng=np.random.default_rng(self.settings.seed))
        conv = Conversation(system_prompt=prompt, state=state)
        if prompt:
            try:
                ids = self.llm.render([{"role": "system", "content": prompt}], add_generation_prompt=False)
            except Exception as exc:  # noqa: BLE001 - some templates refuse a system-only chat: prefill later
                log.debug("system prompt not prefilled (%s)", exc)
                ids = []
            if len(ids) > 1:
                with backend_errors():
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
            return ListenResult("ss", (0.05, 0.9, 0.05), user_text=turn.live_text, final=True,
                                text_logprob=turn.live_logprob)
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
        return ListenResult(state, probs, user_text=turn.live_text, final=final, text_logprob=turn.live_logprob)

    def _transcribe(self, st: LiteState, candidate: bool) -> None:
        turn = st.turn
        end = turn.candidate_end() if candidate else turn.n_samples
        audio = turn.asr_audio(end)
        lead = int(self.settings.asr_lead_s * MODEL_INPUT_RATE) if candidate else 0
        if lead > 0 and rms_dbfs(audio[:LEAD_PROBE_SAMPLES]) > self.settings.asr_lead_above_dbfs:
            audio = np.concatenate([np.zeros(lead, dtype=np.float32), audio])
        else:
            lead = 0
        # beam search (when asked for) only for the final transcript of real utterances: on short sounds it prefers
        # long hallucinations ("Mm" -> "I'm at camp, I'm at camp"); live partials are always greedy
        beam = candidate and turn.speech_samples >= self.settings.asr_beam_min_speech_s * MODEL_INPUT_RATE
        # the sound test (TurnConfig.sound_margin) only where it can decide: a candidate of short speech
        cfg = turn.cfg
        result = self.asr.transcribe(audio, beam_size=self.settings.asr_beam_size if beam else 1,
                                     sound_margin=(candidate and cfg.sound_margin is not None
                                                   and cfg.short_speech(turn.speech_ms)))
        st.asr_calls.append({"audio_s": len(audio) / MODEL_INPUT_RATE, "compute_s": result.seconds,
                             "lead_s": lead / MODEL_INPUT_RATE, "final": candidate})
        t = Transcript(respelled(result.text), end, result.no_speech_prob, result.avg_logprob, result.sound_margin)
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

        The prompt is prefilled, tokens generated and, once the first clause is complete, that clause is
        synthesised, so that :meth:`reply` can hand out audio at once if the turn ends with this transcript. If the
        user goes on, the draft is dropped (the KV cache is rewound at the next prefill)."""
        st: LiteState = conv.state
        s = self.settings
        if st.reply_cancel is not None and not st.reply_cancel.is_set():
            return  # an answer is being spoken: its KV cache must not be touched (the turn may be a backchannel)
        deadline = t_step + s.speculate_budget_s
        try:
            if st.spec is None or st.spec_text != text:
                if time.perf_counter() > deadline:
                    return
                st.spec = self._new_draft(conv, text, list(conv.history))
                st.spec_text = text
            draft = st.spec
            while time.perf_counter() < deadline and not draft.audio and (draft.clauses or not draft.done):
                if draft.clauses:
                    self._synthesize_next(draft)   # the first clause: its audio is ready when the turn ends
                    break
                if len(draft.token_ids) >= s.speculate_max_tokens:
                    break
                draft = st.spec = self._draft_step(conv, draft)
        except LiteError as exc:
            log.warning("speculative answer dropped: %s", exc)
            st.spec = st.spec_text = None
        conv.context_tokens = len(st.llm)

    # -------------------------------------------------------------------------------------------- speaking

    def _fit(self, system_prompt: str, history: list[dict[str, str]]) -> tuple[list[dict[str, str]], int]:
        """System prompt + as many of the latest messages as fit the context (whole turns are dropped)."""
        history = list(history)
        budget = min(self.settings.max_context_tokens, self.llm.max_context) - self.settings.sampling.max_new_tokens
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        dropped = 0
        while len(history) > 1 and len(self.llm.render(system + history)) > budget:
            history.pop(0)
            dropped += 1
            while len(history) > 1 and history[0]["role"] != "user":
                history.pop(0)
                dropped += 1
        return system + history, dropped

    def _messages(self, conv: Conversation, extra_user: str | None = None) -> list[dict[str, str]]:
        """System prompt + history (+ a pending user message), oldest turns dropped to fit the context."""
        history = list(conv.history)
        if extra_user is not None:
            history.append({"role": "user", "content": extra_user})
        messages, dropped = self._fit(conv.system_prompt, history)
        if dropped and extra_user is None:
            log.info("context full: dropped the %d oldest message(s)", dropped)
            conv.history[:] = messages[1:] if conv.system_prompt else messages
        return messages

    @staticmethod
    def _key(history: list[dict[str, str]], user_text: str) -> tuple:
        return tuple((m["role"], m["content"]) for m in history), user_text

    def _new_draft(self, conv: Conversation, user_text: str, history: list[dict[str, str]],
                   trimmed: bool = False, key: tuple | None = None, said: list[int] | None = None) -> Draft:
        """Prefill the prompt for ``user_text`` after ``history`` and return the answer's draft; ``said``: answer
        tokens already spoken, prefilled after the prompt so that the answer goes on from them."""
        st: LiteState = conv.state
        messages, _ = self._fit(conv.system_prompt, list(history) + [{"role": "user", "content": user_text}])
        computed = arithmetic.answer(user_text) if self.settings.calculator and not said else None
        if computed is not None:
            said = self.llm.encode(computed)
        prompt_ids = self.llm.render(messages) + list(said or [])
        gen = self.llm.start(st.llm, prompt_ids)
        draft = Draft(user_text, key or self._key(history, user_text), prompt_ids, gen, history=list(history),
                      trimmed=trimmed, rng=self._draft_rng(history, user_text, trimmed))
        if computed is not None:
            # the calculator's answer, as if the model had said it (its tokens are in the KV cache, so the next
            # turn reuses them); it is spoken clause by clause like any answer
            draft.token_ids, draft.text, draft.checked_chars = list(said), computed, len(computed)
            draft.clauses.extend(draft.segmenter.feed(computed) + draft.segmenter.flush())
            draft.done, draft.guards = True, ["calculator"]
            log.info("calculator: the question was arithmetic; answered without the language model")
        return draft

    def _draft_rng(self, history: list[dict[str, str]], user_text: str, trimmed: bool) -> np.random.Generator:
        """Each answer samples from its own stream, seeded by the conversation's seed, the history and the user's
        text: the answer to a turn is the same however many speculative drafts came before it (how far they got
        depends on the machine's speed), so conversations replay identically."""
        digest = zlib.crc32(json.dumps([history, user_text, trimmed], ensure_ascii=False).encode("utf-8"))
        return np.random.default_rng([int(self.settings.seed), digest])

    def _draft_step(self, conv: Conversation, draft: Draft) -> Draft:
        """One token of ``draft``; returns the draft to go on with (a new one when the copy guard regenerated)."""
        st: LiteState = conv.state
        token = self.llm.advance(st.llm, draft.gen, self.settings.sampling, draft.rng or st.rng)
        if token is None:
            draft.done = True
            if draft.gen.loop_cut is not None:
                self._cut_loop(draft)
                return draft
            return self._accept(conv, draft, draft.segmenter.flush())
        draft.token_ids.append(token)
        text = self.llm.decode(draft.token_ids).lstrip()
        if text.endswith("\ufffd") or not text.startswith(draft.text):
            return draft  # half a UTF-8 character, or a retokenisation: wait for the next token
        delta, draft.text = text[len(draft.text):], text
        clauses = draft.segmenter.feed(delta)
        return self._accept(conv, draft, clauses) if (clauses or draft.held) else draft

    def _cut_loop(self, draft: Draft) -> None:
        """The loop guard ended the answer: keep one copy (the repeated tail is neither spoken nor kept)."""
        cut = draft.gen.loop_cut or 0
        draft.guards.append("loop")
        draft.clauses.extend(draft.held)
        draft.held = []
        kept = self.llm.decode(draft.token_ids[:cut]).lstrip()
        repeated = len(draft.text) - len(kept) if draft.text.startswith(kept) else len(draft.segmenter.buffer)
        pending = draft.segmenter.buffer
        draft.segmenter.buffer = ""
        keep = pending[: max(0, len(pending) - repeated)].strip()
        draft.token_ids = draft.token_ids[:cut]
        draft.text = kept
        if keep:
            draft.clauses.append(keep)
        draft.checked_chars = len(draft.text)
        log.info("loop guard: the answer started repeating itself after %d tokens; ended there", cut)

    def _accept(self, conv: Conversation, draft: Draft, clauses: list[str]) -> Draft:
        """Complete clauses pass the copy guard, then wait for synthesis. The answer's first clauses wait until it
        has words enough to tell a copy (``COPY_MIN_WORDS``) or ends: a first clause of two words ("The maker,")
        passed before, and when the next one showed the copy, the answer could only be ended there, so the user
        heard those two words and nothing else."""
        clauses, draft.held = draft.held + list(clauses), []
        if not clauses:
            return draft
        if (self.settings.copy_guard and draft.checked_chars == 0 and not draft.done and not draft.trimmed
                and len(words(draft.text)) < COPY_MIN_WORDS):
            draft.held = clauses
            return draft
        copied = self._copied_answer(draft) if self.settings.copy_guard else None
        if copied is None:
            draft.clauses.extend(clauses)
            draft.checked_chars = len(draft.text) - len(draft.segmenter.buffer)
            return draft
        if draft.checked_chars == 0:
            if draft.trimmed:     # it repeats itself even without that context: let it say it
                draft.clauses.extend(clauses)
                draft.checked_chars = len(draft.text) - len(draft.segmenter.buffer)
                return draft
            log.info("copy guard: the answer repeated an earlier one; regenerating with %d of %d messages",
                     len(draft.history) - copied - 1, len(draft.history))
            return self._trimmed_draft(conv, draft, copied, "copy-regenerated")
        if not draft.trimmed:
            fresh = self._continue_without(conv, draft, copied)
            if fresh is not None:
                return fresh
        draft.guards.append("copy-ended")
        draft.done = True
        draft.text = draft.text[: draft.checked_chars].rstrip()
        draft.segmenter.buffer = ""
        log.info("copy guard: the answer started repeating an earlier one; ended there")
        return draft

    def _continue_without(self, conv: Conversation, draft: Draft, copied: int) -> Draft | None:
        """The answer, after what it has already said, went on to copy the earlier answer at history index
        ``copied`` (a story that began like the previous story, "The story of a little boat is one that has been
        passed down ..."): go on from what was said, with the history trimmed as for a regenerated answer, instead
        of ending the answer in mid-sentence. None when the said text is not a whole number of tokens."""
        said = draft.text[: draft.checked_chars].rstrip()
        if not said:
            return None
        # the shortest token prefix that decodes to at least the said text (decoded lengths grow with the prefix)
        lo, hi = 1, len(draft.token_ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.llm.decode(draft.token_ids[:mid]).lstrip()) >= len(said):
                hi = mid
            else:
                lo = mid + 1
        ids = draft.token_ids[:lo]
        if self.llm.decode(ids).lstrip() != said:
            return None
        log.info("copy guard: the answer started repeating an earlier one after %d characters; going on with %d of "
                 "%d messages", len(said), len(draft.history) - copied - 1, len(draft.history))
        fresh = self._trimmed_draft(conv, draft, copied, "copy-continued", said=ids)
        fresh.text, fresh.token_ids, fresh.checked_chars = said, list(ids), len(said)
        fresh.segmenter.emitted = draft.segmenter.emitted
        fresh.clauses, fresh.audio, fresh.spoken, fresh.tts_s = draft.clauses, draft.audio, draft.spoken, draft.tts_s
        return fresh

    def _trimmed_draft(self, conv: Conversation, draft: Draft, copied: int, guard: str,
                       said: list[int] | None = None) -> Draft:
        """A new draft of ``draft``'s answer with the history trimmed to the messages after the copied answer at
        index ``copied`` (the copy is what the model would otherwise lean on); it keeps ``draft``'s cache key and
        full history, so that the turn is still recognised as the same one and commits to the whole history."""
        history = list(draft.history[copied + 1:])
        fresh = self._new_draft(conv, draft.user_text, history, trimmed=True, key=draft.history_key, said=said)
        fresh.guards = draft.guards + [guard]
        fresh.history = draft.history
        return fresh

    @staticmethod
    def _copied_answer(draft: Draft) -> int | None:
        """History index of an earlier answer that ``draft`` repeats (answers to the same question do not count:
        asked again, the same answer is right)."""
        asked = words(draft.user_text)
        earlier: list[tuple[int, str]] = []
        for i, m in enumerate(draft.history):
            if m["role"] != "assistant":
                continue
            question = draft.history[i - 1]["content"] if i and draft.history[i - 1]["role"] == "user" else ""
            if words(question) != asked:
                earlier.append((i, m["content"]))
        if not earlier:
            return None
        hit = copies_earlier(draft.text, [text for _, text in earlier])
        return None if hit is None else earlier[hit][0]

    def _synthesize_next(self, draft: Draft) -> None:
        clause = draft.clauses.popleft()
        t0 = time.perf_counter()
        audio = self.voice.synthesize(speakable(clause))
        draft.tts_s += time.perf_counter() - t0
        draft.audio.append((clause, audio))

    def _take_speculation(self, conv: Conversation, user_text: str) -> Draft | None:
        """The speculative draft, if it answers exactly this turn and the KV cache still holds it."""
        st: LiteState = conv.state
        draft, st.spec, st.spec_text = st.spec, None, None
        if draft is None or draft.user_text != user_text:
            return None
        if draft.history_key != self._key(conv.history[:-1], user_text):
            return None
        return draft if self.llm.resumable(st.llm, draft.gen, draft.prompt_ids) else None

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
        st.reply_cancel = cancel
        draft: Draft | None = None
        spec_tts = 0.0
        try:
            with backend_errors():
                draft = self._take_speculation(conv, record.user_text)
                if draft is not None:
                    record.speculative_tokens = len(draft.token_ids)
                    record.speculative_audio = len(draft.audio)
                    spec_tts = draft.tts_s
                else:
                    self._messages(conv)   # drops the oldest turns if the context is full
                    draft = self._new_draft(conv, record.user_text, conv.history[:-1])
                    record.prefill_tokens = st.llm.last_prefill_tokens
                shown = 0
                while not cancel.is_set():
                    if draft.audio:
                        clause, audio = draft.audio.popleft()
                        draft.spoken += 1
                        timings["audio_s"] = timings.get("audio_s", 0.0) + len(audio) / self.output_rate
                        record.segments.append({"text": clause, "samples": int(len(audio))})
                        if len(audio):
                            timings.setdefault("first_audio_s", time.perf_counter() - t0)
                            yield ReplyPiece(audio=audio, segment_end=True)
                        continue
                    # only what passed the copy guard is shown: what it drops is never said
                    visible = len(draft.text) if draft.done else draft.checked_chars
                    if visible > shown:
                        timings.setdefault("first_token_s", time.perf_counter() - t0)
                        piece, shown = draft.text[shown:visible], visible
                        yield ReplyPiece(text=piece)
                        continue
                    if draft.clauses:
                        self._synthesize_next(draft)
                        continue
                    if draft.done:
                        break
                    draft = self._draft_step(conv, draft)
        finally:
            if st.reply_cancel is cancel:
                st.reply_cancel = None
            record.cancelled = cancel.is_set() or draft is None or not draft.done
            if draft is not None:
                record.text = draft.text.strip()
                record.token_ids = list(draft.token_ids)
                record.guards = list(draft.guards)
                timings["tts_s"] = draft.tts_s - spec_tts
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
            with backend_errors():
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
        with backend_errors():
            WhisperAsr.load(cache_dir, packages_dir)
            ChatLlm.load(None, cache_dir, packages_dir)
    return removed


__all__ = ["LiteBackend", "LiteSettings", "ReplyRecord", "LiteState", "DEFAULT_SYSTEM_PROMPT", "repair_cache",
           "BackendError", "backend_errors"]
