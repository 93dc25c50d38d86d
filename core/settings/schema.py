"""The settings schema: plain dataclasses, one section per concern, each field validated on load.

``Settings.from_dict`` never raises on bad input: every unknown key or invalid value is dropped (the default is
kept) and described in the returned warning list, so the app always starts. ``Settings.validate`` returns the
problems of a settings object built in the UI, as messages that can be shown to the user as they are.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

PROFILES = ("lite", "freeze-omni")
PRECISIONS = ("fp32", "bf16", "fp16", "8-bit", "4-bit")
QUANTIZED = ("8-bit", "4-bit")
DEFAULT_FREEZE_OMNI_VOICE = "release"
# The release codec fixes these 8 global tokens, so Freeze-Omni always speaks in this voice (docs/freeze-omni.md,
# "Voice (global tokens) and the codec encoder").
RELEASE_GLOBAL_TOKENS = (473, 975, 419, 219, 565, 121, 550, 616)
GLOBAL_TOKEN_COUNT = 8
GLOBAL_TOKEN_VOCAB = 1024

DEFAULT_SYSTEM_PROMPT = (
    # the Lite profile's measured prompt (docs/lite.md, "Sampling"): a persona with a name and "conversationally"
    # made SmolLM2-135M answer questions about Italy or Germany in Italian or German
    "You are a helpful AI assistant. Keep your answers short: one or two sentences, no lists."
)
# The longest system prompt Parley takes anywhere (settings, --system-prompt): about 4000 tokens of English, a long
# persona. Each model also bounds it by its context (at most half of it: core.engine.backend.check_prompt_tokens).
SYSTEM_PROMPT_MAX_CHARS = 16_000


VOICE_SPEED_RANGE = (0.5, 2.0)


def machine_has_cuda() -> bool:
    """Whether this machine can run CUDA, without importing torch for it: torch's own answer when torch is already
    loaded, else whether an NVIDIA driver exposes a GPU (Linux)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            return bool(torch.cuda.is_available())
        except Exception:  # noqa: BLE001 - a broken CUDA install is no GPU
            return False
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return Path("/dev/nvidia0").exists() or (gpus.is_dir() and any(gpus.iterdir()))
    except OSError:
        return False


def default_device() -> str:
    """The Freeze-Omni device a new settings file gets: the GPU when the machine has one, else the CPU."""
    return "cuda" if machine_has_cuda() else "cpu"


def _is_device(value: str) -> bool:
    if value == "cpu" or value == "cuda":
        return True
    if value.startswith("cuda:"):
        return value[5:].isdigit()
    return False


# ---------------------------------------------------------------------------------------------------------------
# Field checks. Each returns None when the value is fine, else a message naming what is wrong.


def _check_choice(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(choices)} (got {value!r})"
        return None

    return check


def _check_range(lo: float, hi: float, integer: bool = False) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number (got {value!r})"
        if integer and not float(value).is_integer():
            return f"must be a whole number (got {value!r})"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number (got {value!r})"
        if not lo <= value <= hi:
            return f"must be between {lo:g} and {hi:g} (got {value:g})"
        return None

    return check


