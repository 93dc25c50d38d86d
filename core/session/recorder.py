"""SessionRecorder: one folder per conversation with its audio streams, events, transcript and metadata.

Files in a session folder (owner-only: files 0600, and 0700 for a folder the recorder creates; an explicit folder
must be new or empty, and one that exists keeps its mode):

* ``mic_raw.wav``   what the microphone captured, at the capture rate. Its sample 0 defines the session timeline.
* ``mic_clean.wav`` the 16 kHz signal after echo cancellation (what VAD and the model heard).
* ``playback.wav``  the far-end reference: the samples the output stream actually played, placed on the mic
  timeline (silence where nothing was played).
* ``assistant.wav`` the model's output as generated, turn after turn (not on the mic timeline; ``meta.json`` has the
  sample offset of every turn's first piece).
* ``events.jsonl``  every engine event, one JSON object a line, written (and handed to the OS) line by line.
* ``transcript.md`` regenerated from the events while recording and at the end.
* ``meta.json``     written atomically at start and rewritten as the session goes (versions, profile, settings,
  devices, rates, alignment, duration, ``complete``; ``created_folder`` when the recorder created the folder,
  which is what allows retention to delete it one day).

Alignment: ``meta["streams"][name]`` holds ``rate``, ``start_t`` (session seconds of the stream's sample 0) and
``mic_offset``: the ``mic_raw`` sample index at which the stream's sample 0 sits. Sample ``i`` of a stream at rate
``r`` is at mic sample ``mic_offset + i * mic_rate / r``. An audio layer that knows exact positions passes
``mic_sample=`` (in mic_raw samples); otherwise ``t=`` (session seconds) is converted with the mic rate.

Threading and failure: every ``write_*`` and :meth:`on_event` only copies its input into a queue (no I/O, never
blocks, never raises), so the audio callbacks and the engine thread are never slowed down. One writer thread owns the
files. Any file-system error (disk full, file too large, unwritable folder) stops the recording (files written so far
stay valid), emits a ``warning`` event with ``source="session"`` and ``code="recording_stopped"`` to the attached
event bus and to ``on_problem``, and leaves the conversation alone.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core import __version__
from core.constants import MODEL_INPUT_RATE
from core.engine.events import Event, EventBus, Subscription, WarningEvent, event_from_dict
from core.session.store import (
    CREATED_MARK, EVENTS_NAME, FILE_MODE, META_FORMAT, META_NAME, STREAM_FILES, TRANSCRIPT_NAME, apply_retention,
    atomic_write_text, make_private_dir, new_session_dir, sessions_root,
)
from core.session.transcript import render_transcript, summarize_turns
from core.session.wavfile import FORMAT_FLOAT32, StreamingWavWriter

log = logging.getLogger(__name__)

META_FORMAT_VERSION = 1
_SUMMARY_TYPES = {"turn_decision", "user_text", "assistant_text", "interruption", "latency", "warning", "error"}
_ALIGNED = {"mic_raw": True, "mic_clean": True, "playback": True, "assistant": False}
_STOP = object()


class _Stream:
    """Bookkeeping of one WAV stream (owned by the writer thread once opened)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.writer: StreamingWavWriter | None = None
        self.rate = 0
        self.channels = 1
        self.start_t: float | None = None
        self.mic_offset: int | None = None
        self.info: dict[str, Any] = {}
        self.turn_offsets: dict[str, int] = {}
        self.dropped_overlap = 0
        self.rate_mismatch_logged = False

    @property
    def frames(self) -> int:
        return self.writer.frames if self.writer else 0

    def describe(self, mic: "_Stream") -> dict[str, Any]:
        offset = self.mic_offset
        if offset is None and self.start_t is not None and mic.rate and mic.start_t is not None:
            offset = int(round((self.start_t - mic.start_t) * mic.rate))
        d: dict[str, Any] = {
            "file": STREAM_FILES[self.name], "rate": self.rate, "channels": self.channels,
            "frames": self.frames, "start_t": self.start_t, "mic_offset": offset,
            "on_mic_timeline": _ALIGNED[self.name],
        }
        if self.writer:
            d["sample_format"] = self.writer.sample_format
        if self.turn_offsets:
            d["turn_offsets"] = dict(self.turn_offsets)
        d.update(self.info)
        return d


