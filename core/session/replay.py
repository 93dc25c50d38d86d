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

How the engine is built is the caller's choice (``builder``); the default one rebuilds it from the session's
``meta.json`` ``settings`` the way ``parley chat`` builds it (``core.engine.cli``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.constants import MODEL_INPUT_RATE
from core.session.compare import compare_sessions, write_report
from core.session.filetap import ChatRecording
from core.session.recorder import SessionRecorder
from core.session.store import STREAM_FILES, read_meta, sessions_root

log = logging.getLogger(__name__)

SOURCES = ("auto", "raw", "clean")


@dataclass
class EngineParts:
    """What a builder returns: everything ``run_conversation`` needs besides the audio."""

    backend: Any
    vad: Any
    config: Any = None               # core.engine.config.EngineConfig (None: defaults)
    system_prompt: str | None = None
    profile: str | None = None
    backbone: str | None = None
    voice: str | None = None
    settings: dict[str, Any] | None = None   # what the new session's meta records (to replay it again)


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
    import soundfile as sf
    import soxr

    path = session / STREAM_FILES["mic_raw" if source == "raw" else "mic_clean"]
    if not path.exists():
        raise ReplayError(f"{path.name} is missing in {session}")
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if rate != MODEL_INPUT_RATE:
        mono = soxr.resample(mono, rate, MODEL_INPUT_RATE, quality="HQ")
    recorded = data[:, 0] if data.shape[1] == 1 else data
    return recorded, int(rate), np.ascontiguousarray(mono, dtype=np.float32)


def default_output(session: Path) -> Path:
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return session.parent / f"{session.name}_replay_{stamp}"


def replay_session(session: str | os.PathLike, output: str | os.PathLike | None = None, *,
                   profile: str | None = None, source: str = "auto", builder: Builder | None = None,
                   realtime: bool = False) -> dict[str, Any]:
    """Replay ``session`` into a new session folder and return the comparison report (also written there)."""
    from core.engine.filemode import run_conversation

    session = Path(session)
    meta = read_meta(session)
    if not meta and not (session / STREAM_FILES["mic_raw"]).exists():
        raise ReplayError(f"{session} is not a session folder")
    chosen = choose_source(meta, source)
    recorded, rate, audio_16k = load_source(session, chosen)
    settings = dict(meta.get("settings") or {})
    build = builder or default_builder
    parts = build(profile or meta.get("profile"), settings)
    out = Path(output) if output else default_output(session)
    recorder = SessionRecorder(
        out, profile=parts.profile or profile or meta.get("profile"), backbone=parts.backbone or meta.get("backbone"),
        voice=parts.voice or meta.get("voice"), settings=parts.settings if parts.settings is not None else settings,
        devices={}, mode="replay",
        extra_meta={"replay_of": {"path": str(session), "session_id": meta.get("session_id"), "source": chosen}})
    if not recorder.start():
        raise ReplayError(recorder.error or f"cannot record the replay into {out}")
    tap = ChatRecording(recorder, recorded, rate, audio_16k)
    try:
        with tempfile.TemporaryDirectory(prefix="parley-replay-") as tmp:
            result = run_conversation(parts.backend, parts.vad, audio_16k, Path(tmp) / "played.wav",
                                      realtime=realtime, config=parts.config, system_prompt=parts.system_prompt,
                                      subscribers=tap.subscribers, on_engine=tap.on_engine)
        tap.finish()
    finally:
        recorder.close()
        close = getattr(parts.backend, "close", None)
        if callable(close):
            try:
                close()
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


def default_builder(profile: str | None, settings: dict[str, Any]) -> EngineParts:
    """Rebuild the engine as ``parley chat`` builds it, from the settings a session recorded."""
    try:
        from core.engine import cli as engine_cli
    except ImportError as exc:  # pragma: no cover - until the engine's CLI exists
        raise ReplayError(f"the engine's file mode is not available: {exc}") from exc
    build = getattr(engine_cli, "build_engine_parts", None)
    if build is None:
        raise ReplayError("core.engine.cli has no build_engine_parts(); cannot rebuild the engine")
    return build(profile, settings)


def default_replay_root() -> Path:
    return sessions_root()
