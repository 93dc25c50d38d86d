"""``parley reply --profile freeze-omni``: answer one spoken input file with a spoken reply (headless).

Reads any WAV (any rate, any channel count; channels are averaged, the rate is converted to 16 kHz with soxr),
listens chunk by chunk (160 ms), and answers when the turn-state head says 'ss' (``--turn-end model``, default)
or after the whole file (``--turn-end input``, like the original ``bin/inference.py``). 'el' means the model
rejected the turn: nothing is said and the output WAV is empty. The reply is written as 16-bit PCM at 24 kHz.

Speech settings: ``<checkpoint>/server.json`` when present (server behaviour: first-sentence chunk size and
threshold, leading-silence cut, the server's sentence rule), else ``bin/inference.py``'s (codec chunk 40, padding
10, threshold 0.01, the offline sentence rule). ``--codec-chunk`` / ``--codec-padding`` override the window sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import BackendError, UserError
from core.fsutil import check_output_file
from core.constants import CHUNK_SAMPLES_16K, FREEZE_OMNI_OUTPUT_RATE, MODEL_INPUT_RATE

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


def read_input_16k(path: str | Path) -> np.ndarray:
    """Any audio file -> mono float32 at 16 kHz, validated (``core.audio.wavin``; soxr resampling)."""
    from core.audio.wavin import load_mono

    return load_mono(path, MODEL_INPUT_RATE, what="input file")


def write_output(path: str | Path, wave_24k: np.ndarray) -> None:
    import soundfile as sf

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), np.clip(wave_24k, -1.0, 1.0), FREEZE_OMNI_OUTPUT_RATE, subtype="PCM_16")
    except (OSError, RuntimeError) as exc:   # soundfile's LibsndfileError is a RuntimeError (a full disk...)
        raise UserError(f"cannot write --output {path}: {str(exc).strip().splitlines()[-1]}") from None


def reply_settings(args: argparse.Namespace, checkpoint: Path, codec: Any) -> Any:
    """ReplySettings from server.json (when present), --greedy, --codec-chunk/--codec-padding and --voice."""
    from core.model.freeze_omni.audiollm import SamplingSettings
    from core.model.freeze_omni.errors import CheckpointError
    from core.model.freeze_omni.pipeline import ReplySettings
    from core.model.freeze_omni.streaming import SERVER_JSON, StreamOptions, load_server_config

    if (checkpoint / SERVER_JSON).is_file():
        try:
            server = load_server_config(checkpoint)
        except CheckpointError as exc:
            raise UserError(str(exc)) from exc
        stream = server.stream_options()
        decoder_top_k = server.decoder_top_k
        penalty_window, penalty = server.decoder_penalty_window_size, server.decoder_penalty
        segmentation = "server"
    else:
        stream = StreamOptions()
        decoder_top_k, penalty_window, penalty = 2, -1, 1.1
        segmentation = "offline"
    changes: dict[str, Any] = {}
    if args.codec_chunk is not None:
        if args.codec_chunk < 1:
            raise UserError("--codec-chunk must be at least 1")
        changes["chunk_size"] = args.codec_chunk
        if stream.first_chunk_size is not None:
            changes["first_chunk_size"] = args.codec_chunk
    if args.codec_padding is not None:
        if args.codec_padding < 0:
            raise UserError("--codec-padding must be at least 0")
        changes["padding"] = args.codec_padding
    if changes:
        stream = replace(stream, **changes)
    sampling = SamplingSettings()  # the original CLI defaults: top-k 5, top-p 0.8, temperature 0.7
    if args.greedy:
        sampling = replace(sampling, top_k=1)
        decoder_top_k = 1
    return ReplySettings(sampling=sampling, decoder_top_k=decoder_top_k, penalty_window=penalty_window,
                         penalty=penalty, stream=stream, segmentation=segmentation,
                         global_tokens=voice_tokens(args.voice, codec))


def voice_tokens(voice: str | None, codec: Any) -> list[int] | None:
    """``--voice``: None (the release voice), comma-separated global token ids, or a reference WAV file."""
    if not voice:
        return None
    if all(part.strip().isdigit() for part in voice.split(",")):
        tokens = [int(part) for part in voice.split(",")]
        n, codes = codec.config.global_code_num, codec.config.n_codes
        if len(tokens) != n or not all(0 <= t < codes for t in tokens):
            raise UserError(f"--voice needs {n} global token ids in [0, {codes}), got {voice!r}")
        return tokens
    path = Path(voice)
    if not path.is_file():
        raise UserError(f"--voice must be {codec.config.global_code_num} comma-separated global token ids or a "
                        f"reference WAV file; {voice!r} is neither")
    from core.audio.wavin import load_mono

    mono = load_mono(path, codec.sample_rate, what="--voice reference recording")
    if codec.encoder is None:
        raise UserError("a reference-WAV voice needs the codec encoder")
    tokens = codec.global_tokens_from_wave(mono)
    log.info("voice from %s: global tokens %s", path, tokens)
    return tokens


def run_reply(args: argparse.Namespace) -> int:
    import torch

    from core.frontend.chunker import pad_to_chunks
    from core.frontend.cmvn import CmvnError
    from core.model.freeze_omni.errors import CheckpointError
    from core.model.freeze_omni.loader import LoadError, load_freeze_omni
    from core.runtime import configure_torch_threads, quiet_progress_bars

    if not args.checkpoint or not args.llm:
        raise UserError("the freeze-omni profile needs --checkpoint DIR and --llm DIR")
    checkpoint, llm = Path(args.checkpoint), Path(args.llm)
    for what, folder in (("checkpoint", checkpoint), ("LLM", llm)):
        if not folder.is_dir():
            raise UserError(f"{what} folder not found: {folder}")
    check_output_file(args.output, "--output", suffix=".wav")   # every output checked before the model loads
    if args.trace:
        check_output_file(args.trace, "--trace")
    threads = configure_torch_threads()
    wave = read_input_16k(args.input)
    voice_is_wav = bool(args.voice) and not all(p.strip().isdigit() for p in args.voice.split(","))
    if voice_is_wav:   # a reference recording that cannot be used is refused before the model loads
        from core.audio.wavin import read_audio

        read_audio(args.voice, what="--voice reference recording")
    quiet_progress_bars()

    t0 = time.perf_counter()
    try:
        pipe = load_freeze_omni(checkpoint, llm, device=args.device, dtype=args.dtype,
                                with_codec_encoder=voice_is_wav)
    except (CheckpointError, CmvnError, LoadError) as exc:
        raise UserError(str(exc)) from exc
    except torch.OutOfMemoryError as exc:
        raise UserError(f"out of memory while loading the model on {args.device}: {exc}") from exc
    load_s = time.perf_counter() - t0
    settings = reply_settings(args, checkpoint, pipe.codec)
    generator = torch.Generator().manual_seed(args.seed)
    decoder_generator = torch.Generator(device=pipe.decoder.device).manual_seed(args.seed)

    try:
        state, _ = pipe.new_dialogue(args.system_prompt or DEFAULT_SYSTEM_PROMPT)
    except BackendError as exc:   # a system prompt too long for the model's context
        raise UserError(str(exc)) from None
    state = pipe.start_turn(state)
    padded = pad_to_chunks(wave)
    chunks_trace: list[dict[str, Any]] = []
    listen_end = "input"
    step_times = []
    t_listen = time.perf_counter()
    for index in range(padded.size // CHUNK_SAMPLES_16K):
        ts = time.perf_counter()
        step = pipe.listen(state, padded[index * CHUNK_SAMPLES_16K:(index + 1) * CHUNK_SAMPLES_16K])
        step_times.append(time.perf_counter() - ts)
        state = step.state
        chunks_trace.append({"index": index, "state": step.decision, "probs": [round(p, 6) for p in step.probs]})
        if args.turn_end == "model" and step.decision in ("ss", "el"):
            listen_end = step.decision
            break
    turn_end_time = time.perf_counter()
    listen_s = turn_end_time - t_listen

    pieces: list[np.ndarray] = []
    segments: list[dict[str, Any]] = []
    token_ids: list[int] = []
    first_audio_ms = None
    first_token_ms = None
    end_reason = None
    if listen_end != "el":
        for event in pipe.reply(state, settings, generator, decoder_generator):
            if event.kind == "token" and first_token_ms is None:
                first_token_ms = (time.perf_counter() - turn_end_time) * 1000
            elif event.kind == "audio" and event.audio is not None:
                if first_audio_ms is None:
                    first_audio_ms = (time.perf_counter() - turn_end_time) * 1000
                pieces.append(event.audio)
            elif event.kind == "segment_end" and event.segment is not None:
                seg = event.segment
                segments.append({"text": seg.text, "raw_text": seg.raw_text, "codec_tokens": seg.codec_tokens,
                                 "samples": seg.samples})
            elif event.kind == "end":
                token_ids, end_reason = event.token_ids, event.reason
    reply_s = time.perf_counter() - turn_end_time
    out = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    write_output(args.output, out)
    text = pipe.decode_text(token_ids)

    if args.trace:
        trace = {
            "profile": "freeze-omni",
            "input": str(args.input),
            "chunks": chunks_trace,
            "listen_end": listen_end,
            "assistant_token_ids": token_ids,
            "assistant_text": text,
            "end_reason": end_reason,
            "segments": segments,
            "samples": int(out.size),
            "sample_rate": FREEZE_OMNI_OUTPUT_RATE,
            "settings": {
                "greedy": bool(args.greedy), "seed": args.seed, "turn_end": args.turn_end,
                "llm_top_k": settings.sampling.top_k, "llm_top_p": settings.sampling.top_p,
                "llm_temperature": settings.sampling.temperature, "decoder_top_k": settings.decoder_top_k,
                "codec_chunk": settings.stream.chunk_size, "codec_first_chunk": settings.stream.first_chunk_size,
                "codec_padding": settings.stream.padding, "segmentation": settings.segmentation,
                "voice_global_tokens": settings.global_tokens or pipe.codec.default_global_tokens,
                "device": str(args.device), "dtype": args.dtype, "torch_threads": threads,
            },
            "timings": {
                "load_s": round(load_s, 4),
                "listen_s": round(listen_s, 4),
                "listen_step_ms_mean": round(1000 * float(np.mean(step_times)), 3) if step_times else None,
                "turn_end_to_first_token_ms": round(first_token_ms, 2) if first_token_ms is not None else None,
                "turn_end_to_first_audio_ms": round(first_audio_ms, 2) if first_audio_ms is not None else None,
                "reply_s": round(reply_s, 4),
            },
        }
        try:
            Path(args.trace).write_text(json.dumps(trace, ensure_ascii=False, indent=1), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write the trace {args.trace}: {exc}") from exc

    if listen_end == "el":
        print(f"turn rejected by the model ('el' after {len(chunks_trace)} chunks): nothing said; "
              f"wrote an empty {args.output}")
    else:
        print(f"listen end: {listen_end} after {len(chunks_trace)} chunks; {len(token_ids)} tokens; "
              f"{len(segments)} segments; {out.size} samples ({out.size / FREEZE_OMNI_OUTPUT_RATE:.2f} s) "
              f"-> {args.output}")
        print(f"text: {text}")
    return 0
