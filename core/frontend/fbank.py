"""Kaldi-compatible log-mel filterbank features, written in torch from the Kaldi definitions.

Kaldi's ``compute-fbank-feats`` algorithm, per frame:

1. cut frames of ``frame_length`` ms every ``frame_shift`` ms; with ``snip_edges`` only whole frames are kept, so
   ``n_frames = 1 + (n_samples - frame_len) // frame_shift``;
2. (dither, disabled here), remove the DC offset (subtract the frame mean);
3. pre-emphasis ``y[n] = x[n] - c * x[n-1]``, with ``x[-1] := x[0]``;
4. multiply by the window (Povey: ``(0.5 - 0.5 cos(2 pi n / (N - 1))) ** 0.85``);
5. zero-pad to the next power of two and take the power spectrum ``|X_k|^2`` (or the magnitude);
6. weight the first ``fft/2`` bins with triangular filters that are equally spaced on the mel scale
   ``mel(f) = 1127 ln(1 + f / 700)`` between ``low_freq`` and ``high_freq`` (0 or negative: relative to Nyquist);
7. floor at the float32 machine epsilon and take the natural log.

The arithmetic runs in float64 and the result is returned as float32, so that rounding differences with other
float32 implementations stay far below the 1e-4 parity tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class FbankOptions:
    """The Kaldi options that matter for Freeze-Omni (defaults: Kaldi's, with ``dither=0``)."""

    sample_rate: int = 16_000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "povey"
    round_to_power_of_two: bool = True
    snip_edges: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0
    use_power: bool = True
    use_log_fbank: bool = True

    def __post_init__(self) -> None:
        if self.dither != 0.0:
            raise ValueError("only dither=0 is supported (the features must be deterministic)")
        if not self.snip_edges:
            raise ValueError("only snip_edges=True is supported")
        if self.window_type not in ("povey", "hanning", "hamming", "rectangular"):
            raise ValueError(f"unsupported window type {self.window_type!r}")

    @property
    def frame_length(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def frame_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        n = self.frame_length
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def num_frames(self, num_samples: int) -> int:
        if num_samples < self.frame_length:
            return 0
        return 1 + (num_samples - self.frame_length) // self.frame_shift


def _mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


@lru_cache(maxsize=8)
def _window(opts: FbankOptions) -> torch.Tensor:
    n = opts.frame_length
    k = torch.arange(n, dtype=torch.float64)
    if opts.window_type == "rectangular":
        return torch.ones(n, dtype=torch.float64)
    if opts.window_type == "hamming":
        return 0.54 - 0.46 * torch.cos(2 * math.pi * k / (n - 1))
    hann = 0.5 - 0.5 * torch.cos(2 * math.pi * k / (n - 1))
    return hann.pow(0.85) if opts.window_type == "povey" else hann


@lru_cache(maxsize=8)
def mel_banks(opts: FbankOptions) -> torch.Tensor:
    """Triangular mel filters, shape (num_mel_bins, fft_size // 2), float64 (Kaldi ``MelBanks``)."""
    num_fft_bins = opts.fft_size // 2
    nyquist = 0.5 * opts.sample_rate
    high = opts.high_freq if opts.high_freq > 0 else nyquist + opts.high_freq
    if not (0.0 <= opts.low_freq < high <= nyquist):
        raise ValueError(f"bad mel frequency range low={opts.low_freq} high={opts.high_freq}")
    mel_low, mel_high = _mel(opts.low_freq), _mel(high)
    delta = (mel_high - mel_low) / (opts.num_mel_bins + 1)
    bins = torch.arange(opts.num_mel_bins, dtype=torch.float64).unsqueeze(1)
    left = mel_low + bins * delta
    center = mel_low + (bins + 1) * delta
    right = mel_low + (bins + 2) * delta
    fft_mel = _mel(torch.arange(num_fft_bins, dtype=torch.float64) * (opts.sample_rate / opts.fft_size)).unsqueeze(0)
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    weights = torch.minimum(up, down).clamp(min=0.0)
    inside = (fft_mel > left) & (fft_mel < right)
    return torch.where(inside, weights, torch.zeros_like(weights))


def fbank(samples: torch.Tensor, opts: FbankOptions = FbankOptions()) -> torch.Tensor:
    """Log-mel filterbank of a 1-D signal in Kaldi's int16 scale. Returns (n_frames, num_mel_bins) float32.

    ``samples`` must already be scaled like Kaldi expects (float audio in [-1, 1] times 32768).
    """
    if samples.dim() != 1:
        raise ValueError(f"expected a 1-D signal, got shape {tuple(samples.shape)}")
    n_frames = opts.num_frames(samples.numel())
    out_device = samples.device
    if n_frames == 0:
        return torch.zeros(0, opts.num_mel_bins, dtype=torch.float32, device=out_device)
    x = samples.detach().to(device="cpu", dtype=torch.float64)
    frames = x.unfold(0, opts.frame_length, opts.frame_shift)[:n_frames]
    if opts.remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if opts.preemphasis != 0.0:
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        frames = frames - opts.preemphasis * previous
    frames = frames * _window(opts)
    spectrum = torch.fft.rfft(frames, n=opts.fft_size, dim=1)
    power = spectrum.real.square() + spectrum.imag.square()
    if not opts.use_power:
        power = power.sqrt()
    energies = power[:, : opts.fft_size // 2] @ mel_banks(opts).T
    if opts.use_log_fbank:
        energies = energies.clamp(min=FLOAT32_EPS).log()
    return energies.to(device=out_device, dtype=torch.float32)
