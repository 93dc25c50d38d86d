"""Damaged or hand-made audio files: every reader refuses them in one line before any model loads, never resamples
a 1 Hz header into gigabytes, never reads a damaged header as silence, and never lets NaN reach a model; a
phase-inverted stereo microphone is heard, not averaged to silence (issue 15, item 8)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _hostile import run_parley
from core.errors import UserError

RATE = 16_000


def speechlike(seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    """A voiced, speech-band signal (harmonics of 140 Hz under a syllable-rate envelope)."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    return (0.25 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) / 2).astype(np.float32)


def patched(path: Path, offset: int, fmt: str, value: int, samples: np.ndarray | None = None) -> Path:
    """A 16-bit PCM WAV of ``samples`` whose header field at ``offset`` is overwritten (44-byte canonical header)."""
    sf.write(str(path), speechlike() if samples is None else samples, RATE, subtype="PCM_16")
    raw = bytearray(path.read_bytes())
    assert raw[36:40] == b"data"
    struct.pack_into(fmt, raw, offset, value)
    path.write_bytes(bytes(raw))
    return path


# name -> (make(path), words the one-line message must hold)
BAD_FILES = {
    "rate-1-hz": (lambda p: patched(p, 24, "<I", 1, speechlike(0.01)), ["1 Hz"]),
    "rate-1-mhz": (lambda p: patched(p, 24, "<I", 1_000_000), ["1000000 Hz"]),
    "ten-data-bytes": (lambda p: patched(p, 40, "<I", 10), ["header", "damaged"]),
    "zero-data-bytes": (lambda p: patched(p, 40, "<I", 0), ["header", "damaged"]),
    "1000-channels": (lambda p: patched(p, 22, "<H", 1000), ["1000 channels"]),
    "nan-samples": (lambda p: _float_wav(p, np.nan), ["NaN"]),
    "inf-samples": (lambda p: _float_wav(p, np.inf), ["NaN or infinite"]),
    "not-audio": (lambda p: p.write_bytes(b"this is a text file, not a recording\n" * 50), ["not an audio file"]),
    "empty-wav": (lambda p: sf.write(str(p), np.zeros(0, np.float32), RATE), ["no audio"]),
}


def _float_wav(path: Path, bad: float) -> None:
    x = speechlike()
    x[1000:1010] = bad
    sf.write(str(path), x, RATE, subtype="FLOAT")


def make_bad(tmp_path: Path, name: str, path: Path | None = None) -> tuple[Path, list[str]]:
    make, words = BAD_FILES[name]
    path = path or tmp_path / f"{name}.wav"
    make(path)
    return path, words


def one_line(text: str, path: Path, words: list[str]) -> None:
    text = text.strip()
    assert len(text.splitlines()) == 1, text
    assert str(path) in text, text
    for word in words:
        assert word in text, (word, text)


def readers():
    """Every reader of an input file, as ``read(path)``."""
    from core.engine.filemode import load_wav_16k
    from core.model.freeze_omni.cli import read_input_16k
    from core.model.lite.cli import read_audio_16k
    from core.session.filetap import read_input

    return {"chat": load_wav_16k, "freeze-omni reply": read_input_16k, "lite reply": read_audio_16k,
            "chat --record": read_input, "replay": _replay_reader}


def _replay_reader(path: Path):
    """``parley replay``'s reader on the session folder holding ``path`` as its mic_raw.wav."""
    from core.session.replay import load_source

    return load_source(path.parent, "raw")


@pytest.mark.parametrize("reader", ["chat", "freeze-omni reply", "lite reply", "chat --record", "replay"])
@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_every_reader_refuses_a_bad_file_in_one_line(tmp_path, reader, bad):
    if reader == "replay":
        (tmp_path / "session").mkdir()
        path, words = make_bad(tmp_path, bad, tmp_path / "session" / "mic_raw.wav")
    else:
        path, words = make_bad(tmp_path, bad)
    with pytest.raises(UserError) as exc:
        readers()[reader](path)
    one_line(str(exc.value), path, words)


def test_an_input_longer_than_the_cap_is_refused(tmp_path):
    from core.audio import wavin

    path = tmp_path / "long.wav"
    sf.write(str(path), speechlike(3.0, 4000), 4000, subtype="PCM_16")
    with pytest.raises(UserError) as exc:
        wavin.load_mono(path, max_seconds=2.0)
    one_line(str(exc.value), path, ["minutes long", "at most"])
    assert wavin.MAX_INPUT_SECONDS == 3600.0   # the documented cap (README, docs/architecture.md)


def test_trailing_riff_chunks_are_not_a_damaged_header(tmp_path):
    """A LIST/id3 chunk after the data (what many editors write) is fine."""
    from core.engine.filemode import load_wav_16k

    path = tmp_path / "tagged.wav"
    x = speechlike()
    sf.write(str(path), x, RATE, subtype="PCM_16")
    info = b"INFOISFT" + struct.pack("<I", 6) + b"Audio\0"
    with open(path, "ab") as f:
        f.write(b"LIST" + struct.pack("<I", len(info)) + info + b"id3 " + struct.pack("<I", 3) + b"ID3\0")
    out = load_wav_16k(path)
    assert len(out) == len(x) and np.max(np.abs(out - x)) < 1e-3