class SessionRecorder:
    """Records one conversation into a session folder. See the module docstring for the files and guarantees.

    Life cycle: ``rec = SessionRecorder(...); rec.start(); rec.attach(bus)``; push audio with the ``write_*``
    methods from any thread; ``rec.close()`` at the end (or use it as a context manager). ``start`` and every
    later call never raise because of the file system; check :attr:`failed` / :attr:`error`.
    """

    def __init__(self, folder: str | os.PathLike | None = None, *, root: str | os.PathLike | None = None,
                 profile: str | None = None, backbone: str | None = None, voice: str | None = None,
                 settings: dict[str, Any] | None = None, devices: dict[str, Any] | None = None,
                 mode: str = "live", extra_meta: dict[str, Any] | None = None,
                 sample_format: str = FORMAT_FLOAT32, sync_interval_s: float = 0.25, meta_interval_s: float = 2.0,
                 fsync: bool = True, retention_days: float | None = None,
                 on_problem: Callable[[Event], None] | None = None, max_queue_items: int = 20_000) -> None:
        self._folder_arg = Path(folder) if folder is not None else None
        self._root = root
        self.path: Path | None = self._folder_arg
        self.sample_format = sample_format
        self.sync_interval_s = sync_interval_s
        self.meta_interval_s = meta_interval_s
        self._fsync = fsync
        self._retention_days = retention_days
        self._on_problem = on_problem
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue_items)
        self._thread: threading.Thread | None = None
        self._streams = {name: _Stream(name) for name in STREAM_FILES}
        self._events_fd = -1
        self._summary_events: list[dict[str, Any]] = []
        self._transcript_dirty = False
        self._meta_dirty = True
        self._last_meta_write = 0.0
        self._last_transcript_write = 0.0
        self._events_written = 0
        self._dropped_items = 0
        self._bus: EventBus | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._started = False
        self._owns_folder = False
        self._closed = False
        self.failed = False
        self.error: str | None = None
        self._t0_mono = time.monotonic()
        self._last_t = 0.0
        self._last_turn = 0
        self.meta: dict[str, Any] = {
            "format": META_FORMAT, "format_version": META_FORMAT_VERSION,
            "session_id": None, "parley_version": __version__, "mode": mode,
            "profile": profile, "backbone": backbone, "voice": voice,
            "settings": dict(settings or {}), "devices": dict(devices or {}),
            "host": {"python": sys.version.split()[0], "platform": sys.platform, "hostname": socket.gethostname()},
            "start_time": None, "start_time_utc": None, "end_time": None,
            "duration_s": 0.0, "complete": False, "recording_error": None,
            "alignment": "stream sample i sits at mic_raw sample mic_offset + i * mic_raw.rate / stream.rate",
            "streams": {},
        }
        if extra_meta:
            self.meta.update(extra_meta)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> "SessionRecorder":
        """A recorder that follows ``core.settings.Settings``: its ``recording.folder`` (empty: the default root),
        ``recording.retention_days`` and a snapshot of all settings in meta.json. ``kwargs`` override."""
        rec = getattr(settings, "recording", None)
        folder = getattr(rec, "folder", "") or None
        kwargs.setdefault("root", folder)
        kwargs.setdefault("retention_days", getattr(rec, "retention_days", None))
        to_dict = getattr(settings, "to_dict", None)
        kwargs.setdefault("settings", to_dict() if callable(to_dict) else {})
        return cls(**kwargs)

    # ------------------------------------------------------------------ life cycle

    @property
    def active(self) -> bool:
        """Recording right now (started, not closed, no failure)."""
        return self._started and not self._closed and not self.failed

    def start(self) -> bool:
        """Create the folder and files and start the writer thread. Returns False (after a problem event) on failure."""
        if self._started:
            return not self.failed
        self._started = True
        self._t0_mono = time.monotonic()
        try:
            if self._folder_arg is not None:
                folder = self._folder_arg.expanduser()
                check_record_folder(folder)
                created = make_private_dir(folder)
                self.path = folder
            else:
                self.path = new_session_dir(self._root)
                created = True
            self._owns_folder = True
            if created:  # the marker that lets retention delete this folder one day (core/session/store.py)
                self.meta[CREATED_MARK] = True
            now = datetime.now().astimezone()
            self.meta["session_id"] = self.meta.get("session_id") or f"{self.path.name}-{uuid.uuid4().hex[:6]}"
            self.meta["start_time"] = now.isoformat(timespec="milliseconds")
            self.meta["start_time_utc"] = now.astimezone(timezone.utc).isoformat(timespec="milliseconds")
            self._write_meta()
            self._events_fd = os.open(self.path / EVENTS_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
            os.fchmod(self._events_fd, FILE_MODE)
            atomic_write_text(self.path / TRANSCRIPT_NAME, render_transcript([], self.meta))
        except OSError as exc:
            self._fail(exc, "creating the session folder")
            return False
        if self._retention_days and self._folder_arg is None:  # only in the sessions folder, never beside --record
            try:
                apply_retention(self._retention_days, root=sessions_root(self._root), keep={self.path})
            except (OSError, ValueError) as exc:
                log.warning("retention failed: %s", exc)
        self._thread = threading.Thread(target=self._run, name="session-recorder", daemon=True)
        self._thread.start()
        log.info("recording session to %s", self.path)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write everything queued, finish the files (meta ``complete``: true) and stop the writer thread."""
        if self._closed:
            return
        self.detach()
        self._closed = True
        if self._thread is not None:
            self._put(_STOP, force=True)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("session recorder did not finish within %.1f s", timeout)
        self._close_files()

    def __enter__(self) -> "SessionRecorder":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ inputs (any thread; never raise)

    def attach(self, event_bus: EventBus) -> None:
        """Record every event of ``event_bus``; the recorder's own problems (disk full) go back on it."""
        self.report_to(event_bus)
        subscription: Subscription = event_bus.subscribe(self.on_event)
        self._unsubscribe = subscription.close

    def report_to(self, event_bus: EventBus) -> None:
        """Publish the recorder's own problems (a ``recording_stopped`` warning) on ``event_bus``, for a caller that
        feeds :meth:`on_event` itself."""
        self._bus = event_bus

    def detach(self) -> None:
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            except Exception:  # noqa: BLE001 - a bus that cannot unsubscribe must not stop close()
                log.debug("unsubscribe failed", exc_info=True)
            self._unsubscribe = None

    def on_event(self, event: Event | dict[str, Any]) -> None:
        """Record one engine event (an :class:`Event` or its dict form)."""
        if not self.active:
            return
        try:
            ev = event if isinstance(event, Event) else event_from_dict(event)
            if isinstance(ev, WarningEvent) and ev.source == "session" and ev.code == "recording_stopped":
                return
            d = ev.to_dict()
            self._last_t = float(d["t"])
            self._last_turn = int(d["turn"])
            line = ev.to_json()
        except Exception as exc:  # noqa: BLE001 - a strange event is logged, never raised into the engine
            log.warning("event not recorded: %s", exc)
            return
        self._put(("event", line, d if d.get("type") in _SUMMARY_TYPES else None))

    __call__ = on_event

    def write_mic_raw(self, samples: np.ndarray, rate: int, t: float | None = None) -> None:
        """Captured microphone audio (float, any channel count) at the capture rate; defines the timeline."""
        self._push_audio("mic_raw", samples, rate, t=t, mic_sample=None)

    def write_mic_clean(self, samples: np.ndarray, rate: int = MODEL_INPUT_RATE, t: float | None = None,
                        mic_sample: int | None = None) -> None:
        """Echo-cancelled 16 kHz audio. Position of the first call via ``t``/``mic_sample``; later calls append."""
        self._push_audio("mic_clean", samples, rate, t=t, mic_sample=mic_sample)

    def write_playback(self, samples: np.ndarray, rate: int, t: float | None = None,
                       mic_sample: int | None = None) -> None:
        """Samples actually played. With ``t``/``mic_sample`` the block is placed there (gaps become silence);
        without, it follows the previous block."""
        self._push_audio("playback", samples, rate, t=t, mic_sample=mic_sample)

    def write_assistant(self, samples: np.ndarray, rate: int, turn: int | None = None, t: float | None = None) -> None:
        """Model output as generated (appended; the first piece of each ``turn`` is indexed in meta)."""
        self._push_audio("assistant", samples, rate, t=t, mic_sample=None, turn=turn)

    def set_stream_info(self, stream: str, **info: Any) -> None:
        """Extra facts about a stream for meta.json (e.g. ``aec_delay_samples=128``, ``device="pulse"``)."""
        if stream not in self._streams:
            raise ValueError(f"unknown stream {stream!r}")
        self._put(("info", stream, dict(info)))

    def update_meta(self, **fields: Any) -> None:
        """Merge fields into meta.json (``settings``/``devices`` dicts are merged key by key)."""
        self._put(("meta", dict(fields)))

    def session_time(self) -> float:
        """Seconds since :meth:`start` on the monotonic clock (for callers that have no engine time)."""
        return time.monotonic() - self._t0_mono

    # ------------------------------------------------------------------ internals: producer side

    def _push_audio(self, name: str, samples: np.ndarray, rate: int, t: float | None, mic_sample: int | None,
                    turn: int | None = None) -> None:
        if not self.active:
            return
        try:
            block = np.array(samples, dtype=np.float32, copy=True)
        except (TypeError, ValueError) as exc:
            log.warning("%s: audio block not recorded: %s", name, exc)
            return
        if block.ndim > 2 or block.size == 0:
            return
        self._put(("audio", name, block, int(rate), t, mic_sample, turn))

    def _put(self, item: Any, force: bool = False) -> None:
        try:
            if force:
                self._queue.put(item, timeout=5.0)
            else:
                self._queue.put_nowait(item)
        except queue.Full:
            self._dropped_items += 1
            if self._dropped_items == 1:
                log.warning("session recorder queue full (disk too slow?): dropping data")

    # ------------------------------------------------------------------ internals: writer thread

    def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=self.sync_interval_s)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if self.failed:
                continue  # drain and discard
            try:
                if item is not None:
                    self._handle(item)
                now = time.monotonic()
                if now - last_sync >= self.sync_interval_s:
                    self._sync(now)
                    last_sync = now
            except OSError as exc:
                self._fail(exc, "writing the session")
            except Exception as exc:  # noqa: BLE001 - a bug here must stop the recording, not the conversation
                log.exception("session recorder failed")
                self._fail(exc, "writing the session")
        if not self.failed:
            try:
                self._finish()
            except OSError as exc:
                self._fail(exc, "finishing the session")

    def _handle(self, item: tuple) -> None:
        kind = item[0]
        if kind == "event":
            _, line, summary = item
            data = (line + "\n").encode("utf-8")
            end = os.lseek(self._events_fd, 0, os.SEEK_END)
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._events_fd, view):]
            except OSError:
                try:  # never leave half a line behind (disk full part way through)
                    os.ftruncate(self._events_fd, end)
                except OSError:
                    pass
                raise
            self._events_written += 1
            if summary is not None:
                self._summary_events.append(summary)
                self._transcript_dirty = True
        elif kind == "audio":
            self._write_audio(*item[1:])
        elif kind == "info":
            _, name, info = item
            self._streams[name].info.update(info)
            self._meta_dirty = True
        elif kind == "meta":
            for key, value in item[1].items():
                if key in ("settings", "devices") and isinstance(value, dict):
                    self.meta.setdefault(key, {}).update(value)
                else:
                    self.meta[key] = value
            self._meta_dirty = True

    def _mic_pos_to_t(self, mic_sample: int) -> float | None:
        mic = self._streams["mic_raw"]
        if mic.rate and mic.start_t is not None:
            return mic.start_t + mic_sample / mic.rate
        return None

    def _write_audio(self, name: str, block: np.ndarray, rate: int, t: float | None, mic_sample: int | None,
                     turn: int | None) -> None:
        s = self._streams[name]
        mic = self._streams["mic_raw"]
        if s.writer is None:
            s.rate = rate
            s.channels = 1 if block.ndim == 1 else int(block.shape[1])
            s.writer = StreamingWavWriter(self.path / STREAM_FILES[name], rate, s.channels, self.sample_format,
                                          sync_interval_s=self.sync_interval_s, fsync=self._fsync)
            if name == "mic_raw":
                s.start_t = float(t) if t is not None else 0.0
                s.mic_offset = 0
            elif _ALIGNED[name]:
                if mic_sample is not None:
                    first_t = self._mic_pos_to_t(mic_sample)
                elif t is not None:
                    first_t = float(t)
                elif mic.rate and mic.start_t is not None:
                    first_t = mic.start_t + mic.frames / mic.rate
                else:
                    first_t = self._last_t
                if mic.rate and mic.start_t is not None and first_t is not None and first_t >= mic.start_t:
                    # sample 0 sits on mic sample 0: the lead-in is written as silence below
                    s.start_t, s.mic_offset = mic.start_t, 0
                    if t is None and mic_sample is None:
                        t = first_t
                else:
                    s.start_t = first_t
                    if mic_sample is not None:
                        s.mic_offset = int(mic_sample)
            else:
                s.start_t = float(t) if t is not None else self._last_t
            self._meta_dirty = True
        if rate != s.rate:
            block = _resample(block, rate, s.rate)
            if not s.rate_mismatch_logged:
                log.warning("%s: block at %d Hz resampled to the stream's %d Hz", name, rate, s.rate)
                s.rate_mismatch_logged = True
        if block.ndim == 2 and block.shape[1] != s.channels:
            block = block.mean(axis=1) if s.channels == 1 else np.repeat(block[:, :1], s.channels, axis=1)
        if name == "assistant" and turn is not None and str(turn) not in s.turn_offsets:
            s.turn_offsets[str(turn)] = s.frames
            self._meta_dirty = True
        if _ALIGNED[name] and name != "mic_raw" and (t is not None or mic_sample is not None):
            # place the block on the timeline: silence for a gap, drop what overlaps audio already written
            target_t = self._mic_pos_to_t(mic_sample) if mic_sample is not None else t
            if target_t is not None and s.start_t is not None:
                target = int(round((target_t - s.start_t) * s.rate))
                delta = target - s.frames
                tolerance = 0 if mic_sample is not None or s.frames == 0 else int(0.002 * s.rate)
                if delta > 600 * s.rate:
                    log.warning("%s: block placed %.0f s ahead of the stream; appended instead", name, delta / s.rate)
                elif delta > tolerance:
                    s.writer.write(np.zeros((delta,) if s.channels == 1 else (delta, s.channels), np.float32))
                elif delta < -tolerance:
                    cut = min(-delta, len(block))
                    s.dropped_overlap += cut
                    block = block[cut:]
        if len(block):
            s.writer.write(block)

    def _sync(self, now: float) -> None:
        for s in self._streams.values():
            if s.writer is not None:
                s.writer.sync()
        if self._fsync and self._events_fd >= 0:
            os.fsync(self._events_fd)
        if self._transcript_dirty and now - self._last_transcript_write >= 1.0:
            self._write_transcript()
        mic = self._streams["mic_raw"]
        if mic.rate:
            duration = mic.frames / mic.rate
            if abs(duration - float(self.meta.get("duration_s") or 0.0)) >= 1.0:
                self._meta_dirty = True
        if self._meta_dirty and now - self._last_meta_write >= self.meta_interval_s:
            self._write_meta()

    def _write_transcript(self) -> None:
        atomic_write_text(self.path / TRANSCRIPT_NAME,
                          render_transcript(summarize_turns(self._summary_events), self.meta))
        self._transcript_dirty = False
        self._last_transcript_write = time.monotonic()

    def _meta_snapshot(self) -> dict[str, Any]:
        mic = self._streams["mic_raw"]
        meta = dict(self.meta)
        meta["streams"] = {n: s.describe(mic) for n, s in self._streams.items() if s.writer is not None}
        if mic.rate:
            meta["duration_s"] = round(mic.frames / mic.rate, 6)
        elif self._streams["mic_clean"].rate:
            clean = self._streams["mic_clean"]
            meta["duration_s"] = round(clean.frames / clean.rate, 6)
        meta["events"] = self._events_written
        if self._dropped_items:
            meta["dropped_items"] = self._dropped_items
        return meta

    def _write_meta(self) -> None:
        if self.path is None:
            return
        snap = self._meta_snapshot()
        self.meta["duration_s"] = snap["duration_s"]
        atomic_write_text(self.path / META_NAME, json.dumps(snap, indent=2, ensure_ascii=False, default=str) + "\n")
        self._meta_dirty = False
        self._last_meta_write = time.monotonic()

    def _finish(self) -> None:
        for s in self._streams.values():
            if s.writer is not None:
                s.writer.close()
        if self._events_fd >= 0:
            if self._fsync:
                os.fsync(self._events_fd)
            os.close(self._events_fd)
            self._events_fd = -1
        self._write_transcript()
        self.meta["end_time"] = datetime.now().astimezone().isoformat(timespec="milliseconds")
        self.meta["complete"] = True
        self._write_meta()
        log.info("session recorded: %s (%.1f s, %d events)", self.path, self.meta.get("duration_s") or 0.0,
                 self._events_written)

    def _close_files(self) -> None:
        for s in self._streams.values():
            if s.writer is not None and not s.writer.closed:
                try:
                    s.writer.close()
                except OSError:
                    pass
        if self._events_fd >= 0:
            try:
                os.close(self._events_fd)
            except OSError:
                pass
            self._events_fd = -1

    def _fail(self, exc: BaseException, doing: str) -> None:
        with self._lock:
            if self.failed:
                return
            self.failed = True
        reason = getattr(exc, "strerror", None) or str(exc)
        where = f" in {self.path}" if self.path else ""
        self.error = f"session recording stopped while {doing}{where}: {reason}"
        log.error("%s", self.error)
        self._close_files()
        if self._owns_folder and self.path is not None and self.path.is_dir():
            try:  # record why it stopped, if the disk still takes a small file
                self.meta["recording_error"] = self.error
                self._write_meta()
            except OSError:
                pass
        t = self._last_t
        if self._bus is not None:
            t = float(self._bus.now())
        event = WarningEvent(t=max(t, 0.0), turn=self._last_turn, source="session", code="recording_stopped",
                             message=self.error, path=str(self.path) if self.path else None)
        self._publish(event)

    def _publish(self, event: Event) -> None:
        if self._on_problem is not None:
            try:
                self._on_problem(event)
            except Exception:  # noqa: BLE001
                log.debug("on_problem callback failed", exc_info=True)
        if self._bus is not None:
            try:
                self._bus.publish(event)
            except Exception:  # noqa: BLE001
                log.debug("could not publish the recorder's warning", exc_info=True)


def check_record_folder(folder: Path) -> None:
    """An explicit recording folder must be new or empty: a session is never written among a user's files. Raises
    OSError (one line); callers may check a --record folder with it before loading a model."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder; choose a new folder for the session")
    with os.scandir(folder) as entries:
        names = sorted(e.name for e in entries)
    if any(n in (META_NAME, EVENTS_NAME) for n in names):
        raise FileExistsError(f"{folder} already holds a session; choose a new folder")
    if names:
        raise FileExistsError(f"{folder} is not empty and is not a Parley session ({len(names)} entries); "
                              "choose a new or empty folder")


def _resample(block: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    import soxr

    return soxr.resample(block, rate_in, rate_out).astype(np.float32, copy=False)
