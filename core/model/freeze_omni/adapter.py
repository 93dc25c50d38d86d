"""Freeze-Omni adapters (``adpter``, spelled as in the original): encoder frames -> LLM input embeddings.

See docs/freeze-omni.md, "Adapter" and "AudioLLM keys".

* ``subsampling`` (release): causal Conv1d with stride 2 (time /2).
  - one-conv branch (``enc_out_dim * 4 >= llm_embed_dim``, the release): ``conv1d2`` Conv1d(enc -> 2 enc, k, s 2),
    ``bn2`` = LayerNorm(2 enc, eps 1e-3) when ``norm: layer`` or BatchNorm1d when ``norm: batch``, activation,
    ``project`` Linear(2 enc -> llm);
  - two-conv branch: ``conv1d1`` Conv1d(enc -> 2 enc, k, s 1) + BatchNorm ``bn1`` + activation, ``conv1d2``
    Conv1d(2 enc -> 4 enc, k, s 2) + BatchNorm ``bn2`` + activation, ``project`` Linear(4 enc -> llm). The official
    code uses BatchNorms (with running statistics) in this branch, so it does whatever ``norm`` says.
  Streaming: each conv keeps the last ``k - 1`` input frames (zeros at the start of a turn) and prepends them to the
  next chunk, which makes chunked processing equal to one causal conv over the whole turn (the padding ``k - 1 = 4``
  is even, so the stride-2 phase is preserved).
* ``cnn``: two causal stride-1 convs (enc -> 2 enc -> 4 enc) with BatchNorm + ReLU, then Linear(4 enc -> llm). The
  original has no cache for it (so it could not stream); here the same ``k - 1`` frame cache makes it stream
  exactly. Its key names (``conv1d1``, ``bn1``, ``conv1d2``, ``bn2``, ``project``) are UNCONFIRMED.
* ``linear``: ``adpter.adpter`` Linear(enc -> llm), stateless.

State lives in :class:`AdapterState`; the modules hold weights only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from core.model.freeze_omni.config import AdapterConfig


@dataclass(frozen=True)
class AdapterState:
    """Per-conv caches, each (1, channels, kernel_size - 1); None before the first chunk of a turn."""

    caches: tuple[Tensor, ...] | None = None


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}[name]()


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a (B, C, T) tensor (applied on the time-major layout)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _causal(conv: nn.Conv1d, x: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
    """Prepend the cache (or k-1 zeros), run the conv, return (output, new cache = last k-1 input frames)."""
    pad = conv.kernel_size[0] - 1
    if cache is None:
        cache = x.new_zeros(x.shape[0], x.shape[1], pad)
    x = torch.cat([cache, x], dim=2)
    new_cache = x[:, :, x.shape[2] - pad:]
    return conv(x), new_cache


class SubsamplingAdapter(nn.Module):
    """``adpter_type: subsampling`` (CNNSubsampling)."""

    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        enc, k = cfg.enc_out_dim, cfg.kernel_size
        self.two_conv = cfg.two_conv
        if self.two_conv:
            self.conv1d1 = nn.Conv1d(enc, 2 * enc, k, stride=1)
            self.bn1 = nn.BatchNorm1d(2 * enc, eps=1e-3)
            self.relu1 = _activation(cfg.activation)
            self.conv1d2 = nn.Conv1d(2 * enc, 4 * enc, k, stride=2)
            self.bn2 = nn.BatchNorm1d(4 * enc, eps=1e-3)
            width = 4 * enc
        else:
            self.conv1d2 = nn.Conv1d(enc, 2 * enc, k, stride=2)
            self.bn2 = ChannelLayerNorm(2 * enc, eps=1e-3) if cfg.norm == "layer" else nn.BatchNorm1d(2 * enc, eps=1e-3)
            width = 2 * enc
        self.relu2 = _activation(cfg.activation)
        self.project = nn.Linear(width, cfg.llm_embed_dim)

    def forward(self, x: Tensor, state: AdapterState) -> tuple[Tensor, AdapterState]:
        """x (1, T, enc) -> (1, T // 2, llm), new state."""
        h = x.transpose(1, 2)
        caches = state.caches
        new: list[Tensor] = []
        if self.two_conv:
            h, c = _causal(self.conv1d1, h, caches[0] if caches else None)
            new.append(c)
            h = self.relu1(self.bn1(h))
        h, c = _causal(self.conv1d2, h, caches[-1] if caches else None)
        new.append(c)
        h = self.relu2(self.bn2(h))
        return self.project(h.transpose(1, 2)), AdapterState(caches=tuple(new))


class CNNAdapter(nn.Module):
    """``adpter_type: cnn``: two causal stride-1 convs with BatchNorm + ReLU, then a projection (time kept)."""

    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        enc, k = cfg.enc_out_dim, cfg.kernel_size
        self.conv1d1 = nn.Conv1d(enc, 2 * enc, k)
        self.bn1 = nn.BatchNorm1d(2 * enc)
        self.conv1d2 = nn.Conv1d(2 * enc, 4 * enc, k)
        self.bn2 = nn.BatchNorm1d(4 * enc)
        self.act = nn.ReLU()
        self.project = nn.Linear(4 * enc, cfg.llm_embed_dim)

    def forward(self, x: Tensor, state: AdapterState) -> tuple[Tensor, AdapterState]:
        h = x.transpose(1, 2)
        caches = state.caches
        h, c1 = _causal(self.conv1d1, h, caches[0] if caches else None)
        h = self.act(self.bn1(h))
        h, c2 = _causal(self.conv1d2, h, caches[1] if caches else None)
        h = self.act(self.bn2(h))
        return self.project(h.transpose(1, 2)), AdapterState(caches=(c1, c2))


class LinearAdapter(nn.Module):
    """``adpter_type: linear``: one Linear per frame (key ``adpter.adpter``)."""

    def __init__(self, cfg: AdapterConfig) -> None:
        super().__init__()
        self.adpter = nn.Linear(cfg.enc_out_dim, cfg.llm_embed_dim)

    def forward(self, x: Tensor, state: AdapterState) -> tuple[Tensor, AdapterState]:
        return self.adpter(x), state


def build_adapter(cfg: AdapterConfig) -> nn.Module:
    if cfg.type == "subsampling":
        return SubsamplingAdapter(cfg)
    if cfg.type == "cnn":
        return CNNAdapter(cfg)
    return LinearAdapter(cfg)
