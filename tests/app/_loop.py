"""The PulseAudio null-sink loop for app tests, with a private sink per module."""

from __future__ import annotations

import os
import shutil
from typing import Iterator

import pytest


def private_loop(tag: str, tool: str) -> Iterator:
    """Yield a :class:`core.audio.loopback.PrivateSink` that this process's new streams play into and record from
    while it is open, so other programs on the shared test sink neither disturb nor hear the tests. Skips when
    ``tool`` (paplay, parec) or the loop is missing."""
    if not shutil.which(tool):
        pytest.skip(f"{tool} not found (apt-get install pulseaudio-utils)")
    from core.audio.loopback import START_HINT, PrivateSink, pulse_loop_problem

    problem = pulse_loop_problem()     # also makes PortAudio list the server's devices
    if problem is not None:
        pytest.skip(f"PulseAudio loop not available: {problem}; {START_HINT}")
    with PrivateSink(name=f"parley_{tag}_tests_{os.getpid()}") as sink:
        yield sink
