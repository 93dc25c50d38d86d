"""Building what the engine needs for a profile: the backend (with the engine's early-speech options mapped onto
its constructor knobs), the VAD, and the engine settings.

Engine settings come from :class:`~core.engine.config.EngineConfig` defaults, overridden by the environment variable
``PARLEY_ENGINE_SETTINGS``: a JSON object, or ``@/path/to/file.json``. Its keys are EngineConfig fields, ``early``
(EarlySpeech fields) and ``backend`` (extra keyword options for the backend constructor, e.g.
``{"max_new_tokens": 24}``; also the model arguments ``checkpoint``, ``llm``, ``device``, ``dtype``, ``seed``,
``greedy`` where no command-line flag gave them). ``parley chat`` and ``parley bench engine`` read it, so tests and
benchmarks can set small context limits, short answers or real Freeze-Omni weights without more flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from core.audio.interfaces import StreamingVad
from core.engine.backend import Backend
from core.engine.config import EngineConfig

log = logging.getLogger(__name__)

SETTINGS_ENV = "PARLEY_ENGINE_SETTINGS"


def settings_from_env(env: dict[str, str] | None = None) -> tuple[EngineConfig, dict[str, Any]]:
    """(engine config, backend options) from ``PARLEY_ENGINE_SETTINGS`` (defaults when unset)."""
    raw = (env if env is not None else os.environ).get(SETTINGS_ENV, "").strip()
    if not raw:
        return EngineConfig(), {}
    if raw.startswith("@"):
        raw = Path(raw[1:]).read_text(encoding="utf-8")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{SETTINGS_ENV} must hold a JSON object")
    backend_opts = dict(data.pop("backend", {}) or {})
    return EngineConfig.from_dict(data), backend_opts


def build_vad() -> StreamingVad:
    """The echo-aware silero VAD of the audio layer, with its default thresholds."""
    from core.audio.vad import EchoAwareVad

    return EchoAwareVad()


def default_fixture() -> Path:
    """The tiny Freeze-Omni parity set (``PARLEY_FIXTURES`` or ``<repo>/../shared/fixtures``)."""
    root = os.environ.get("PARLEY_FIXTURES") or Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"
    return (Path(root) / "freeze_omni_tiny_a").resolve()


def build_backend(profile: str, args: argparse.Namespace | None = None, config: EngineConfig | None = None,
                  options: dict[str, Any] | None = None) -> Backend:
    """Load the backend of ``profile`` ("lite" | "freeze-omni") with the CLI's model arguments (``checkpoint``,
    ``llm``, ``device``, ``dtype``, ``seed``, ``greedy``), the engine's early-speech settings and extra
    ``options`` (from ``PARLEY_ENGINE_SETTINGS["backend"]``). Options a backend does not have are logged."""
    config = config or EngineConfig()
    cli = _cli_options(args)
    options = dict(options or {})
    for key in _CLI_KEYS:   # model arguments may also come from the settings (``parley bench engine`` has no flags)
        if key in options:
            value = options.pop(key)
            cli.setdefault(key, value)
    if profile == "freeze-omni":
        return _build_freeze_omni(cli, config, options)
    if profile == "lite":
        return _build_lite(cli, config, options)
    raise ValueError(f"unknown profile {profile!r}")


def _build_freeze_omni(cli: dict[str, Any], config: EngineConfig, options: dict[str, Any]) -> Backend:
    """Freeze-Omni with early speech = the server's behaviour: the first segment cut at the first clause
    (segmentation rule "server"), a small first codec window (``decoder_first_chunk_size``) with the first-pack
    split threshold and the leading-silence cut. Off = ``bin/inference.py``'s offline behaviour. There is no
    token-budget cut for the first segment in Freeze-Omni (the server only widens the punctuation set after 20
    tokens), so ``first_segment_max_tokens`` does not apply to this profile."""
    from core.model.freeze_omni.audiollm import SamplingSettings
    from core.model.freeze_omni.backend import FreezeOmniBackend
    from core.model.freeze_omni.pipeline import ReplySettings
    from core.model.freeze_omni.streaming import StreamOptions, load_server_config

    fixture = default_fixture()
    checkpoint = Path(cli.get("checkpoint") or fixture / "checkpoints")
    llm = Path(cli.get("llm") or fixture / "llm")
    server = load_server_config(checkpoint)
    early = config.early
    chunk = int(options.pop("codec_chunk", early.codec_chunk))
    padding = int(options.pop("codec_padding", server.decoder_chunk_overlap_size))
    if early.enabled:
        stream = StreamOptions(chunk_size=chunk, padding=padding, window=server.decoder_N,
                               threshold=server.decoder_seg_threshold, first_chunk_size=early.first_codec_chunk,
                               first_threshold=server.decoder_seg_threshold_first_pack, trim_leading_silence=True)
        segmentation = "server"
    else:
        stream = StreamOptions(chunk_size=chunk, padding=padding, window=server.decoder_N,
                               threshold=server.decoder_seg_threshold)
        segmentation = "offline"
    max_tokens = int(options.pop("max_new_tokens", 500))
    quantize_bits = options.pop("quantize_bits", None)  # 8 or 4: bitsandbytes backbone (CUDA only)
    sampling = SamplingSettings.greedy(max_tokens) if cli.get("greedy") else SamplingSettings(max_tokens=max_tokens)
    settings = ReplySettings(sampling=sampling,
                             decoder_top_k=int(options.pop("decoder_top_k", 1 if cli.get("greedy")
                                                           else server.decoder_top_k)),
                             penalty_window=server.decoder_penalty_window_size, penalty=server.decoder_penalty,
                             stream=stream, segmentation=options.pop("segmentation", segmentation))
    if options:
        log.info("freeze-omni backend has no option(s) %s; ignored", ", ".join(sorted(options)))
    log.info("building freeze-omni backend: checkpoint %s, llm %s, early speech %s", checkpoint, llm, early.enabled)
    return FreezeOmniBackend.load(checkpoint, llm, device=cli.get("device") or "cpu",
                                  dtype=cli.get("dtype") or "float32", settings=settings, seed=int(cli.get("seed") or 0),
                                  quantize_bits=int(quantize_bits) if quantize_bits else None)


def _build_lite(cli: dict[str, Any], config: EngineConfig, options: dict[str, Any]) -> Backend:
    """Lite: ``--llm`` (a chat-model folder or .gguf), ``--seed``, ``--greedy``; options ``max_new_tokens``,
    ``temperature``/``top_k``/``top_p`` and any other :class:`~core.model.lite.backend.LiteSettings` field.

    Early speech is built into Lite's clause segmenter (first clause: a comma after 2 words, or 8 words); it has no
    constructor knob, so ``config.early`` does not change this profile (``bench.py`` emulates "off")."""
    import dataclasses

    from core.model.lite.backend import LiteBackend, LiteSettings

    settings = LiteSettings()
    if cli.get("llm"):
        settings.llm = str(cli["llm"])
    if cli.get("seed") is not None:
        settings.seed = int(cli["seed"])
    sampling_fields = {f.name for f in dataclasses.fields(settings.sampling)}
    sampling = {k: options.pop(k) for k in list(options) if k in sampling_fields}
    if "max_new_tokens" in options:
        sampling["max_new_tokens"] = options.pop("max_new_tokens")
    if cli.get("greedy"):
        sampling["greedy"] = True
    if sampling:
        settings.sampling = dataclasses.replace(settings.sampling, **sampling)
    for key in list(options):
        if hasattr(settings, key):
            setattr(settings, key, options.pop(key))
    if options:
        log.info("lite backend has no option(s) %s; ignored", ", ".join(sorted(options)))
    if cli.get("device") not in (None, "cpu"):
        log.info("the lite profile runs on the CPU; --device %s ignored", cli["device"])
    return LiteBackend(settings)


_CLI_KEYS = ("checkpoint", "llm", "device", "dtype", "seed", "greedy")


def _cli_options(args: argparse.Namespace | None) -> dict[str, Any]:
    if args is None:
        return {}
    out: dict[str, Any] = {}
    for name in _CLI_KEYS:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            out[name] = value
    return out
