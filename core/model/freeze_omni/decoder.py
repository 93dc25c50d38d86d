"""Freeze-Omni speech decoder (``LLM2TTSCodecAR``): LLM hidden states + text embeddings -> codec tokens.

See docs/freeze-omni.md, "Speech decoder", "Speech decoder keys" and "Deviations from the official code" (D6-D8).

Layout (state-dict prefixes in brackets)::

    text rows (4M, idim) --[layers_pre_nn: bidirectional, positions 0..4M-1]--> prepend embedding(bos) -> X (L = 4M+1)
    prefix rows (P, idim) --[layers_prefix: bidirectional, positions 0..P-1]--> K/V of prefix layer i -> cache slot i
    X --[layers: NO mask, positions restart at 0..L-1]--> appended to cache slot i       (NAR prefill, outputs unused)
    sos, t1, t2, ... --[layers, one row, position = cache_len - P]--> norm -> out_fnn -> logits -> top-k sample

The Llama block is written here (pre-RMSNorm, RoPE with explicit positions, eager attention with an fp32 softmax,
SwiGLU MLP, no biases): no transformers classes, so no SDPA/flash "None mask means causal" trap (D6).

All inference state (per-layer K/V, prefix length, text length, step count) lives in :class:`DecoderState`; the
module holds only weights and the RoPE frequency table.

Deviations from the original (each documented where it happens):

* Sampling masks the special ids ``>= odim`` except ``eos`` before the softmax (D7): bos/sos/pad cannot be
  sampled and so can never index the codec codebook. With top-k 1 this changes nothing unless the argmax is one of
  them (the parity fixture never hits that).
* The optional repetition penalty is CTRL-style and correct (D8): each distinct token in the window once,
  positive logits divided, negative logits multiplied. The release disables it (window -1).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.model.freeze_omni.errors import CheckpointError, check_state_dict, load_torch_state, read_json_file

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
WEIGHTS_FILE = "final.pt"
DEFAULT_MAX_TOKENS = 1000  # 25 s of audio at 40 tokens/s


# --------------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DecoderConfig:
    """Dimensions of the speech decoder, parsed from ``decoder/model.json`` (``[idim, odim, args]``)."""

    idim: int                    # embedding width = decoder input row width (896 in the release)
    odim: int                    # number of codec codes (1024); the embedding/out table has odim + 4 rows
    hidden_size: int             # transformer_attention_dim
    intermediate_size: int       # transformer_linear_units
    num_layers: int              # transformer_num_blocks (main and prefix stacks); pre_nn has num_layers // 2
    num_heads: int               # transformer_attention_heads (MHA: as many K/V heads)
    output_dim: int              # encoder_output_dim (input width of out_fnn)
    prefix_finetune: bool        # kv_cache_prefix_finetune: layers_prefix exist and the prefix is used
    rms_norm_eps: float = 1e-6   # LlamaConfig default
    rope_theta: float = 10000.0  # LlamaConfig default

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding and of out_fnn: the codes plus bos, sos, eos, pad."""
        return self.odim + 4

    @property
    def bos(self) -> int:
        return self.odim

    @property
    def sos(self) -> int:
        return self.odim + 1

    @property
    def eos(self) -> int:
        return self.odim + 2

    @property
    def pad(self) -> int:
        return self.odim + 3

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def pre_nn_layers(self) -> int:
        return self.num_layers // 2

    @classmethod
    def from_json(cls, path: str | Path) -> DecoderConfig:
        path = Path(path)
        raw = read_json_file(path, "decoder config")
        return cls.from_obj(raw, path)

    @classmethod
    def from_obj(cls, raw: Any, path: str | Path | None = None) -> DecoderConfig:
        """Accept the official ``[idim, odim, args]`` list (idim/odim are read from ``args`` like the original,
        falling back to the list entries) or a bare ``args`` dict."""
        list_dims: tuple[Any, Any] = (None, None)
        if isinstance(raw, list):
            if len(raw) != 3 or not isinstance(raw[2], dict):
                raise CheckpointError(path, None, "expected a JSON list [idim, odim, {args}]")
            list_dims = (raw[0], raw[1])
            args = raw[2]
        elif isinstance(raw, dict):
            args = raw
        else:
            raise CheckpointError(path, None, "expected a JSON list [idim, odim, {args}] or an args object")

        def get_int(key: str, fallback: Any = None) -> int:
            value = args.get(key, fallback)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise CheckpointError(path, key, f"missing or not a positive integer: {value!r}")
            return value

        def get_float(key: str, default: float) -> float:
            value = args.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise CheckpointError(path, key, f"not a positive number: {value!r}")
            return float(value)

        config = cls(
            idim=get_int("idim", list_dims[0]),
            odim=get_int("odim", list_dims[1]),
            hidden_size=get_int("transformer_attention_dim"),
            intermediate_size=get_int("transformer_linear_units"),
            num_layers=get_int("transformer_num_blocks"),
            num_heads=get_int("transformer_attention_heads"),
            output_dim=get_int("encoder_output_dim", args.get("transformer_attention_dim")),
            prefix_finetune=bool(args.get("kv_cache_prefix_finetune", 0)),
            rms_norm_eps=get_float("rms_norm_eps", 1e-6),
            rope_theta=get_float("rope_theta", 10000.0),
        )
        if config.idim != config.hidden_size:
            raise CheckpointError(path, "idim", f"idim {config.idim} must equal transformer_attention_dim "
                                                f"{config.hidden_size} (the embedding feeds the Llama layers)")
        if config.output_dim != config.hidden_size:
            raise CheckpointError(path, "encoder_output_dim", f"{config.output_dim} must equal "
                                                              f"transformer_attention_dim {config.hidden_size}")
        if config.hidden_size % config.num_heads or config.head_dim % 2:
            raise CheckpointError(path, "transformer_attention_heads",
                                  f"{config.hidden_size} is not divisible into {config.num_heads} heads of even size")
        return config


