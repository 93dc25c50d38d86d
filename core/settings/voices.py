"""Voices: Freeze-Omni named sets of codec global tokens (one can be derived from a reference recording), and
Piper .onnx voice files for Lite."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core.settings.schema import resolve_checkpoint_dir

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
