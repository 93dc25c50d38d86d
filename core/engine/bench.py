"""``parley bench engine``: per-turn first-audio latency (with and without early speech) and scheduler overhead.

The conversation (``--turns`` spoken questions with pauses; espeak-ng for Lite, the fixture's input for the tiny
Freeze-Omni set) runs in the file-driven fast mode. On the virtual clock the decision delay (end of user speech to
the backend's 'ss') is exact and compute is not waited for, so the first-audio latency a live session would see on
this machine is estimated as decision delay + measured compute from the decision to the first audio piece
(``first_audio_est_ms``). The scheduler overhead is the wall time per 160 ms chunk spent in engine code, backend and
VAD calls excluded. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.cli import UserError

log = logging.getLogger(__name__)

QUESTIONS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "What colour is the sky?",
    "Name a large animal.",
    "What is two plus two?",
    "Where does the sun rise?",
    "What do bees make?",
    "Which planet is red?",
]


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def bench_conversation(profile: str, turns: int) -> np.ndarray:
    from core.constants import MODEL_INPUT_RATE
    from core.engine.conversation import Placed, espeak, mix, sequential

    if profile == "freeze-omni":
        fixture = _fixture_input()
        if fixture is not None:
            items = [Placed(0.5 + i * 8.0, fixture) for i in range(turns)]
            return mix(items, tail_s=4.0)
    clips = [espeak(QUESTIONS[i % len(QUESTIONS)]) for i in range(turns)]
    audio = mix(sequential(clips, gap_s=9.0), tail_s=1.0)
    assert audio.dtype == np.float32 and MODEL_INPUT_RATE == 16_000
    return audio


def _fixture_input() -> np.ndarray | None:
    import soundfile as sf

    root = Path(os.environ.get("PARLEY_FIXTURES") or Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures")
    path = root / "freeze_omni_tiny_a" / "input.wav"
    if not path.is_file():
        return None
    data, rate = sf.read(str(path), dtype="float32")
    return data if rate == 16_000 else None


def run_once(profile: str, audio: np.ndarray, config: Any, backend_opts: dict[str, Any]) -> dict[str, Any]:
    from core.engine.filemode import run_conversation
    from core.engine.profiles import build_backend, build_vad

    backend = build_backend(profile, None, config, backend_opts)
    latencies: list[dict[str, Any]] = []

    def collect(ev) -> None:
        if ev.type == "latency":
            latencies.append(dict(ev.data))

    try:
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
            result = run_conversation(backend, build_vad(), audio, Path(tmp) / "out.wav", config=config,
                                      subscribers=[collect])
        info = _backend_info(backend)
    finally:
        backend.close()
    est = [d["first_audio_est_ms"] for d in latencies]
    virt = [d["first_audio_ms"] for d in latencies]
    comp = [d["compute_ms"] for d in latencies]
    return {
        "answers": result.answers,
        "first_audio_est_ms": {"p50": _pct(est, 50), "p95": _pct(est, 95), "values": est},
        "decision_to_first_audio_compute_ms": {"p50": _pct(comp, 50), "p95": _pct(comp, 95)},
        "first_audio_virtual_ms": {"p50": _pct(virt, 50), "p95": _pct(virt, 95)},
        "scheduler": result.stats,
        "wall_s": result.wall_s,
        "errors": result.errors,
        "backend": info,
    }


def _backend_info(backend: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"name": getattr(backend, "name", "?"), "output_rate": backend.output_rate}
    for attr in ("device", "dtype", "dims", "model_dims", "describe"):
        value = getattr(backend, attr, None)
        if callable(value):
            try:
                value = value()
            except Exception:  # describing must not break the benchmark
                continue
        if value is not None:
            info[attr] = str(value) if not isinstance(value, (int, float, str, dict, list)) else value
    return info


def run_bench(args: argparse.Namespace) -> int:
    from core.engine.profiles import settings_from_env
    from core.runtime import configure_torch_threads

    threads = configure_torch_threads()
    turns = max(1, int(args.turns))
    try:
        audio = bench_conversation(args.profile, turns)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from exc
    config, backend_opts = settings_from_env()
    runs = {}
    for label, enabled in (("early_speech_on", True), ("early_speech_off", False)):
        cfg = copy.deepcopy(config)
        cfg.early.enabled = enabled
        runs[label] = run_once(args.profile, audio, cfg, backend_opts)
    sched = runs["early_speech_on"]["scheduler"]
    on = runs["early_speech_on"]["first_audio_est_ms"]
    off = runs["early_speech_off"]["first_audio_est_ms"]
    out = {
        "bench": "engine",
        "profile": args.profile,
        "turns": turns,
        "threads": {"torch": threads, "engine_worker": 1},
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "mode": "file-driven fast mode (virtual clock); first_audio_est_ms = decision delay + compute",
        "first_audio_ms": {"p50": on["p50"], "p95": on["p95"]},
        "early_speech_effect_ms": {
            "p50_saved": None if on["p50"] is None or off["p50"] is None else round(off["p50"] - on["p50"], 1),
            "p95_saved": None if on["p95"] is None or off["p95"] is None else round(off["p95"] - on["p95"], 1),
        },
        "scheduler_overhead_ms_per_chunk": {
            "mean": sched["overhead_ms_mean"], "p50": sched["overhead_ms_p50"], "p95": sched["overhead_ms_p95"],
            "max": sched["overhead_ms_max"], "goal": 2.0,
        },
        "runs": runs,
        "engine_config": config.to_dict(),
    }
    print(json.dumps(out, indent=1))
    return 0
