"""Freeze-Omni speech encoder: global CMVN -> Conv2d subsampling (x4) -> streaming rel-pos transformer.

See docs/freeze-omni.md, "Audio front-end" (CMVN), "Speech encoder" and "AudioLLM keys" (``encoder.*``).

Streaming, per call (one 19-frame feature block -> 4 encoder frames):

* every transformer layer attends its 4 new queries to [cached keys of up to ``chunk * left_chunks`` frames] + the 4
  new keys, with no mask; the cached K/V are the *projected* keys/values (position-free, because positions enter
  only through the ``(q + v) . linear_pos(PE(pos_j))`` term);
* positional encodings are rebuilt for ``L = cached + new`` key positions starting at
  ``max(0, pe_index - (left_chunks + 1) * chunk)``, where ``pe_index`` is first taken modulo
  ``chunk * floor(5000 / chunk) - (left_chunks + 1) * chunk`` and then grows by ``chunk`` per call. This reproduces
  the original exactly, including its drift after ``left_chunks + 1`` chunks and its wrap-around.
* no ``rel_shift``: the positional term is a content-dependent bias on the key's (windowed) absolute position.

All streaming state is in :class:`EncoderState`; the modules hold weights only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.model.freeze_omni.config import EncoderConfig, SubsamplingConfig, TransformerConfig


@dataclass(frozen=True)
class EncoderState:
    """Streaming state of the speech encoder for one user turn.

    ``layer_kv[i]`` = (K, V) of layer i, each (1, heads, T_cached, head_dim), or None before the first chunk.
    ``pe_index`` is the original's positional counter (see the module docstring).
    """

    layer_kv: tuple[tuple[Tensor, Tensor], ...] | None = None
    pe_index: int = 0

    @property
    def cached_frames(self) -> int:
        return 0 if self.layer_kv is None else int(self.layer_kv[0][0].shape[2])


class GlobalCMVN(nn.Module):
    """y = (x - mean) * istd; ``mean``/``istd`` are persistent buffers (keys ``encoder.global_cmvn.*``).

    Computed in float32 whatever the model dtype (log-mel values around 10-20 lose too much in 16 bits); the
    buffers themselves are kept in float32 by the loader.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("istd", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean.float()) * self.istd.float()


