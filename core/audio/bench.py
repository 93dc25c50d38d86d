"""``parley bench audio``: the whole live audio chain on the PulseAudio null-sink loop, as one JSON object.

Phases (all measured on the audio timeline, i.e. in 16 kHz stream positions, never by wall-clock sleeps):

1. far end only: ``--seconds`` of assistant speech (espeak-ng, played at 24 kHz) -> ERLE after convergence, VAD
   onsets (every one is a false barge-in);
   1b. the same with room noise mixed into the capture (``NOISE_DBFS``) -> CPU of the whole process per second of
   audio (``cpu_fraction``): the capture chain plus whatever the caller's ``consumer`` does with each chunk
   (``parley bench audio`` passes the app's engine listen step, see ``core.compose.bench.run_audio_bench``);
2. double talk: a second voice is added digitally to the captured microphone signal (the null sink has one
   acoustic path only) while the assistant speaks -> time from its start to the VAD onset decision;
3. barge-in: a tone is playing, ``flush()`` is called -> time from the call to silence at the monitor;
4. latency: PortAudio's reported output latency, the measured callback->DAC lead and the measured echo loop.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from dataclasses import asdict
from typing import Any, Callable

import numpy as np

from core.constants import MODEL_INPUT_RATE

log = logging.getLogger(__name__)

RATE = MODEL_INPUT_RATE
ASSISTANT_RATE = 24_000


class ChunkRecorder:
    """Collects :class:`~core.audio.interfaces.AudioChunk` objects (use as ``on_chunk``) and slices the timeline."""

    def __init__(self) -> None:
        self._chunks: list = []
        self._cond = threading.Condition()

    def __call__(self, chunk) -> None:
        with self._cond:
            self._chunks.append(chunk)
            self._cond.notify_all()

    @property
    def end(self) -> int:
        with self._cond:
            if not self._chunks:
                return 0
            c = self._chunks[-1]
            return c.start + len(c.samples_16k)

    def wait_until(self, position: int, timeout: float) -> bool:
        """Wait (bounded) until the chunks cover the 16 kHz ``position``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                end = self._chunks[-1].start + len(self._chunks[-1].samples_16k) if self._chunks else 0
                if end >= position:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))

    def chunks(self, start: int = 0, end: int | None = None) -> list:
        with self._cond:
            return [c for c in self._chunks
                    if c.start + len(c.samples_16k) > start and (end is None or c.start < end)]

    def signals(self, start: int = 0, end: int | None = None) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        """(first position, raw, cleaned, reference) over the chunks overlapping [start, end)."""
        cs = self.chunks(start, end)
        if not cs:
            z = np.zeros(0, dtype=np.float32)
            return start, z, z, z
        raw = np.concatenate([c.raw_16k for c in cs])
        clean = np.concatenate([c.samples_16k for c in cs])
        ref = np.concatenate([c.reference_16k for c in cs])
        first = cs[0].start
        a = max(0, start - first)
        b = len(clean) if end is None else max(a, min(len(clean), end - first))
        return first + a, raw[a:b], clean[a:b], ref[a:b]

    def vad_events(self, start: int = 0, end: int | None = None, kind: str | None = None) -> list:
        out = []
        for c in self.chunks(start, end):
            for e in c.vad_events:
                at = getattr(e, "detected_at", e.sample)
                if at >= start and (end is None or at < end) and (kind is None or e.kind == kind):
                    out.append(e)
        return out


