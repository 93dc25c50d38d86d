"""TiCodec VQ-VAE as used by Freeze-Omni: codec tokens + global (voice) tokens -> 24 kHz waveform.

See docs/freeze-omni.md, "TiCodec" and "Codec keys". The checkpoint ``codec/final.pt`` is a dict with the state dicts
``generator``, ``quantizer`` and ``encoder``, stored with weight norm (``weight_g``/``weight_v``). Weight norm is
folded once at load time: W = g * V / ||V||, the norm taken over all dims except dim 0 of the STORED weight (for a
ConvTranspose1d, whose weight is (in, out, k), that is one norm per input channel).

Decode path (what speech output uses)::

    tokens (T,) -> quantizer code embedding (T, 512) -> conv_pre -> per stage: LeakyReLU(0.1), ConvTranspose1d,
    mean of the stage's residual-block outputs, + global feature after the stage with 128 channels
    -> LeakyReLU(0.1) -> conv_post -> tanh -> waveform

``model.json``'s ``resblock`` picks the residual block type, for the generator and the encoder alike: "1"
(:class:`ResBlock1`, two convs per dilation, the release) or "2" (:class:`ResBlock2`, one conv per dilation, the first
two dilations of each list; keys ``resblocks.{r}.convs.{0,1}``).

The global feature is the concatenation of the ``global_code_num`` global-token embeddings (128 values in all).

Encoder path (only to derive global tokens from a reference recording): the mirror of the generator with
strided Conv1d stages, residual blocks + GroupNorm(ch/16) applied to the running sum after each resblock, the mean; the
output of stage ``num_stages // 2 - 1`` goes through the GlobalTokenEncoder (3 bias-free convs with LeakyReLU(0.1),
mean over time, Linear + LeakyReLU(0.1) + BatchNorm1d with its stored running statistics), and each 128/G slice is
quantised to the nearest (Euclidean) entry of its global codebook. The local path finishes with LeakyReLU at the
default slope 0.01 and ``conv_post``.

The output length for T tokens is ``prod over stages of (u*(L-1) - 2*((k-u)//2) + k)`` starting at L = T: exactly
600*T for the release config, not for odd kernel/rate combinations (the tiny fixture gives 600*T + 200).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.constants import FREEZE_OMNI_OUTPUT_RATE
from core.model.freeze_omni.errors import CheckpointError, check_state_dict, load_torch_state, read_json_file

log = logging.getLogger(__name__)

MODEL_JSON = "model.json"
WEIGHTS_FILE = "final.pt"
LOCAL_DIM = 512      # width of the local (per-frame) code embedding: fixed in TiCodec
GLOBAL_DIM = 128     # width of the global feature: fixed in TiCodec
GENERATOR_SLOPE = 0.1
RESBLOCK_TYPES = ("1", "2")
ENCODER_POST_SLOPE = 0.01  # F.leaky_relu default, used once before the encoder's conv_post
GROUPNORM_EPS = 1e-6
BATCHNORM_EPS = 1e-5


# --------------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class CodecConfig:
    """The parts of ``codec/model.json`` that shape the network."""

    upsample_rates: tuple[int, ...]
    upsample_kernel_sizes: tuple[int, ...]
    upsample_initial_channel: int
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    n_codes: int
    n_code_groups: int
    residual_layers: int
    global_code_num: int
    global_feature_conv: tuple[int, int, int, int, int]   # in, hidden, out, kernel, stride of the GlobalTokenEncoder
    global_tokens: tuple[int, ...]                         # the fixed release voice
    sampling_rate: int = FREEZE_OMNI_OUTPUT_RATE
    resblock: str = "1"                                    # "1": ResBlock1 (the release), "2": ResBlock2

    @property
    def num_stages(self) -> int:
        return len(self.upsample_rates)

    @property
    def hop(self) -> int:
        """Nominal samples per token (600 in the release)."""
        return int(np.prod(self.upsample_rates))

    def generator_channels(self, stage: int) -> int:
        """Channels after generator stage ``stage``."""
        return self.upsample_initial_channel // (2 ** (stage + 1))

    @staticmethod
    def encoder_channels(stage: int) -> int:
        """Channels after encoder stage ``stage`` (32 * 2^(stage+1))."""
        return 32 * (2 ** (stage + 1))

    @property
    def global_stage(self) -> int:
        """Encoder stage whose output feeds the GlobalTokenEncoder."""
        return self.num_stages // 2 - 1

    def output_length(self, tokens: int) -> int:
        length = tokens
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            length = u * (length - 1) - 2 * ((k - u) // 2) + k
        return length

    @classmethod
    def from_json(cls, path: str | Path) -> CodecConfig:
        path = Path(path)
        raw = read_json_file(path, "codec config")
        if not isinstance(raw, dict):
            raise CheckpointError(path, None, "expected a JSON object")
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], path: str | Path | None = None) -> CodecConfig:
        def req(key: str) -> Any:
            if key not in raw:
                raise CheckpointError(path, key, "missing from the codec config")
            return raw[key]

        def int_list(key: str) -> tuple[int, ...]:
            value = req(key)
            if not isinstance(value, list) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
                raise CheckpointError(path, key, f"expected a non-empty list of positive integers, got {value!r}")
            return tuple(value)

        def pos_int(key: str, default: int | None = None) -> int:
            value = raw.get(key, default) if default is not None else req(key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise CheckpointError(path, key, f"expected a positive integer, got {value!r}")
            return value

        resblock = str(raw.get("resblock", "1"))
        if resblock not in RESBLOCK_TYPES:
            raise CheckpointError(path, "resblock", f"expected \"1\" or \"2\" (the two HiFi-GAN residual block "
                                                    f"types), got {raw.get('resblock')!r}")
        rates = int_list("upsample_rates")
        kernels = int_list("upsample_kernel_sizes")
        if len(rates) != len(kernels):
            raise CheckpointError(path, "upsample_kernel_sizes", "must have as many entries as upsample_rates")
        rb_kernels = int_list("resblock_kernel_sizes")
        dilations_raw = req("resblock_dilation_sizes")
        if not isinstance(dilations_raw, list) or len(dilations_raw) != len(rb_kernels):
            raise CheckpointError(path, "resblock_dilation_sizes", "must be one list per resblock kernel size")
        dilations = []
        for entry in dilations_raw:
            if not isinstance(entry, list) or not entry or not all(isinstance(d, int) and d > 0 for d in entry):
                raise CheckpointError(path, "resblock_dilation_sizes", f"bad entry {entry!r}")
            if resblock == "2" and len(entry) < 2:
                raise CheckpointError(path, "resblock_dilation_sizes",
                                      f"resblock \"2\" uses the first two dilations of each entry, got {entry!r}")
            dilations.append(tuple(entry))
        gfc = int_list("global_feature_conv")
        if len(gfc) != 5:
            raise CheckpointError(path, "global_feature_conv", "expected [in, hidden, out, kernel, stride]")
        config = cls(
            resblock=resblock,
            upsample_rates=rates,
            upsample_kernel_sizes=kernels,
            upsample_initial_channel=pos_int("upsample_initial_channel"),
            resblock_kernel_sizes=rb_kernels,
            resblock_dilation_sizes=tuple(dilations),
            n_codes=pos_int("n_codes"),
            n_code_groups=pos_int("n_code_groups", 1),
            residual_layers=pos_int("residul_layer", 1),
            global_code_num=pos_int("global_code_num"),
            global_feature_conv=gfc,  # type: ignore[arg-type]
            global_tokens=tuple(raw.get("global_tokens", ())),
            sampling_rate=pos_int("sampling_rate", FREEZE_OMNI_OUTPUT_RATE),
        )
        if config.n_code_groups != 1 or config.residual_layers != 1:
            raise CheckpointError(path, "n_code_groups", "only one code group and one residual layer are supported "
                                                         "(one codec token per frame)")
        if GLOBAL_DIM % config.global_code_num:
            raise CheckpointError(path, "global_code_num", f"{GLOBAL_DIM} is not divisible by "
                                                           f"{config.global_code_num}")
        if config.upsample_initial_channel % (2 ** config.num_stages):
            raise CheckpointError(path, "upsample_initial_channel", "must be divisible by 2^stages")
        if GLOBAL_DIM not in [config.generator_channels(i) for i in range(config.num_stages)]:
            raise CheckpointError(path, "upsample_initial_channel",
                                  f"no generator stage has {GLOBAL_DIM} channels to receive the global feature")
        if config.global_stage < 0 or config.encoder_channels(config.global_stage) != config.global_feature_conv[0]:
            raise CheckpointError(path, "global_feature_conv",
                                  f"the GlobalTokenEncoder input ({config.global_feature_conv[0]} channels) does not "
                                  f"match encoder stage {config.global_stage} (num_stages // 2 - 1)")
        if (len(config.global_tokens) != config.global_code_num
                or not all(isinstance(t, int) and 0 <= t < config.n_codes for t in config.global_tokens)):
            raise CheckpointError(path, "global_tokens", f"expected {config.global_code_num} ids in "
                                                         f"[0, {config.n_codes}), got {list(config.global_tokens)}")
        return config


# --------------------------------------------------------------------------------------------------- blocks
def fold_weight_norm(g: Tensor, v: Tensor) -> Tensor:
    """W = g * V / ||V||, the norm over all dims except dim 0 (as stored; per input channel for ConvTranspose1d)."""
    norm = v.flatten(1).norm(dim=1).reshape((-1,) + (1,) * (v.dim() - 1))
    return v * (g / norm)


def fold_weight_norm_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace every ``x.weight_g`` / ``x.weight_v`` pair by ``x.weight``."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            continue
        if key.endswith(".weight_v"):
            base = key[: -len(".weight_v")]
            out[base + ".weight"] = fold_weight_norm(state[base + ".weight_g"], value)
        else:
            out[key] = value
    return out


class ResBlock1(nn.Module):
    """x <- x + c2(lrelu(c1(lrelu(x)))) for each (c1 dilated d, c2 dilation 1) pair; 'same' padding."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2) for d in dilations)
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=1, padding=(kernel - 1) // 2) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, GENERATOR_SLOPE)), GENERATOR_SLOPE))
        return x


