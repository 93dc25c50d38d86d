"""The live audio front-end: capture, playback, echo cancellation, echo-aware VAD, levels and device recovery.

Threads:

* the PortAudio **input callback** copies the device-rate microphone block into a ring buffer and records
  ``(ring position, ADC time)``;
* the PortAudio **output callback** asks the :class:`~core.audio.player.Player` for the next block, copies exactly
  what it handed to the device into the *played* ring (the echo reference) and records ``(position, DAC time)``;
* one **audio worker** thread wakes every ~30 ms, resamples both rings to 16 kHz (soxr streams), runs the echo
  canceller frame by frame (10 ms) on the aligned pair, the VAD, the level meters and the device watchdog, and
  delivers 160 ms :class:`AudioChunk` objects to the engine (``on_chunk`` callback, else the :attr:`AudioIO.chunks`
  queue).

Alignment: both callbacks' timestamps are converted to ``time.monotonic()``; each stream gets a robust (median)
time of its sample 0, so 16 kHz microphone sample ``i`` was captured when reference sample ``j = i + D`` was
played. The canceller is given reference ``j + lead`` for microphone ``i``: the reference always arrives a little
(``reference_lead_ms``) before its echo, and the delay the canceller has to find stays constant whatever the thread
scheduling does. ``D`` is re-locked only for a persistent shift of more than 20 ms (a lost input block, an output
underrun; faster right after start and right after a reported glitch). After such a glitch or a re-lock the VAD
treats the assistant's audio as echo for ``reconverge_hold_ms`` while the canceller re-converges.

Input and output are separate streams: one duplex ``sd.Stream`` records silence through the ALSA->PulseAudio plugin
of PortAudio 19.6.

Device loss (a stream finished unexpectedly, or no callback for ``stall_timeout_s``; a sound server that was killed
or restarted): a ``warning``/``device_lost`` event ("The microphone is gone ...; retrying…"), then re-opens while
AudioIO runs (device names matched again, the default as fallback), pausing 0.3 s doubled after each failure up to
5 s, each failure an ``audio_status``/``reconnecting`` event (a ``warning``/``still_gone`` after 30 s), until an
``audio_status``/``reopened`` event ("Audio is back ..."). ``reopen_on_loss=False`` (or ``reopen_attempts``) ends in
an ``error``/``stopped`` event and a clean stop instead. PortAudio is not re-initialised for this while it lists
devices (see :meth:`AudioIO._reopen`). Every open/close runs with a timeout in a helper thread, so a wedged driver
cannot hang the caller.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sounddevice as sd

from core.audio import devices as devmod
from core.audio.aec import AecConfig
from core.audio.chain import CaptureChain, ChainConfig, Levels
from core.audio.devices import AudioDeviceError, DeviceInfo
from core.audio.events import AUDIO_STATUS, ERROR, WARNING, AudioEventQueue
from core.audio.interfaces import AudioChunk
from core.audio.player import Player
from core.audio.ready_sound import DURATION_S as READY_SOUND_S, TAG as READY_SOUND_TAG, play_ready_sound
from core.audio.resample import StreamResampler
from core.audio.ringbuffer import RingBuffer, TimestampRing
from core.audio.vad import EchoAwareVad
from core.constants import AEC_FRAME_SAMPLES_16K, CHUNK_SAMPLES_16K, MODEL_INPUT_RATE
from core.queues import DropOldestQueue

log = logging.getLogger(__name__)

RATE = MODEL_INPUT_RATE
FRAME = AEC_FRAME_SAMPLES_16K
_MAX_BATCH = 16   # frames (160 ms) handled per worker step
_RELOCK_MS = 20.0  # after settling, re-align the echo reference only for shifts larger than this
_SETTLE_S = 2.0    # the first seconds of input: quick re-locks of the alignment


@dataclass
class AudioConfig:
    input_device: str | None = None        # saved by name; None/"default": the system default
    output_device: str | None = None
    input_rate: int | None = None          # None: the first of preferred_rates the device accepts, else its default
    output_rate: int | None = None
    preferred_rates: tuple[int, ...] = (48000,)  # 48 kHz: what sound servers run at; 3:1 to 16 kHz
    blocksize: int = 512                   # device frames per callback (PulseAudio via ALSA: 320-512 works)
    latency: float | str = 0.05            # PortAudio suggested latency (seconds or "low"); 0.05 survives CPU load
    aec: AecConfig = field(default_factory=AecConfig)
    reference_lead_ms: float = 40.0        # the canceller sees the reference this long before its echo
    echo_tail_ms: float = 300.0            # the assistant counts as speaking this long after its audio stopped
    chunk_samples: int = CHUNK_SAMPLES_16K
    ring_seconds: float = 4.0              # input / reference rings
    player_seconds: float = 120.0          # playback queue
    fade_ms: float = 8.0                   # flush fade
    reopen_on_loss: bool = True
    reopen_attempts: int | None = None     # None: keep retrying while AudioIO runs
    reopen_backoff_s: float = 0.3          # pause before the first re-open attempt, doubled after each failure...
    reopen_backoff_max_s: float = 5.0      # ...up to this
    still_gone_notice_s: float = 30.0      # a second warning when the device has been gone this long
    start_timeout_s: float = 8.0           # the first input callback can come ~2 s late
    stall_timeout_s: float = 2.0           # no callback for this long after the first one: the device is gone
    open_timeout_s: float = 5.0
    reference_wait_s: float = 0.3          # longest wait for the reference before cancelling against silence
    ready_sound: bool = False              # play core.audio.ready_sound once the streams run (each open)
    reconverge_hold_ms: float = 1200.0     # after an underrun/lost block/re-alignment no barge-in on the
                                           # assistant's voice for this long (the canceller re-converges)


@dataclass
class LatencyInfo:
    input_reported_ms: float | None = None     # PortAudio stream.latency
    output_reported_ms: float | None = None
    output_dac_lead_ms: float | None = None    # measured: callback -> DAC time, median over recent callbacks
    echo_delay_ms: float | None = None         # measured: residual delay of the echo after timestamp alignment
    loop_ms: float | None = None               # measured: output callback -> captured by the microphone


class _Fifo:
    """Growable-free FIFO of float32 (preallocated; compacts in place)."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.zeros(capacity, dtype=np.float32)
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, x: np.ndarray) -> int:
        n = len(x)
        if self.end + n > len(self.buf):
            m = self.end - self.start
            self.buf[:m] = self.buf[self.start:self.end]
            self.start, self.end = 0, m
        room = len(self.buf) - self.end
        k = min(n, room)
        self.buf[self.end:self.end + k] = x[:k]
        self.end += k
        return n - k   # samples that did not fit

    def peek(self, n: int) -> np.ndarray:
        return self.buf[self.start:self.start + n]

    def drop(self, n: int) -> None:
        self.start += n
        if self.start == self.end:
            self.start = self.end = 0

    def clear(self) -> None:
        self.start = self.end = 0


