"""Process-wide runtime knobs: torch thread count, offline mode for Hugging Face libraries, garbage collection."""

from __future__ import annotations

import gc
import os
from typing import Callable

_collector: Callable[[], object] | None = None


def set_garbage_collector(fn: Callable[[], object] | None) -> None:
    """Route :func:`collect_garbage` elsewhere (the desktop app runs collections in its GUI thread; see
    ``app/gcguard.py``); None restores ``gc.collect``."""
    global _collector
    _collector = fn


def collect_garbage() -> None:
    """Free unreachable reference cycles now, e.g. a model's tensors after it was closed. Library code calls this
    instead of ``gc.collect()``, so an application can decide in which thread collections run."""
    (_collector or gc.collect)()


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


def quiet_progress_bars() -> None:
    """No progress bars on the console from weight loading (headless commands print results, not bars)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def free_cuda_cache() -> None:
    """Give cached CUDA memory back (after a model was closed, or an out-of-memory error). A no-op without torch
    loaded or without a GPU; never raises."""
    import sys

    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error (CUDA's, Python's, or a runtime's message saying so)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
        if oom is not None and isinstance(exc, oom):
            return True
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()