class ResBlock2(nn.Module):
    """x <- x + c(lrelu(x)) for one conv per dilation, the first two dilations of the list only; 'same' padding."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2) for d in dilations[:2])

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, GENERATOR_SLOPE))
        return x


def residual_block(config: CodecConfig, channels: int, kernel: int, dilations: Sequence[int]) -> nn.Module:
    """The residual block type that ``model.json`` names (``resblock``), for the generator and the encoder alike."""
    block = ResBlock2 if config.resblock == "2" else ResBlock1
    return block(channels, kernel, dilations)


class Generator(nn.Module):
    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.num_kernels = len(config.resblock_kernel_sizes)
        channels = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(LOCAL_DIM, channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes)):
            out_ch = config.generator_channels(i)
            self.ups.append(nn.ConvTranspose1d(channels // (2 ** i), out_ch, k, stride=u, padding=(k - u) // 2))
            for rk, rd in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(residual_block(config, out_ch, rk, rd))
        self.conv_post = nn.Conv1d(config.generator_channels(config.num_stages - 1), 1, 7, padding=3)

    def forward(self, x: Tensor, global_feature: Tensor) -> Tensor:
        """x: (B, 512, T); global_feature: (B, 128). Returns (B, 1, samples)."""
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, GENERATOR_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / self.num_kernels
            if x.shape[1] == global_feature.shape[-1]:
                x = x + global_feature.unsqueeze(-1)
        return torch.tanh(self.conv_post(F.leaky_relu(x, GENERATOR_SLOPE)))


class GlobalTokenEncoder(nn.Module):
    def __init__(self, in_ch: int, hidden: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        pad = (kernel - stride) // 2
        # Indices 0, 2, 4 match the checkpoint keys (the LeakyReLUs sat at 1, 3, 5 of a Sequential).
        self.conv = nn.ModuleDict({
            "0": nn.Conv1d(in_ch, hidden, kernel, stride, pad, bias=False),
            "2": nn.Conv1d(hidden, hidden, kernel, stride, pad, bias=False),
            "4": nn.Conv1d(hidden, out_ch, kernel, stride, pad, bias=False),
        })
        self.fn = nn.ModuleDict({"0": nn.Linear(out_ch, out_ch), "2": nn.BatchNorm1d(out_ch, eps=BATCHNORM_EPS)})

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, in_ch, T) -> (B, out_ch)."""
        for name in ("0", "2", "4"):
            x = F.leaky_relu(self.conv[name](x), GENERATOR_SLOPE)
        x = x.mean(dim=2)
        x = F.leaky_relu(self.fn["0"](x), GENERATOR_SLOPE)
        return self.fn["2"](x)  # eval mode: stored running statistics


