"""``parley bench lite``: load times, ASR/LLM/TTS speed and end-of-speech -> first-audio latency, as one JSON object.

Spoken questions are made with espeak-ng. Latency is measured on a virtual real-time clock: chunk ``i`` arrives at
``(i + 1) * 160 ms``, listen steps run in order (never before their chunk arrived), the answer starts when the
deciding step is done; ``first_audio_ms`` is from the true end of the spoken question (last sample above -40 dBFS in
the espeak-ng output) to the moment the first synthesised audio is handed to playback. This includes the
end-of-turn silence the turn decision waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from core.constants import MODEL_INPUT_RATE

BENCH_QUESTIONS = [
    ("en-us", 160, "What is the capital of Japan?"),
    ("en-us+f3", 170, "Which planet is known as the red planet?"),
    ("en-gb", 150, "What is the opposite of hot?"),
    ("en-us", 175, "How many legs does a spider have?"),
    ("en-us+m3", 150, "What is the capital of Germany?"),
]


def espeak_question(text: str, voice: str = "en-us", wpm: int = 160, lead_s: float = 0.5,
                    trail_s: float = 2.0) -> tuple[np.ndarray, float]:
    """16 kHz speech from espeak-ng with silence around it, and the time (s) where the speech truly ends."""
    import soundfile as sf
    import soxr

    from core.model.lite.tts import find_espeak

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.wav"
        subprocess.run([find_espeak(), "-v", voice, "-s", str(wpm), "-w", str(path), text], check=True,
                       capture_output=True)
        audio, rate = sf.read(str(path), dtype="float32")
    audio = soxr.resample(audio, rate, MODEL_INPUT_RATE) if rate != MODEL_INPUT_RATE else audio
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    audio = audio[: loud[-1] + 1] if len(loud) else audio
    lead = np.zeros(int(lead_s * MODEL_INPUT_RATE), np.float32)
    trail = np.zeros(int(trail_s * MODEL_INPUT_RATE), np.float32)
    return np.concatenate([lead, audio.astype(np.float32), trail]), lead_s + len(audio) / MODEL_INPUT_RATE


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def run_bench(args: argparse.Namespace) -> int:
    from core.errors import UserError
    from core.model.lite.backend import BackendError, LiteBackend, LiteSettings
    from core.model.lite.cli import listen_file, virtual_first_audio_ms
    from core.model.lite.llm import SamplingConfig
    from core.runtime import configure_torch_threads

    import torch

    os.environ["PARLEY_TORCH_THREADS"] = "1"
    runs = max(1, int(getattr(args, "runs", 5) or 5))
    load_avg = os.getloadavg() if hasattr(os, "getloadavg") else None
    tmp_cache = Path(tempfile.mkdtemp(prefix="parley-bench-cache-"))
    try:
        settings = dict(cache_dir=str(tmp_cache), sampling=SamplingConfig(greedy=True), torch_threads=1,
                        use_upgrades=False,
                        llm_threads=int(getattr(args, "llm_threads", None) or 1))
        try:
            t0 = time.perf_counter()
            LiteBackend(LiteSettings(**settings)).close()
            load_cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            backend = LiteBackend(LiteSettings(**settings))
            load_cached_s = time.perf_counter() - t0
        except BackendError as exc:
            raise UserError(str(exc)) from None
        threads = configure_torch_threads(1)

        # ASR: one final decode per utterance; TTS and LLM on fixed inputs.
        utterances = [(q, *espeak_question(q[2], q[0], q[1])) for q in BENCH_QUESTIONS]
        asr_compute = asr_audio = 0.0
        for _, audio, end_s in utterances:
            speech = audio[: int((end_s + 0.2) * MODEL_INPUT_RATE)]
            asr_compute += backend.asr.transcribe(speech).seconds
            asr_audio += len(speech) / MODEL_INPUT_RATE
        backend.voice.synthesize("Warm up.")
        t0 = time.perf_counter()
        tts_audio = backend.voice.synthesize("The capital of France is Paris, a city known for its art and food.")
        tts_rtf = (time.perf_counter() - t0) / (len(tts_audio) / backend.output_rate)
        llm_tps = _llm_speed(backend, 32)

        first_audio, turn_wait, reply_first, decisions = [], [], [], []
        hangover, decision_lag, candidate_asr, spec_audio = [], [], [], 0
        for i in range(runs):
            (voice, wpm, question), audio, end_s = utterances[i % len(utterances)]
            conv = backend.new_conversation()
            heard = listen_file(backend, conv, audio, "model")
            decisions.append(heard["final_state"])
            if heard["final_state"] != "ss":
                continue
            t0 = time.perf_counter()
            first_s = None
            for piece in backend.reply(conv, threading.Event()):
                if piece.audio is not None and len(piece.audio) and first_s is None:
                    first_s = time.perf_counter() - t0
                    break
            if first_s is None:
                continue
            st = conv.state
            first_audio.append(virtual_first_audio_ms(heard["costs"], end_s, first_s))
            turn_wait.append((st.decided_at_abs / MODEL_INPUT_RATE - end_s) * 1000)
            reply_first.append(first_s * 1000)
            # where the time goes: the VAD's end of speech against the true one, the deciding step's lateness on
            # the virtual clock (compute that did not fit the chunk period), the final Whisper pass
            hangover.append((st.speech_end_abs / MODEL_INPUT_RATE - end_s) * 1000)
            decision_lag.append(virtual_first_audio_ms(heard["costs"], len(heard["costs"]) * 0.16, 0.0))
            candidate_asr.append(st.asr_calls[-1]["compute_s"] * 1000 if st.asr_calls else 0.0)
            spec_audio += bool(st.last_reply and st.last_reply.speculative_audio)
        precision, runtime = backend.llm.precision, backend.llm.runtime
        backend.close()
    finally:
        shutil.rmtree(tmp_cache, ignore_errors=True)

    result = {
        "bench": "lite",
        "device": "cpu",
        "llm_runtime": runtime,
        "llm_precision": precision,
        "llm_threads": settings["llm_threads"],
        "torch_threads": threads,
        "onnxruntime_threads": 1,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in load_avg] if load_avg else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "models": {"asr": "whisper-tiny.en (d_model 384, 4+4 layers), encoder window = audio + 1 s",
                   "llm": f"SmolLM2-135M-Instruct (Q4_1 GGUF converted to onnxruntime-genai {precision}), greedy",
                   "tts": "Piper en_US-joe-medium (22.05 kHz)"},
        "load_cold_s": round(load_cold_s, 2),
        "load_cached_s": round(load_cached_s, 2),
        "asr_rtf": round(asr_compute / asr_audio, 3),
        "llm_tokens_per_s": round(llm_tps, 2),
        "tts_rtf": round(tts_rtf, 3),
        "runs": runs,
        "decisions": decisions,
        "first_audio_ms_p50": _pct(first_audio, 50),
        "first_audio_ms_p95": _pct(first_audio, 95),
        "turn_wait_ms_p50": _pct(turn_wait, 50),
        "reply_first_audio_ms_p50": _pct(reply_first, 50),
        "vad_speech_end_lag_ms_p50": _pct(hangover, 50),
        "decision_step_lag_ms_p50": _pct(decision_lag, 50),
        "candidate_asr_ms_p50": _pct(candidate_asr, 50),
        "first_clause_ready_at_decision": f"{spec_audio}/{len(first_audio)}",
        "first_audio_ms": [round(x, 1) for x in first_audio],
        "goal_first_audio_ms_p50": 700,
        "goal_llm_tokens_per_s": 60,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "notes": "load_cold_s: empty temporary cache (Whisper conversion + GGUF dequantisation + onnxruntime-genai "
                 "conversion), imports included; "
                 "load_cached_s: second load in the same process (imports excluded); first_audio_ms: end of the "
                 "spoken question -> first audio handed to playback, on a virtual real-time clock, including the "
                 "end-of-turn silence (turn_wait_ms)",
    }
    print(json.dumps(result))
    return 0


def _llm_speed(backend, n_tokens: int) -> float:
    """Decode speed (tokens/s after the prefill), greedy, on a fresh state."""
    from core.model.lite.llm import LlmState, SamplingConfig

    llm = backend.llm
    prompt = llm.render([{"role": "user", "content": "Tell me a long story about a dragon and a knight."}])
    state = LlmState()
    gen = llm.start(state, prompt)
    sampling = SamplingConfig(greedy=True, max_new_tokens=n_tokens, repetition_penalty=1.0)
    t0 = time.perf_counter()
    count = 0
    while llm.advance(state, gen, sampling) is not None:
        count += 1
    return count / max(1e-6, time.perf_counter() - t0)