class _RefStore:
    """The last few seconds of the 16 kHz reference, addressed by absolute position."""

    def __init__(self, capacity: int) -> None:
        self.buf = np.zeros(capacity, dtype=np.float32)
        self.cap = capacity
        self.end = 0   # absolute position one past the newest sample

    def append(self, x: np.ndarray) -> None:
        n = len(x)
        if n >= self.cap:
            x = x[-self.cap:]
            self.end += n - self.cap
            n = self.cap
        s = self.end % self.cap
        first = min(n, self.cap - s)
        self.buf[s:s + first] = x[:first]
        if first < n:
            self.buf[:n - first] = x[first:]
        self.end += n

    def get(self, j: int, n: int, out: np.ndarray) -> None:
        out[:n] = 0.0
        lo = max(j, self.end - self.cap, 0)
        hi = min(j + n, self.end)
        if hi <= lo:
            return
        a, m = lo % self.cap, hi - lo
        first = min(m, self.cap - a)
        out[lo - j:lo - j + first] = self.buf[a:a + first]
        if first < m:
            out[lo - j + first:hi - j] = self.buf[:m - first]


def _median_origin(ring: TimestampRing, rate: float, k: int = 96) -> float | None:
    """Robust time of a stream's position 0 from recent (position, time) pairs."""
    data = ring.recent(k)
    if len(data) < 4:
        return None
    return float(np.median(data[:, 1] - data[:, 0] / rate))


