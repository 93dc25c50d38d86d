"""The engine driven by the real Freeze-Omni backend on the tiny parity fixture (random weights, so the "speech" is
gibberish, but every decision, token and sample is computed by the shipped model code).

What these prove:
* the same input gives the same events every time (fast mode is deterministic; only compute fields differ);
* a backend exception / CUDA out-of-memory / failing listen step ends that turn with an ``error`` event and the
  engine keeps listening and answers later turns, nothing hangs;
* the one live loop (Engine.run on a QueueChunkSource, on the wall clock) answers and stops when asked;
* the multi-turn context is rebuilt when it nears the configured limit;
* ``parley bench engine`` prints its JSON report.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from _chat import TINY_A, comparable, of_type, parley_chat
from core.engine.backend import Backend
from core.engine.conversation import Placed, mix

pytest.importorskip("core.model.freeze_omni.backend")
pytestmark = pytest.mark.skipif(not (TINY_A / "checkpoints").is_dir(), reason="tiny Freeze-Omni fixture missing")

FO_ARGS = ["--greedy", "--checkpoint", str(TINY_A / "checkpoints"), "--llm", str(TINY_A / "llm")]


def _read(name: str) -> np.ndarray:
    data, rate = sf.read(str(TINY_A / name), dtype="float32")
    assert rate == 16_000
    return data


@pytest.fixture(scope="module")
def conversation() -> np.ndarray:
    main, rejected = _read("input.wav"), _read("input_el.wav")
    return mix([Placed(0.3, main), Placed(6.0, rejected), Placed(11.0, main)], tail_s=4.0)


@pytest.fixture(scope="module")
def fo_backend():
    from _shared import fixture_spec
    from core.compose.build import build_backend
    from core.engine.config import EngineConfig

    backend = build_backend(fixture_spec(), EngineConfig())
    yield backend
    backend.close()


def test_same_input_gives_identical_event_sequences(tmp_path, conversation):
    first, ev1, out1 = parley_chat(tmp_path, conversation, "freeze-omni", extra=FO_ARGS, name="a")
    second, ev2, out2 = parley_chat(tmp_path, conversation, "freeze-omni", extra=FO_ARGS + [
        "--record", str(tmp_path / "session")], name="b")
    assert comparable(ev1) == comparable(ev2)
    # The run is not trivial: turns open, the model decides (both ways), answers are generated and played.
    decisions = [e.state for e in of_type(ev1, "turn_decision")]
    assert "ss" in decisions and "el" in decisions
    assert of_type(ev1, "assistant_text") and of_type(ev1, "audio_out") and of_type(ev1, "audio_played")
    assert first["answers"] >= 1 and first["errors"] == 0
    # Identical audio too, on the input's timeline, at 24 kHz.
    a, rate_a = sf.read(str(out1), dtype="float32")
    b, _ = sf.read(str(out2), dtype="float32")
    assert rate_a == 24_000 and np.array_equal(a, b)
    assert abs(len(a) / rate_a - first["session_s"]) < 0.05
    # Events are JSONL with t / turn / type, t monotonic on the virtual clock.
    ts = [e.t for e in ev1]
    assert ts == sorted(ts) and all(isinstance(e.turn, int) for e in ev1)
    # --record wrote a session folder with the same events.
    session = tmp_path / "session"
    assert (session / "meta.json").is_file() and (session / "events.jsonl").is_file()
    recorded = [json.loads(line) for line in (session / "events.jsonl").read_text().splitlines()]
    assert len(recorded) == len(ev2)


class FaultInjector(Backend):
    """The real backend, with chosen calls made to fail (a wrapper for fault injection, not a stand-in)."""

    def __init__(self, inner, fail_reply_piece: int, fail_listen_call: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.output_rate = inner.output_rate
        self.fail_reply_piece = fail_reply_piece
        self.fail_listen_call = fail_listen_call
        self.replies = 0
        self.listens = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def new_conversation(self, system_prompt=None):
        return self.inner.new_conversation(system_prompt)

    def start_turn(self, conv):
        return self.inner.start_turn(conv)

    def listen(self, conv, chunk, speech_probs=None):
        self.listens += 1
        if self.listens == self.fail_listen_call:
            raise RuntimeError("injected listen failure")
        return self.inner.listen(conv, chunk, speech_probs)

    def end_of_input(self, conv):
        return self.inner.end_of_input(conv)

    def reply(self, conv, cancel):
        import torch

        self.replies += 1
        first = self.replies == 1
        inner = self.inner.reply(conv, cancel)
        for i, piece in enumerate(inner):
            if first and i == self.fail_reply_piece:
                inner.close()   # as if raised inside the backend's generator: its clean-up runs
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
            yield piece

    def interrupted(self, conv, heard_text):
        return self.inner.interrupted(conv, heard_text)

    def close(self):
        pass


def test_faults_end_the_turn_with_an_error_and_the_engine_keeps_listening(tmp_path, fo_backend, conversation):
    from core.engine.events import read_jsonl
    from core.engine.filemode import run_conversation

    audio = np.concatenate([conversation, conversation])     # more turns after the faults
    faulty = FaultInjector(fo_backend, fail_reply_piece=3, fail_listen_call=40)
    t0 = time.monotonic()
    result = run_conversation(faulty, audio, tmp_path / "out.wav", events_path=tmp_path / "ev.jsonl")
    assert time.monotonic() - t0 < 300                      # nothing hangs (a generous bound, not a speed test)
    events = read_jsonl(tmp_path / "ev.jsonl")
    errors = of_type(events, "error")
    kinds = {(e.where, e.kind) for e in errors}
    assert ("reply", "out_of_memory") in kinds
    assert ("listen", "backend") in kinds
    oom = next(e for e in errors if e.kind == "out_of_memory")
    # The failed turn ended: the engine went back to listening and answered later turns (the fixture's random
    # weights decide whether an answer has any text; that the later replies ran to their end is what counts).
    later_answers = [e for e in of_type(events, "info") if e.get("kind") == "generation_done"
                     and e.t > oom.t and e.turn > oom.turn]
    assert later_answers
    states_after = [e.state for e in of_type(events, "state") if e.t >= oom.t]
    assert "listening" in states_after
    # After an error the context is rebuilt between turns (the model's state may be half-updated).
    assert any(e.get("kind") == "rebuild" for e in of_type(events, "context"))
    assert result.errors == len(errors) >= 2
    assert events[-1].type == "state" and events[-1].state == "idle"


def test_context_is_rebuilt_before_it_reaches_the_limit(tmp_path, fo_backend, conversation):
    from core.engine.config import EngineConfig
    from core.engine.events import read_jsonl
    from core.engine.filemode import run_conversation

    limit = 160
    cfg = EngineConfig(max_context_tokens=limit)
    audio = np.concatenate([conversation] * 3)
    run_conversation(fo_backend, audio, tmp_path / "out.wav", events_path=tmp_path / "ev.jsonl",
                     config=cfg)
    events = read_jsonl(tmp_path / "ev.jsonl")
    rebuilds = [e for e in of_type(events, "context") if e.kind == "rebuild"]
    assert rebuilds
    for e in rebuilds:
        assert e.after_tokens <= cfg.rebuild_target * limit or e.turns_kept == 0
        assert e.after_tokens < e.before_tokens
    # Between turns the context never stays above the rebuild threshold.
    ends = [e for e in of_type(events, "context") if e.kind == "turn_end"]
    assert ends


def test_live_loop_on_the_wall_clock_answers_and_stops(fo_backend):
    """The app's loop: chunks pushed by another thread (as AudioIO does) into a QueueChunkSource, Engine.run in its
    own thread on the wall clock, a command queued from outside, then a stop."""
    from _shared import chunks
    from core.engine.clock import WallClock
    from core.engine.engine import Engine, QueueChunkSource
    from core.engine.events import EventBus
    from core.engine.sink import VirtualAudioSink

    clock = WallClock()
    bus = EventBus(clock)
    events = bus.subscribe_queue(100_000)
    source = QueueChunkSource(maxsize=64)
    sink = VirtualAudioSink(clock, fo_backend.output_rate)
    engine = Engine(fo_backend, sink, bus=bus)
    pieces = chunks(mix([Placed(0.3, _read("input.wav"))], tail_s=1.5))
    stop = threading.Event()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            engine.run(source, stop)
        except BaseException as exc:  # reported by the assertion below
            crashed.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    t0 = time.monotonic()
    for k, chunk in enumerate(pieces):  # the audio layer's side: one chunk every 160 ms
        delay = t0 + (k + 1) * 0.16 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        chunk.t_start = clock.from_monotonic(t0 + k * 0.16)    # when its first sample "entered the microphone"
        source.push(chunk)
    deadline = time.monotonic() + 20
    while engine.busy and time.monotonic() < deadline:
        time.sleep(0.05)
    ran = threading.Event()
    engine.call_soon(ran.set)
    assert ran.wait(5.0), "a queued command runs between two steps of the loop"
    stop.set()
    worker.join(5.0)
    assert not worker.is_alive() and not crashed
    got = events.drain()
    types = [e.type for e in got]
    assert "vad_onset" in types and "turn_decision" in types
    assert "assistant_text" in types and "audio_out" in types and "latency" in types
    assert source.overruns == 0
    # Latency from the end of the user's speech (capture time) to the first audio: positive and ordered.
    lat = next(e for e in got if e.type == "latency")
    assert 0 <= lat.decision_ms <= lat.first_audio_ms <= lat.first_played_ms


def test_bench_engine_prints_latency_and_overhead_json():
    from core.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["bench", "engine", "--profile", "freeze-omni", "--turns", "2", "--checkpoint",
                     str(TINY_A / "checkpoints"), "--llm", str(TINY_A / "llm")]) == 0
    report = json.loads(buf.getvalue())
    assert report["profile"] == "freeze-omni" and report["threads"]["torch"] == 1
    assert set(report["first_audio_ms"]) == {"p50", "p95"}
    assert report["scheduler_overhead_ms_per_chunk"]["p50"] is not None
    assert {"early_speech_on", "early_speech_off"} <= set(report["runs"])


def test_realtime_mode_paces_with_the_wall_clock_and_decides_as_fast_mode(tmp_path):
    audio = mix([Placed(0.3, _read("input.wav"))], tail_s=3.0)
    fast, ev_fast, _ = parley_chat(tmp_path, audio, "freeze-omni", extra=FO_ARGS, name="fast")
    real, ev_real, out = parley_chat(tmp_path, audio, "freeze-omni", extra=FO_ARGS + ["--realtime"], name="real")
    assert real["realtime"] is True and real["errors"] == 0
    # The same decisions and texts (only the clock differs). How a later turn's decision interleaves with the
    # previous reply's text pieces depends on how fast this machine generates against the wall clock, so the
    # decisions and each turn's text are compared on their own.
    decisions = lambda evs: [(e.turn, e.get("state")) for e in evs if e.type == "turn_decision"]  # noqa: E731
    texts = lambda evs: [(e.turn, e.get("text")) for e in evs if e.type == "assistant_text"]  # noqa: E731
    assert decisions(ev_real) == decisions(ev_fast)
    assert texts(ev_real) == texts(ev_fast)
    # The conversation took (at least) the input's duration on the session clock, and the output covers it.
    assert real["session_s"] >= len(audio) / 16_000 - 0.2
    wav, rate = sf.read(str(out), dtype="float32")
    assert rate == 24_000 and abs(len(wav) / rate - real["session_s"]) < 0.3
    ts = [e.t for e in ev_real]
    assert ts == sorted(ts)
