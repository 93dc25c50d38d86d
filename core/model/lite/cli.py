"""``parley reply --profile lite``: answer one spoken input file with a spoken reply, headless.

The input (any rate, any channel count) is mixed to mono and resampled to 16 kHz, fed in 160 ms chunks to
:class:`LiteBackend`, and the answer is written as a WAV at the voice's rate. ``--trace`` writes every decision
and the timings as JSON (same fields as the Freeze-Omni profile, plus ``user_text``).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.constants import CHUNK_SAMPLES_16K, CHUNK_SECONDS, MODEL_INPUT_RATE
from core.log import speech

log = logging.getLogger(__name__)


def read_audio_16k(path: str | Path) -> np.ndarray:
    """Any audio file soundfile reads -> float32 mono 16 kHz, validated (``core.audio.wavin``: a UserError in one
    line when it cannot be used)."""
    from core.audio.wavin import load_mono

    return load_mono(path, MODEL_INPUT_RATE, what="input file")


def virtual_first_audio_ms(chunk_costs_s: list[float], speech_end_s: float, reply_first_audio_s: float) -> float:
    """End of user speech -> first audio handed to playback, as if the input arrived in real time.

    Chunk ``i`` arrives at ``(i + 1) * 160 ms``; listen steps run one after another, each starting when its chunk
    has arrived and the previous step is done; the answer starts when the deciding step (the last one given) is
    done, and its first audio is ready ``reply_first_audio_s`` of compute later.
    """
    done = 0.0
    for i, cost in enumerate(chunk_costs_s):
        done = max((i + 1) * CHUNK_SECONDS, done) + cost
    return (done + reply_first_audio_s - speech_end_s) * 1000.0


def listen_file(backend, conv, audio_16k: np.ndarray, turn_end: str = "model") -> dict[str, Any]:
    """Feed a whole input through listen(); returns the chunk records, how listening ended, and step costs."""
    chunks: list[dict[str, Any]] = []
    costs: list[float] = []
    listen_end = "input"
    final_state = None
    n = (len(audio_16k) + CHUNK_SAMPLES_16K - 1) // CHUNK_SAMPLES_16K
    for i in range(n):
        chunk = audio_16k[i * CHUNK_SAMPLES_16K:(i + 1) * CHUNK_SAMPLES_16K]
        if len(chunk) < CHUNK_SAMPLES_16K:
            chunk = np.pad(chunk, (0, CHUNK_SAMPLES_16K - len(chunk)))
        t0 = time.perf_counter()
        result = backend.listen(conv, chunk)
        costs.append(time.perf_counter() - t0)
        chunks.append({"index": i, "state": result.state, "probs": [round(float(p), 4) for p in result.probs]})
        if turn_end == "model" and result.state == "ss":
            listen_end, final_state = "ss", "ss"
            break
    if final_state is None:
        t0 = time.perf_counter()
        result = backend.end_of_input(conv)
        costs.append(time.perf_counter() - t0)
        final_state = result.state
        if turn_end == "model" and result.state == "el":
            listen_end = "el"
    return {"chunks": chunks, "listen_end": listen_end, "final_state": final_state, "costs": costs}


def answer_audio(backend, audio_16k: np.ndarray, turn_end: str = "model", conv=None) -> tuple[dict, np.ndarray]:
    """Listen to ``audio_16k``, answer it; returns the trace (without load time) and the answer audio."""
    from core.model.lite.backend import LiteState

    conv = conv or backend.new_conversation()
    t0 = time.perf_counter()
    heard = listen_file(backend, conv, audio_16k, turn_end)
    listen_s = time.perf_counter() - t0
    st: LiteState = conv.state
    user_text = st.turn.live_text or ""
    pieces_audio: list[np.ndarray] = []
    record = None
    reply_first_audio_s = None
    t_reply = time.perf_counter()
    if heard["final_state"] == "ss":
        for piece in backend.reply(conv, threading.Event()):
            if piece.audio is not None and len(piece.audio):
                if reply_first_audio_s is None:
                    reply_first_audio_s = time.perf_counter() - t_reply
                pieces_audio.append(piece.audio)
        record = st.last_reply
    else:
        log.warning("no answer: the input was %s", "silent" if not user_text else f"ignored ({speech(user_text)})")
    reply_s = time.perf_counter() - t_reply

    timings: dict[str, Any] = {"listen_s": round(listen_s, 3), "reply_s": round(reply_s, 3),
                               "asr_s": round(sum(c["compute_s"] for c in st.asr_calls), 3),
                               "asr_calls": len(st.asr_calls), "torch_threads": backend.threads}
    if record is not None:
        rt = record.timings
        tokens = int(rt.get("tokens", 0))
        gen_s = max(1e-6, rt.get("total_s", 0.0) - rt.get("tts_s", 0.0))
        timings.update({
            "reply_first_token_ms": round(rt.get("first_token_s", 0.0) * 1000, 1),
            "reply_first_audio_ms": round((reply_first_audio_s or 0.0) * 1000, 1),
            "prefill_tokens": record.prefill_tokens, "speculative_tokens": record.speculative_tokens,
            "tokens": tokens, "llm_tokens_per_s": round(tokens / gen_s, 2),
            "tts_rtf": round(rt.get("tts_s", 0.0) / max(1e-6, rt.get("audio_s", 0.0)), 3),
        })
        if st.speech_end_abs is not None and st.decided_at_abs is not None and reply_first_audio_s is not None:
            timings["turn_wait_ms"] = round((st.decided_at_abs - st.speech_end_abs) * 1000 / MODEL_INPUT_RATE, 1)
            timings["first_audio_ms"] = round(virtual_first_audio_ms(
                heard["costs"], st.speech_end_abs / MODEL_INPUT_RATE, reply_first_audio_s), 1)
    trace = {
        "profile": "lite",
        "chunks": heard["chunks"],
        "listen_end": heard["listen_end"],
        "final_state": heard["final_state"],
        "user_text": user_text,
        "assistant_token_ids": list(record.token_ids) if record else [],
        "assistant_text": record.text if record else "",
        "segments": list(record.segments) if record else [],
        "sample_rate": backend.output_rate,
        "timings": timings,
        "models": {"asr": "whisper-tiny.en", "llm": backend.llm.name, "voice": backend.voice.onnx_path.name,
                   "device": "cpu", "llm_runtime": backend.llm.runtime, "llm_precision": backend.llm.precision},
    }
    out = np.concatenate(pieces_audio) if pieces_audio else np.zeros(0, dtype=np.float32)
    return trace, out


def run_reply(args: argparse.Namespace) -> int:
    import soundfile as sf

    from core.errors import UserError, first_line
    from core.fsutil import check_output_file
    from core.model.lite.backend import BackendError, LiteBackend, LiteSettings
    from core.model.lite.llm import SamplingConfig

    if not Path(args.input).is_file():
        raise UserError(f"input file {args.input} not found")
    check_output_file(args.output, "--output", suffix=".wav")   # every output checked before the model loads
    if args.trace:
        check_output_file(args.trace, "--trace")
    if getattr(args, "device", "cpu") not in (None, "cpu"):
        log.warning("the Lite profile runs on the CPU; ignoring --device %s", args.device)
    audio = read_audio_16k(args.input)
    settings = LiteSettings(sampling=SamplingConfig(greedy=bool(args.greedy)), seed=int(args.seed or 0),
                            llm=args.llm, voice=args.voice, asr=getattr(args, "asr", None),
                            rebuild_cache=bool(getattr(args, "rebuild_cache", False)))
    if args.system_prompt is not None:
        settings.system_prompt = args.system_prompt
    dtype = getattr(args, "dtype", None)
    if dtype not in (None, "float32"):
        log.warning("the Lite language model runs converted to int8 by onnxruntime-genai; --dtype %s ignored", dtype)
    t0 = time.perf_counter()
    try:
        backend = LiteBackend(settings)
        load_s = time.perf_counter() - t0
        trace, out = answer_audio(backend, audio, args.turn_end)
    except BackendError as exc:
        raise UserError(str(exc)) from None
    trace["timings"]["load_s"] = round(load_s, 3)
    try:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        sf.write(args.output, out, backend.output_rate, subtype="PCM_16")
        if args.trace:
            Path(args.trace).parent.mkdir(parents=True, exist_ok=True)
            Path(args.trace).write_text(json.dumps(trace, indent=1, ensure_ascii=False), encoding="utf-8")
    except (OSError, RuntimeError) as exc:   # soundfile's LibsndfileError too: a disk that filled up meanwhile
        raise UserError(f"writing {args.output} or its trace failed ({first_line(exc)}): is the disk full?") from None
    print(f"user: {trace['user_text']}")
    print(f"assistant: {trace['assistant_text']}")
    backend.close()
    return 0