class _StreamSet:
    """One input and one output stream plus the state their callbacks share with the worker."""

    def __init__(self, io: "AudioIO", in_dev: DeviceInfo, out_dev: DeviceInfo, in_rate: int, out_rate: int) -> None:
        cfg = io.config
        self.io = io
        self.in_dev, self.out_dev = in_dev, out_dev
        self.in_rate, self.out_rate = in_rate, out_rate
        self.in_ring = RingBuffer(int(cfg.ring_seconds * in_rate))
        self.played_ring = RingBuffer(int(cfg.ring_seconds * out_rate))
        self.in_ts = TimestampRing()
        self.out_ts = TimestampRing()
        self.in_overflows = 0
        self.out_underflows = 0
        self.in_callbacks = 0
        self.out_callbacks = 0
        self.first_in: float | None = None
        self.first_out: float | None = None
        self.last_in = 0.0
        self.last_out = 0.0
        self.in_finished = False
        self.out_finished = False
        self.closing = False
        self.in_channels = 1
        self.out_channels = 1
        self.in_stream: sd.InputStream | None = None
        self.out_stream: sd.OutputStream | None = None
        self.dac_lead = TimestampRing(128)   # (out position, dac - callback time)
        self.opened_at = time.monotonic()

    # -- callbacks (audio threads: copy, count, timestamp; nothing else) ------------------------------------------
    def _in_cb(self, indata: np.ndarray, frames: int, time_info, status: sd.CallbackFlags) -> None:
        now = time.monotonic()
        if status.input_overflow:
            self.in_overflows += 1
        pos = self.in_ring.written
        self.in_ring.write(indata[:, 0])
        lag = time_info.currentTime - time_info.inputBufferAdcTime
        if -0.5 < lag < 1.0:   # PortAudio's estimate is noisy (even negative) through PulseAudio; the median copes
            self.in_ts.record(pos, now - lag)
        self.in_callbacks += 1
        if self.first_in is None:
            self.first_in = now
        self.last_in = now

    def _out_cb(self, outdata: np.ndarray, frames: int, time_info, status: sd.CallbackFlags) -> None:
        now = time.monotonic()
        if status.output_underflow:
            self.out_underflows += 1
        buf = outdata[:, 0]
        self.io.player.fill(buf)
        if self.out_channels > 1:
            outdata[:, 1:] = outdata[:, :1]
        pos = self.played_ring.written
        self.played_ring.write(buf)
        lead = time_info.outputBufferDacTime - time_info.currentTime
        if 0.0 < lead < 1.0:
            self.out_ts.record(pos, now + lead)
            self.dac_lead.record(pos, lead)
        self.out_callbacks += 1
        if self.first_out is None:
            self.first_out = now
        self.last_out = now

    def _in_finished(self) -> None:
        self.in_finished = True
        self.io._wake.set()

    def _out_finished(self) -> None:
        self.out_finished = True
        self.io._wake.set()

    # -- open / close ---------------------------------------------------------------------------------------------
    def _open_one(self, kind: str, dev: DeviceInfo, rate: int, max_channels: int, cls, callback, finished):
        """Open an input or output stream, mono first, else stereo; returns (stream, channels)."""
        cfg = self.io.config
        last_exc: Exception | None = None
        for ch in sorted({1, min(2, max(1, max_channels))}):
            try:
                stream = cls(device=dev.index, samplerate=rate, channels=ch, dtype="float32",
                             blocksize=cfg.blocksize, latency=cfg.latency, callback=callback,
                             finished_callback=finished)
                return stream, ch
            except Exception as exc:
                last_exc = exc
        raise AudioDeviceError(f"cannot open {kind} {dev.name!r} at {rate} Hz: {last_exc}")

    def open(self) -> None:
        self.in_stream, self.in_channels = self._open_one(
            "input", self.in_dev, self.in_rate, self.in_dev.max_input_channels, sd.InputStream, self._in_cb,
            self._in_finished)
        devmod.note_stream_opened()
        try:
            self.out_stream, self.out_channels = self._open_one(
                "output", self.out_dev, self.out_rate, self.out_dev.max_output_channels, sd.OutputStream,
                self._out_cb, self._out_finished)
        except AudioDeviceError:
            self.close()
            raise
        devmod.note_stream_opened()
        self.opened_at = time.monotonic()
        self.out_stream.start()
        self.in_stream.start()

    def close(self) -> None:
        self.closing = True
        for attr in ("in_stream", "out_stream"):
            stream = getattr(self, attr)
            if stream is None:
                continue
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception as exc:
                log.debug("closing %s: %s", attr, exc)
            setattr(self, attr, None)
            devmod.note_stream_closed()


def _pick_rate(device: DeviceInfo, kind: str, preferred: tuple[int, ...]) -> int:
    """The first preferred rate the device accepts natively (PortAudio check), else its default rate."""
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    for rate in preferred:
        if rate == int(device.default_samplerate):
            return rate
        try:
            check(device=device.index, samplerate=rate, channels=1, dtype="float32")
            return rate
        except Exception:
            continue
    return int(device.default_samplerate)


