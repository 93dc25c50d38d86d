"""Helpers for the engine's scenario tests: run ``parley chat`` in-process on a synthetic conversation."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from core.engine.events import COMPUTE_FIELDS, Event, read_jsonl

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("PARLEY_FIXTURES") or (REPO / ".." / "shared" / "fixtures")).resolve()
TINY_A = FIXTURES / "freeze_omni_tiny_a"


def write_wav(path: Path, audio_16k: np.ndarray) -> Path:
    sf.write(str(path), audio_16k, 16_000, subtype="PCM_16")
    return path


def parley_chat(tmp: Path, audio_16k: np.ndarray, profile: str, *, settings: dict | None = None,
                extra: list[str] | None = None, name: str = "run") -> tuple[dict, list[Event], Path]:
    """``parley chat`` on ``audio_16k``; returns (printed JSON summary, events, output WAV path)."""
    from core.cli import main

    tmp.mkdir(parents=True, exist_ok=True)
    wav = write_wav(tmp / f"{name}_in.wav", audio_16k)
    out = tmp / f"{name}_out.wav"
    events = tmp / f"{name}_events.jsonl"
    argv = ["chat", "--profile", profile, "--input", str(wav), "--output", str(out), "--events", str(events)]
    argv += extra or []
    old = os.environ.get("PARLEY_ENGINE_SETTINGS")
    os.environ["PARLEY_ENGINE_SETTINGS"] = json.dumps(settings or {})
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            code = main(argv)
    finally:
        if old is None:
            os.environ.pop("PARLEY_ENGINE_SETTINGS", None)
        else:
            os.environ["PARLEY_ENGINE_SETTINGS"] = old
    assert code == 0, buf.getvalue()
    return json.loads(buf.getvalue()), read_jsonl(events), out


def comparable(events: list[Event]) -> list[dict]:
    """Events without the fields that measure the machine (compute time, memory)."""
    out = []
    for ev in events:
        d = {k: v for k, v in ev.to_dict().items() if k not in COMPUTE_FIELDS}
        out.append(d)
    return out


def of_type(events: list[Event], *types: str) -> list[Event]:
    return [e for e in events if e.type in types]
