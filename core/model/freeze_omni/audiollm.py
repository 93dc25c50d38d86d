"""Freeze-Omni AudioLLM: speech encoder + adapter + frozen LLM backbone + prompt embeddings + turn-state head.

See docs/freeze-omni.md, "LLM, prompt embeddings and state head" (chat template, dialogue stages, turn decisions,
sampling) and "AudioLLM keys".

The module holds weights only. The dialogue memory is the LLM's KV cache, held in an :class:`LLMCache` object that
the caller passes in and gets back; the encoder and adapter states are explicit dataclasses as well. No state is
deep-copied per step: the KV cache is appended to in place, so a step *consumes* the cache handle it is given
(a stale handle is detected and refused), and :meth:`LLMCache.fork` copies it only at a real branch point.

The inputs per dialogue stage (``pre`` system role, ``sl`` first chunk of a user turn, ``cl`` next chunks, ``ss``
assistant start, ``cs`` next assistant token) are built from :meth:`AudioLLM.embed_ids`,
:meth:`AudioLLM.turn_start_embeddings` and :meth:`AudioLLM.answer_start_embeddings`; the pipeline
(``pipeline.py``) drives the stages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from core.model.freeze_omni.adapter import AdapterState, build_adapter
from core.model.freeze_omni.config import AudioLLMConfig
from core.model.freeze_omni.encoder import EncoderState, SpeechEncoder

log = logging.getLogger(__name__)

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
AUDIO_MARK = "<audio>"
STATE_THRESHOLD = 0.5

Decision = Literal["cl", "ss", "el"]


class StaleStateError(RuntimeError):
    """A dialogue state was used after a later step had already extended its KV cache."""


# ------------------------------------------------------------------------------------------------ KV cache
class LLMCache:
    """The LLM key/value cache of one dialogue (the only dialogue memory of Freeze-Omni).

    Wraps a ``transformers.DynamicCache``, which the backbone appends to in place. ``length`` records how many
    positions this handle owns; :meth:`check` refuses a handle whose cache has moved on (a consumed state).
    """

    def __init__(self, kv: Any | None = None, length: int = 0) -> None:
        from transformers import DynamicCache

        self.kv = kv if kv is not None else DynamicCache()
        self.length = length

    def check(self) -> None:
        actual = self.kv.get_seq_length()
        if actual != self.length:
            raise StaleStateError(f"this dialogue state owns {self.length} cached positions but the cache now holds "
                                  f"{actual}: a later step consumed it (fork() before branching)")

    def advanced(self) -> "LLMCache":
        """A new handle after the backbone appended to the shared cache."""
        return LLMCache(self.kv, self.kv.get_seq_length())

    def fork(self) -> "LLMCache":
        """An independent copy (tensors cloned): use at branch points only, e.g. a barge-in snapshot."""
        from transformers import DynamicCache

        self.check()
        if self.length == 0:
            return LLMCache()
        data = [(layer.keys.clone(), layer.values.clone()) for layer in self.kv.layers]
        return LLMCache(DynamicCache(ddp_cache_data=data), self.length)

    def truncate(self, length: int) -> "LLMCache":
        """Drop every position after ``length`` (in place) and return the handle for the shorter cache."""
        self.check()
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} positions to {length}")
        if length < self.length:
            self.kv.crop(length - self.length)
        return LLMCache(self.kv, length)


# --------------------------------------------------------------------------------------------- chat template
@dataclass(frozen=True)
class ChatTokens:
    """Token ids of the chat-template pieces (docs/freeze-omni.md, "Chat template pieces"), tokenised at load time
    with the backbone's tokenizer."""

    im_start: int
    im_end: int
    system_head: list[int]     # tokens("<|im_start|>system\n")
    default_role: list[int]    # tokens(A0 + "<|im_end|>"): the template's own system turn
    prefix: list[int]          # tokens(A1) = "\n<|im_start|>user\n"
    suffix: list[int]          # tokens(S) = "<|im_end|>\n<|im_start|>assistant\n"