# ---------------------------------------------------------------------------------------------------- state
@dataclass
class LayerCache:
    """Keys (after RoPE) and values of one main layer, shape (1, heads, capacity, head_dim); ``length`` rows used.

    The buffer grows by doubling, so an AR step writes one row instead of copying the whole cache.
    """

    keys: Tensor | None = None
    values: Tensor | None = None
    length: int = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new rows and return views of all rows (old + new)."""
        n = k.shape[2]
        need = self.length + n
        if self.keys is None or need > self.keys.shape[2]:
            capacity = max(need, 2 * (self.keys.shape[2] if self.keys is not None else 0), 64)
            shape = (k.shape[0], k.shape[1], capacity, k.shape[3])
            keys = k.new_empty(shape)
            values = v.new_empty(shape)
            if self.keys is not None and self.length:
                keys[:, :, : self.length] = self.keys[:, :, : self.length]
                values[:, :, : self.length] = self.values[:, :, : self.length]
            self.keys, self.values = keys, values
        self.keys[:, :, self.length: need] = k
        self.values[:, :, self.length: need] = v
        self.length = need
        return self.keys[:, :, :need], self.values[:, :, :need]

    def clone(self) -> LayerCache:
        if self.keys is None:
            return LayerCache()
        return LayerCache(self.keys[:, :, : self.length].clone(), self.values[:, :, : self.length].clone(), self.length)


@dataclass
class DecoderState:
    """Everything that changes while decoding one text segment.

    ``layers[i]`` holds cache slot i: P prefix rows (from prefix layer i), then L = 1 + 4M rows of [bos + text]
    (from main layer i), then one row per AR step. Positions of AR steps are ``cache_len - prefix_len``.
    """

    layers: list[LayerCache]
    prefix_len: int = 0
    text_len: int = 0
    steps: int = 0

    @property
    def cache_len(self) -> int:
        return self.layers[0].length if self.layers else 0

    @property
    def next_position(self) -> int:
        """RoPE position of the next AR input: the prefix does not count (positions restart after it)."""
        return self.cache_len - self.prefix_len

    def clone(self) -> DecoderState:
        """An independent copy (for branching); the original is left untouched."""
        return DecoderState([layer.clone() for layer in self.layers], self.prefix_len, self.text_len, self.steps)


@dataclass
class DecoderStep:
    """One AR step: the sampled token, the raw ``out_fnn`` logits (odim + 4) and the final-norm hidden state."""

    token: int
    logits: Tensor
    hidden: Tensor
    is_eos: bool


# --------------------------------------------------------------------------------------------------- blocks
def rope_inverse_frequencies(head_dim: int, theta: float) -> Tensor:
    """Default Llama RoPE: 1 / theta^(2i/d), computed in float32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta ** exponents)


