"""``parley bench model``: timings of the Freeze-Omni model core, printed as one JSON object.

Default: the tiny parity fixture (``PARLEY_FIXTURES`` or ``<repo>/../shared/fixtures``), or ``--checkpoint`` +
``--llm``. ``--synthetic release``: randomly initialised modules with the release dimensions (Qwen2-7B backbone
built from a ``Qwen2Config``, 24 x 1024 encoder, 896-wide speech decoder, release codec); nothing is downloaded.

Measured (see docs/benchmarks.md for every key):

* listen: one 160 ms chunk = fbank + encoder + adapter + LLM prefill of its 2 positions + state head (p50/p95);
* LLM: decode steps (the sampled token fed back, end token ignored so the count is fixed) -> tokens/s;
* speech decoder: NAR prefill of one 8-token segment, then AR steps -> codec tokens/s (40/s is real time);
* codec: one streaming window (chunk + 2 x padding tokens) -> real-time factor (compute time / audio time);
* turn end -> first audio: measured on a real reply for a checkpoint whose model stops and segments by itself
  (the fixture), else composed from the measured parts along the critical path (method says which);
* peak memory: process peak RSS and, on CUDA, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError
from core.constants import CHUNK_SAMPLES_16K, CODEC_SAMPLES_PER_TOKEN_24K, FREEZE_OMNI_OUTPUT_RATE, MODEL_INPUT_RATE
from core.model.freeze_omni.parity import default_fixture, listen_until_decided

FIRST_SEGMENT_TOKENS = 8      # LLM tokens of the first sentence in the composed first-audio estimate
DECODER_BENCH_TOKENS = 60     # AR steps timed for the speech decoder
SYNTHETIC_CPU_MAX_STEPS = 4   # --chunks / --tokens allowed for the release model on a CPU

RELEASE_TRAIN_CONFIG: dict[str, Any] = {
    "input_dim": 80, "cmvn_file": "global_cmvn", "is_json_cmvn": True,
    "encoder_conf": {
        "overview_conf": {"encoder-input-dim": 80, "encoder-layer-config": "subsampling-transformer",
                          "encoder-output-dim": 1024},
        "para_conf": {
            "subsampling": {"subsampling-input-dim": 80, "subsampling-output-dim": 1024, "subsampling-rate": 4},
            "transformer": {"transformer-attention-dim": 1024, "transformer-attention-heads": 16,
                            "transformer-chunk_size": 4, "transformer-input-dim": 1024,
                            "transformer-left_chunks": 16, "transformer-linear-units": 4096,
                            "transformer-num-blocks": 24, "transformer-output-dim": 1024,
                            "transformer-pos-enc-class": "rel-enc", "transformer-normalize-before": True,
                            "transformer-concat-after": False, "transformer-input-layer": "linear",
                            "transformer-positionwise-layer-type": "linear"},
        },
    },
    "model_conf": {"activation_func": "gelu", "adpter_type": "subsampling", "enc_out_dim": 1024,
                   "kernel_size": 5, "llm_embed_dim": 3584, "llm_head_num": 28, "norm": "layer",
                   "num_key_value_heads": 4, "predict_usr_state": 4, "prompt_finetune": True, "prompt_num": 25,
                   "add_prompt_before": True, "task_num": 20, "task_type": "prompt_finetune"},
    "dataset_conf": {"tokenize_conf": {"eod_id": 151645}},
}
RELEASE_QWEN2_7B = {"vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                    "num_attention_heads": 28, "num_key_value_heads": 4, "max_position_embeddings": 32768,
                    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
                    "bos_token_id": 151643, "eos_token_id": 151645}
RELEASE_DECODER = [896, 1024, {"idim": 896, "odim": 1024, "transformer_attention_dim": 896,
                               "transformer_linear_units": 4864, "transformer_num_blocks": 4,
                               "transformer_attention_heads": 14, "encoder_output_dim": 896,
                               "kv_cache_prefix_finetune": 1}]
RELEASE_CODEC = {"resblock": "1", "upsample_rates": [8, 5, 5, 3], "upsample_kernel_sizes": [16, 11, 11, 5],
                 "upsample_initial_channel": 512, "resblock_kernel_sizes": [3, 7, 11],
                 "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "sampling_rate": 24000,
                 "n_code_groups": 1, "residul_layer": 1, "n_codes": 1024, "global_code_num": 8,
                 "global_feature_conv": [128, 64, 128, 3, 1], "global_tokens": [473, 975, 419, 219, 565, 121, 550, 616]}
# Qwen2 chat-token ids (im_start, im_end; "\n<|im_start|>user\n"; "<|im_end|>\n<|im_start|>assistant\n").
RELEASE_CHAT = {"im_start": 151644, "im_end": 151645, "prefix": [198, 151644, 872, 198],
                "suffix": [151645, 198, 151644, 77091, 198]}


def _ms(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64) * 1000.0
    return {"p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3),
            "mean": round(float(arr.mean()), 3)}


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def _params(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters())) if module is not None else 0


# ------------------------------------------------------------------------------------------------ building
def check_synthetic_fits(device: Any, dtype: Any, chunks: int, tokens: int) -> None:
    """Refuse the full release-size synthetic run on a CPU unless it is a tiny smoke run that fits in memory."""
    import psutil
    import torch

    if device.type != "cpu":
        return
    need_gb = synthetic_params() * (torch.finfo(dtype).bits // 8) / 1e9
    avail_gb = psutil.virtual_memory().available / 1e9
    if need_gb > 0.8 * avail_gb or chunks > SYNTHETIC_CPU_MAX_STEPS or tokens > SYNTHETIC_CPU_MAX_STEPS:
        raise UserError(
            f"--synthetic release on the CPU needs about {need_gb:.1f} GB for the weights in {dtype} "
            f"({avail_gb:.1f} GB available) and runs a 7.6 B-parameter backbone on {os.cpu_count()} cores. "
            f"Run it on a GPU (--device cuda --dtype bfloat16), or, if the memory fits, as a tiny smoke run with "
            f"--dtype bfloat16 --chunks {SYNTHETIC_CPU_MAX_STEPS} --tokens {SYNTHETIC_CPU_MAX_STEPS} or less.")


def build_synthetic_release(device: Any, dtype: Any, llm_layers: int | None = None,
                            with_codec_encoder: bool = False) -> Any:
    """A :class:`FreezeOmni` pipeline of random modules with the release dimensions, on ``device`` in ``dtype``.

    ``llm_layers`` replaces the backbone's 28 layers by fewer layers of the same (Qwen2-7B) shape: every release
    dimension (widths, heads, vocabulary, encoder, adapter, decoder, codec) is kept, only the depth of the backbone
    shrinks (2 layers: about 2.1 billion parameters instead of 8.2). No memory check here (see
    :func:`check_synthetic_fits`)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from core.model.freeze_omni.audiollm import AudioLLM, ChatTokens
    from core.model.freeze_omni.codec import CodecConfig, TiCodec
    from core.model.freeze_omni.config import parse_train_config
    from core.model.freeze_omni.decoder import DecoderConfig, SpeechDecoder
    from core.model.freeze_omni.pipeline import FreezeOmni

    config = parse_train_config(RELEASE_TRAIN_CONFIG, "<release train.yaml>")
    qwen = dict(RELEASE_QWEN2_7B)
    if llm_layers is not None:
        qwen["num_hidden_layers"] = llm_layers
    torch.manual_seed(0)
    with torch.device(device):
        llm = AutoModelForCausalLM.from_config(Qwen2Config(**qwen), dtype=dtype, attn_implementation="sdpa")
        llm.eval().requires_grad_(False)
        model = AudioLLM(config, torch.nn.Identity()).to(dtype=dtype)
        model.encoder.global_cmvn.float()  # CMVN stays float32, as the loader keeps it
        model.encoder.global_cmvn.mean.fill_(12.0)
        model.encoder.global_cmvn.istd.fill_(0.2)
        model.llm_decoder = llm
        model.eval().requires_grad_(False)
        decoder = SpeechDecoder(DecoderConfig.from_obj(RELEASE_DECODER)).to(dtype=dtype).eval()
        codec = TiCodec(CodecConfig.from_dict(RELEASE_CODEC), with_encoder=with_codec_encoder).to(dtype=dtype).eval()
    decoder.rope_inv_freq = decoder.rope_inv_freq.to(torch.float32)
    chat = ChatTokens(im_start=RELEASE_CHAT["im_start"], im_end=RELEASE_CHAT["im_end"],
                      system_head=[RELEASE_CHAT["im_start"], 8948, 198],
                      default_role=[RELEASE_CHAT["im_start"], 8948, 198, 2610, 525, 264, 10950, 17847, 13,
                                    RELEASE_CHAT["im_end"]],
                      prefix=RELEASE_CHAT["prefix"], suffix=RELEASE_CHAT["suffix"])
    return FreezeOmni(model, None, chat, decoder, codec)


