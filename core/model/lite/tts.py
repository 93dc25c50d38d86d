"""Piper voices (VITS exported to ONNX) for the Lite profile, phonemised with espeak-ng.

A voice is a ``.onnx`` file with its ``.onnx.json`` config beside it. Text -> espeak-ng IPA (the system
``espeak-ng`` program, ``--ipa``, one call per punctuation-delimited piece so the piece's punctuation can be put
back: Piper voices were trained with it) -> ids through the config's ``phoneme_id_map`` following Piper's
conventions (``^`` first, ``$`` last, ``_`` padding after every phoneme, one id list per Unicode code point,
unknown symbols dropped) -> the ONNX model with the config's ``noise_scale``, ``length_scale`` (divided by the
voice's ``speed``: 2.0 speaks twice as fast) and ``noise_w`` -> float32 audio at the config's ``sample_rate``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.model.lite.errors import LiteError
from core.model.lite import weights

log = logging.getLogger(__name__)

ESPEAK_ENV = "PARLEY_ESPEAK"
ESPEAK_INSTALL_HINT = ("install espeak-ng (Debian/Ubuntu: apt-get install espeak-ng; Fedora: dnf install espeak-ng; "
                       "macOS: brew install espeak-ng; Windows: the espeak-ng .msi, then add it to PATH) or point "
                       f"{ESPEAK_ENV} at the espeak-ng program")
_PIECE = re.compile(r"([^,;:.!?]+)([,;:.!?]*)")


def find_espeak(explicit: str | os.PathLike | None = None) -> str:
    candidate = str(explicit) if explicit else os.environ.get(ESPEAK_ENV) or "espeak-ng"
    found = shutil.which(candidate)
    if not found:
        raise LiteError(f"the espeak-ng program ('{candidate}') was not found; the Lite voice needs it: "
                           f"{ESPEAK_INSTALL_HINT}")
    return found


class EspeakPhonemizer:
    """Text -> IPA with punctuation, through the espeak-ng program."""

    def __init__(self, voice: str = "en-us", binary: str | os.PathLike | None = None, timeout_s: float = 10.0):
        self.binary = find_espeak(binary)
        self.voice = voice
        self.timeout_s = timeout_s

    def _ipa(self, text: str) -> str:
        try:
            out = subprocess.run([self.binary, "-q", "--ipa", "-v", self.voice, "--stdin"], input=text.encode(),
                                 capture_output=True, timeout=self.timeout_s, check=True)
        except FileNotFoundError:
            raise LiteError(f"espeak-ng disappeared ({self.binary}): {ESPEAK_INSTALL_HINT}") from None
        except subprocess.CalledProcessError as exc:
            raise LiteError(f"espeak-ng failed ({exc.stderr.decode(errors='replace').strip()}); is the voice "
                               f"'{self.voice}' installed?") from None
        except subprocess.TimeoutExpired:
            raise LiteError("espeak-ng did not answer in time") from None
        lines = [ln.strip() for ln in out.stdout.decode("utf-8", errors="replace").splitlines()]
        return " ".join(ln for ln in lines if ln)

    def phonemize(self, text: str) -> str:
        """IPA of ``text`` with its punctuation kept (``,`` ``.`` ``?``... after the piece they end)."""
        parts = []
        for m in _PIECE.finditer(text):
            words, punct = m.group(1).strip(), m.group(2)
            if not words:
                continue
            ipa = self._ipa(words)
            if ipa:
                parts.append(ipa + (punct[0] if punct else ""))
        return " ".join(parts)


BOS, EOS, PAD = "^", "$", "_"


def phoneme_ids(phonemes: str, idmap: dict[str, list[int]]) -> list[int]:
    """Piper's id sequence: ``^ _ p1 _ p2 _ ... pn _ $`` (one entry per code point; unknown symbols dropped)."""
    pad = idmap.get(PAD, [0])
    ids = list(idmap.get(BOS, [])) + list(pad)
    missing = set()
    for ch in phonemes:
        if ch in idmap:
            ids += idmap[ch] + pad
            continue
        # A precomposed symbol the voice only knows as base + combining mark(s).
        parts = unicodedata.normalize("NFD", ch)
        if len(parts) > 1 and all(p in idmap for p in parts):
            for p in parts:
                ids += idmap[p] + pad
        else:
            missing.add(ch)
    ids += idmap.get(EOS, [])
    if missing:
        log.debug("phonemes without an id (dropped): %s", "".join(sorted(missing)))
    return ids


