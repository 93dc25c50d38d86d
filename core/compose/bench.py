"""``parley bench engine``: per-turn first-audio latency (with and without early speech) and scheduler overhead.

The conversation (``--turns`` spoken questions with pauses; espeak-ng for Lite, the fixture's input for the tiny
Freeze-Omni set) runs in the file-driven fast mode. On the virtual clock the decision delay (end of user speech to
the backend's 'ss') is exact and compute is not waited for, so the first-audio latency a live session would see on
this machine is estimated as decision delay + measured compute from the decision to the first audio piece
(``first_audio_est_ms``). The scheduler overhead is the wall time per 160 ms chunk spent in engine code (backend
calls excluded; the capture chain runs outside the engine). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.compose.build import build_backend, engine_config, vad_config
from core.compose.commands import SETTINGS_ENV
from core.compose.spec import ProfileSpec, apply_options, spec_from_settings
from core.settings import Settings
from core.errors import UserError

log = logging.getLogger(__name__)

WARMUP_S = 10.0    # the first question and its answer: run once, discarded, before each measured run
# Open questions: their answers start with a long sentence, which is where an early first clause matters.
QUESTIONS = [
    "Why is the sky blue?",
    "Describe the city of Paris.",
    "Explain how a bicycle works.",
    "Tell me a story about a cat.",
    "How do plants grow?",
    "Why do we need sleep?",
    "What makes a good friend?",
    "What is the ocean like?",
]
LITE_DEFAULTS = {"max_new_tokens": 32}   # answers of about 8 s, so each ends before the next question


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def bench_conversation(profile: str, turns: int, question_wav: str | None = None) -> np.ndarray:
    """``turns`` spoken questions with pauses: espeak-ng reading :data:`QUESTIONS`, or ``question_wav`` (a 16 kHz
    recording, e.g. a checkpoint's own test input) repeated."""
    from core.constants import MODEL_INPUT_RATE
    from core.engine.conversation import Placed, espeak, mix, sequential

    if question_wav:
        from core.engine.filemode import load_wav_16k

        clip = load_wav_16k(question_wav)
        items = [Placed(0.5 + i * 8.0, clip) for i in range(turns)]
        return mix(items, tail_s=4.0)
    clips = [espeak(QUESTIONS[i % len(QUESTIONS)]) for i in range(turns)]
    audio = mix(sequential(clips, gap_s=12.0), tail_s=1.0)
    assert audio.dtype == np.float32 and MODEL_INPUT_RATE == 16_000
    return audio


@contextlib.contextmanager
def _lite_first_clause(enabled: bool):
    """Lite has no constructor knob for its early first clause (ClauseSegmenter's first_min_words /
    first_max_words are fixed in LiteBackend._reply_steps). To measure "without early speech", this benchmark
    swaps in a segmenter whose first clause follows the same rules as the later ones, for the run only."""
    if enabled:
        probe = __import__("core.model.lite.text", fromlist=["ClauseSegmenter"]).ClauseSegmenter()
        yield (f"built in (first clause: a comma after {probe.first_min_words} words, "
               f"or {probe.first_max_words} words)")
        return
    import functools

    import core.model.lite.backend as lite_backend
    from core.model.lite.text import ClauseSegmenter

    original = lite_backend.ClauseSegmenter
    probe = ClauseSegmenter()
    lite_backend.ClauseSegmenter = functools.partial(ClauseSegmenter, first_min_words=probe.min_words,
                                                     first_max_words=probe.max_words)
    try:
        yield (f"emulated: first clause cut like the later ones (min {probe.min_words}, "
               f"max {probe.max_words} words)")
    finally:
        lite_backend.ClauseSegmenter = original


def run_once(spec: ProfileSpec, audio: np.ndarray, config: Any) -> dict[str, Any]:
    if spec.profile == "lite":
        with _lite_first_clause(config.early.enabled) as how:
            out = _run_once(spec, audio, config)
        out["early_speech"] = how
        return out
    out = _run_once(spec, audio, config)
    early = config.early
    out["early_speech"] = (f"server segmentation, first codec window {early.first_codec_chunk} tokens"
                           if early.enabled else f"offline segmentation, codec window {early.codec_chunk} tokens")
    return out


def _run_once(spec: ProfileSpec, audio: np.ndarray, config: Any) -> dict[str, Any]:
    from core.engine.events import Latency
    from core.engine.filemode import run_conversation

    backend = build_backend(spec, config)
    latencies: list[dict[str, Any]] = []

    def collect(ev) -> None:
        if isinstance(ev, Latency):
            latencies.append(ev.to_dict())

    try:
        with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
            # Warm-up (first inferences allocate and initialise): the first turn of the conversation, discarded.
            run_conversation(backend, audio[:int(WARMUP_S * 16_000)], Path(tmp) / "warm.wav", config=config)
            result = run_conversation(backend, audio, Path(tmp) / "out.wav", config=config, subscribers=[collect])
        info = _backend_info(backend)
    finally:
        backend.close()
    est = [d["first_audio_est_ms"] for d in latencies]
    virt = [d["first_audio_ms"] for d in latencies]
    comp = [d["compute_ms"] for d in latencies]
    steps = [d["steps_to_first_audio"] for d in latencies]
    return {
        "answers": result.answers,
        "first_audio_est_ms": {"p50": _pct(est, 50), "p95": _pct(est, 95), "values": est},
        "decision_to_first_audio_compute_ms": {"p50": _pct(comp, 50), "p95": _pct(comp, 95)},
        "first_audio_virtual_ms": {"p50": _pct(virt, 50), "p95": _pct(virt, 95)},
        "speak_steps_to_first_audio": {"p50": _pct(steps, 50), "p95": _pct(steps, 95), "values": steps},
        "scheduler": result.stats,
        "wall_s": result.wall_s,
        "errors": result.errors,
        "backend": info,
    }


def _backend_info(backend: Any) -> dict[str, Any]:
    """Device, dtype and model facts of a loaded backend, as far as it exposes them."""
    info: dict[str, Any] = {"name": getattr(backend, "name", "?"), "output_rate": backend.output_rate}
    audiollm = getattr(getattr(backend, "pipeline", None), "audiollm", None)
    if audiollm is not None:      # Freeze-Omni
        for key in ("device", "dtype"):
            try:
                info[key] = str(getattr(audiollm, key))
            except Exception:  # describing must not break the benchmark
                pass
        cfg = getattr(getattr(audiollm, "llm_decoder", None), "config", None)
        if cfg is not None:
            info["llm_dims"] = {k: getattr(cfg, k, None) for k in ("hidden_size", "num_hidden_layers",
                                                                   "num_attention_heads", "vocab_size")}
    llm = getattr(backend, "llm", None)
    if getattr(backend, "name", "") == "lite" and llm is not None:
        info["device"] = "cpu"
        info["llm"] = getattr(llm, "name", None)
        info["torch_threads"] = getattr(backend, "threads", None)
        info["load_s"] = {k: round(v, 2) for k, v in getattr(backend, "load_times", {}).items()}
    return info


def run_bench(args: argparse.Namespace) -> int:
    from core.compose.commands import settings_from_env
    from core.runtime import configure_torch_threads

    threads = configure_torch_threads()
    turns = max(1, int(args.turns))
    config, backend_opts = settings_from_env()
    if args.profile == "lite":
        backend_opts = {**LITE_DEFAULTS, **backend_opts}
    spec = ProfileSpec(profile=args.profile)
    apply_options(spec, backend_opts)
    for key in ("checkpoint", "llm", "device", "dtype"):  # command-line model arguments win over the environment
        if getattr(args, key, None):
            setattr(spec, key, getattr(args, key))
    spec.validate()
    question = getattr(args, "question_wav", None)
    if question is None and spec.profile == "freeze-omni" and spec.checkpoint:
        candidate = Path(spec.checkpoint).parent / "input.wav"   # a test checkpoint's own spoken input
        question = str(candidate) if candidate.is_file() else None
    try:
        audio = bench_conversation(args.profile, turns, question)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(str(exc)) from exc
    runs = {}
    for label, enabled in (("early_speech_on", True), ("early_speech_off", False)):
        cfg = copy.deepcopy(config)
        cfg.early.enabled = enabled
        runs[label] = run_once(spec, audio, cfg)
    sched = runs["early_speech_on"]["scheduler"]
    on = runs["early_speech_on"]["first_audio_est_ms"]

    def effect(key: str, q: str) -> dict[str, Any]:
        a, b = runs["early_speech_on"][key][q], runs["early_speech_off"][key][q]
        return {"on": a, "off": b, "saved": None if a is None or b is None else round(b - a, 1)}

    out = {
        "bench": "engine",
        "profile": args.profile,
        "turns": turns,
        "threads": {"torch": threads, "engine_worker": 1},
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "mode": "file-driven fast mode (virtual clock); first_audio_est_ms = decision delay + compute",
        "note": ("the tiny Freeze-Omni fixture has random weights: its decisions and (quiet, often fully trimmed) "
                 "audio make latency figures meaningless; use real weights on a GPU for those")
        if args.profile == "freeze-omni" else None,
        "first_audio_ms": {"p50": on["p50"], "p95": on["p95"]},
        "early_speech_effect_ms": {
            "compute_to_first_audio_p50": effect("decision_to_first_audio_compute_ms", "p50"),
            "compute_to_first_audio_p95": effect("decision_to_first_audio_compute_ms", "p95"),
            "first_audio_p50": effect("first_audio_est_ms", "p50"),
            "first_audio_p95": effect("first_audio_est_ms", "p95"),
            "speak_steps_to_first_audio_p50": effect("speak_steps_to_first_audio", "p50"),
        },
        "scheduler_overhead_ms_per_chunk": {
            "mean": sched["overhead_ms_mean"], "p50": sched["overhead_ms_p50"], "p95": sched["overhead_ms_p95"],
            "max": sched["overhead_ms_max"], "goal": 2.0,
        },
        "runs": runs,
        "engine_config": config.to_dict(),
        "profile_spec": spec.to_dict(),
    }
    print(json.dumps(out, indent=1))
    return 0


def run_audio_bench(args: argparse.Namespace) -> int:
    """``parley bench audio``: the audio chain benchmark (``core.audio.bench``) with every chunk also going through
    the app's engine listen step (Lite, the default profile, on a silent sink), so ``cpu_fraction`` is the CPU of
    the whole live audio path while the assistant speaks: capture, echo cancellation, the one VAD, chunking and
    the engine's per-chunk work. Without the Lite weights the engine part is left out (the JSON says so)."""
    from core.audio import bench as audio_bench
    from core.engine.clock import WallClock
    from core.engine.engine import Engine
    from core.engine.events import EventBus
    from core.engine.sink import NullSink
    from core.runtime import configure_torch_threads
    from core.settings import Settings

    configure_torch_threads()
    extra: dict[str, Any] = {}
    consumer = None
    backend = None
    try:
        from core.compose.spec import spec_from_settings

        backend = build_backend(spec_from_settings(Settings()))
    except Exception as exc:  # noqa: BLE001 - the audio chain is measured anyway
        extra["engine"] = f"not measured: the Lite profile did not load ({type(exc).__name__}: {exc})"
    if backend is not None:
        clock = WallClock()
        engine = Engine(backend, NullSink(), bus=EventBus(clock))
        engine.start()

        def consumer(chunk) -> None:   # what the live stack hands the engine, in the same order
            import dataclasses

            if chunk.t_start is not None:
                chunk = dataclasses.replace(chunk, t_start=clock.from_monotonic(chunk.t_start))
            engine.process_chunk(chunk)

        extra["engine"] = "each chunk also goes through the engine's listen step (Lite), as in the app"
    try:
        return audio_bench.run_bench(args, consumer, extra)
    finally:
        if backend is not None:
            backend.close()


def run_turns_bench(args: argparse.Namespace) -> int:
    """``parley bench turns``: :func:`turns_suite` as one JSON object."""
    out = turns_suite(profile=args.profile, rooms=[r.strip() for r in args.rooms.split(",") if r.strip()],
                      scripts_dir=args.scripts, only=args.only.split(",") if args.only else None, seed=args.seed,
                      echo_minutes=args.echo_minutes, keep=args.keep, llm=args.llm, checkpoint=args.checkpoint,
                      echo_room=args.echo_room, echo_glitches=parse_glitches(args.echo_glitches))
    print(json.dumps(out, indent=1, ensure_ascii=False))
    return 0


def parse_glitches(text: str | None) -> tuple[float, float] | None:
    """``"30/6"`` -> (30.0, 6.0): output latency jumps of up to 30 ms, 6 a minute on average (None: none)."""
    if text is None:
        return None
    try:
        ms, per_min = (float(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--echo-glitches takes MS/PER_MIN, such as 30/6, not {text!r}") from None
    if not (0 < ms <= 1000 and 0 < per_min <= 600):
        raise UserError(f"--echo-glitches {text}: MS must be in (0, 1000] and PER_MIN in (0, 600]")
    return ms, per_min


SUITE_DIR = Path(__file__).resolve().parents[2] / "tests" / "conversations" / "scripts"


def turns_suite(*, profile: str = "lite", rooms: list[str] | tuple[str, ...] = ("laptop", "speakerphone"),
                scripts_dir: str | Path | None = None, only: list[str] | None = None, seed: int = 0,
                echo_minutes: float = 0.0, keep: str | Path | None = None, llm: str | None = None,
                checkpoint: str | None = None, echo_room: str = "speakerphone",
                echo_glitches: tuple[float, float] | None = None) -> dict[str, Any]:
    """The conversation acceptance suite (scripted users, docs/conversations.md) in simulated rooms through the
    real engine, one loaded model for all of it, scored per conversation and in aggregate; with ``echo_minutes``
    also the echo alone: the assistant speaks that long in the room with no user speech but its requests, and
    every interruption or user turn it opens is a false one. Lite runs with the app's default settings (persona,
    sampling, turn and VAD settings) unless ``PARLEY_ENGINE_SETTINGS`` says otherwise. ``keep``: a folder for
    each run's events (JSONL), report (JSON) and audio."""
    import time

    from core.audio.room import EchoRoom
    from core.compose.commands import settings_from_env
    from core.engine.filemode import run_conversation
    from core.harness import ScriptedInput, ScriptedUser, combine, load_script, read_events, score, unmet
    from core.runtime import configure_torch_threads

    if keep is not None and Path(keep).exists():
        # its files are named after the scripts: never write over what a user (or an earlier run) left there
        if not Path(keep).is_dir():
            raise UserError(f"--keep {keep}: that is a file; name a new or empty folder")
        if any(Path(keep).iterdir()):
            raise UserError(f"--keep {keep}: the folder exists and is not empty; name a new or empty folder")
    threads = configure_torch_threads()
    config, backend_opts = settings_from_env()
    vad = None
    ready = Settings().audio.ready_sound     # the app plays it when its audio opens; in a room it matters
    if profile == "lite" and not os.environ.get(SETTINGS_ENV, "").strip():
        # the app's defaults: the conversation is the unit of acceptance, with the settings a new user has
        app = Settings()
        spec, config, vad = spec_from_settings(app), engine_config(app), vad_config(app)
        if llm:
            spec.llm = llm
    else:
        spec = ProfileSpec(profile=profile)
        apply_options(spec, {"max_new_tokens": 64, **backend_opts})
        spec.checkpoint = checkpoint or spec.checkpoint
        spec.llm = llm or spec.llm
    spec.validate()
    folder = Path(scripts_dir) if scripts_dir else SUITE_DIR
    scripts = sorted(folder.glob("*.json"))
    if only:
        scripts = [p for p in scripts if any(name in p.stem for name in only)]
    if not scripts and not echo_minutes:
        raise UserError(f"no conversation scripts in {folder}")
    backend = build_backend(spec, config)
    reports: list[dict[str, Any]] = []
    runs = []
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="parley-turns-") as tmp:
            where = Path(keep) if keep else Path(tmp)
            where.mkdir(parents=True, exist_ok=True)
            for room_name in rooms:
                for path in scripts:
                    user = ScriptedUser(load_script(path))
                    events = where / f"{room_name}_{path.stem}.jsonl"
                    audio = where / (f"{room_name}_{path.stem}.wav" if keep else "out.wav")
                    room = None if room_name == "none" else EchoRoom(room_name, seed=seed)
                    result = run_conversation(backend, ScriptedInput(user), audio, events_path=events,
                                              config=copy.deepcopy(config), system_prompt=spec.system_prompt,
                                              room=room, vad=vad, ready_sound=room is not None and ready)
                    report = score(user.script, user.timeline(), read_events(events),
                                   offset_s=result.input_offset_s)
                    if keep:
                        (where / f"{room_name}_{path.stem}.report.json").write_text(
                            json.dumps({"timeline": user.timeline(), **report}, indent=1, ensure_ascii=False))
                    reports.append(report)
                    runs.append({"script": path.stem, "room": room_name, "passed": report["aggregate"]["passed"],
                                 "utterances": report["aggregate"]["utterances"],
                                 "failed": [{"id": u["id"], "expect": u["expect"], "transcript": u["transcript"],
                                             "turns": u["turns"], "interrupted": u["interrupted"],
                                             "interrupt_ms": u["interrupt_ms"], "answer": u["answer_text"][:80]}
                                            for u in report["utterances"] if not u["ok"]]})
            echo = (_echo_alone(backend, spec, config, echo_minutes, seed, where, vad, echo_room, echo_glitches)
                    if echo_minutes else None)
    finally:
        backend.close()
    aggregate = combine(reports) if reports else {}
    return {
        "bench": "turns", "profile": spec.profile, "rooms": list(rooms), "seed": seed, "threads": threads,
        "scripts": [p.stem for p in scripts], "aggregate": aggregate,
        "unmet": unmet(aggregate) if reports else [], "echo_alone": echo, "runs": runs,
        "wall_s": round(time.perf_counter() - t0, 1), "profile_spec": spec.to_dict(),
    }


ECHO_REQUESTS = ["Tell me a long story about a dragon who loved the sea.",
                 "Tell me a long story about a girl who built a robot.",
                 "Tell me a long story about a lighthouse keeper.",
                 "Tell me a long story about a fox and a crow."]


def _echo_alone(backend: Any, spec: ProfileSpec, config: Any, minutes: float, seed: int, tmp: Path,
                vad: Any = None, room: str = "speakerphone", glitches: tuple[float, float] | None = None) -> dict:
    """The assistant talks for ``minutes`` in ``room``; the user only asks for the next story when an answer has
    ended. Every interruption and every turn that is not one of those requests is false. ``glitches``: (ms,
    per minute) jumps of the room's output latency (:class:`core.audio.room.RoomPreset`)."""
    from core.audio.room import EchoRoom, with_changes
    from core.engine.filemode import run_conversation
    from core.harness import ScriptedInput, ScriptedUser, parse_script, read_events

    utterances = [{"id": "r0", "text": ECHO_REQUESTS[0], "timing": {"at_s": 0.5}, "expect": "answered"}]
    for i in range(1, max(2, int(minutes * 60 / 20))):
        utterances.append({"id": f"r{i}", "text": ECHO_REQUESTS[i % len(ECHO_REQUESTS)], "expect": "answered",
                           "timing": {"after": "answer_end", "delay_s": 1.5, "timeout_s": 90}})
    user = ScriptedUser(parse_script({"name": "echo_alone", "utterances": utterances}))
    preset = with_changes(room, glitch_ms=glitches[0], glitches_per_min=glitches[1]) if glitches else room
    events_path = tmp / "echo_alone.jsonl"
    run_conversation(backend, ScriptedInput(user), tmp / "echo.wav", events_path=events_path,
                     config=copy.deepcopy(config), system_prompt=spec.system_prompt,
                     room=EchoRoom(preset, seed=seed), vad=vad, ready_sound=True)
    events = read_events(events_path)
    spoken = sum(e.get("samples", 0) / max(e.get("rate", 1), 1) for e in events if e["type"] == "audio_played")
    requests = len([u for u in user.timeline() if u.get("start_s") is not None])
    turns = {e["turn"] for e in events if e["type"] == "vad_onset"}
    return {"room": room, "glitches": ({"ms": glitches[0], "per_min": glitches[1]} if glitches else None),
            "assistant_speech_s": round(spoken, 1), "requests": requests,
            "false_interruptions": sum(1 for e in events if e["type"] == "interruption"),
            "user_turns": len(turns), "extra_turns": max(0, len(turns) - requests),
            "answers": sum(1 for e in events if e["type"] == "latency")}


def run_rooms_bench(args: argparse.Namespace) -> int:
    """``parley bench rooms``: each simulated room's figures and AEC3's echo cancellation in it, as JSON."""
    from core.audio.room import NOMINAL_SPEECH_DBFS, PRESETS, EchoRoom, double_talk_db, erle_db, with_changes
    from core.constants import MODEL_INPUT_RATE
    from core.harness.voices import render

    far, source = _far_speech(args.far, args.seconds)

    near = render("Stop. What is two plus two? Wait, I have another question for you.", voice="en-us", speed=160,
                  level_dbfs=NOMINAL_SPEECH_DBFS)
    report: dict = {"far_end": source, "far_seconds": round(len(far) / MODEL_INPUT_RATE, 2), "presets": {}}
    for name, p in PRESETS.items():
        room = EchoRoom(p, seed=args.seed)
        entry = {"figures": room.describe()}
        if room.has_echo:
            entry["aec3"] = erle_db(room, far)
            entry["aec3"].update(double_talk_db(p, far, near, seed=args.seed))
            for lat in args.latency_ms or []:
                entry[f"aec3_latency_{lat:g}ms"] = erle_db(EchoRoom(with_changes(p, latency_ms=lat), args.seed), far)
        report["presets"][name] = entry
    print(json.dumps(report, indent=1))
    return 0


def _far_speech(path: str | None, seconds: float) -> tuple[np.ndarray, str]:
    """Far-end speech for the ERLE check: a WAV, else Parley's Lite voice (Piper), else espeak-ng."""
    import math

    from core.constants import MODEL_INPUT_RATE

    text = ("Once upon a time, in a small village by the sea, there lived an old fisherman and his clever cat. "
            "Every morning they rowed out beyond the rocks, and every evening they came home with a story. "
            "One day the sea was calm and grey, and the fisherman saw something shining under the water. ")
    if path:
        from core.audio.wavin import load_mono

        mono = load_mono(path, MODEL_INPUT_RATE, what="--far recording")   # validated (one line when unusable)
        src = path
    else:
        try:
            import soxr

            from core.model.lite.tts import PiperVoice

            voice = PiperVoice()
            mono = soxr.resample(voice.synthesize(text), voice.sample_rate, MODEL_INPUT_RATE)
            src = "lite piper voice"
        except Exception:  # noqa: BLE001 - no Lite weights: espeak-ng speech is a fair far end too
            from core.harness.voices import render

            mono = render(text, voice="en-gb", speed=165)
            src = "espeak-ng en-gb"
    mono = np.asarray(mono, dtype=np.float32)
    reps = max(1, math.ceil(seconds * MODEL_INPUT_RATE / max(1, len(mono))))
    return np.tile(mono, reps)[:int(seconds * MODEL_INPUT_RATE)], src
