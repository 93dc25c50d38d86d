"""A tiny TiCodec with ``"resblock": "2"``, built here with random weights and saved in the official layout.

The reference network below is written independently of ``core.model.freeze_omni.codec``: torch's own weight-norm
parametrisation (never folded), the key names of the official checkpoint (``weight_g``/``weight_v``), and the decode
and global-token paths as docs/freeze-omni.md "TiCodec" describes them. ``save_official`` writes ``model.json`` and
``final.pt`` (``{"generator", "quantizer", "encoder"}``); ``reference_decode`` / ``reference_global_tokens`` compute
what Parley's loader must reproduce from those files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

SLOPE = 0.1

# 4 stages so the encoder ends at 512 channels (local tokens work) and the global feature meets 128 channels after
# generator stage 0 and encoder stage 1. Two resblock kernels; the first dilation list has a third entry that
# ResBlock2 ignores. n_codes 64 = the tiny fixture's decoder odim, so this codec can speak for the fixture model.
CONFIG = {
    "resblock": "2", "upsample_rates": [2, 3, 4, 25], "upsample_kernel_sizes": [4, 6, 8, 50],
    "upsample_initial_channel": 256, "resblock_kernel_sizes": [3, 5], "resblock_dilation_sizes": [[1, 3, 5], [1, 2]],
    "n_code_groups": 1, "n_codes": 64, "residul_layer": 1, "global_code_num": 4,
    "global_feature_conv": [128, 32, 128, 3, 1], "global_tokens": [5, 17, 42, 63], "sampling_rate": 24000,
    "codebook_loss_lambda": 1.0, "commitment_loss_lambda": 0.25,
}


def _wn(layer: nn.Module) -> nn.Module:
    return weight_norm(layer, dim=0)


class _Block2(nn.Module):
    def __init__(self, ch: int, k: int, dil: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_wn(nn.Conv1d(ch, ch, k, dilation=d, padding=d * (k - 1) // 2)) for d in dil[:2])

    def forward(self, x):
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, SLOPE))
        return x


class RefGenerator(nn.Module):
    def __init__(self, h: dict) -> None:
        super().__init__()
        c0 = h["upsample_initial_channel"]
        self.conv_pre = _wn(nn.Conv1d(512, c0, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"])):
            ch = c0 // 2 ** (i + 1)
            self.ups.append(_wn(nn.ConvTranspose1d(2 * ch, ch, k, u, padding=(k - u) // 2)))
            for k2, d in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]):
                self.resblocks.append(_Block2(ch, k2, d))
        self.conv_post = _wn(nn.Conv1d(c0 // 2 ** len(self.ups), 1, 7, padding=3))
        self.n = len(h["resblock_kernel_sizes"])

    def forward(self, x, g):
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, SLOPE))
            x = sum(self.resblocks[i * self.n + j](x) for j in range(self.n)) / self.n
            if x.shape[1] == 128:
                x = x + g[:, :, None]
        return torch.tanh(self.conv_post(F.leaky_relu(x, SLOPE)))


class _Book(nn.Module):
    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n, dim)


class RefQuantizer(nn.Module):
    def __init__(self, h: dict) -> None:
        super().__init__()
        self.quantizer_modules = nn.ModuleList([_Book(h["n_codes"], 512)])
        g = h["global_code_num"]
        self.quantizer_modules_globaltokens = nn.ModuleList(_Book(h["n_codes"], 128 // g) for _ in range(g))


class RefGlobalEncoder(nn.Module):
    def __init__(self, cin: int, hid: int, cout: int, k: int, s: int) -> None:
        super().__init__()
        p = (k - s) // 2
        self.conv = nn.Sequential(nn.Conv1d(cin, hid, k, s, p, bias=False), nn.LeakyReLU(SLOPE),
                                  nn.Conv1d(hid, hid, k, s, p, bias=False), nn.LeakyReLU(SLOPE),
                                  nn.Conv1d(hid, cout, k, s, p, bias=False), nn.LeakyReLU(SLOPE))
        self.fn = nn.Sequential(nn.Linear(cout, cout), nn.LeakyReLU(SLOPE), nn.BatchNorm1d(cout))

    def forward(self, x):
        return self.fn(self.conv(x).mean(dim=2))


class RefEncoder(nn.Module):
    def __init__(self, h: dict) -> None:
        super().__init__()
        self.conv_pre = _wn(nn.Conv1d(1, 32, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        self.normalize = nn.ModuleList()
        stages = list(zip(h["upsample_rates"], h["upsample_kernel_sizes"]))[::-1]
        blocks = list(zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]))[::-1]
        for i, (u, k) in enumerate(stages):
            ch = 32 * 2 ** (i + 1)
            self.ups.append(_wn(nn.Conv1d(ch // 2, ch, k, u, padding=(k - u) // 2)))
            for k2, d in blocks:
                self.resblocks.append(_Block2(ch, k2, d))
                self.normalize.append(nn.GroupNorm(ch // 16, ch, eps=1e-6))
        self.conv_post = nn.Conv1d(512, 512, 3, padding=1)
        self.linear = nn.Sequential(nn.Linear(128, 128))
        self.GlobalTokenEncoder = RefGlobalEncoder(*h["global_feature_conv"])
        self.n = len(blocks)
        self.global_stage = len(stages) // 2 - 1

    def forward(self, wave):
        x = self.conv_pre(wave)
        g = None
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, SLOPE))
            total = None
            for j in range(i * self.n, (i + 1) * self.n):
                out = self.resblocks[j](x)
                total = self.normalize[j](out if total is None else total + out)
            x = total / self.n
            if i == self.global_stage:
                g = self.GlobalTokenEncoder(x)
        return self.conv_post(F.leaky_relu(x)), g


def build(seed: int = 0) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    parts = {"generator": RefGenerator(CONFIG), "quantizer": RefQuantizer(CONFIG), "encoder": RefEncoder(CONFIG)}
    with torch.no_grad():  # non-default weight-norm gains and normalisation statistics
        for part in parts.values():
            for name, p in part.named_parameters():
                if name.endswith("original0"):
                    p.mul_(torch.empty_like(p).uniform_(0.3, 1.2))
            for m in part.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.GroupNorm)):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
                if isinstance(m, nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.3, 0.3)
                    m.running_var.uniform_(0.5, 2.0)
    for part in parts.values():
        part.eval()
    return parts


def official_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with the old weight-norm key names of the official checkpoint (``weight_g``, ``weight_v``)."""
    out = {}
    for key, value in module.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g")
        key = key.replace("parametrizations.weight.original1", "weight_v")
        out[key] = value.clone()
    return out