def rope_cos_sin(inv_freq: Tensor, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables (n, head_dim) for explicit integer positions, computed in float32 then cast."""
    freqs = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (batch, heads, n, head_dim); cos/sin: (n, head_dim)."""
    return x * cos + _rotate_half(x) * sin


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


class SelfAttention(nn.Module):
    """Multi-head attention with RoPE; no mask ever (every use in this model is bidirectional / attends to all)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        size = config.hidden_size
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(size, size, bias=False)
        self.k_proj = nn.Linear(size, size, bias=False)
        self.v_proj = nn.Linear(size, size, bias=False)
        self.o_proj = nn.Linear(size, size, bias=False)

    def _heads(self, x: Tensor) -> Tensor:
        batch, n, _ = x.shape
        return x.view(batch, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: LayerCache | None) -> Tensor:
        batch, n, _ = x.shape
        q = apply_rope(self._heads(self.q_proj(x)), cos, sin)
        k = apply_rope(self._heads(self.k_proj(x)), cos, sin)
        v = self._heads(self.v_proj(x))
        if cache is not None:
            k, v = cache.append(k, v)
        scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(batch, n, self.num_heads * self.head_dim)
        return self.o_proj(out)


class SwiGLU(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    """Pre-norm Llama block: x + attn(norm(x)); then x + mlp(norm(x))."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttention(config)
        self.mlp = SwiGLU(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: LayerCache | None = None) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


# ------------------------------------------------------------------------------------------------- sampling
def sample_token(logits: Tensor, top_k: int, *, odim: int, eos: int, history: list[int] | None = None,
                 penalty_window: int = -1, penalty: float = 1.1,
                 generator: torch.Generator | None = None) -> int:
    """Pick the next codec token from raw logits (odim + 4,).

    1. Optional CTRL-style repetition penalty over the distinct tokens among the last ``penalty_window`` entries of
       ``history`` (the original includes the initial sos there): positive logits / penalty, negative * penalty.
    2. Special ids >= odim other than eos are masked out (deviation D7 of docs/freeze-omni.md).
    3. Softmax over all logits in float32 (no temperature), keep the top-k probabilities, renormalise and draw one
       sample with ``generator``. With ``top_k == 1`` this is the argmax and uses no randomness.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    scores = logits.detach().to(torch.float32).reshape(-1).clone()
    if penalty_window > 0 and history and penalty != 1.0:
        recent = torch.tensor(sorted(set(history[-penalty_window:])), dtype=torch.long, device=scores.device)
        picked = scores[recent]
        scores[recent] = torch.where(picked > 0, picked / penalty, picked * penalty)
    special = torch.arange(scores.shape[0], device=scores.device) >= odim
    special[eos] = False
    scores = scores.masked_fill(special, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    k = min(top_k, scores.shape[0] - int(special.sum()))
    top_probs, top_ids = torch.topk(probs, k)
    if k == 1:
        return int(top_ids[0])
    top_probs = top_probs / top_probs.sum()
    choice = torch.multinomial(top_probs, 1, generator=generator)
    return int(top_ids[choice[0]])


# -------------------------------------------------------------------------------------------------- decoder
class SpeechDecoder(nn.Module):
    """The Freeze-Omni speech decoder. Weights only; all decoding state is in :class:`DecoderState`."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.idim, padding_idx=config.pad)
        self.layers_pre_nn = nn.ModuleList(DecoderLayer(config) for _ in range(config.pre_nn_layers))
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        if config.prefix_finetune:
            self.layers_prefix = nn.ModuleList(DecoderLayer(config) for _ in range(config.num_layers))
        else:
            self.layers_prefix = None
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.out_fnn = nn.Linear(config.output_dim, config.vocab_size, bias=True)
        # One table serves rotary_emb, rotary_emb_pre_nn and rotary_emb_prefix (same config, non-persistent).
        self.register_buffer("rope_inv_freq", rope_inverse_frequencies(config.head_dim, config.rope_theta),
                             persistent=False)
        self._warned_prefix_ignored = False

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> SpeechDecoder:
        """Load ``model.json`` + ``final.pt`` from the decoder folder (``checkpoints/decoder``; the checkpoints root
        containing ``decoder/`` is accepted too).

        ``final.pt`` is read with ``torch.load(weights_only=True)``; a top-level ``model`` entry is used when present
        (other top-level entries such as training state are ignored), otherwise the dict is the state dict.
        Missing, unexpected, non-floating or wrongly shaped keys raise :class:`CheckpointError` naming file and key.
        """
        folder = Path(folder)
        if not (folder / MODEL_JSON).exists() and (folder / "decoder" / MODEL_JSON).exists():
            folder = folder / "decoder"
        config = DecoderConfig.from_json(folder / MODEL_JSON)
        weights_path = folder / WEIGHTS_FILE
        state = load_torch_state(weights_path)
        if "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        with torch.device("meta"):
            model = cls(config)
        check_state_dict(model.state_dict(), state, weights_path)
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
        model.rope_inv_freq = torch.empty(0)
        model = model.to(device=device, dtype=dtype).eval()
        # Recomputed after the cast: the frequency table stays float32 whatever the compute dtype.
        model.rope_inv_freq = rope_inverse_frequencies(config.head_dim, config.rope_theta).to(model.device)
        log.info("speech decoder loaded from %s: %d params, odim %d, hidden %d, %d+%d+%d layers, %s %s",
                 folder, sum(p.numel() for p in model.parameters()), config.odim, config.hidden_size,
                 config.pre_nn_layers, config.num_layers, config.num_layers if config.prefix_finetune else 0,
                 device, dtype)
        return model

    # ---------------------------------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype

    def _rows(self, x: Tensor, name: str) -> Tensor:
        """Accept (R, idim) or (1, R, idim); return (1, R, idim) in the model's device and dtype."""
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or x.shape[0] != 1 or x.shape[2] != self.config.idim:
            raise ValueError(f"{name} must have shape (rows, {self.config.idim}) or (1, rows, {self.config.idim}),"
                             f" got {tuple(x.shape)}")
        return x.to(device=self.device, dtype=self.dtype)

    def _rope(self, start: int, n: int) -> tuple[Tensor, Tensor]:
        positions = torch.arange(start, start + n, device=self.device)
        return rope_cos_sin(self.rope_inv_freq, positions, self.dtype)

    def new_state(self) -> DecoderState:
        return DecoderState([LayerCache() for _ in range(self.config.num_layers)])

    # ---------------------------------------------------------------------------------------- inference
    @torch.inference_mode()
    def prefill(self, hidden: Tensor, prefix: Tensor | None = None) -> DecoderState:
        """NAR part: pre_nn on the text rows, prefix layers into the cache, bidirectional prefill of [bos + text].

        hidden: text-embedding rows (4M, idim) (the 896-wide split, docs/freeze-omni.md "Speech decoder"). prefix: LLM
        hidden-state rows (P, idim) or None. Returns a fresh :class:`DecoderState` ready for :meth:`step` with the sos
        token.
        """
        x = self._rows(hidden, "hidden")
        cos, sin = self._rope(0, x.shape[1])
        for layer in self.layers_pre_nn:
            x = layer(x, cos, sin)  # bidirectional, no final norm after this stack
        bos = self.embedding(torch.tensor([[self.config.bos]], device=self.device))
        x = torch.cat([bos, x], dim=1)

        state = self.new_state()
        if prefix is not None and prefix.numel() > 0:
            if self.layers_prefix is None:
                if not self._warned_prefix_ignored:
                    log.warning("prefix given but kv_cache_prefix_finetune is off: the prefix is ignored")
                    self._warned_prefix_ignored = True
            else:
                p = self._rows(prefix, "prefix")
                cos_p, sin_p = self._rope(0, p.shape[1])
                for layer, cache in zip(self.layers_prefix, state.layers):
                    p = layer(p, cos_p, sin_p, cache)  # layer i fills cache slot i; the final output is unused
                state.prefix_len = p.shape[1]

        cos, sin = self._rope(0, x.shape[1])  # positions restart at 0 after the prefix
        for layer, cache in zip(self.layers, state.layers):
            x = layer(x, cos, sin, cache)  # no mask: attends to the whole prefix and all of [bos + text]
        state.text_len = x.shape[1]
        return state

    @torch.inference_mode()
    def step(self, state: DecoderState, token: int) -> tuple[Tensor, Tensor]:
        """One AR step with input ``token``; appends to ``state`` in place.

        Returns (logits (odim + 4,), final-norm hidden (hidden_size,)), both in the model dtype.
        """
        x = self.embedding(torch.tensor([[token]], device=self.device))
        cos, sin = self._rope(state.next_position, 1)
        for layer, cache in zip(self.layers, state.layers):
            x = layer(x, cos, sin, cache)
        state.steps += 1
        hidden = self.norm(x)
        logits = self.out_fnn(hidden)
        return logits[0, 0], hidden[0, 0]

    def iter_steps(self, hidden: Tensor, prefix: Tensor | None = None, *, top_k: int = 2,
                   max_tokens: int = DEFAULT_MAX_TOKENS, penalty_window: int = -1, penalty: float = 1.1,
                   generator: torch.Generator | None = None,
                   state: DecoderState | None = None) -> Iterator[DecoderStep]:
        """Prefill (unless ``state`` is given) and run the AR loop, yielding every step including the eos step.

        At most ``max_tokens`` steps; the loop ends after a step that sampled eos.
        """
        config = self.config
        if state is None:
            state = self.prefill(hidden, prefix)
        history = [config.sos]
        current = config.sos
        for _ in range(max_tokens):
            logits, out_hidden = self.step(state, current)
            token = sample_token(logits, top_k, odim=config.odim, eos=config.eos, history=history,
                                 penalty_window=penalty_window, penalty=penalty, generator=generator)
            history.append(token)
            is_eos = token == config.eos
            yield DecoderStep(token, logits, out_hidden, is_eos)
            if is_eos:
                return
            current = token

    def generate(self, hidden: Tensor, prefix: Tensor | None = None, *, top_k: int = 2,
                 max_tokens: int = DEFAULT_MAX_TOKENS, penalty_window: int = -1, penalty: float = 1.1,
                 generator: torch.Generator | None = None) -> Iterator[int]:
        """Yield codec token ids (0 <= id < odim) one at a time; eos is not emitted.

        A plain generator: the caller can interleave other work between tokens or stop early by not iterating.
        """
        for item in self.iter_steps(hidden, prefix, top_k=top_k, max_tokens=max_tokens,
                                    penalty_window=penalty_window, penalty=penalty, generator=generator):
            if item.is_eos:
                return
            yield item.token