def _check_str(value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be text (got {type(value).__name__})"


def _check_text(max_chars: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, str):
            return f"must be text (got {type(value).__name__})"
        if len(value) > max_chars:
            return f"is {len(value)} characters long; at most {max_chars} are allowed"
        return None

    return check


def _check_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false (got {value!r})"


def _check_device(value: Any) -> str | None:
    if not isinstance(value, str) or not _is_device(value):
        return f"must be cpu, cuda or cuda:N (got {value!r})"
    return None


def _check_voices(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a mapping of voice name to 8 global tokens"
    for name, tokens in value.items():
        if not isinstance(name, str) or not name.strip():
            return "voice names must be non-empty text"
        problem = check_global_tokens(tokens)
        if problem:
            return f"voice {name!r}: {problem}"
    return None


def _check_load_seconds(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a mapping of profile name to seconds"
    for name, seconds in value.items():
        if name not in PROFILES:
            return f"unknown profile {name!r}"
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < 86_400:
            return f"{name}: seconds must be a positive number (got {seconds!r})"
    return None


def check_global_tokens(tokens: Any) -> str | None:
    """A Freeze-Omni voice is the codec's global tokens: 8 integers in [0, 1024) for the release codec (other codec
    configurations have another count; the backend checks the count against the loaded codec)."""
    if not isinstance(tokens, (list, tuple)) or not 1 <= len(tokens) <= 4 * GLOBAL_TOKEN_COUNT:
        return f"needs {GLOBAL_TOKEN_COUNT} global tokens (the release codec)"
    for tok in tokens:
        if isinstance(tok, bool) or not isinstance(tok, int) or not 0 <= tok < GLOBAL_TOKEN_VOCAB:
            return f"global tokens must be whole numbers from 0 to {GLOBAL_TOKEN_VOCAB - 1} (got {tok!r})"
    return None


def _meta(check: Callable[[Any], str | None], label: str) -> dict[str, Any]:
    return {"check": check, "label": label}


# ---------------------------------------------------------------------------------------------------------------
# Sections


@dataclass
class AudioSettings:
    input_device: str = field(default="", metadata=_meta(_check_str, "input device"))    # by name; "" = default
    output_device: str = field(default="", metadata=_meta(_check_str, "output device"))  # by name; "" = default
    aec: bool = field(default=True, metadata=_meta(_check_bool, "echo cancellation"))
    noise_suppression: bool = field(default=False, metadata=_meta(_check_bool, "noise suppression"))
    # A soft half-second sound when the audio opens: Parley listens, and the echo cancellers learn the room before
    # the first answer (core.audio.ready_sound).
    ready_sound: bool = field(default=True, metadata=_meta(_check_bool, "ready sound"))


@dataclass
class VadSettings:
    # Speech probability needed to open a user turn while the assistant is silent / while it is speaking (barge-in
    # must be surer, since the echo canceller leaves residue).
    onset_threshold: float = field(default=0.5, metadata=_meta(_check_range(0.05, 0.99), "speech onset threshold"))
    barge_in_threshold: float = field(default=0.8,
                                      metadata=_meta(_check_range(0.05, 0.99), "barge-in threshold"))
    offset_threshold: float = field(default=0.35, metadata=_meta(_check_range(0.01, 0.99), "speech offset threshold"))
    min_speech_ms: int = field(default=250, metadata=_meta(_check_range(0, 2000, True), "minimum speech (ms)"))
    end_of_turn_silence_ms: int = field(
        default=800, metadata=_meta(_check_range(100, 5000, True), "end-of-turn silence (ms)"))


@dataclass
class SamplingSettings:
    # temperature / top-k / top-p / repetition penalty drive the Lite chat model (Freeze-Omni samples with its own
    # server settings). Temperature 0 (= greedy) was measured best for Lite's small models: SmolLM2-135M answered
    # 24/30 factual questions greedy, 22.7 at 0.2, 22.3 at 0.3, 21.3 at 0.5 (docs/lite.md, "Sampling").
    temperature: float = field(default=0.0, metadata=_meta(_check_range(0.0, 2.0), "temperature"))
    top_k: int = field(default=20, metadata=_meta(_check_range(0, 1000, True), "top-k"))
    top_p: float = field(default=0.8, metadata=_meta(_check_range(0.01, 1.0), "top-p"))
    repetition_penalty: float = field(default=1.1, metadata=_meta(_check_range(1.0, 2.0), "repetition penalty"))
    max_new_tokens: int = field(default=256, metadata=_meta(_check_range(8, 4096, True), "maximum answer tokens"))
    greedy: bool = field(default=False, metadata=_meta(_check_bool, "greedy decoding"))
    decoder_top_k: int = field(default=2, metadata=_meta(_check_range(1, 1024, True), "speech decoder top-k"))


@dataclass
class ModelSettings:
    profile: str = field(default="lite", metadata=_meta(_check_choice(PROFILES), "profile"))
    # Freeze-Omni: folder with checkpoints/{audiollm,decoder,codec} (or that checkpoints folder itself).
    checkpoint_dir: str = field(default="", metadata=_meta(_check_str, "Freeze-Omni checkpoint folder"))
    # Freeze-Omni backbone LLM folder (Hugging Face layout): Qwen2-7B-Instruct.
    backbone_dir: str = field(default="", metadata=_meta(_check_str, "backbone folder"))
    # Lite chat model: a Hugging Face folder or a .gguf file; "" = the bundled SmolLM2-135M-Instruct.
    lite_backbone: str = field(default="", metadata=_meta(_check_str, "Lite chat model"))
    precision: str = field(default="bf16", metadata=_meta(_check_choice(PRECISIONS), "precision"))
    device: str = field(default_factory=default_device, metadata=_meta(_check_device, "device"))
    lite_device: str = field(default="cpu", metadata=_meta(_check_device, "Lite device"))
    # Freeze-Omni voices: name -> 8 codec global tokens. "release" is the official voice.
    voices: dict[str, list[int]] = field(
        default_factory=lambda: {DEFAULT_FREEZE_OMNI_VOICE: list(RELEASE_GLOBAL_TOKENS)},
        metadata=_meta(_check_voices, "Freeze-Omni voices"))
    voice: str = field(default=DEFAULT_FREEZE_OMNI_VOICE, metadata=_meta(_check_str, "Freeze-Omni voice"))
    lite_voice: str = field(default="", metadata=_meta(_check_str, "Lite voice"))  # Piper .onnx; "" = bundled
    # Speaking rate of the Lite voice: 1.0 as the voice was trained, 2.0 twice as fast (Piper's length_scale is
    # divided by it).
    voice_speed: float = field(default=1.0, metadata=_meta(_check_range(*VOICE_SPEED_RANGE), "voice speed"))
    # Lite speech recognition: an English-only Whisper folder (HF format); "" = the best installed upgrade, else
    # the bundled tiny.en. (lite_backbone "" likewise means the best installed chat-model upgrade first.)
    lite_asr: str = field(default="", metadata=_meta(_check_str, "Lite speech recognition"))


@dataclass
class PersonaSettings:
    name: str = field(default="Parley", metadata=_meta(_check_str, "persona name"))
    system_prompt: str = field(default=DEFAULT_SYSTEM_PROMPT,
                               metadata=_meta(_check_text(SYSTEM_PROMPT_MAX_CHARS), "system prompt"))


@dataclass
class RecordingSettings:
    enabled: bool = field(default=False, metadata=_meta(_check_bool, "recording"))
    folder: str = field(default="", metadata=_meta(_check_str, "recording folder"))  # "" = <user data>/sessions
    retention_days: int = field(default=30, metadata=_meta(_check_range(0, 3650, True), "retention (days)"))


@dataclass
class HistorySettings:
    """Finished conversations kept on disk (core/history.py): text only, owner-only files."""

    keep: bool = field(default=True, metadata=_meta(_check_bool, "keep conversation history"))
    max_conversations: int = field(default=100, metadata=_meta(_check_range(1, 100_000, True),
                                                                "conversations kept"))
    max_days: int = field(default=90, metadata=_meta(_check_range(0, 3650, True), "history days"))  # 0 = no limit


@dataclass
class UiSettings:
    geometry: str = field(default="", metadata=_meta(_check_str, "window geometry"))  # base64 of saveGeometry()
    splitter: str = field(default="", metadata=_meta(_check_str, "panel sizes"))
    push_to_talk: bool = field(default=False, metadata=_meta(_check_bool, "push-to-talk"))
    last_profile: str = field(default="", metadata=_meta(_check_str, "last profile"))  # last one that loaded
    first_run_done: bool = field(default=False, metadata=_meta(_check_bool, "first run done"))
    chart_seconds: float = field(default=10.0, metadata=_meta(_check_range(2.0, 60.0), "chart seconds"))
    engineering_panel: bool = field(default=False, metadata=_meta(_check_bool, "engineering details panel"))
    # how long each profile took to load last time (seconds): the loading progress bar's estimate
    load_seconds: dict[str, float] = field(default_factory=dict,
                                           metadata=_meta(_check_load_seconds, "load times"))
    # Debug: the log file may hold what the user and the assistant said (core.log.speech); off, it holds lengths only.
    log_speech: bool = field(default=False, metadata=_meta(_check_bool, "log what was said"))


_SECTIONS: dict[str, type] = {
    "audio": AudioSettings,
    "vad": VadSettings,
    "sampling": SamplingSettings,
    "model": ModelSettings,
    "persona": PersonaSettings,
    "recording": RecordingSettings,
    "history": HistorySettings,
    "ui": UiSettings,
}


@dataclass
class Settings:
    audio: AudioSettings = field(default_factory=AudioSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    persona: PersonaSettings = field(default_factory=PersonaSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    ui: UiSettings = field(default_factory=UiSettings)

    # -- conversion -------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": SCHEMA_VERSION}
        for name in _SECTIONS:
            out[name] = copy.deepcopy(dataclasses.asdict(getattr(self, name)))
        return out

    @classmethod
    def from_dict(cls, data: Any) -> tuple["Settings", list[str]]:
        """Build settings from parsed JSON. Returns (settings, warnings); bad parts keep their defaults."""
        warnings: list[str] = []
        settings = cls()
        if not isinstance(data, dict):
            return settings, [f"settings must be a JSON object (got {type(data).__name__}); using defaults"]
        version = data.get("version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            warnings.append(f"settings version {version!r} is not {SCHEMA_VERSION}; reading what still fits")
        for key, value in data.items():
            if key == "version":
                continue
            section_type = _SECTIONS.get(key)
            if section_type is None:
                warnings.append(f"unknown setting {key!r} ignored")
                continue
            if not isinstance(value, dict):
                warnings.append(f"setting section {key!r} must be an object; using defaults for it")
                continue
            section = getattr(settings, key)
            fields = {f.name: f for f in dataclasses.fields(section_type)}
            for fname, fvalue in value.items():
                f = fields.get(fname)
                if f is None:
                    warnings.append(f"unknown setting {key}.{fname} ignored")
                    continue
                fvalue = _coerce(f, fvalue)
                problem = f.metadata["check"](fvalue)
                if problem:
                    warnings.append(f"setting {key}.{fname} {problem}; using the default")
                    continue
                setattr(section, fname, copy.deepcopy(fvalue))
        # Cross-field consistency: a voice that is not in the library falls back to the release voice.
        if settings.model.voice not in settings.model.voices:
            if settings.model.voice:
                warnings.append(f"voice {settings.model.voice!r} is not in the voice library; using the default")
            settings.model.voice = next(iter(settings.model.voices), DEFAULT_FREEZE_OMNI_VOICE)
            if settings.model.voice not in settings.model.voices:
                settings.model.voices[DEFAULT_FREEZE_OMNI_VOICE] = list(RELEASE_GLOBAL_TOKENS)
        return settings, warnings

    def copy(self) -> "Settings":
        return copy.deepcopy(self)

    # -- validation for values entered in the UI -------------------------------------------------------------

    def validate(self, check_paths: bool = True) -> list[str]:
        """Every problem that makes these settings unusable, as user-facing messages (empty list: fine)."""
        problems: list[str] = []
        for name, section_type in _SECTIONS.items():
            section = getattr(self, name)
            for f in dataclasses.fields(section_type):
                problem = f.metadata["check"](getattr(section, f.name))
                if problem:
                    problems.append(f"{f.metadata['label'].capitalize()} {problem}.")
        m = self.model
        if m.voice not in m.voices:
            problems.append(f"Freeze-Omni voice {m.voice!r} is not in the voice library.")
        if m.precision in QUANTIZED and not m.device.startswith("cuda"):
            problems.append(f"{m.precision} precision needs a CUDA GPU; choose bf16/fp16/fp32 for the CPU.")
        if m.precision == "fp16" and m.device == "cpu":
            problems.append("fp16 is too slow and inaccurate on the CPU; choose bf16 or fp32.")
        if self.vad.offset_threshold >= self.vad.onset_threshold:
            problems.append("The speech offset threshold must be lower than the onset threshold.")
        if check_paths:
            problems.extend(check_model_paths(m))
            if self.recording.enabled and self.recording.folder:
                folder = Path(self.recording.folder).expanduser()
                if folder.exists() and not folder.is_dir():
                    problems.append(f"Recording folder {folder} is a file, not a folder.")
        return problems


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Lenient JSON coercions: an int where a float is expected, an integral float where an int is expected."""
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) \
            and value.is_integer():
        return int(value)
    return value


# ---------------------------------------------------------------------------------------------------------------
# Model folders


def resolve_checkpoint_dir(folder: str | Path) -> Path:
    """The folder that holds audiollm/, decoder/, codec/: either ``folder`` or ``folder/checkpoints``."""
    p = Path(folder).expanduser()
    if (p / "checkpoints" / "audiollm").is_dir() and not (p / "audiollm").is_dir():
        return p / "checkpoints"
    return p


FREEZE_OMNI_REQUIRED = (
    "audiollm/train.yaml", "audiollm/global_cmvn", "audiollm/final.pt",
    "decoder/model.json", "decoder/final.pt",
    "codec/model.json", "codec/final.pt",
)


def check_backbone_dir(folder: str | Path, what: str = "Backbone folder") -> list[str]:
    p = Path(folder).expanduser()
    if not p.exists():
        return [f"{what} {p} does not exist."]
    if not p.is_dir():
        return [f"{what} {p} is not a folder."]
    if not (p / "config.json").is_file():
        return [f"{what} {p} has no config.json: it is not a Hugging Face model folder "
                "(expected e.g. Qwen2-7B-Instruct with config.json, tokenizer and *.safetensors)."]
    weights = list(p.glob("*.safetensors")) + list(p.glob("*.bin")) + list(p.glob("*.gguf"))
    if not weights:
        return [f"{what} {p} has config.json but no weights (*.safetensors, *.bin or *.gguf)."]
    return []


def check_freeze_omni_checkpoints(folder: str | Path) -> list[str]:
    if not str(folder).strip():
        return ["Freeze-Omni needs its checkpoint folder (with audiollm/, decoder/, codec/): set it in Settings "
                "or download it in the Model manager."]
    p = resolve_checkpoint_dir(folder)
    if not p.is_dir():
        return [f"Freeze-Omni checkpoint folder {p} does not exist."]
    missing = [rel for rel in FREEZE_OMNI_REQUIRED if not (p / rel).is_file()]
    if missing:
        return [f"Freeze-Omni checkpoint folder {p} lacks {', '.join(missing)}."]
    return []


def check_model_paths(m: ModelSettings) -> list[str]:
    problems: list[str] = []
    if m.profile == "freeze-omni":
        problems.extend(check_freeze_omni_checkpoints(m.checkpoint_dir))
        if not m.backbone_dir.strip():
            problems.append("Freeze-Omni needs a backbone folder (Qwen2-7B-Instruct): set it in Settings or "
                            "download it in the Model manager.")
        else:
            problems.extend(check_backbone_dir(m.backbone_dir))
    else:
        if m.lite_backbone.strip():
            lb = Path(m.lite_backbone).expanduser()
            if not (lb.is_file() and lb.suffix == ".gguf"):
                problems.extend(check_backbone_dir(lb, "Lite chat model"))
        if m.lite_asr.strip():
            problems.extend(check_backbone_dir(m.lite_asr, "Lite speech recognition model"))
        if m.lite_voice.strip():
            v = Path(m.lite_voice).expanduser()
            if not v.is_file() or v.suffix != ".onnx":
                problems.append(f"Lite voice {v} is not a Piper .onnx voice file.")
            elif not Path(str(v) + ".json").is_file():
                problems.append(f"Lite voice {v} has no {v.name}.json next to it (Piper needs both).")
    return problems
