"""What to load: :class:`ProfileSpec`, and the one translation into it from each place settings come from.

* the app's settings file (:class:`core.settings.Settings`): :func:`spec_from_settings`;
* a recorded session's ``meta.json`` ``settings`` (to replay it): :func:`spec_from_session`, which also reads the
  format of sessions recorded before this module existed;
* command-line flags: ``core.compose.commands`` fills a ProfileSpec directly.

A spec is plain data (``to_dict``/``from_dict``), so a session records exactly what it ran with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from core.errors import ConfigError
from core.settings import Settings

PROFILES = ("lite", "freeze-omni")
DTYPES = ("float32", "bfloat16", "float16")
_PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "8-bit": "bfloat16",
                     "4-bit": "bfloat16"}


@dataclass
class SamplingSpec:
    """Text sampling. ``None`` fields keep the profile's own default."""

    greedy: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    decoder_top_k: int | None = None      # Freeze-Omni's speech decoder


@dataclass
class TurnSpec:
    """Lite's end-of-turn rule (``core.model.lite.turn.TurnConfig``); ``None`` fields keep its defaults."""

    vad_on: float | None = None
    vad_off: float | None = None
    silence_ms: int | None = None
    min_speech_ms: int | None = None


@dataclass
class ProfileSpec:
    profile: str = "lite"
    checkpoint: str | None = None         # Freeze-Omni: checkpoint folder (audiollm/, decoder/, codec/)
    llm: str | None = None                # Freeze-Omni: backbone folder; Lite: chat-model folder or .gguf
    voice: str | None = None              # Lite: Piper .onnx; Freeze-Omni: the voice's name
    asr: str | None = None                # Lite: a Whisper folder (None: the best installed upgrade, else tiny.en)
    voice_tokens: list[int] | None = None  # Freeze-Omni: the voice's codec global tokens (None: the release voice)
    device: str = "cpu"
    dtype: str = "float32"
    quantize_bits: int | None = None      # 8 or 4: a bitsandbytes backbone (CUDA only)
    seed: int = 0
    system_prompt: str | None = None      # None: the profile's default persona
    voice_speed: float = 1.0              # Lite: speaking rate (Piper's length_scale is divided by it)
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    turn: TurnSpec = field(default_factory=TurnSpec)
    options: dict[str, Any] = field(default_factory=dict)   # more backend options (tests, benchmarks)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a spec that cannot load, before anything is loaded."""
        if self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r} (choose {' or '.join(PROFILES)})")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r} (choose {', '.join(DTYPES)})")
        if self.profile == "freeze-omni" and not (self.checkpoint and self.llm):
            raise ConfigError("the freeze-omni profile needs its weights: a checkpoint folder (--checkpoint, with "
                              "audiollm/, decoder/, codec/) and the backbone folder (--llm)")
        if self.quantize_bits not in (None, 4, 8):
            raise ConfigError(f"quantize_bits must be 4 or 8, not {self.quantize_bits!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProfileSpec":
        d = dict(d)
        sampling = SamplingSpec(**_known(SamplingSpec, d.pop("sampling", None) or {}))
        turn = TurnSpec(**_known(TurnSpec, d.pop("turn", None) or {}))
        return cls(sampling=sampling, turn=turn, **_known(cls, d))


def _known(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)} - {"sampling", "turn"}
    return {k: v for k, v in d.items() if k in names}


def spec_from_settings(settings: Settings) -> ProfileSpec:
    """The profile the app's settings ask for (the one settings -> backend translation)."""
    from core.settings.schema import QUANTIZED, resolve_checkpoint_dir

    m, s, v = settings.model, settings.sampling, settings.vad
    sampling = SamplingSpec(greedy=s.greedy, temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                            repetition_penalty=s.repetition_penalty, max_new_tokens=s.max_new_tokens,
                            decoder_top_k=s.decoder_top_k)
    if m.profile == "lite":
        return ProfileSpec(profile="lite", llm=m.lite_backbone or None, voice=m.lite_voice or None,
                           asr=(m.lite_asr or "").strip() or None,
                           voice_speed=m.voice_speed, device="cpu", system_prompt=settings.persona.system_prompt,
                           sampling=dataclasses.replace(sampling, max_new_tokens=min(s.max_new_tokens, 256)),
                           turn=TurnSpec(vad_on=v.onset_threshold, vad_off=v.offset_threshold,
                                         silence_ms=v.end_of_turn_silence_ms, min_speech_ms=v.min_speech_ms))
    tokens = None if m.voice == "release" else m.voices.get(m.voice)
    return ProfileSpec(profile="freeze-omni", checkpoint=str(resolve_checkpoint_dir(m.checkpoint_dir)),
                       llm=m.backbone_dir or None, voice=m.voice, voice_tokens=list(tokens) if tokens else None,
                       device=m.device, dtype=_PRECISION_DTYPES.get(m.precision, "bfloat16"),
                       quantize_bits={"8-bit": 8, "4-bit": 4}.get(m.precision) if m.precision in QUANTIZED else None,
                       system_prompt=settings.persona.system_prompt,
                       sampling=SamplingSpec(greedy=s.greedy, max_new_tokens=s.max_new_tokens,
                                             decoder_top_k=s.decoder_top_k))


# The keys of sessions recorded before ProfileSpec: {"engine": ..., "backend": {...}, "cli": {...}, "system_prompt"}
_OLD_CLI_KEYS = ("checkpoint", "llm", "device", "dtype", "seed", "greedy")
_SAMPLING_KEYS = {f.name for f in dataclasses.fields(SamplingSpec)}


def spec_from_session(profile: str | None, settings: Mapping[str, Any]) -> ProfileSpec:
    """The spec a recorded session ran with (``meta.json`` ``settings``), also from the older format."""
    if isinstance(settings.get("spec"), Mapping):
        spec = ProfileSpec.from_dict(settings["spec"])
        if profile:
            spec.profile = profile
        return spec
    cli = dict(settings.get("cli") or {})
    options = dict(settings.get("backend") or {})
    spec = ProfileSpec(profile=profile or "lite", system_prompt=settings.get("system_prompt"))
    for key in _OLD_CLI_KEYS:     # model arguments could also sit in the backend options
        value = cli.get(key)
        if value is None and key in options:
            value = options.pop(key)
        if value is None or value is False:
            continue
        if key == "greedy":
            spec.sampling.greedy = bool(value)
        elif key == "seed":
            spec.seed = int(value)
        else:
            setattr(spec, key, str(value))
    apply_options(spec, options)
    return spec


def apply_options(spec: ProfileSpec, options: Mapping[str, Any]) -> None:
    """Backend options (``PARLEY_ENGINE_SETTINGS["backend"]``, old sessions): sampling keys go to
    ``spec.sampling``, model arguments to the spec's fields, the rest to ``spec.options``."""
    for key, value in options.items():
        if key in _SAMPLING_KEYS:
            setattr(spec.sampling, key, value)
        elif key in ("checkpoint", "llm", "device", "dtype", "voice", "asr"):
            setattr(spec, key, str(value))
        elif key == "seed":
            spec.seed = int(value)
        elif key == "quantize_bits":
            spec.quantize_bits = int(value) if value else None
        else:
            spec.options[key] = value