def _run_with_timeout(fn: Callable[[], None], timeout: float, what: str) -> Exception | None:
    """Run ``fn`` in a helper thread; returns its exception, or a TimeoutError when it did not finish in time
    (the thread is left behind as a daemon: a wedged driver must not hang the program)."""
    box: dict[str, Exception] = {}

    def target() -> None:
        try:
            fn()
        except Exception as exc:  # reported to the caller
            box["exc"] = exc

    th = threading.Thread(target=target, name=f"audio-{what}", daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        return TimeoutError(f"{what} did not finish within {timeout:.1f} s")
    return box.get("exc")


class AudioIO:
    """Live audio front-end. ``start()``, read chunks (``on_chunk`` callback or :attr:`chunks` queue), play through
    :attr:`player`, ``stop()``. Events (warnings, device loss, recovery) go to :attr:`events`."""

    def __init__(self, config: AudioConfig | None = None, on_chunk: Callable[[AudioChunk], None] | None = None,
                 vad: EchoAwareVad | None = None, events: AudioEventQueue | None = None) -> None:
        self.config = config or AudioConfig()
        self.events = events or AudioEventQueue()
        self.on_chunk = on_chunk
        self.chunks: DropOldestQueue[AudioChunk] = DropOldestQueue(256)   # when there is no on_chunk callback
        cfg = self.config
        self.chain = CaptureChain(ChainConfig(aec=cfg.aec, echo_tail_ms=cfg.echo_tail_ms,
                                              reference_lead_ms=cfg.reference_lead_ms,
                                              chunk_samples=cfg.chunk_samples),
                                  on_chunk=self._deliver, vad=vad, time_of=self.time_of_position)
        self._player: Player | None = None
        self._streams: _StreamSet | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._state = "stopped"
        self._input_name: str | None = None
        self._output_name: str | None = None
        self._lock = threading.Lock()
        # 16 kHz timeline (continues across device re-opens)
        self._mic16 = _Fifo(RATE * 4)
        self._ref16 = _RefStore(int(RATE * self.config.ring_seconds))
        self._mic_pos = 0          # absolute 16 kHz position of the next microphone frame to process
        self._mic_in = 0           # absolute 16 kHz position one past the newest resampled microphone sample
        self._mic_base = 0         # 16 kHz position where the current input stream's sample 0 lands
        self._ref_base = 0
        self._in_origin: float | None = None    # monotonic time of the current input stream's sample 0
        self._out_origin: float | None = None
        self._D: int | None = None               # reference position = microphone position + D
        self._ready_sounds = 0                   # ready sounds played (each under its own tag)
        self._ready_pending = False              # play it once the alignment has settled
        self.realignments = 0
        self._relock_votes: list[int] = []
        self._glitches: tuple | None = None
        self._glitch_until = 0.0
        self._batch_ref = np.zeros(_MAX_BATCH * FRAME, dtype=np.float32)
        self._batch_aux = np.zeros(_MAX_BATCH * FRAME, dtype=np.float32)
        self._lead = int(round(self.config.reference_lead_ms / 1000 * RATE))
        self._poll_s = 0.03
        self._injector: Callable[[int, np.ndarray], None] | None = None
        self._last_latency = LatencyInfo()
        self._reported_counts = (0, 0, 0, 0, 0)
        self._last_count_check = 0.0
        self.frames_processed = 0
        self.reopen_count = 0
        self._first_input_event = threading.Event()
        self._in_resampler: StreamResampler | None = None
        self._ref_resampler: StreamResampler | None = None
        self.cpu_seconds_worker = 0.0

    # -- public API ---------------------------------------------------------------------------------------------------
    @property
    def player(self) -> Player:
        if self._player is None:
            raise RuntimeError("AudioIO.player is available after start()")
        return self._player

    @property
    def state(self) -> str:
        """"stopped" | "starting" | "running" | "recovering" | "failed"."""
        return self._state

    @property
    def running(self) -> bool:
        return self._state in ("starting", "running", "recovering")

    @property
    def devices(self) -> tuple[DeviceInfo | None, DeviceInfo | None]:
        s = self._streams
        return (s.in_dev, s.out_dev) if s else (None, None)

    @property
    def rates(self) -> tuple[int | None, int | None]:
        s = self._streams
        return (s.in_rate, s.out_rate) if s else (None, None)

    def start(self, input_name: str | None = None, output_name: str | None = None) -> None:
        """Open both devices (by saved name; missing ones fall back to the default with a warning event) and start
        the worker. Raises :class:`AudioDeviceError` when no device can be opened."""
        if self.running:
            raise RuntimeError("AudioIO already started")
        self._input_name = input_name if input_name is not None else self.config.input_device
        self._output_name = output_name if output_name is not None else self.config.output_device
        self._stop.clear()
        self._first_input_event.clear()
        self._state = "starting"
        try:
            self._open_streams()
        except Exception:
            self._state = "stopped"
            raise
        self._worker = threading.Thread(target=self._run, name="audio-worker", daemon=True)
        self._worker.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop the worker and close the streams (bounded by ``timeout``; never hangs)."""
        self._stop.set()
        self._wake.set()
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)
            if worker.is_alive():
                log.warning("audio worker did not stop within %.1f s", timeout)
        self._worker = None
        was = self._state
        self._close_streams(timeout)
        if self._state != "failed":
            self._state = "stopped"
        if was != "stopped":
            self.events.emit(AUDIO_STATUS, "stopped", "audio stopped")

    def wait_first_input(self, timeout: float) -> bool:
        """Block until the first input callback of the current streams arrived (measurements must start after it)."""
        return self._first_input_event.wait(timeout)

    def wait_running(self, timeout: float) -> bool:
        """Block until both streams deliver callbacks and the reference alignment is known."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._state == "running" and self._D is not None:
                return True
            if self._state in ("stopped", "failed"):
                return False
            time.sleep(0.02)
        return False

    def set_aec(self, config: AecConfig) -> None:
        """Change echo cancellation / noise suppression / high-pass at run time (applied by the worker)."""
        self.config.aec = config
        self.chain.set_aec(config)

    def set_input_gate(self, closed: bool) -> None:
        """Mute (or push-to-talk released): the chain hears silence instead of the microphone until reopened."""
        self.chain.set_gate(closed)

    def restart_vad(self) -> None:
        """The engine decided a turn: the next voiced run is a new onset even if the user goes on speaking."""
        self.chain.restart_vad()

    @property
    def vad(self) -> EchoAwareVad:
        return self.chain.vad

    def set_capture_injector(self, fn: Callable[[int, np.ndarray], None] | None) -> None:
        """Install ``fn(position_16k, samples)`` that may add to the 16 kHz microphone samples in place before echo
        cancellation (``None`` removes it). For tests and diagnostics: a second talker mixed digitally into the
        capture, where the loopback has only one acoustic path."""
        self._injector = fn

    def levels(self) -> Levels:
        return self.chain.levels()

    def latency(self) -> LatencyInfo:
        """Reported and measured latencies of the current streams (the last known ones after stop())."""
        s = self._streams
        info = LatencyInfo()
        if s is None:
            return self._last_latency
        try:
            if s.in_stream is not None:
                info.input_reported_ms = float(s.in_stream.latency) * 1000
            if s.out_stream is not None:
                info.output_reported_ms = float(s.out_stream.latency) * 1000
        except Exception:
            pass
        leads = s.dac_lead.recent(64)
        if len(leads):
            info.output_dac_lead_ms = float(np.median(leads[:, 1])) * 1000
        delay = self.chain.echo_delay_ms
        if delay is not None:
            info.echo_delay_ms = delay
            if info.output_dac_lead_ms is not None:
                info.loop_ms = info.output_dac_lead_ms + delay
        self._last_latency = info
        return info

    def stats(self) -> dict:
        s = self._streams
        p = self._player
        return {
            "state": self._state,
            "input_overflows": s.in_overflows if s else 0,
            "output_underflows": s.out_underflows if s else 0,
            "input_ring_overflow_samples": s.in_ring.overflow_samples if s else 0,
            "reference_ring_overflow_samples": s.played_ring.overflow_samples if s else 0,
            "playback_starved_blocks": p.starved_blocks if p else 0,
            "playback_overflow_samples": p.overflow_samples if p else 0,
            "realignments": self.realignments,
            "reopens": self.reopen_count,
            "frames_processed": self.frames_processed,
            "position_16k": self._mic_pos,
            "alignment_samples": self._D,
            "events_dropped": self.events.dropped,
        }

    @property
    def position(self) -> int:
        """16 kHz position of the next microphone sample to be processed."""
        return self._mic_pos

    def time_of_position(self, pos16: int) -> float | None:
        """time.monotonic() at which 16 kHz microphone sample ``pos16`` was (or will be) captured."""
        origin = self._in_origin
        if origin is None:
            return None
        return origin + (pos16 - self._mic_base) / RATE

    def position_at_time(self, t: float) -> int | None:
        origin = self._in_origin
        if origin is None:
            return None
        return int(round((t - origin) * RATE)) + self._mic_base

    def reference_time_of_position(self, ref_pos16: int) -> float | None:
        """time.monotonic() at which 16 kHz reference sample ``ref_pos16`` reached the DAC."""
        origin = self._out_origin
        if origin is None:
            return None
        return origin + (ref_pos16 - self._ref_base) / RATE

    # -- streams --------------------------------------------------------------------------------------------------------
    def _open_streams(self) -> None:
        cfg = self.config
        in_choice = devmod.choose_device(self._input_name, "input", self.events)
        out_choice = devmod.choose_device(self._output_name, "output", self.events)
        in_rate = int(cfg.input_rate or _pick_rate(in_choice.device, "input", cfg.preferred_rates))
        out_rate = int(cfg.output_rate or _pick_rate(out_choice.device, "output", cfg.preferred_rates))
        if self._player is not None and self._player.device_rate != out_rate:
            # the player (which the engine holds) keeps its rate if the device still takes it
            try_rate = self._player.device_rate
            streams = _StreamSet(self, in_choice.device, out_choice.device, in_rate, try_rate)
            exc = _run_with_timeout(streams.open, cfg.open_timeout_s, "open")
            if exc is None:
                self._install_streams(streams, in_choice, out_choice)
                return
            _run_with_timeout(streams.close, 2.0, "close")
        if self._player is None:
            self._player = Player(out_rate, capacity_seconds=cfg.player_seconds, fade_ms=cfg.fade_ms)
        streams = _StreamSet(self, in_choice.device, out_choice.device, in_rate, out_rate)
        exc = _run_with_timeout(streams.open, cfg.open_timeout_s, "open")
        if exc is not None:   # the player stays as it was: a failed attempt (a sound server still down) changes nothing
            _run_with_timeout(streams.close, 2.0, "close")
            if isinstance(exc, AudioDeviceError):
                raise exc
            raise AudioDeviceError(f"cannot open audio devices: {exc}") from exc
        if self._player.device_rate != out_rate:   # the same object: the engine holds it as its sink
            self._player.set_device_rate(out_rate)
            self.events.emit(WARNING, "playback_reset", "output rate changed; queued assistant audio dropped")
        self._install_streams(streams, in_choice, out_choice)

    def _install_streams(self, streams: _StreamSet, in_choice, out_choice) -> None:
        # new streams start at their own sample 0; the 16 kHz timeline continues where it was
        self._in_resampler = StreamResampler(streams.in_rate, RATE)
        self._ref_resampler = StreamResampler(streams.out_rate, RATE)
        self._mic16.clear()
        self._mic_base = self._mic_pos
        self._mic_in = self._mic_pos
        self._ref_base = self._ref16.end
        self._in_origin = None
        self._out_origin = None
        self._D = None
        self._glitches = None
        self._first_input_event.clear()
        self._streams = streams
        self._hold_vad_echo()      # a new device is a new echo path
        self._ready_pending = bool(self.config.ready_sound)   # ... which the ready sound teaches the cancellers
        self.events.emit(AUDIO_STATUS, "started", f"audio started: in {streams.in_dev.name!r} @ {streams.in_rate} Hz, "
                         f"out {streams.out_dev.name!r} @ {streams.out_rate} Hz",
                         input=streams.in_dev.name, output=streams.out_dev.name, input_rate=streams.in_rate,
                         output_rate=streams.out_rate, input_how=in_choice.how, output_how=out_choice.how)
        log.info("audio streams open: in %r (%s) @ %d, out %r (%s) @ %d", streams.in_dev.name, in_choice.how,
                 streams.in_rate, streams.out_dev.name, out_choice.how, streams.out_rate)

    def _close_streams(self, timeout: float) -> None:
        streams = self._streams
        if streams is None:
            return
        self.latency()   # remember the last figures
        exc = _run_with_timeout(streams.close, timeout, "close")
        if exc is not None:
            log.warning("closing audio streams: %s", exc)
        self._streams = None

    # -- worker ---------------------------------------------------------------------------------------------------------
    def _run(self) -> None:
        cpu0 = time.thread_time()
        next_align = 0.0
        try:
            while not self._stop.is_set():
                # poll: batching 2-3 AEC frames per wake-up costs far less CPU than waking per callback
                self._wake.wait(self._poll_s)
                self._wake.clear()
                if self._stop.is_set():
                    break
                now = time.monotonic()
                if not self._check_health(now):
                    continue
                self._pump()
                if now >= next_align or self._D is None:
                    self._update_alignment(now)
                    next_align = now + 0.25
                    if self._ready_pending and self._alignment_settled(now):
                        self._play_ready_sound()
                while self._process_batch(now):
                    pass
                if now - self._last_count_check > 1.0:
                    self._report_counters()
                    self._last_count_check = now
        except Exception as exc:  # the worker must not die silently
            log.exception("audio worker failed")
            self._state = "failed"
            self.events.emit(ERROR, "worker_failed", f"audio worker failed: {exc}")
        finally:
            self.cpu_seconds_worker += time.thread_time() - cpu0

    @property
    def ready_sounds(self) -> int:
        """How many times the ready sound was handed to the player (once per start or re-open)."""
        return self._ready_sounds

    def _settling(self, s: _StreamSet, now: float) -> bool:
        """The first seconds of input, or just after a glitch: the input stream's timestamps are still wrong (it
        catches up after a start), so the alignment re-locks quickly and an echo could arrive before its reference."""
        return s.first_in is None or now - s.first_in < _SETTLE_S or now < self._glitch_until

    def _alignment_settled(self, now: float) -> bool:
        """The reference alignment is known and past :meth:`_settling`."""
        s = self._streams
        return s is not None and self._D is not None and not self._settling(s, now)

    def _play_ready_sound(self) -> None:
        """The streams run with a settled alignment (after a start or a re-open: a new echo path): play the ready
        sound, which the user hears as "listening" and both echo cancellers learn the path from."""
        self._ready_pending = False
        player = self._player
        if player is None:
            return
        self._ready_sounds += 1
        try:
            play_ready_sound(player, player.device_rate, tag=READY_SOUND_TAG - self._ready_sounds + 1)
        except Exception as exc:   # a sound that cannot play costs nothing but itself
            log.warning("the ready sound could not play: %s", exc)
            self.events.emit(AUDIO_STATUS, "ready_sound", "the ready sound could not play", played=False,
                             seconds=0.0)
            return
        self.events.emit(AUDIO_STATUS, "ready_sound", "played the ready sound (the echo cancellers learn the room)",
                         played=True, seconds=READY_SOUND_S)

    def _check_health(self, now: float) -> bool:
        s = self._streams
        if s is None:
            return False
        cfg = self.config
        problem = None
        if s.in_finished or s.out_finished:
            which = "input" if s.in_finished else "output"
            problem = f"{which} stream stopped unexpectedly"
        elif s.first_in is None:
            if now - s.opened_at > cfg.start_timeout_s:
                problem = f"no input from {s.in_dev.name!r} within {cfg.start_timeout_s:.0f} s"
        elif now - s.last_in > cfg.stall_timeout_s:
            problem = f"input stalled for {now - s.last_in:.1f} s"
        elif s.first_out is not None and now - s.last_out > cfg.stall_timeout_s:
            problem = f"output stalled for {now - s.last_out:.1f} s"
        elif s.first_out is None and now - s.opened_at > cfg.start_timeout_s:
            problem = f"no output callbacks from {s.out_dev.name!r} within {cfg.start_timeout_s:.0f} s"
        if problem is None:
            if s.first_in is not None and not self._first_input_event.is_set():
                self._first_input_event.set()
                self.events.emit(AUDIO_STATUS, "first_input", "first microphone samples arrived",
                                 after_s=round(s.first_in - s.opened_at, 3))
            if s.first_in is not None and s.first_out is not None and self._state in ("starting", "recovering"):
                self._state = "running"
            return True
        self._handle_loss(problem)
        return False

    def _handle_loss(self, problem: str) -> None:
        s = self._streams
        names = (s.in_dev.name, s.out_dev.name) if s else (None, None)
        which = "speaker" if "output" in problem else "microphone"
        log.warning("audio device lost: %s", problem)
        self.events.emit(WARNING, "device_lost", f"The {which} is gone ({problem}); retrying…", input=names[0],
                         output=names[1], problem=problem)
        self._close_streams(2.0)
        if not self.config.reopen_on_loss:
            self._fail(f"audio stopped after device loss: {problem}")
            return
        self._state = "recovering"
        self._reopen(problem)

    def _reopen(self, problem: str) -> None:
        """Re-open the devices by their saved names until it works (or :meth:`stop`, or ``reopen_attempts``),
        pausing ``reopen_backoff_s`` doubled after each failure up to ``reopen_backoff_max_s``.

        PortAudio is not re-initialised while it still lists devices: other streams of the process (a sample
        played by the settings dialog) may be open, and re-initialising would break them. It does not need to be
        for a sound server that restarts: PulseAudio's ALSA devices (``pulse``, ``default``) connect to whatever
        server runs when a stream opens. Only when PortAudio lists no device at all (nothing can be open then) is
        it re-initialised to look again."""
        cfg = self.config
        lost_at = time.monotonic()
        pause = cfg.reopen_backoff_s
        attempt = 0
        still_told = False
        while cfg.reopen_attempts is None or attempt < cfg.reopen_attempts:
            if self._stop.wait(pause):
                return
            attempt += 1
            if not (devmod.list_devices("input") and devmod.list_devices("output")):
                devmod.refresh_devices()
            try:
                self._open_streams()
            except Exception as exc:
                gone_s = time.monotonic() - lost_at
                pause = min(pause * 2, cfg.reopen_backoff_max_s)
                log.info("re-open attempt %d failed (%s); next in %.1f s", attempt, exc, pause)
                self.events.emit(AUDIO_STATUS, "reconnecting", f"re-open attempt {attempt} failed: {exc}",
                                 attempt=attempt, gone_s=round(gone_s, 1), next_retry_s=pause)
                if not still_told and gone_s >= cfg.still_gone_notice_s:
                    still_told = True
                    self.events.emit(WARNING, "still_gone", f"Still no audio after {gone_s:.0f} s ({exc}); "
                                     f"retrying every {cfg.reopen_backoff_max_s:.0f} s. Is the sound server running? "
                                     "('parley doctor' checks)")
                continue
            self.reopen_count += 1
            self.chain.reset_speaking()
            s = self._streams
            assert s is not None
            gone_s = time.monotonic() - lost_at
            log.info("audio re-opened after %.1f s (%d attempts)", gone_s, attempt)
            self.events.emit(AUDIO_STATUS, "reopened", f"Audio is back on {s.in_dev.name!r}/{s.out_dev.name!r} "
                             f"after {gone_s:.1f} s", input=s.in_dev.name, output=s.out_dev.name, attempt=attempt,
                             gone_s=round(gone_s, 1))
            return
        self._fail(f"audio could not be re-opened after {attempt} attempts: {problem}")

    def _fail(self, message: str) -> None:
        self._state = "failed"
        self.events.emit(ERROR, "stopped", message)
        self._stop.set()

    def _pump(self) -> None:
        """Move device-rate samples out of the rings, resample them to 16 kHz."""
        s = self._streams
        assert s is not None and self._in_resampler is not None and self._ref_resampler is not None
        if s.in_ring.available():
            y = self._in_resampler.process(s.in_ring.read())
            lost = self._mic16.append(y)
            self._mic_in += len(y)
            if lost:
                log.warning("16 kHz microphone FIFO full: %d samples dropped", lost)
        if s.played_ring.available():
            self._ref16.append(self._ref_resampler.process(s.played_ring.read()))

    def _update_alignment(self, now: float) -> None:
        """Estimate both streams' time origins and (re)lock the reference offset ``D``.

        Output timestamps are steady (sub-millisecond); input ones are noisy (+-20 ms through PulseAudio) and
        wrong while the input stream catches up right after start. So: short medians and quick re-locks during the
        first seconds, then a 1 s median and a re-lock only for a shift of more than ``_RELOCK_MS`` that persists
        for three checks (a real glitch: lost input, output underrun). Smaller drifts are left to the canceller's
        own delay estimator; the reference lead keeps the echo causal.
        """
        s = self._streams
        assert s is not None
        glitches = (s.in_overflows, s.out_underflows, s.in_ring.overflow_samples, s.played_ring.overflow_samples)
        if glitches != self._glitches:
            # a block was lost or an underrun inserted silence: the timeline moved, the echo path with it
            if self._glitches is not None:
                self._glitch_until = now + 1.5
                self._hold_vad_echo()
            self._glitches = glitches
        settling = self._settling(s, now)
        k_in = 16 if settling else 96
        if s.in_ts.count >= 4:
            self._in_origin = _median_origin(s.in_ts, s.in_rate, k_in)
        if s.out_ts.count >= 4:
            self._out_origin = _median_origin(s.out_ts, s.out_rate, 8 if settling else 32)
        o_in, o_out = self._in_origin, self._out_origin
        if o_in is None or o_out is None or s.in_ts.count < 8 or s.out_ts.count < 8:
            return
        d = self._ref_base - self._mic_base + int(round((o_in - o_out) * RATE))
        if self._D is None:
            self._D = d
            self._relock_votes = []
            log.debug("reference alignment: D=%d samples", d)
            return
        threshold = 48 if settling else int(_RELOCK_MS / 1000 * RATE)
        if abs(d - self._D) <= threshold:
            self._relock_votes = []
            return
        self._relock_votes.append(d)
        if not settling and (len(self._relock_votes) < 3
                             or max(self._relock_votes[-3:]) - min(self._relock_votes[-3:]) > 80):
            return
        d = int(np.median(self._relock_votes[-3:]))
        shift_ms = round((d - self._D) / RATE * 1000, 1)
        self._D = d
        self._relock_votes = []
        self.realignments += 1
        log.info("echo reference re-aligned by %.1f ms", shift_ms)
        self._hold_vad_echo()
        if self._state == "running":
            self.events.emit(AUDIO_STATUS, "aec_realigned", "echo reference re-aligned", shift_ms=shift_ms)

    def _hold_vad_echo(self) -> None:
        """The echo path changed: the VAD treats the assistant's audio as echo while the canceller re-converges."""
        self.chain.hold_echo(self.config.reconverge_hold_ms)

    def _process_batch(self, now: float) -> bool:
        """Cancel, detect and deliver as many 10 ms frames as are ready (at most ``_MAX_BATCH``); returns whether
        it processed any."""
        cfg = self.config
        s = self._streams
        n_mic = min(len(self._mic16) // FRAME, _MAX_BATCH)
        if n_mic == 0:
            return False
        i0 = self._mic_pos
        n = n_mic * FRAME
        ref = self._batch_ref[:n]
        if self._D is None:
            # alignment comes with the first callbacks of both streams; without output the reference is silence
            if s is not None and s.first_in is not None and now - s.first_in < cfg.reference_wait_s + 0.2:
                return False
            ref[:] = 0.0
        else:
            j0 = i0 + self._D + self._lead
            ready = max(0, (self._ref16.end - j0) // FRAME)
            if ready < n_mic:
                t_cap = self.time_of_position(i0 + ready * FRAME)
                if t_cap is not None and now - t_cap < cfg.reference_wait_s:
                    n_mic = ready   # the output callback will have produced the rest in a moment
                    if n_mic == 0:
                        return False
                    n = n_mic * FRAME
                    ref = self._batch_ref[:n]
            self._ref16.get(j0, n, ref)
        mic = self._mic16.peek(n)
        injector = self._injector
        if injector is not None:
            try:
                injector(i0, mic)
            except Exception:
                log.exception("capture injector failed; removed")
                self._injector = None
        if self._D is None:
            no_lead = ref
        else:
            no_lead = self._batch_aux[:n]
            self._ref16.get(i0 + self._D, n, no_lead)
        self.chain.process(mic, ref, no_lead)
        self._mic16.drop(n)
        self._mic_pos += n
        self.frames_processed += n_mic
        return True

    def _deliver(self, chunk: AudioChunk) -> None:
        if self.on_chunk is not None:
            try:
                self.on_chunk(chunk)
            except Exception:
                log.exception("on_chunk callback failed")
            return
        self.chunks.put(chunk)   # nobody reads: the oldest is dropped (counted in chunks.dropped)

    def _report_counters(self) -> None:
        s = self._streams
        p = self._player
        if s is None or p is None:
            return
        counts = (s.in_overflows, s.out_underflows, s.in_ring.overflow_samples, p.starved_blocks,
                  p.overflow_samples)
        old = self._reported_counts
        names = ("input_overflow", "output_underflow", "input_ring_overflow", "playback_starved", "playback_overflow")
        for name, new, prev in zip(names, counts, old):
            if new > prev:
                self.events.emit(WARNING, name, f"{name.replace('_', ' ')}: {new - prev} since last report",
                                 count=new - prev, total=new)
        self._reported_counts = counts
