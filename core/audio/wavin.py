"""Reading audio files Parley is given: validated first, then mixed to mono and resampled.

Every reader of a user's or a session's audio file goes through here (``parley chat`` / ``parley reply`` inputs,
``parley replay`` sources, Freeze-Omni reference voices), so a damaged or hand-made file gets one line saying what is
wrong with it instead of gigabytes of resampling, silence or a model fed with NaN. Checked before any sample is read:

* the sample rate is between :data:`MIN_RATE` and :data:`MAX_RATE` (a header claiming 1 Hz would make the 16 kHz
  resampler produce 16 000 samples for every one in the file);
* there are at most :data:`MAX_CHANNELS` channels (a header claiming 1000 channels turns a file into a few frames
  of "silence");
* in a WAV file, what follows the data chunk is made of RIFF chunks: a data size that claims less than the file holds
  (10 bytes of a 70 KB file) is a damaged header, not a 5-sample recording;
* the audio lasts at most :data:`MAX_INPUT_SECONDS` (one hour; longer inputs are refused, not truncated);

and after reading: every sample is a finite number (NaN or Inf would reach the model).

Mixing to mono averages the channels, unless they cancel out when averaged (a phase-inverted stereo microphone):
then the loudest channel is used alone and a warning says so.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import numpy as np

from core.constants import MODEL_INPUT_RATE
from core.errors import UserError

log = logging.getLogger(__name__)

MIN_RATE = 4_000            # Hz: below this no speech survives (telephone audio is 8 kHz)
MAX_RATE = 384_000          # Hz: the highest rate sound cards record at
MAX_CHANNELS = 32           # microphone arrays stay below this
MAX_INPUT_SECONDS = 3600.0  # one hour: the longest input a headless run or a replay reads
# The channels "cancel out" when their average has less than this fraction of the energy it would have if they were
# unrelated signals (a phase-inverted pair averages to nearly nothing; unrelated channels give 1, identical ones N).
CANCEL_RATIO = 0.1
SILENT_ENERGY = 1e-8        # mean square below -80 dBFS: nothing to choose between
_BLOCK = 1 << 18            # frames per block when scanning a whole file


class AudioFileError(UserError, ValueError):
    """An audio file Parley cannot use. The message is one line naming the file and what is wrong with it."""


def _describe(path: Path, what: str) -> str:
    return f"{what} {path}" if what else str(path)


def read_audio(path: str | Path, what: str = "audio file",
               max_seconds: float = MAX_INPUT_SECONDS) -> tuple[np.ndarray, int]:
    """The samples of ``path`` as float32 ``(frames, channels)`` and its rate, after the checks of the module
    docstring. Raises :class:`AudioFileError` (one line, naming ``what`` and the file)."""
    import soundfile as sf

    path = Path(path)
    name = _describe(path, what)
    if not path.is_file():
        raise AudioFileError(f"{what} not found: {path}" if not path.exists() else f"{name} is not a file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:  # type: ignore[attr-defined]
        raise AudioFileError(f"{name} is not an audio file Parley can read ({_reason(exc)})") from None
    rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioFileError(f"{name}: its header claims a sample rate of {rate} Hz; Parley reads "
                             f"{MIN_RATE // 1000}-{MAX_RATE // 1000} kHz audio (is the header damaged?)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioFileError(f"{name}: its header claims {channels} channels; Parley reads at most {MAX_CHANNELS} "
                             "(is the header damaged?)")
    if info.format in ("WAV", "WAVEX"):
        problem = _wav_data_problem(path)
        if problem:
            raise AudioFileError(f"{name}: {problem}")
    if frames <= 0:
        raise AudioFileError(f"{name} holds no audio")
    if frames > max_seconds * rate:
        raise AudioFileError(f"{name} is {frames / rate / 60:.1f} minutes long; Parley reads at most "
                             f"{max_seconds / 60:.0f} minutes")
    try:
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:  # type: ignore[attr-defined]
        raise AudioFileError(f"cannot read {name} ({_reason(exc)})") from None
    if not all(np.isfinite(data[i:i + _BLOCK]).all() for i in range(0, len(data), _BLOCK)):
        bad = sum(int(np.count_nonzero(~np.isfinite(data[i:i + _BLOCK]))) for i in range(0, len(data), _BLOCK))
        raise AudioFileError(f"{name} holds {bad} samples that are not numbers (NaN or infinite): it is damaged")
    if len(data) == 0:
        raise AudioFileError(f"{name} holds no audio")
    return data, rate


def to_mono(data: np.ndarray, name: str = "the audio") -> np.ndarray:
    """``(frames, channels)`` -> float32 mono: the average of the channels, or the loudest channel alone when the
    channels cancel out in the average (see the module docstring)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        return np.ascontiguousarray(data)
    if data.shape[1] == 1:
        return np.ascontiguousarray(data[:, 0])
    n, n_ch = data.shape
    mono = np.empty(n, dtype=np.float32)
    energy = np.zeros(n_ch, dtype=np.float64)
    mixed = 0.0
    for i in range(0, n, _BLOCK):   # in blocks: no float64 copy of an hour of audio
        block = data[i:i + _BLOCK]
        m = block.mean(axis=1, dtype=np.float64)
        mono[i:i + len(block)] = m
        energy += np.einsum("ij,ij->j", block, block, dtype=np.float64)
        mixed += float(np.dot(m, m))
    energy, mixed = energy / max(1, n), mixed / max(1, n)
    if energy.max() > SILENT_ENERGY and mixed < CANCEL_RATIO * energy.sum() / n_ch ** 2:
        best = int(np.argmax(energy))
        drop_db = 10 * np.log10(max(mixed, 1e-20) / energy[best])
        log.warning("%s: its %d channels cancel out when mixed (%.0f dB below channel %d: a phase-inverted "
                    "microphone?); using channel %d alone", name, n_ch, drop_db, best + 1, best + 1)
        return np.ascontiguousarray(data[:, best])
    return mono