def save_official(parts: dict[str, nn.Module], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(CONFIG, indent=1))
    torch.save({name: official_state(part) for name, part in parts.items()}, folder / "final.pt")
    return folder


@torch.no_grad()
def reference_decode(parts: dict[str, nn.Module], tokens: list[int], global_tokens: list[int]) -> torch.Tensor:
    q = parts["quantizer"]
    x = q.quantizer_modules[0].embedding(torch.tensor([tokens])).transpose(1, 2)
    g = torch.cat([book.embedding(torch.tensor([t])) for book, t in zip(q.quantizer_modules_globaltokens,
                                                                          global_tokens)], dim=-1)
    return parts["generator"](x, g)[0, 0]


def _nearest(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, table).argmin(dim=1)


@torch.no_grad()
def reference_encode(parts: dict[str, nn.Module], wave: torch.Tensor) -> tuple[list[int], list[int]]:
    local, g = parts["encoder"](wave.reshape(1, 1, -1))
    q = parts["quantizer"]
    ids = _nearest(q.quantizer_modules[0].embedding.weight, local[0].T)
    books = q.quantizer_modules_globaltokens
    slices = g.split(128 // len(books), dim=-1)
    gids = [int(_nearest(book.embedding.weight, part)[0]) for book, part in zip(books, slices)]
    return ids.tolist(), gids