@dataclass
class VoiceConfig:
    sample_rate: int
    phoneme_id_map: dict[str, list[int]]
    espeak_voice: str
    noise_scale: float
    length_scale: float
    noise_w: float
    num_speakers: int
    num_symbols: int = 0   # size of the model's phoneme table when the config says (0: unknown)

    @classmethod
    def load(cls, path: Path) -> "VoiceConfig":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            inference = data.get("inference", {})
            if data.get("phoneme_type", "espeak") != "espeak":
                raise ValueError(f"phoneme_type {data.get('phoneme_type')!r} is not supported (espeak only)")
            return cls(
                sample_rate=int(data["audio"]["sample_rate"]),
                phoneme_id_map={k: [int(i) for i in v] for k, v in data["phoneme_id_map"].items()},
                espeak_voice=str(data.get("espeak", {}).get("voice", "en-us")),
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
                num_speakers=int(data.get("num_speakers", 1)),
                num_symbols=int(data.get("num_symbols", 0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LiteError(f"voice config {path} is not a usable Piper config: {exc}") from None


# What a Piper voice may ask for. Piper's own voices use length_scale ~1, noise_scale ~0.667, noise_w ~0.8 and
# 16-22.05 kHz; length_scale 200 made one answer 8 GB of audio and took minutes.
VOICE_LIMITS = {"length_scale": (0.1, 5.0), "noise_scale": (0.0, 2.0), "noise_w": (0.0, 2.0)}
VOICE_RATES = (8_000, 48_000)
PIPER_INPUTS = {"input": "tensor(int64)", "input_lengths": "tensor(int64)", "scales": "tensor(float)"}
PIPER_OPTIONAL_INPUTS = {"sid": "tensor(int64)"}


def check_piper_voice(config: VoiceConfig, config_path: Path, session, onnx_path: Path) -> None:
    """Refuse a voice that cannot speak sensibly, in one line naming the file: inference values out of range, a
    phoneme map with nothing to say, or an ONNX model whose inputs and outputs are not Piper's."""
    problem = None
    for key, (lo, hi) in VOICE_LIMITS.items():
        value = getattr(config, key)
        if not lo <= value <= hi and problem is None:  # NaN fails too
            problem = f"inference.{key} is {value:g}; a Piper voice needs {lo:g} to {hi:g}"
    if problem is None and not VOICE_RATES[0] <= config.sample_rate <= VOICE_RATES[1]:
        problem = f"audio.sample_rate is {config.sample_rate}; expected {VOICE_RATES[0]} to {VOICE_RATES[1]} Hz"
    idmap = config.phoneme_id_map
    if problem is None and not any(ids for symbol, ids in idmap.items() if symbol not in (BOS, EOS, PAD, " ")):
        problem = "phoneme_id_map has no phonemes (the voice would only ever say nothing)"
    limit = config.num_symbols
    for symbol, ids in idmap.items():
        bad = [i for i in ids if i < 0 or (limit and i >= limit)]
        if bad and problem is None:
            problem = (f"phoneme_id_map[{symbol!r}] holds the id {bad[0]}; ids must be "
                       + (f"0 to {limit - 1} (num_symbols {limit})" if limit else "0 or more"))
    if problem:
        raise LiteError(f"voice config {config_path}: {problem}")
    inputs = {i.name: i.type for i in session.get_inputs()}
    expected = {**PIPER_INPUTS, **{k: v for k, v in PIPER_OPTIONAL_INPUTS.items() if k in inputs}}
    outputs = session.get_outputs()
    if inputs != expected or not outputs or outputs[0].type != "tensor(float)":
        got = ", ".join(f"{k} {v}" for k, v in inputs.items()) or "none"
        raise LiteError(f"voice model {onnx_path} is not a Piper voice (inputs: {got}; a Piper voice takes "
                           "input, input_lengths and scales and returns float audio)")


class PiperVoice:
    def __init__(self, onnx_path: str | os.PathLike | None = None, config_path: str | os.PathLike | None = None,
                 espeak: str | os.PathLike | None = None, packages_dir: str | os.PathLike | None = None,
                 speaker_id: int = 0, sentence_pause_s: float = 0.12, speed: float = 1.0) -> None:
        import onnxruntime as ort

        if onnx_path is None:
            onnx_path = weights.weight_file(weights.PIPER_JOE, packages_dir)
        self.onnx_path = Path(onnx_path)
        self.config_path = Path(config_path) if config_path else Path(str(self.onnx_path) + ".json")
        if not self.onnx_path.is_file():
            raise LiteError(f"voice file {self.onnx_path} not found (a Piper voice is a .onnx file with its "
                               ".onnx.json beside it)")
        if not self.config_path.is_file():
            raise LiteError(f"voice config {self.config_path} not found (expected beside the .onnx file)")
        self.config = VoiceConfig.load(self.config_path)
        self.sample_rate = self.config.sample_rate
        self.speaker_id = speaker_id
        self.sentence_pause_s = sentence_pause_s
        self.speed = speed          # speaking rate; may be changed between two synthesize() calls
        self.phonemizer = EspeakPhonemizer(self.config.espeak_voice, espeak)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise LiteError(f"cannot load the voice {self.onnx_path}: {exc}") from None
        check_piper_voice(self.config, self.config_path, self.session, self.onnx_path)
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._lock = threading.Lock()

    def phoneme_ids(self, phonemes: str) -> list[int]:
        return phoneme_ids(phonemes, self.config.phoneme_id_map)

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        value = float(value)
        if not 0.1 <= value <= 10.0:
            raise ValueError(f"voice speed must be between 0.1 and 10 (got {value:g})")
        self._speed = value

    @property
    def length_scale(self) -> float:
        """Piper's duration factor: the voice's own, divided by the speed (2.0 speaks twice as fast)."""
        return self.config.length_scale / self._speed

    def synthesize(self, text: str) -> np.ndarray:
        """float32 mono audio at ``sample_rate`` (empty for text with nothing to say)."""
        phonemes = self.phonemizer.phonemize(text)
        if not phonemes.strip():
            return np.zeros(0, dtype=np.float32)
        ids = self.phoneme_ids(phonemes)
        feeds = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([self.config.noise_scale, self.length_scale, self.config.noise_w],
                               dtype=np.float32),
        }
        if "sid" in self._inputs:
            feeds["sid"] = np.array([self.speaker_id], dtype=np.int64)
        with self._lock:
            audio = self.session.run(None, feeds)[0]
        audio = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if text.rstrip().endswith((".", "?", "!")) and self.sentence_pause_s > 0:
            audio = np.concatenate([audio, np.zeros(int(self.sentence_pause_s * self.sample_rate), np.float32)])
        return audio
