"""Process-wide runtime knobs: torch thread count and offline mode for Hugging Face libraries."""

from __future__ import annotations

import os


def configure_torch_threads(threads: int | None = None) -> int:
    """Pin torch's intra-op threads (default 1, or ``PARLEY_TORCH_THREADS``).

    On 2-core machines more than one thread oversubscribes and generation becomes an order of magnitude slower.
    Note that ``import silero_vad`` also sets the count to 1; call this after importing it.
    """
    import torch

    if threads is None:
        threads = int(os.environ.get("PARLEY_TORCH_THREADS", "1"))
    torch.set_num_threads(max(1, threads))
    return torch.get_num_threads()


def force_offline() -> None:
    """Nothing is downloaded at run time: make the hub libraries fail fast instead of trying the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