def resample(mono: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 from ``rate`` to ``target`` (soxr, high quality); a copy-free pass when they are equal."""
    if rate == target or not len(mono):
        return np.ascontiguousarray(mono, dtype=np.float32)
    import soxr

    return np.ascontiguousarray(soxr.resample(mono, rate, target, quality="HQ"), dtype=np.float32)


def load_mono(path: str | Path, rate: int = MODEL_INPUT_RATE, what: str = "audio file",
              max_seconds: float = MAX_INPUT_SECONDS) -> np.ndarray:
    """Any audio file soundfile reads -> validated float32 mono at ``rate`` (16 kHz by default)."""
    data, file_rate = read_audio(path, what, max_seconds)
    return resample(to_mono(data, _describe(Path(path), what)), file_rate, rate)


def finite(samples: np.ndarray) -> np.ndarray:
    """``samples`` with NaN/Inf replaced by silence (the live capture path: a broken driver must not reach a
    model); the same array when all are finite."""
    if np.isfinite(samples).all():
        return samples
    return np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1].strip() if text else type(exc).__name__


def _wav_data_problem(path: Path) -> str | None:
    """Why the data chunk's size of a RIFF/WAVE file cannot be right, else None: the bytes after the data chunk must
    be further RIFF chunks (LIST, id3...), not more samples."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None   # RIFX, RF64...: libsndfile's own checks only
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, csize = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                start, end = pos + 8, pos + 8 + csize + (csize & 1)
                if end >= size - 1 or _are_chunks(f, end, size):
                    return None
                return (f"its header says the audio is {csize} bytes long but {size - start - csize} more bytes "
                        "follow that are not WAV chunks: the header is damaged (save the file again with an audio "
                        "editor, or run `parley session repair` on a recorded session)")
            if not _chunk_id_ok(cid):
                return None   # let libsndfile judge a file it could open
            pos += 8 + csize + (csize & 1)
    return None


def _chunk_id_ok(cid: bytes) -> bool:
    return all(0x20 <= b <= 0x7E for b in cid)


def _are_chunks(f, pos: int, size: int) -> bool:
    """Whether bytes ``pos..size`` of the open file are whole RIFF chunks (a few bytes of padding allowed)."""
    while pos + 8 <= size:
        f.seek(pos)
        cid, csize = struct.unpack("<4sI", f.read(8))
        if not _chunk_id_ok(cid) or pos + 8 + csize > size + 1:
            return False
        pos += 8 + csize + (csize & 1)
    return size - pos < 8