def test_a_phase_inverted_stereo_microphone_is_heard(tmp_path, caplog):
    from core.engine.filemode import load_wav_16k

    x = speechlike()
    path = tmp_path / "inverted.wav"
    sf.write(str(path), np.stack([x, -x], axis=1), RATE, subtype="PCM_16")
    with caplog.at_level("WARNING"):
        out = load_wav_16k(path)
    rms = float(np.sqrt(np.mean(out ** 2)))
    assert rms > 0.8 * float(np.sqrt(np.mean(x ** 2))), rms
    assert any("cancel out" in r.getMessage() for r in caplog.records)


def test_ordinary_stereo_is_still_averaged(tmp_path, caplog):
    from core.engine.filemode import load_wav_16k

    x = speechlike()
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([x, 0.5 * x], axis=1), RATE, subtype="FLOAT")
    with caplog.at_level("WARNING"):
        out = load_wav_16k(path)
    np.testing.assert_allclose(out, 0.75 * x, atol=1e-6)
    assert not any("cancel out" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("bad", ["rate-1-hz", "nan-samples", "ten-data-bytes", "1000-channels"])
def test_parley_chat_refuses_a_bad_input_before_loading_a_model(tmp_path, bad):
    path, words = make_bad(tmp_path, bad)
    proc = run_parley("chat", "--input", str(path), "--output", str(tmp_path / "out.wav"),
                      "--events", str(tmp_path / "events.jsonl"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, path, words)
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("profile", ["lite", "freeze-omni"])
def test_parley_reply_refuses_a_nan_input(tmp_path, profile):
    from _shared import default_fixture

    path, words = make_bad(tmp_path, "nan-samples")
    fixture = default_fixture()
    extra = ["--checkpoint", str(fixture / "checkpoints"), "--llm", str(fixture / "llm")] \
        if profile == "freeze-omni" else []
    proc = run_parley("reply", "--profile", profile, "--input", str(path), "--output", str(tmp_path / "out.wav"),
                      *extra, timeout=120)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, path, words)


def test_parley_replay_refuses_a_damaged_recording(tmp_path):
    session = tmp_path / "session"
    session.mkdir()
    (session / "meta.json").write_text(json.dumps({"format": "parley-session", "mode": "file", "profile": "lite"}))
    path = session / "mic_raw.wav"
    patched(path, 40, "<I", 10)
    proc = run_parley("replay", str(session), "--output", str(tmp_path / "replayed"), timeout=120)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, path, ["header", "damaged"])


def test_a_non_audio_freeze_omni_voice_is_one_line(tmp_path):
    """``--voice FILE`` of the Freeze-Omni profile is a reference recording; a file that is not audio is named."""
    from _shared import default_fixture

    fixture = default_fixture()
    wav = tmp_path / "question.wav"
    sf.write(str(wav), speechlike(), RATE)
    voice = tmp_path / "voice.wav"
    voice.write_bytes(b"\x00\x01garbage" * 100)
    proc = run_parley("reply", "--profile", "freeze-omni", "--checkpoint", str(fixture / "checkpoints"),
                      "--llm", str(fixture / "llm"), "--input", str(wav), "--output", str(tmp_path / "out.wav"),
                      "--voice", str(voice), timeout=300)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr.strip().splitlines()[-1], voice, ["not an audio file"])
    assert "internal error" not in proc.stderr


# ------------------------------------------------------------------------------------------- the live path


def test_the_capture_chain_never_passes_non_finite_samples_on():
    """A driver that delivers NaN/Inf: the chunks the engine gets (and the VAD) hold only finite numbers."""
    from core.audio.chain import CaptureChain
    from core.constants import CHUNK_SAMPLES_16K

    chunks = []
    chain = CaptureChain(on_chunk=chunks.append)
    mic = np.tile(speechlike(0.5), 2)
    mic[100:400] = np.nan
    mic[5000:5100] = np.inf
    mic[9000:9050] = -np.inf
    mic = mic[:len(mic) // CHUNK_SAMPLES_16K * CHUNK_SAMPLES_16K]
    ref = np.zeros_like(mic)
    ref[2000:2100] = np.nan
    chain.process(mic, ref)
    assert chunks
    for c in chunks:
        for arr in (c.samples_16k, c.raw_16k, c.reference_16k, c.vad_probs):
            assert np.isfinite(arr).all()
        assert np.isfinite(c.speech_prob)
    levels = chain.levels()
    assert all(np.isfinite(v) for v in (levels.mic_rms_db, levels.clean_rms_db, levels.speech_prob))


def test_the_app_voice_from_a_recording_refuses_a_damaged_file(tmp_path):
    """Settings -> derive a Freeze-Omni voice from a recording: the same checks, as the ValueError the dialog shows."""
    from _shared import default_fixture
    from core.settings.voices import derive_freeze_omni_voice

    path = tmp_path / "reference.wav"
    x = speechlike(3.0)
    x[5000:5100] = np.nan
    sf.write(str(path), x, RATE, subtype="FLOAT")
    with pytest.raises(ValueError) as exc:
        derive_freeze_omni_voice(path, default_fixture() / "checkpoints")
    one_line(str(exc.value), path, ["NaN"])