class Conv2dSubsampling4(nn.Module):
    """(B, T, idim) -> (B, T', odim) with T' = ((T - 3) // 2 + 1 - 3) // 2 + 1. Keys ``core.conv.{0,2}``, ``core.out.0``.

    The flatten before ``out`` is channel-major: feature index = channel * F' + frequency.
    """

    def __init__(self, cfg: SubsamplingConfig) -> None:
        super().__init__()
        odim = cfg.output_dim
        self.core = nn.Module()
        self.core.conv = nn.Sequential(
            nn.Conv2d(1, odim, 3, 2), nn.ReLU(), nn.Conv2d(odim, odim, 3, 2), nn.ReLU()
        )
        self.core.out = nn.Sequential(nn.Linear(odim * cfg.freq_after, odim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.core.conv(x.unsqueeze(1))                   # (B, C, T', F')
        b, c, t, f = x.shape
        x = x.transpose(1, 2).reshape(b, t, c * f)           # channel-major flatten
        return self.core.out(x)


def sinusoid_table(positions: Tensor, dim: int, dtype: torch.dtype) -> Tensor:
    """PE(pos, 2i) = sin(pos * 10000^(-2i/dim)), PE(pos, 2i+1) = cos(.).

    Computed on the CPU in float64 (exact to float32 even at the largest positions, ~5000; and float64 is not
    available on every accelerator), returned in ``dtype``; the caller moves it to its device.
    """
    pos = positions.to(device="cpu", dtype=torch.float64).unsqueeze(1)
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions.numel(), dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv[: dim // 2])
    return table.to(dtype)


class RelPositionAttention(nn.Module):
    """Multi-head attention with the rel-enc positional term and learned biases u, v (no rel_shift)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(heads, self.head_dim))

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

    def forward(self, x: Tensor, pos_emb: Tensor, cache: tuple[Tensor, Tensor] | None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x (1, T, D) new frames; pos_emb (L, D) for the L = cached + T keys. Returns (output, (K, V) of all L)."""
        q = self._split(self.linear_q(x))
        k = self._split(self.linear_k(x))
        v = self._split(self.linear_v(x))
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        p = self._split(self.linear_pos(pos_emb.unsqueeze(0)))  # (1, H, L, d)
        q_u = q + self.pos_bias_u.unsqueeze(1)
        q_v = q + self.pos_bias_v.unsqueeze(1)
        scores = (q_u @ k.transpose(-2, -1) + q_v @ p.transpose(-2, -1)) / math.sqrt(self.head_dim)
        attn = torch.softmax(scores, dim=-1)  # no mask: chunk + left context, as in the original
        out = (attn @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.linear_out(out), (k, v)


class FeedForward(nn.Module):
    def __init__(self, dim: int, units: int) -> None:
        super().__init__()
        self.w_1 = nn.Linear(dim, units)
        self.w_2 = nn.Linear(units, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(F.relu(self.w_1(x)))


class TransformerLayer(nn.Module):
    """Pre-norm block: x += MHA(norm1(x)); x += FFN(norm2(x))."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.self_attn = RelPositionAttention(cfg.attention_dim, cfg.attention_heads)
        self.feed_forward = FeedForward(cfg.attention_dim, cfg.linear_units)
        self.norm1 = nn.LayerNorm(cfg.attention_dim, eps=1e-5)
        self.norm2 = nn.LayerNorm(cfg.attention_dim, eps=1e-5)

    def forward(self, x: Tensor, pos_emb: Tensor, cache: tuple[Tensor, Tensor] | None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        attn, kv = self.self_attn(self.norm1(x), pos_emb, cache)
        x = x + attn
        x = x + self.feed_forward(self.norm2(x))
        return x, kv


class StreamingTransformer(nn.Module):
    """``enc.1``: embed (Linear, LayerNorm, Dropout, ReLU) -> x sqrt(D) -> N layers -> after_norm."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.attention_dim
        self.embed = nn.Sequential(nn.Linear(cfg.input_dim, d), nn.LayerNorm(d, eps=1e-5), nn.Dropout(0.0), nn.ReLU())
        self.encoders = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_blocks))
        self.after_norm = nn.LayerNorm(d, eps=1e-5)
        self.xscale = math.sqrt(d)

    def positions(self, pe_index: int, cached: int, new: int) -> tuple[Tensor, int]:
        """Key positions for this call and the next pe_index (the original's rule, see the module docstring)."""
        cfg = self.cfg
        pe_index = pe_index % cfg.pe_max_len
        start = max(0, pe_index - cfg.pe_window)
        return torch.arange(start, start + cached + new), pe_index + cfg.chunk_size

    def forward(self, x: Tensor, state: EncoderState) -> tuple[Tensor, EncoderState]:
        x = self.embed(x) * self.xscale
        positions, next_pe = self.positions(state.pe_index, state.cached_frames, x.shape[1])
        pos_emb = sinusoid_table(positions, self.cfg.attention_dim, torch.float32).to(device=x.device, dtype=x.dtype)
        keep = self.cfg.cache_frames
        new_kv = []
        for i, layer in enumerate(self.encoders):
            cache = state.layer_kv[i] if state.layer_kv is not None else None
            x, (k, v) = layer(x, pos_emb, cache)
            if k.shape[2] > keep:
                k, v = k[:, :, -keep:], v[:, :, -keep:]
            new_kv.append((k, v))
        return self.after_norm(x), EncoderState(layer_kv=tuple(new_kv), pe_index=next_pe)


class SpeechEncoder(nn.Module):
    """The ``encoder`` of the AudioLLM: ``global_cmvn``, ``enc.0`` (subsampling), ``enc.1`` (transformer)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.global_cmvn = GlobalCMVN(cfg.input_dim)
        self.enc = nn.ModuleList([Conv2dSubsampling4(cfg.subsampling), StreamingTransformer(cfg.transformer)])

    @property
    def frames_per_block(self) -> int:
        """Feature frames per call that yield exactly ``chunk_size`` encoder frames (19 for chunk 4)."""
        return self.cfg.subsampling.receptive_field + (self.cfg.transformer.chunk_size - 1) * 4

    def initial_state(self) -> EncoderState:
        return EncoderState()

    def normalize(self, features: Tensor) -> Tensor:
        return self.global_cmvn(features)

    def forward(self, features: Tensor, state: EncoderState) -> tuple[Tensor, EncoderState]:
        """features (1, T, input_dim) raw fbank -> (encoder frames (1, T', D), new state)."""
        x = self.normalize(features).to(self.enc[1].after_norm.weight.dtype)
        x = self.enc[0](x)
        return self.enc[1](x, state)
