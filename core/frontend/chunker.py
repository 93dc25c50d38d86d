"""Streaming fbank front-end: 160 ms chunks in, overlapping 19-frame feature blocks out.

Per stream, :class:`FrontendState` carries the last ``frame_length - frame_shift`` (240) samples and the last
``feature_overlap`` (3) feature rows. Each step takes exactly ``chunk_samples`` (2560) new samples:

1. scale to Kaldi's int16 range (x 32768);
2. signal = 240 carried samples + 2560 new samples (2800), fbank over it -> 16 frames;
3. block = 3 carried feature rows + 16 new rows (19 x 80), which is what the speech encoder consumes.

At the start of a stream both carries are zeros (zero *samples* and zero *features*, exactly as the reference).
The front-end holds no state itself; :meth:`StreamingFbank.step` returns the new state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.constants import CHUNK_SAMPLES_16K, MODEL_INPUT_RATE
from core.frontend.fbank import FbankOptions, fbank

KALDI_INT16_SCALE = 32768.0


@dataclass(frozen=True)
class FrontendState:
    """Carry-over between chunks of one stream."""

    samples: torch.Tensor   # (sample_overlap,) float32, Kaldi int16 scale
    features: torch.Tensor  # (feature_overlap, num_mel_bins) float32
    chunks_seen: int = 0


@dataclass(frozen=True)
class StreamingFbank:
    """Chunked Kaldi fbank with sample and feature overlap (Freeze-Omni's ``audioEncoderProcessor``)."""

    options: FbankOptions = FbankOptions()
    chunk_samples: int = CHUNK_SAMPLES_16K
    feature_overlap: int = 3

    def __post_init__(self) -> None:
        if self.options.sample_rate != MODEL_INPUT_RATE:
            raise ValueError(f"the front-end runs at {MODEL_INPUT_RATE} Hz, not {self.options.sample_rate}")
        if self.chunk_samples % self.options.frame_shift:
            raise ValueError("chunk_samples must be a multiple of the frame shift")

    @property
    def sample_overlap(self) -> int:
        return self.options.frame_length - self.options.frame_shift

    @property
    def frames_per_chunk(self) -> int:
        return self.options.num_frames(self.sample_overlap + self.chunk_samples)

    @property
    def block_frames(self) -> int:
        return self.feature_overlap + self.frames_per_chunk

    def initial_state(self) -> FrontendState:
        return FrontendState(
            samples=torch.zeros(self.sample_overlap, dtype=torch.float32),
            features=torch.zeros(self.feature_overlap, self.options.num_mel_bins, dtype=torch.float32),
        )

    def step(self, state: FrontendState, chunk: np.ndarray | torch.Tensor) -> tuple[FrontendState, torch.Tensor]:
        """Consume one chunk of float samples in [-1, 1]; return (new state, features (1, block_frames, bins))."""
        x = torch.as_tensor(np.asarray(chunk, dtype=np.float32) if not isinstance(chunk, torch.Tensor) else chunk)
        x = x.detach().to(device="cpu", dtype=torch.float32)
        if x.dim() == 2:  # (samples, channels): channel 0, as the reference does
            x = x[:, 0]
        if x.dim() != 1 or x.numel() != self.chunk_samples:
            raise ValueError(f"a chunk must hold exactly {self.chunk_samples} mono samples, got {tuple(x.shape)}")
        signal = torch.cat([state.samples, x * KALDI_INT16_SCALE])
        new_frames = fbank(signal, self.options)
        block = torch.cat([state.features, new_frames], dim=0)
        new_state = FrontendState(
            samples=signal[-self.sample_overlap:].clone(),
            features=block[-self.feature_overlap:].clone(),
            chunks_seen=state.chunks_seen + 1,
        )
        return new_state, block.unsqueeze(0)


def pad_to_chunks(wave_16k: np.ndarray, chunk_samples: int = CHUNK_SAMPLES_16K) -> np.ndarray:
    """Zero-pad a mono signal to a whole number of chunks (at least one)."""
    wave_16k = np.asarray(wave_16k, dtype=np.float32).reshape(-1)
    n = max(1, -(-wave_16k.size // chunk_samples)) * chunk_samples
    out = np.zeros(n, dtype=np.float32)
    out[: wave_16k.size] = wave_16k
    return out