def erle_db(raw: np.ndarray, clean: np.ndarray, frame: int = 160, active_db: float = -50.0) -> float | None:
    """Echo return loss enhancement over the frames where the microphone carries echo (louder than
    ``active_db``): 10 log10(E[mic^2] / E[cleaned^2])."""
    n = (min(len(raw), len(clean)) // frame) * frame
    if n == 0:
        return None
    r = raw[:n].astype(np.float64).reshape(-1, frame)
    c = clean[:n].astype(np.float64).reshape(-1, frame)
    er = (r * r).mean(axis=1)
    ec = (c * c).mean(axis=1)
    active = er > 10 ** (active_db / 10)
    if not active.any():
        return None
    return float(10 * np.log10(er[active].sum() / max(ec[active].sum(), 1e-20)))


def first_active(x: np.ndarray, fraction: float = 0.05) -> int | None:
    """Index of the first sample louder than ``fraction`` of the signal's peak."""
    top = float(np.max(np.abs(x))) if len(x) else 0.0
    if top <= 0:
        return None
    idx = np.flatnonzero(np.abs(x) > fraction * top)
    return int(idx[0]) if len(idx) else None


def last_active(x: np.ndarray, threshold: float) -> int | None:
    idx = np.flatnonzero(np.abs(x) > threshold)
    return int(idx[-1]) if len(idx) else None


def _fail(message: str) -> int:
    print(f"parley bench audio: {message}", file=sys.stderr)
    return 2


def run_bench(args: argparse.Namespace, consumer: Callable[[Any], None] | None = None,
              extra: dict[str, Any] | None = None) -> int:
    """The benchmark; ``consumer`` also gets every chunk (in the audio worker thread), ``extra`` joins the JSON."""
    from core.audio.loopback import START_HINT, PrivateSink, pulse_loop_problem
    from core.audio.testsignals import SpeechUnavailable, have_espeak

    problem = pulse_loop_problem()
    if problem is not None:
        return _fail(f"the PulseAudio test loop is not running ({problem}); {START_HINT}")
    if not have_espeak():
        return _fail("espeak-ng is needed for the test speech (apt-get install espeak-ng)")
    seconds = float(getattr(args, "seconds", 20.0) or 20.0)
    try:
        with PrivateSink(name=f"parley_bench_{int(time.time())}") as sink:
            result = _bench(seconds, sink.name, consumer)
    except SpeechUnavailable as exc:
        return _fail(str(exc))
    except Exception as exc:  # one clear line, details in the log
        log.debug("bench failed", exc_info=True)
        return _fail(f"{type(exc).__name__}: {exc}")
    result.update(extra or {})
    print(json.dumps(result))
    return 0


def _bench(seconds: float, sink_name: str, consumer: Callable[[Any], None] | None = None) -> dict:
    import psutil

    from core.audio.audio_io import AudioConfig, AudioIO
    from core.audio.testsignals import USER_TEXT, speech, speech_seconds, tone

    rec = ChunkRecorder()
    cfg = AudioConfig()

    consumer_cpu = [0.0]     # CPU seconds spent in ``consumer`` (it runs in the audio worker thread)

    def on_chunk(chunk) -> None:
        rec(chunk)
        if consumer is not None:
            t = time.thread_time()
            consumer(chunk)
            consumer_cpu[0] += time.thread_time() - t

    io = AudioIO(cfg, on_chunk=on_chunk)
    proc = psutil.Process()
    out: dict = {"bench": "audio", "seconds": seconds}
    io.start()
    try:
        if not io.wait_first_input(cfg.start_timeout_s) or not io.wait_running(5.0):
            raise RuntimeError("the input stream delivered nothing (is the loop's source running?)")
        # let the input's start-up backlog settle and the alignment lock
        warm_end = io.position + RATE
        rec.wait_until(warm_end, 10.0)
        player = io.player

        # 1. far end only -------------------------------------------------------------------------------------
        far = speech_seconds(seconds, rate=ASSISTANT_RATE, peak=0.5)
        quiet = _far_end_phase(io, rec, far, tag=1)
        p0, p1 = quiet["p0"], quiet["p1"]
        _, raw, clean, _ = rec.signals(p0 + 2 * RATE, p0 + int(seconds * RATE))
        out["erle_db"] = _round(erle_db(raw, clean))
        _, raw_all, clean_all, _ = rec.signals(p0, p1)
        out["erle_first_2s_db"] = _round(erle_db(raw_all[:2 * RATE], clean_all[:2 * RATE]))
        false = rec.vad_events(p0, p1, "onset")
        out["false_onsets"] = len(false)
        if false:
            out["false_onset_details"] = [
                {"at_s": round((e.sample - p0) / RATE, 3), "prob": round(e.prob, 3),
                 "echo_similarity": round(getattr(e, "echo_similarity", 0.0), 3)} for e in false]
        out["cpu_fraction_silent_room"] = quiet["cpu_fraction"]

        # 1b. the same in a room with noise at the microphone (never digitally silent, unlike the null sink), so
        # the VAD's energy gate does not skip its model: the CPU figure of a real room
        noise = room_noise(seconds + 1.0, NOISE_DBFS)
        used0 = consumer_cpu[0]
        noisy = _far_end_phase(io, rec, far, tag=11, injector=MixInjector(noise, rec.end))
        out["cpu_fraction"] = noisy["cpu_fraction"]
        if consumer is not None:   # the part of it the caller's consumer took (the rest: the capture chain, I/O)
            out["cpu_fraction_consumer"] = round((consumer_cpu[0] - used0) / noisy["audio_s"], 4)
        out["cpu_seconds"] = noisy["cpu_seconds"]
        out["cpu_fraction_by_thread"] = noisy["by_thread"]
        out["room_noise_dbfs"] = NOISE_DBFS
        out["false_onsets_noisy_room"] = len(rec.vad_events(noisy["p0"], noisy["p1"], "onset"))
        out["audio_seconds"] = noisy["audio_s"]
        out["wall_seconds"] = noisy["wall_s"]
        lat = io.latency()

        # 2. double talk --------------------------------------------------------------------------------------
        user, _ = speech(USER_TEXT, voice="en-us+f3", rate=RATE, peak=0.5)
        lead_in = 2 * RATE
        far2 = speech_seconds(len(user) / RATE + 4.0, rate=ASSISTANT_RATE, peak=0.5)
        d0 = rec.end
        player.enqueue(far2, ASSISTANT_RATE, tag=2)
        player.finish(2)
        inject_at = d0 + lead_in + RATE // 2     # well inside the assistant's speech
        io.set_capture_injector(MixInjector(user, inject_at))
        voice_start = inject_at + (first_active(user, 0.05) or 0)
        rec.wait_until(voice_start + len(user), 20.0)
        io.set_capture_injector(None)
        onsets = [e for e in rec.vad_events(voice_start - RATE // 2, None, "onset")]
        out["double_talk_detect_ms"] = (round((onsets[0].detected_at - voice_start) / RATE * 1000, 1)
                                        if onsets else None)
        out["double_talk_onset_error_ms"] = (round((onsets[0].sample - voice_start) / RATE * 1000, 1)
                                             if onsets else None)
        player.flush()
        rec.wait_until(rec.end + RATE, 5.0)

        # 3. barge-in flush -----------------------------------------------------------------------------------
        amp = 0.3
        probe = tone(440.0, 4.0, ASSISTANT_RATE, amplitude=amp)
        f0 = rec.end
        player.enqueue(probe, ASSISTANT_RATE, tag=3)
        # wait until the tone is clearly arriving at the monitor, then play 1 s more
        deadline = time.monotonic() + 10.0
        heard_at = None
        while heard_at is None and time.monotonic() < deadline:
            rec.wait_until(rec.end + 1600, 1.0)
            first, raw_f, _, _ = rec.signals(f0)
            k = first_active(raw_f, 0.5) if len(raw_f) and np.max(np.abs(raw_f)) > amp / 2 else None
            heard_at = None if k is None else first + k
        if heard_at is None:
            raise RuntimeError("the probe tone never came back through the monitor")
        rec.wait_until(heard_at + RATE, 5.0)
        report = player.flush()
        req_pos = io.position_at_time(report.requested_at)
        rec.wait_until(rec.end + RATE // 2, 5.0)
        first, raw_f, _, _ = rec.signals(f0)
        end = last_active(raw_f, amp * 0.01)
        tone_end = first + end if end is not None else None
        out["flush_ms"] = (round((tone_end - req_pos) / RATE * 1000, 1)
                           if tone_end is not None and req_pos is not None else None)
        played = report.played_samples.get(3, 0)
        out["flush_played_ms"] = round(played / ASSISTANT_RATE * 1000, 1)
        if tone_end is not None:
            out["flush_heard_ms"] = round((tone_end - heard_at) / RATE * 1000, 1)

        # 4. latency + context ---------------------------------------------------------------------------------
        out["output_latency_ms"] = _round(lat.output_reported_ms)
        out["input_latency_ms"] = _round(lat.input_reported_ms)
        out["output_dac_lead_ms"] = _round(lat.output_dac_lead_ms)
        out["echo_delay_ms"] = _round(lat.echo_delay_ms)
        out["loop_ms"] = _round(lat.loop_ms)
        if out["flush_ms"] is not None and lat.output_reported_ms is not None:
            out["flush_bound_ms"] = round(100.0 + lat.output_reported_ms, 1)
        in_dev, out_dev = io.devices
        in_rate, out_rate = io.rates
        out["device"] = {"input": in_dev.name if in_dev else None, "output": out_dev.name if out_dev else None,
                         "hostapi": in_dev.hostapi if in_dev else None, "input_rate": in_rate,
                         "output_rate": out_rate, "pulse_sink": sink_name}
        out["blocksize"] = cfg.blocksize
        out["latency_setting"] = cfg.latency
        out["aec"] = asdict(cfg.aec)
        out["reference_lead_ms"] = cfg.reference_lead_ms
        out["vad"] = "silero-vad 6 ONNX, onnxruntime 1 thread, energy gate %s dBFS" % (
            getattr(getattr(io.vad, "config", None), "gate_dbfs", None))
        out["threads"] = {
            "python": sorted(t.name for t in threading.enumerate()),
            "native_total": proc.num_threads(),
            "note": "audio work runs in the audio-worker thread and the two PortAudio callback threads; "
                    "livekit (tokio) and PulseAudio client threads are mostly idle",
        }
        out["cpu_note"] = ("process CPU (all threads) per second of audio while the assistant speaks in a room with "
                           "noise (phase 1b; cpu_fraction_silent_room: the same over digital silence); the machine "
                           "is shared")
        out["stats"] = io.stats()
    finally:
        io.stop()
    return out


NOISE_DBFS = -45.0   # room noise of phase 1b: a quiet office at a laptop microphone


def room_noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    """Pink-ish noise (white noise through a one-pole low-pass) at ``dbfs`` RMS, 16 kHz."""
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(int(seconds * RATE))
    pink = np.empty_like(white)
    acc = 0.0
    for i, x in enumerate(white):      # y[n] = 0.95 y[n-1] + x[n]
        acc = 0.95 * acc + x
        pink[i] = acc
    pink *= 10 ** (dbfs / 20) / max(float(np.sqrt(np.mean(pink ** 2))), 1e-12)
    return pink.astype(np.float32)


def _far_end_phase(io, rec: ChunkRecorder, far: np.ndarray, tag: int, injector=None) -> dict:
    """Play ``far`` (the assistant) with ``injector`` mixed into the capture; CPU of the whole process per second
    of audio while it plays, and per thread."""
    if injector is not None:
        io.set_capture_injector(injector)
    p0 = rec.end
    threads0 = _thread_cpu()
    cpu0, t0 = time.process_time(), time.monotonic()
    io.player.enqueue(far, ASSISTANT_RATE, tag=tag)
    io.player.finish(tag)
    p1 = p0 + int(len(far) / ASSISTANT_RATE * RATE) + RATE // 2
    rec.wait_until(p1, len(far) / ASSISTANT_RATE + 15.0)
    cpu1, t1 = time.process_time(), time.monotonic()
    threads1 = _thread_cpu()
    io.set_capture_injector(None)
    audio_s = max((rec.end - p0) / RATE, 1e-6)
    by_name: dict[str, float] = {}
    for tid, (name, sec) in threads1.items():
        d = sec - threads0.get(tid, (name, 0.0))[1]
        if d > 0:
            by_name[name] = by_name.get(name, 0.0) + d
    return {"p0": p0, "p1": p1, "cpu_fraction": round((cpu1 - cpu0) / audio_s, 4),
            "cpu_seconds": round(cpu1 - cpu0, 3), "audio_s": round(audio_s, 2), "wall_s": round(t1 - t0, 2),
            "by_thread": {k: round(v / audio_s, 4) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])}}


class MixInjector:
    """Adds ``signal`` to the captured 16 kHz microphone from stream position ``at`` on."""

    def __init__(self, signal: np.ndarray, at: int) -> None:
        self.signal = signal.astype(np.float32)
        self.at = at

    def __call__(self, pos: int, mic: np.ndarray) -> None:
        a = max(pos, self.at)
        b = min(pos + len(mic), self.at + len(self.signal))
        if b > a:
            mic[a - pos:b - pos] += self.signal[a - self.at:b - self.at]


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds per native thread of this process (Linux /proc; empty elsewhere)."""
    import os

    out: dict[int, tuple[str, float]] = {}
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        name = names.get(int(tid)) or comm
        if name == "python" or name.startswith("python"):
            name = "portaudio/other (python)"
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def _round(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(float(x), nd)