def tokenize(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def special_token_id(tokenizer: Any, token: str) -> int | None:
    vocab = tokenizer.get_vocab()
    return vocab.get(token)


def split_chat_template(template: str) -> tuple[str, str, str]:
    """(A0, A1, S): the text before the system ``<|im_end|>``, between it and ``<audio>``, and after ``<audio>``."""
    before, after = template.split(AUDIO_MARK, 1)
    a0, a1 = before.split(IM_END, 1)
    return a0, a1, after


def build_chat_tokens(tokenizer: Any, template: str) -> ChatTokens:
    a0, a1, s = split_chat_template(template)
    im_start = special_token_id(tokenizer, IM_START)
    im_end = special_token_id(tokenizer, IM_END)
    if im_start is None or im_end is None:
        raise ValueError(f"the tokenizer has no {IM_START} / {IM_END} special tokens")
    return ChatTokens(
        im_start=im_start,
        im_end=im_end,
        system_head=tokenize(tokenizer, IM_START + "system\n"),
        default_role=tokenize(tokenizer, a0 + IM_END),
        prefix=tokenize(tokenizer, a1),
        suffix=tokenize(tokenizer, s),
    )


# ------------------------------------------------------------------------------------------------ sampling
@dataclass(frozen=True)
class SamplingSettings:
    """Text sampling of the LLM (docs/freeze-omni.md, "Text sampling"). ``top_k <= 0`` or ``top_p <= 0`` disables
    that filter."""

    temperature: float = 0.7
    top_k: int = 5
    top_p: float = 0.8
    max_tokens: int = 500  # the server's cap (bin/inference.py: 128)

    @classmethod
    def greedy(cls, max_tokens: int = 500) -> "SamplingSettings":
        return cls(temperature=1.0, top_k=1, top_p=0.0, max_tokens=max_tokens)


def filter_probabilities(logits: Tensor, temperature: float, top_k: int, top_p: float) -> Tensor:
    """The original ``_post_decode`` distribution for a 1-D logit vector (float32 probabilities).

    1. z / T when T != 1; 2. softmax; 3. keep the k largest probabilities, renormalise; 4. top-p: sort descending,
    mark every token whose cumulative sum exceeds top_p; if the top-1 token is marked, shift the mask right by one
    (only the top-1 survives); otherwise the token that *crosses* top_p is removed too (unlike Hugging Face);
    renormalise.
    """
    z = logits.float().reshape(-1)
    if temperature != 1.0:
        z = z / temperature
    p = torch.softmax(z, dim=-1)
    if top_k > 0:
        k = min(top_k, p.numel())
        values, indices = torch.topk(p, k)
        p = torch.zeros_like(p).scatter_(0, indices, values)
        p = p / p.sum()
    if top_p > 0.0:
        sorted_p, order = torch.sort(p, descending=True)
        remove = torch.cumsum(sorted_p, dim=0) > top_p
        if bool(remove[0]):
            remove = torch.cat([remove.new_zeros(1), remove[:-1]])
        sorted_p = sorted_p.masked_fill(remove, 0.0)
        p = torch.zeros_like(p).scatter_(0, order, sorted_p)
        p = p / p.sum()
    return p


def sample_token(logits: Tensor, settings: SamplingSettings, generator: torch.Generator | None = None) -> int:
    p = filter_probabilities(logits, settings.temperature, settings.top_k, settings.top_p)
    if generator is not None and generator.device != p.device:
        p = p.to(generator.device)
    return int(torch.multinomial(p, 1, generator=generator).item())


# ------------------------------------------------------------------------------------------------ state head
def turn_decision(state_logits: Tensor) -> tuple[Decision, tuple[float, float, float]]:
    """Softmax over classes 0..2 only (class 3 dropped); 'el' if p2 > 0.5, else 'ss' if p1 > 0.5, else 'cl'."""
    probs = torch.softmax(state_logits.float().reshape(-1)[:3], dim=-1)
    p0, p1, p2 = (float(v) for v in probs)
    if p2 > STATE_THRESHOLD:
        return "el", (p0, p1, p2)
    if p1 > STATE_THRESHOLD:
        return "ss", (p0, p1, p2)
    return "cl", (p0, p1, p2)


# ------------------------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class ChunkEncoding:
    """Encoder and adapter outputs of one audio chunk, with the updated states."""

    encoder_out: Tensor       # (1, frames, enc_dim)
    embeddings: Tensor        # (1, positions, llm_dim)
    encoder_state: EncoderState
    adapter_state: AdapterState


@dataclass(frozen=True)
class LLMStep:
    """Result of appending inputs to the LLM: the post-norm hidden state of the last position and the cache."""

    hidden: Tensor            # (1, llm_dim), after the backbone's final norm
    cache: LLMCache
    inputs_embeds: Tensor     # (1, n, llm_dim) what was appended (for tracing and tests)


class AudioLLM(nn.Module):
    """Weights of the Freeze-Omni AudioLLM around a frozen causal-LM backbone (``llm_decoder``)."""

    TRAINABLE_PREFIXES = ("encoder.", "adpter.", "task_embeddings.", "prompt_embeddings.", "predictor_head.")

    def __init__(self, config: AudioLLMConfig, llm_decoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        d = config.llm_embed_dim
        self.encoder = SpeechEncoder(config.encoder)
        self.adpter = build_adapter(config.adapter)
        self.task_embeddings = nn.Embedding(config.task_num, d) if config.task_num > 0 else None
        self.prompt_embeddings = nn.Embedding(config.prompt_num, d) if config.prompt_num > 0 else None
        self.predictor_head = nn.Linear(d, config.predict_usr_state) if config.has_predictor else None
        self.llm_decoder = llm_decoder

    # -- helpers -----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.encoder.global_cmvn.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.enc[1].after_norm.weight.dtype

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The keys stored in ``audiollm/final.pt`` (everything but the backbone)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(self.TRAINABLE_PREFIXES)}

    def embed_ids(self, ids: list[int] | Tensor) -> Tensor:
        """Backbone input embeddings of token ids, shape (1, n, llm_dim)."""
        table = self.llm_decoder.get_input_embeddings()
        t = torch.as_tensor(ids, dtype=torch.long, device=table.weight.device).reshape(1, -1)
        return table(t)

    def prompt_rows(self) -> Tensor | None:
        if self.prompt_embeddings is None:
            return None
        ids = torch.arange(self.config.prompt_num, device=self.prompt_embeddings.weight.device)
        return self.prompt_embeddings(ids).unsqueeze(0)

    # -- listen path --------------------------------------------------------------------------------------
    def encode_chunk(self, features: Tensor, encoder_state: EncoderState, adapter_state: AdapterState
                     ) -> ChunkEncoding:
        """One 19x80 fbank block -> encoder frames -> adapter embeddings (LLM input positions)."""
        x = features.to(device=self.device, dtype=torch.float32)  # CMVN runs in float32, then the model dtype
        enc, encoder_state = self.encoder(x, encoder_state)
        emb, adapter_state = self.adpter(enc, adapter_state)
        return ChunkEncoding(enc, emb, encoder_state, adapter_state)

    def state_logits(self, hidden: Tensor) -> Tensor | None:
        if self.predictor_head is None:
            return None
        return self.predictor_head(hidden.to(self.predictor_head.weight.dtype)).reshape(-1)

    # -- backbone -----------------------------------------------------------------------------------------
    def llm_dtype(self) -> torch.dtype:
        return self.llm_decoder.get_input_embeddings().weight.dtype

    def append(self, cache: LLMCache, inputs_embeds: Tensor) -> LLMStep:
        """Run the backbone on new input embeddings after the cached positions (causal, positions continue)."""
        cache.check()
        emb = inputs_embeds.to(dtype=self.llm_dtype())
        out = self.llm_decoder.model(inputs_embeds=emb, past_key_values=cache.kv, use_cache=True)
        hidden = out.last_hidden_state[:, -1]
        return LLMStep(hidden=hidden, cache=cache.advanced(), inputs_embeds=emb)

    def lm_logits(self, hidden: Tensor) -> Tensor:
        head = self.llm_decoder.get_output_embeddings()
        return head(hidden.to(head.weight.dtype if hasattr(head, "weight") else hidden.dtype)).reshape(-1)

    # -- inputs per dialogue stage ------------------------------------------------------------------------
    def turn_start_embeddings(self, chat: ChatTokens, speech: Tensor) -> Tensor:
        """'sl': [<|im_end|>] + user prefix tokens + prompt embeddings + speech embeddings."""
        parts = [self.embed_ids([chat.im_end] + chat.prefix)]
        prompts = self.prompt_rows()
        if prompts is not None:
            parts.append(prompts.to(parts[0].dtype))
        parts.append(speech.to(parts[0].dtype))
        return torch.cat(parts, dim=1)

    def answer_start_embeddings(self, chat: ChatTokens) -> Tensor:
        """'ss': the assistant suffix ``<|im_end|>\\n<|im_start|>assistant\\n``."""
        return self.embed_ids(chat.suffix)
