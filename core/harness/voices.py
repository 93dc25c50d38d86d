"""Speech for scripted users: espeak-ng (through :func:`core.audio.testsignals.speech`) at 16 kHz float32.

espeak-ng is a system program (``apt-get install espeak-ng``). Its voices are named ``LANGUAGE[+VARIANT]``:
``en-us``, ``en-gb``, ``en-gb-x-rp``, ``en-gb-scotland``, ``en-us-nyc``, ``en-029``, with a variant such as ``+f3``
(a female voice), ``+m3``, ``+klatt``, ``+croak`` (``espeak-ng --voices`` and ``espeak-ng --voices=variant`` list
them). The audio is resampled to 16 kHz, its leading and trailing silence cut, and scaled to a given RMS.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import numpy as np

from core.audio.levels import rms_dbfs
from core.constants import MODEL_INPUT_RATE


class SpeechError(RuntimeError):
    """espeak-ng is missing or refused the text/voice (the message says which)."""


def espeak_path() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng)")
    return exe


@functools.lru_cache(maxsize=1)
def available_voices() -> frozenset[str]:
    """The language voices espeak-ng knows (without variants), with their aliases ("en" for "en-gb", ...).
    espeak-ng itself quietly falls back to a default voice for a name it does not know, hence this list."""
    out = subprocess.run([espeak_path(), "--voices"], capture_output=True, text=True, timeout=30, check=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1:
            names.add(fields[1].lower())
            names.update(alias.lower() for alias in re.findall(r"\(([^\s()]+) \d+\)", line))
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def available_variants() -> frozenset[str]:
    """The voice variants (the part after ``+``), by file name, lower case: ``f3``, ``m3``, ``klatt``, ..."""
    out = subprocess.run([espeak_path(), "--voices=variant"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    names = set()
    for line in out.splitlines()[1:]:
        for field in line.split():
            if field.startswith("!v/"):
                names.add(field[3:].lower())
    return frozenset(names)


def check_voice(voice: str) -> None:
    """Raise :class:`SpeechError` naming the problem when espeak-ng does not have ``voice``."""
    language, _, variant = voice.partition("+")
    if language.lower() not in available_voices():
        raise SpeechError(f"espeak-ng has no voice {language!r} (espeak-ng --voices lists them)")
    if variant and variant.lower() not in available_variants():
        raise SpeechError(f"espeak-ng has no voice variant {variant!r} (espeak-ng --voices=variant lists them)")


def render(text: str, voice: str = "en-us", speed: int = 160, level_dbfs: float | None = None) -> np.ndarray:
    """``text`` spoken by espeak-ng (``speed`` in words per minute) as 16 kHz mono float32, leading and trailing
    silence cut, scaled to RMS ``level_dbfs`` when given. Raises :class:`SpeechError` with a one-line reason."""
    from core.audio.testsignals import speech

    check_voice(voice)
    try:
        audio, _ = speech(text, voice=voice, wpm=int(speed), rate=MODEL_INPUT_RATE, peak=0)
    except subprocess.SubprocessError as exc:
        raise SpeechError(f"espeak-ng failed on {text!r} with voice {voice!r}: {exc}") from None
    audio = np.asarray(audio, dtype=np.float32)
    loud = np.flatnonzero(np.abs(audio) > 2e-3)
    if len(loud) == 0:
        raise SpeechError(f"espeak-ng produced no sound for {text!r}")
    audio = audio[loud[0]:loud[-1] + 1]
    if level_dbfs is not None:
        audio = audio * 10 ** ((level_dbfs - rms_dbfs(audio)) / 20)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)
