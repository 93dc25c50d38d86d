"""Replay of a recorded session through the engine, headless, on the virtual clock, with a comparison report.

``replay_session(SESSION)`` feeds the session's microphone audio (resampled to 16 kHz exactly as ``parley chat``
reads its input) through a fresh engine in the file-driven fast mode, records the run as a new session (mode
``replay``, ``replay_of`` in its meta) and writes ``report.json`` / ``report.md`` into it (see
:mod:`core.session.compare`).

Which recording is fed (``source``):

* ``raw``: ``mic_raw.wav``, resampled. For a file-driven session (``parley chat --record``) this is the input file
  itself, bit for bit, so with the same profile and settings the replay reproduces the original.
* ``clean``: ``mic_clean.wav``: what the engine heard after echo cancellation. For a live session the raw microphone
  also holds the echo of the original answers, which a file-driven run cannot cancel (there is no far end), so
* ``auto`` (default) takes ``raw`` for file-driven sessions and ``clean`` for live ones (and says so in the report).

How the engine is built is the caller's (``builder``: ``core.compose.build.build_engine_parts`` rebuilds it from
the session's ``meta.json`` ``settings`` the way ``parley chat`` built it, simulated room included).
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from core.constants import MODEL_INPUT_RATE
from core.session.compare import compare_sessions, write_report
from core.session.filetap import ChatRecording
from core.session.recorder import SessionRecorder
from core.session.store import STREAM_FILES, read_meta, sessions_root

log = logging.getLogger(__name__)

SOURCES = ("auto", "raw", "clean")


class EngineParts(Protocol):
    """What a builder returns (``core.compose.build.EngineParts``): everything a file-driven run needs besides the
    audio."""

    backend: Any
    config: Any
    system_prompt: str | None
    profile: str | None
    backbone: str | None
    voice: str | None
    room: str | None
    room_seed: int
    vad: Any
    settings: dict[str, Any] | None
    ready_sound: bool


# builder(profile, settings_from_meta) -> EngineParts
Builder = Callable[[str | None, dict[str, Any]], EngineParts]


class ReplayError(RuntimeError):
    """The session cannot be replayed (missing audio, unknown profile...)."""


def choose_source(meta: dict[str, Any], source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}")
    if source != "auto":
        return source
    return "clean" if meta.get("mode", "live") == "live" else "raw"


def load_source(session: Path, source: str) -> tuple[np.ndarray, int, np.ndarray]:
    """(audio as recorded, its rate, the same audio as 16 kHz mono float32)."""
    from core.audio import wavin

    path = session / STREAM_FILES["mic_raw" if source == "raw" else "mic_clean"]
    if not path.exists():
        raise ReplayError(f"{path.name} is missing in {session}")
    data, rate = wavin.read_audio(path, what="recording")
    mono = wavin.resample(wavin.to_mono(data, f"recording {path}"), rate, MODEL_INPUT_RATE)
    recorded = data[:, 0] if data.shape[1] == 1 else data
    return recorded, int(rate), mono


def default_output(session: Path) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return session.parent / f"{session.name}_replay_{stamp}"


def replay_session(session: str | os.PathLike, builder: Builder, output: str | os.PathLike | None = None, *,
                   profile: str | None = None, source: str = "auto", realtime: bool = False) -> dict[str, Any]:
    """Replay ``session`` into a new session folder with the parts ``builder`` makes from its recorded settings, and
    return the comparison report (also written there)."""
    from core.engine.filemode import input_offset_s, run_conversation

    session = Path(session)
    meta = read_meta(session)
    if not meta and not (session / STREAM_FILES["mic_raw"]).exists():
        raise ReplayError(f"{session} is not a session folder")
    chosen = choose_source(meta, source)
    recorded, rate, audio_16k = load_source(session, chosen)
    settings = dict(meta.get("settings") or {})
    parts = builder(profile or meta.get("profile"), settings)
    out = Path(output) if output else default_output(session)
    recorder = SessionRecorder(
        out, profile=parts.profile or profile or meta.get("profile"), backbone=parts.backbone or meta.get("backbone"),
        voice=parts.voice or meta.get("voice"), settings=parts.settings if parts.settings is not None else settings,
        devices={}, mode="replay",
        extra_meta={"replay_of": {"path": str(session), "session_id": meta.get("session_id"), "source": chosen}})
    if not recorder.start():
        raise ReplayError(recorder.error or f"cannot record the replay into {out}")
    room = _room(parts)
    ready = bool(getattr(parts, "ready_sound", False)) and room is not None and chosen == "raw"
    tap = ChatRecording(recorder, recorded, rate, audio_16k, offset_s=input_offset_s(ready))
    try:
        with tempfile.TemporaryDirectory(prefix="parley-replay-") as tmp:
            result = run_conversation(parts.backend, audio_16k, Path(tmp) / "played.wav",
                                      realtime=realtime, config=parts.config, system_prompt=parts.system_prompt,
                                      room=room, vad=parts.vad, subscribers=tap.subscribers,
                                      on_engine=tap.on_engine, on_chunk=tap.on_chunk, ready_sound=ready)
        tap.finish()
    finally:
        recorder.close()
        try:
            parts.backend.close()
        except Exception:  # noqa: BLE001 - freeing memory must not hide the result
            log.debug("backend close failed", exc_info=True)
    source_note = {"raw": f"mic_raw.wav ({rate} Hz, resampled to 16 kHz)" if rate != MODEL_INPUT_RATE
                   else "mic_raw.wav (16 kHz)", "clean": "mic_clean.wav (after echo cancellation)"}[chosen]
    report = compare_sessions(session, recorder.path, extra={
        "source": source_note, "source_kind": chosen,
        "replay_run": {k: v for k, v in result.to_dict().items() if k not in ("output_path",)},
    })
    write_report(report, recorder.path)
    log.info("replay of %s: %s (%s)", session, report["verdict"], recorder.path)
    return report


def _room(parts: EngineParts) -> Any:
    """The simulated room the original file-driven run used (None: no echo)."""
    if not parts.room or parts.room == "none":
        return None
    from core.audio.room import EchoRoom

    return EchoRoom(parts.room, seed=parts.room_seed)


def default_replay_root() -> Path:
    return sessions_root()