class Encoder(nn.Module):
    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.config = config
        self.num_kernels = len(config.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(1, 32, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        self.normalize = nn.ModuleList()
        stages = list(zip(config.upsample_rates, config.upsample_kernel_sizes))[::-1]
        kernels = list(zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes))[::-1]
        for i, (u, k) in enumerate(stages):
            ch = config.encoder_channels(i)
            self.ups.append(nn.Conv1d(ch // 2, ch, k, stride=u, padding=(k - u) // 2))
            for rk, rd in kernels:
                self.resblocks.append(residual_block(config, ch, rk, rd))
                self.normalize.append(nn.GroupNorm(ch // 16, ch, eps=GROUPNORM_EPS))
        self.conv_post = nn.Conv1d(LOCAL_DIM, LOCAL_DIM, 3, padding=1)
        self.linear = nn.ModuleDict({"0": nn.Linear(GLOBAL_DIM, GLOBAL_DIM)})  # stored but unused in forward
        self.GlobalTokenEncoder = GlobalTokenEncoder(*config.global_feature_conv)

    def _stage(self, i: int, x: Tensor) -> Tensor:
        x = self.ups[i](F.leaky_relu(x, GENERATOR_SLOPE))
        total: Tensor | None = None
        for j in range(i * self.num_kernels, (i + 1) * self.num_kernels):
            out = self.resblocks[j](x)
            total = self.normalize[j](out if total is None else total + out)  # norm of the running sum
        return total / self.num_kernels

    def global_feature(self, wave: Tensor) -> Tensor:
        """wave: (B, 1, samples) -> (B, 128); runs only the stages up to the global one."""
        x = self.conv_pre(wave)
        for i in range(self.config.global_stage + 1):
            x = self._stage(i, x)
        return self.GlobalTokenEncoder(x)

    def forward(self, wave: Tensor) -> tuple[Tensor, Tensor]:
        """wave: (B, 1, samples) -> (local features (B, 512, frames), global feature (B, 128))."""
        x = self.conv_pre(wave)
        global_feature: Tensor | None = None
        for i in range(len(self.ups)):
            x = self._stage(i, x)
            if i == self.config.global_stage:
                global_feature = self.GlobalTokenEncoder(x)
        if x.shape[1] != LOCAL_DIM:
            raise ValueError(f"the codec encoder ends with {x.shape[1]} channels but conv_post expects {LOCAL_DIM}: "
                             "this config cannot produce local tokens (global tokens still work)")
        x = self.conv_post(F.leaky_relu(x, ENCODER_POST_SLOPE))
        assert global_feature is not None
        return x, global_feature


class _Codebook(nn.Module):
    def __init__(self, n_codes: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_codes, dim)

    def nearest(self, x: Tensor) -> Tensor:
        """x: (N, dim) -> ids (N,) of the nearest codeword in Euclidean distance (first on ties)."""
        table = self.embedding.weight
        distance = (x.pow(2).sum(1, keepdim=True) + table.pow(2).sum(1)[None, :] - 2 * x @ table.T)
        return distance.argmin(dim=1)


class Quantizer(nn.Module):
    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        self.quantizer_modules = nn.ModuleList([_Codebook(config.n_codes, LOCAL_DIM)])
        self.quantizer_modules_globaltokens = nn.ModuleList(
            _Codebook(config.n_codes, GLOBAL_DIM // config.global_code_num) for _ in range(config.global_code_num))

    def embed(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) -> (B, 512, T)."""
        return self.quantizer_modules[0].embedding(tokens).transpose(1, 2)

    def embed_global(self, global_tokens: Tensor) -> Tensor:
        """global_tokens (B, G) -> (B, 128): the G embeddings concatenated."""
        parts = [book.embedding(global_tokens[:, j]) for j, book in enumerate(self.quantizer_modules_globaltokens)]
        return torch.cat(parts, dim=-1)

    def global_ids(self, feature: Tensor) -> Tensor:
        """feature (B, 128) -> ids (B, G): each 128/G slice quantised by its own codebook."""
        slices = feature.split(GLOBAL_DIM // len(self.quantizer_modules_globaltokens), dim=-1)
        return torch.stack([book.nearest(part) for part, book in zip(slices, self.quantizer_modules_globaltokens)],
                           dim=-1)

    def local_ids(self, features: Tensor) -> Tensor:
        """features (B, 512, T) -> ids (B, T)."""
        batch, dim, frames = features.shape
        flat = features.transpose(1, 2).reshape(-1, dim)
        return self.quantizer_modules[0].nearest(flat).reshape(batch, frames)


# ---------------------------------------------------------------------------------------------------- codec
class TiCodec(nn.Module):
    """TiCodec generator + quantizer (+ optional encoder). Stateless: every call is independent."""

    def __init__(self, config: CodecConfig, with_encoder: bool = True) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.quantizer = Quantizer(config)
        self.encoder = Encoder(config) if with_encoder else None

    @property
    def default_global_tokens(self) -> list[int]:
        """The fixed voice of the release (``global_tokens`` in model.json)."""
        return list(self.config.global_tokens)

    @property
    def device(self) -> torch.device:
        return self.generator.conv_pre.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.generator.conv_pre.weight.dtype

    @property
    def sample_rate(self) -> int:
        return self.config.sampling_rate

    # ------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32, with_encoder: bool = True) -> TiCodec:
        """Load ``model.json`` + ``final.pt`` from the codec folder (``checkpoints/codec``; the checkpoints root
        containing ``codec/`` is accepted too). ``torch.load(weights_only=True)`` only; the three sub-dicts are
        checked strictly (names and shapes of the weight-norm form), then weight norm is folded.
        ``with_encoder=False`` skips building the encoder (it is only needed for :meth:`global_tokens_from_wave`),
        but its sub-dict must still be present, as in the original."""
        folder = Path(folder)
        if not (folder / MODEL_JSON).exists() and (folder / "codec" / MODEL_JSON).exists():
            folder = folder / "codec"
        config = CodecConfig.from_json(folder / MODEL_JSON)
        path = folder / WEIGHTS_FILE
        checkpoint = load_torch_state(path)
        with torch.device("meta"):
            model = cls(config, with_encoder=True)
        folded: dict[str, Tensor] = {}
        for part in ("generator", "quantizer", "encoder"):
            if part not in checkpoint:
                raise CheckpointError(path, part, "missing sub-dict of the codec checkpoint")
            state = checkpoint[part]
            if not isinstance(state, dict):
                raise CheckpointError(path, part, f"expected a state dict, found {type(state).__name__}")
            check_state_dict(_weight_norm_layout(getattr(model, part), _PLAIN_LAYERS[part]), state, path,
                             prefix=f"{part}.")
            for key, value in fold_weight_norm_state(state).items():
                folded[f"{part}.{key}"] = value
        if not with_encoder:
            folded = {k: v for k, v in folded.items() if not k.startswith("encoder.")}
            model.encoder = None
        model.load_state_dict({k: (v.to(dtype) if v.is_floating_point() else v) for k, v in folded.items()},
                              strict=True, assign=True)
        model = model.to(device=device, dtype=dtype).eval()
        log.info("codec loaded from %s: rates %s, %d codes, %d global tokens, encoder %s, %s %s", folder,
                 list(config.upsample_rates), config.n_codes, config.global_code_num,
                 "yes" if with_encoder else "no", device, dtype)
        return model

    # ---------------------------------------------------------------------------------------- inference
    def _global_tensor(self, global_tokens: Sequence[int] | Tensor | None) -> Tensor:
        if global_tokens is None:
            global_tokens = self.config.global_tokens
        ids = torch.as_tensor(global_tokens, dtype=torch.long).reshape(-1)
        if ids.numel() != self.config.global_code_num:
            raise ValueError(f"expected {self.config.global_code_num} global tokens, got {ids.numel()}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.config.n_codes:
            raise ValueError(f"global tokens must be in [0, {self.config.n_codes}), got {ids.tolist()}")
        return ids.reshape(1, -1).to(self.device)

    @torch.inference_mode()
    def decode(self, tokens: Tensor | Sequence[int], global_tokens: Sequence[int] | Tensor | None = None) -> Tensor:
        """Codec tokens (T,) or (1, T) -> float32 waveform (samples,) at 24 kHz on the codec's device.

        ``global_tokens`` defaults to the release voice from model.json. Token ids must be in [0, n_codes).
        """
        ids = torch.as_tensor(tokens, dtype=torch.long)
        if ids.dim() == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.dim() != 1 or ids.numel() == 0:
            raise ValueError(f"tokens must be a non-empty (T,) or (1, T) sequence, got shape {tuple(ids.shape)}")
        if int(ids.min()) < 0 or int(ids.max()) >= self.config.n_codes:
            raise ValueError(f"codec tokens must be in [0, {self.config.n_codes}), got min {int(ids.min())} "
                             f"max {int(ids.max())}")
        ids = ids.to(self.device).unsqueeze(0)
        local = self.quantizer.embed(ids)
        global_feature = self.quantizer.embed_global(self._global_tensor(global_tokens))
        wave = self.generator(local, global_feature)
        return wave[0, 0].to(torch.float32)

    def _wave_tensor(self, wave_24k: Tensor | np.ndarray) -> Tensor:
        if self.encoder is None:
            raise RuntimeError("the codec was loaded with with_encoder=False")
        wave = torch.as_tensor(np.asarray(wave_24k, dtype=np.float32) if not isinstance(wave_24k, Tensor)
                               else wave_24k).reshape(-1)
        if wave.numel() < self.config.hop:
            raise ValueError(f"the reference recording is too short: {wave.numel()} samples, need at least "
                             f"{self.config.hop} at {self.config.sampling_rate} Hz")
        return wave.to(device=self.device, dtype=self.dtype).reshape(1, 1, -1)

    @torch.inference_mode()
    def global_tokens_from_wave(self, wave_24k: Tensor | np.ndarray) -> list[int]:
        """Derive the voice (global) tokens from a mono recording at the codec rate (24 kHz), float in [-1, 1].

        Resample beforehand (e.g. with soxr); the original loads the file with librosa at 24 kHz. Whether the speech
        decoder follows a new voice is unconfirmed (docs/freeze-omni.md, "Voice (global tokens) and the codec
        encoder"): it was trained on the release voice.
        """
        wave = self._wave_tensor(wave_24k)
        feature = self.encoder.global_feature(wave)
        return [int(i) for i in self.quantizer.global_ids(feature)[0]]

    @torch.inference_mode()
    def encode(self, wave_24k: Tensor | np.ndarray) -> tuple[Tensor, list[int]]:
        """Full TiCodec encode: (local token ids (frames,), global token ids). Needs an encoder whose last stage has
        512 channels (true for the release, not for the tiny fixture)."""
        wave = self._wave_tensor(wave_24k)
        local, global_feature = self.encoder(wave)
        ids = self.quantizer.local_ids(local)[0]
        return ids, [int(i) for i in self.quantizer.global_ids(global_feature)[0]]


def _weight_norm_layout(module: nn.Module, plain: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """The expected stored (weight-norm) state dict of a module: every conv weight that the original wraps in
    weight_norm appears as ``weight_g`` (dim0, 1, 1) + ``weight_v`` instead of ``weight``. Keys under the prefixes
    in ``plain`` are plain layers."""
    expected: dict[str, Tensor] = {}
    for key, value in module.state_dict().items():
        base, _, leaf = key.rpartition(".")
        owner = module.get_submodule(base) if base else module
        wrapped = isinstance(owner, (nn.Conv1d, nn.ConvTranspose1d)) and not key.startswith(plain)
        if leaf == "weight" and wrapped:
            expected[base + ".weight_g"] = torch.empty((value.shape[0],) + (1,) * (value.dim() - 1), device="meta")
            expected[base + ".weight_v"] = value
        else:
            expected[key] = value
    return expected


# Layers the original builds without weight norm (all others convs of the generator and encoder have it).
_PLAIN_LAYERS = {"generator": (), "quantizer": (), "encoder": ("conv_post.", "GlobalTokenEncoder.")}