def synthetic_params(llm_layers: int | None = None) -> int:
    """Parameter count of the synthetic release model, from the config dicts above (about 8.2 billion; with
    ``llm_layers`` backbone layers instead of 28, as :func:`build_synthetic_release` builds it)."""
    q = RELEASE_QWEN2_7B
    h, inter, vocab = q["hidden_size"], q["intermediate_size"], q["vocab_size"]
    layers = q["num_hidden_layers"] if llm_layers is None else llm_layers
    kv = q["num_key_value_heads"] * (h // q["num_attention_heads"])
    per_layer = 2 * h * h + 2 * h * kv + h + 2 * kv + 3 * h * inter + 2 * h
    llm = layers * per_layer + 2 * vocab * h + h
    model = RELEASE_TRAIN_CONFIG["model_conf"]
    trf = RELEASE_TRAIN_CONFIG["encoder_conf"]["para_conf"]["transformer"]
    d, units = trf["transformer-attention-dim"], trf["transformer-linear-units"]
    blocks, enc = trf["transformer-num-blocks"], model["enc_out_dim"]
    encoder = 9 * d + 9 * d * d + 19 * d * d + blocks * (5 * d * d + 2 * d * units + 12 * d) + 4 * d
    adapter = enc * 2 * enc * model["kernel_size"] + 2 * enc * model["llm_embed_dim"] + 6 * enc
    dec = RELEASE_DECODER[2]
    dh, dl = dec["transformer_attention_dim"], dec["transformer_num_blocks"]
    decoder = (dl * 2 + dl // 2) * (4 * dh * dh + 3 * dh * dec["transformer_linear_units"]) + 2 * (dec["odim"] + 4) * dh
    return int(llm + encoder + adapter + decoder + 16_000_000)  # + the codec generator (~15 M)


def _bench_signal(pipe: Any, chunks: int, fixture: Path | None) -> np.ndarray:
    """``chunks`` + 1 chunks of audio: the fixture input (repeated) when there is one, else a noisy tone."""
    n = (chunks + 1) * CHUNK_SAMPLES_16K
    if fixture is not None and (fixture / "input.wav").is_file():
        import soundfile as sf

        wave, rate = sf.read(str(fixture / "input.wav"), dtype="float32")
        if rate == MODEL_INPUT_RATE and wave.ndim == 1 and wave.size:
            return np.resize(wave, n).astype(np.float32)
    rng = np.random.default_rng(0)
    t = np.arange(n) / MODEL_INPUT_RATE
    return (0.1 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(n)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ measuring
def measure(pipe: Any, chunks: int, tokens: int, fixture: Path | None, settings: Any,
            decoder_tokens: int = DECODER_BENCH_TOKENS, codec_repeats: int = 3) -> dict[str, Any]:
    """Time ``chunks`` listen steps, ``tokens`` LLM steps, ``decoder_tokens`` speech-decoder steps and
    ``codec_repeats`` decodes of one streaming codec window (plus the first, smaller window)."""
    import torch

    from core.model.freeze_omni.pipeline import SpeechInputs, split_rows

    model = pipe.audiollm
    device = model.device
    out: dict[str, Any] = {}

    # -- listen steps (decisions ignored: keep listening) --------------------------------------------------
    signal = _bench_signal(pipe, chunks, fixture)
    with torch.inference_mode():
        state, _ = pipe.new_dialogue(None)
        state = pipe.start_turn(state)
        times = []
        for i in range(chunks + 1):  # the first step (warm-up, and the longer 'sl' input) is not counted
            _sync(device)
            t0 = time.perf_counter()
            step = pipe.listen(state, signal[i * CHUNK_SAMPLES_16K:(i + 1) * CHUNK_SAMPLES_16K])
            _sync(device)
            if i:
                times.append(time.perf_counter() - t0)
            state = step.state
    stats = _ms(times)
    out["listen"] = {"chunks": chunks, "step_ms": stats,
                     "realtime_factor": round(stats["mean"] / (1000 * CHUNK_SAMPLES_16K / MODEL_INPUT_RATE), 4)}
    listened = state

    # -- LLM decode steps -----------------------------------------------------------------------------------
    token_times: list[float] = []
    hiddens: list[torch.Tensor] = []
    ids: list[int] = []
    with torch.inference_mode():
        _sync(device)
        t0 = time.perf_counter()
        step = model.append(state.llm, model.answer_start_embeddings(pipe.chat))
        logits = model.lm_logits(step.hidden)
        _sync(device)
        ss_ms = (time.perf_counter() - t0) * 1000
        cache = step.cache
        for _ in range(tokens):
            token = int(torch.argmax(logits).item())
            ids.append(token)
            hiddens.append(step.hidden)
            _sync(device)
            t0 = time.perf_counter()
            step = model.append(cache, model.embed_ids([token]))
            logits = model.lm_logits(step.hidden)
            _sync(device)
            token_times.append(time.perf_counter() - t0)
            cache = step.cache
    tstats = _ms(token_times)
    out["llm"] = {"tokens": tokens, "tokens_per_s": round(len(token_times) / max(sum(token_times), 1e-9), 2),
                  "step_ms": tstats, "answer_start_ms": round(ss_ms, 3), "context_len_end": cache.length}

    # -- speech decoder --------------------------------------------------------------------------------------
    decoder, codec = pipe.decoder, pipe.codec
    n_seg = max(1, min(FIRST_SEGMENT_TOKENS, len(ids)))
    seg_ids = ids[:n_seg] if ids else [pipe.chat.im_start]
    seg_hidden = hiddens[:n_seg] if hiddens else [listened_hidden(pipe, listened)]
    width = decoder.config.idim
    with torch.inference_mode():
        inputs = SpeechInputs(text="", text_ids=seg_ids, hidden_rows=split_rows(model.embed_ids(seg_ids), width),
                              prefix_rows=split_rows(torch.cat([h.reshape(1, -1) for h in seg_hidden]), width))
        _sync(decoder.device)
        t0 = time.perf_counter()
        dstate = decoder.prefill(inputs.hidden_rows, inputs.prefix_rows)
        _sync(decoder.device)
        prefill_ms = (time.perf_counter() - t0) * 1000
        current = decoder.config.sos
        step_times = []
        codes: list[int] = []
        for _ in range(decoder_tokens):
            _sync(decoder.device)
            t0 = time.perf_counter()
            dlogits, _ = decoder.step(dstate, current)
            current = int(torch.argmax(dlogits[: decoder.config.odim]).item())  # never eos: a fixed step count
            _sync(decoder.device)
            step_times.append(time.perf_counter() - t0)
            codes.append(current)
    dstats = _ms(step_times)
    dec_tps = len(step_times) / max(sum(step_times), 1e-9)
    out["decoder"] = {"segment_llm_tokens": n_seg, "prefill_ms": round(prefill_ms, 3), "tokens": len(step_times),
                      "tokens_per_s": round(dec_tps, 2), "step_ms": dstats,
                      "realtime_factor": round(40.0 / dec_tps, 4)}

    # -- codec window ----------------------------------------------------------------------------------------
    stream = settings.stream
    window = stream.chunk_size + 2 * stream.padding
    window_codes = (codes * (window // len(codes) + 1))[:window]
    first_window = (stream.first_chunk_size or stream.chunk_size) + stream.padding
    decode_times, first_times = [], []
    for _ in range(codec_repeats):
        _sync(codec.device)
        t0 = time.perf_counter()
        codec.decode(window_codes, settings.global_tokens)
        _sync(codec.device)
        decode_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        codec.decode(window_codes[:first_window], settings.global_tokens)
        _sync(codec.device)
        first_times.append(time.perf_counter() - t0)
    decode_s = statistics.median(decode_times)
    audio_s = window * CODEC_SAMPLES_PER_TOKEN_24K / FREEZE_OMNI_OUTPUT_RATE
    out["codec"] = {"window_tokens": window, "decode_ms": round(decode_s * 1000, 3), "rtf": round(decode_s / audio_s, 4)}

    # -- turn end -> first audio -----------------------------------------------------------------------------
    components = {
        "answer_start_ms": round(ss_ms, 3),
        "llm_tokens_ms": round((FIRST_SEGMENT_TOKENS - 1) * tstats["mean"], 3),
        "decoder_prefill_ms": round(prefill_ms, 3),
        "decoder_tokens_ms": round(first_window * dstats["mean"], 3),
        "codec_first_window_ms": round(statistics.median(first_times) * 1000, 3),
    }
    out["first_audio"] = {"method": "composed", "first_segment_llm_tokens": FIRST_SEGMENT_TOKENS,
                          "first_window_tokens": first_window, "components": components,
                          "turn_end_to_first_audio_ms": round(sum(components.values()), 3)}
    return out


def listened_hidden(pipe: Any, state: Any) -> Any:  # pragma: no cover - only when --tokens 0
    import torch

    return torch.zeros(1, pipe.audiollm.config.llm_embed_dim, device=pipe.audiollm.device)


def measure_real_first_audio(pipe: Any, fixture: Path, settings: Any) -> float | None:
    """Listen to the fixture input until the model takes the turn, then time turn end -> first audio piece."""
    import torch

    from core.frontend.chunker import pad_to_chunks
    from core.model.freeze_omni.cli import read_input_16k

    state, _ = listen_until_decided(pipe, pad_to_chunks(read_input_16k(fixture / "input.wav")))
    t0 = time.perf_counter()
    for event in pipe.reply(state, settings, torch.Generator().manual_seed(0)):
        if event.kind == "audio" and event.audio is not None:
            return (time.perf_counter() - t0) * 1000
    return None


def _dims(pipe: Any) -> dict[str, Any]:
    cfg = pipe.audiollm.config
    llm_cfg = pipe.audiollm.llm_decoder.config
    return {
        "encoder_layers": cfg.encoder.transformer.num_blocks, "encoder_dim": cfg.encoder.output_dim,
        "encoder_heads": cfg.encoder.transformer.attention_heads,
        "encoder_chunk": cfg.encoder.transformer.chunk_size, "encoder_left_chunks": cfg.encoder.transformer.left_chunks,
        "adapter": cfg.adapter.type, "llm_hidden": int(llm_cfg.hidden_size), "llm_layers": int(llm_cfg.num_hidden_layers),
        "llm_heads": int(llm_cfg.num_attention_heads), "llm_kv_heads": int(llm_cfg.num_key_value_heads),
        "llm_vocab": int(llm_cfg.vocab_size), "prompt_num": cfg.prompt_num,
        "decoder_idim": pipe.decoder.config.idim, "decoder_layers": pipe.decoder.config.num_layers,
        "decoder_codes": pipe.decoder.config.odim,
        "codec_upsample_rates": list(pipe.codec.config.upsample_rates),
        "codec_channels": pipe.codec.config.upsample_initial_channel,
    }


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from core.frontend.cmvn import CmvnError
    from core.model.freeze_omni.audiollm import SamplingSettings
    from core.runtime import quiet_progress_bars
    from core.model.freeze_omni.errors import CheckpointError
    from core.model.freeze_omni.loader import LoadError, load_freeze_omni, parse_device, parse_dtype
    from core.model.freeze_omni.pipeline import ReplySettings
    from core.model.freeze_omni.streaming import SERVER_JSON, ServerConfig, StreamOptions, load_server_config
    from core.runtime import configure_torch_threads

    threads = configure_torch_threads()
    quiet_progress_bars()
    if args.chunks < 1 or args.tokens < 1:
        raise UserError("--chunks and --tokens must be at least 1")
    try:
        device, dtype = parse_device(args.device), parse_dtype(args.dtype)
    except LoadError as exc:
        raise UserError(str(exc)) from exc
    fixture: Path | None = None
    t0 = time.perf_counter()
    if args.synthetic == "release":
        source = "synthetic-release"
        check_synthetic_fits(device, dtype, args.chunks, args.tokens)
        pipe = build_synthetic_release(device, dtype)
        checkpoint = None
        stream = ServerConfig().stream_options()  # the release server.json values
    else:
        if args.checkpoint or args.llm:
            if not (args.checkpoint and args.llm):
                raise UserError("give both --checkpoint and --llm (or neither, for the tiny fixture)")
            checkpoint, llm = Path(args.checkpoint), Path(args.llm)
            source = "checkpoint"
        else:
            fixture = default_fixture()
            checkpoint, llm = fixture / "checkpoints", fixture / "llm"
            source = "fixture"
            if not checkpoint.is_dir():
                raise UserError(f"no checkpoint given and the tiny fixture is not at {fixture} "
                                "(set PARLEY_FIXTURES or pass --checkpoint/--llm)")
        try:
            pipe = load_freeze_omni(checkpoint, llm, device=device, dtype=dtype)
        except (CheckpointError, CmvnError, LoadError) as exc:
            raise UserError(str(exc)) from exc
        stream = (load_server_config(checkpoint).stream_options() if (checkpoint / SERVER_JSON).is_file()
                  else StreamOptions())
    load_s = time.perf_counter() - t0
    settings = ReplySettings(sampling=SamplingSettings.greedy(max_tokens=500), decoder_top_k=1, stream=stream,
                             segmentation="offline")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result: dict[str, Any] = {
        "bench": "model", "source": source, "checkpoint": str(checkpoint) if checkpoint else None,
        "device": str(device), "dtype": str(dtype).replace("torch.", ""), "torch_threads": threads,
        "torch_version": torch.__version__, "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dims": _dims(pipe),
        "params": {"encoder_adapter_heads": _params(pipe.audiollm) - _params(pipe.audiollm.llm_decoder),
                   "llm": _params(pipe.audiollm.llm_decoder), "decoder": _params(pipe.decoder),
                   "codec": _params(pipe.codec)},
        "load_s": round(load_s, 3),
        "settings": {"codec_chunk": stream.chunk_size, "codec_first_chunk": stream.first_chunk_size,
                     "codec_padding": stream.padding},
    }
    result.update(measure(pipe, args.chunks, args.tokens, fixture, settings))
    if fixture is not None:
        real = measure_real_first_audio(pipe, fixture, settings)
        if real is not None:
            result["first_audio"]["composed_ms"] = result["first_audio"]["turn_end_to_first_audio_ms"]
            result["first_audio"]["method"] = "measured"
            result["first_audio"]["turn_end_to_first_audio_ms"] = round(real, 3)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["memory"] = {
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "cuda_max_allocated_mb": (round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                                  if device.type == "cuda" else None),
    }
    print(json.dumps(result, indent=1))
    return 0
