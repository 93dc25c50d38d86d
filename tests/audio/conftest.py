"""Fixtures for the audio tests.

``pulse_loop`` (per test module): the PulseAudio null-sink loop from ``scripts/testenv.sh start``. When it is
missing the tests fail with a clear message under ``CI=true`` and are skipped otherwise. Each module then loads its
own null sink on that server and routes this process's streams to it (``PULSE_SINK``/``PULSE_SOURCE``): other
programs playing into the shared ``parley_sink`` (other test runs, the app) can neither disturb these measurements
nor be disturbed by them. The routing is undone when the module ends, so tests outside ``tests/audio`` (and the
subprocesses they start) see the shared sink again. Set ``PARLEY_AUDIO_TESTS_SHARED_SINK=1`` to use the default sink itself.

``espeak`` (session): speech synthesis with espeak-ng, same missing-tool policy.

Measured figures are printed (``pytest -s``) and collected into ``$PARLEY_AUDIO_REPORT`` (JSON) when set.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the _audio_helpers module

_FIGURES: dict[str, object] = {}


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass
class Loop:
    sink: str
    monitor: str
    private: bool


@pytest.fixture(scope="module")
def pulse_loop():
    from core.audio.loopback import START_HINT, PrivateSink, pulse_loop_problem

    problem = pulse_loop_problem()
    if problem is not None:
        _unavailable(f"PulseAudio null-sink loop not available: {problem}; {START_HINT}")
    if os.environ.get("PARLEY_AUDIO_TESTS_SHARED_SINK") == "1":
        sink = os.environ.get("PARLEY_TEST_SINK", "parley_sink")
        yield Loop(sink, f"{sink}.monitor", private=False)
        return
    with PrivateSink(name=f"parley_audio_tests_{os.getpid()}") as private:
        yield Loop(private.name, private.monitor, private=True)


@pytest.fixture(scope="session")
def espeak():
    from core.audio.testsignals import have_espeak, speech

    if not have_espeak():
        _unavailable("espeak-ng is not installed (apt-get install espeak-ng); it makes the test speech")
    return speech


@pytest.fixture(scope="session")
def figures():
    """Record a measured figure: ``figures("erle_db", 41.2)``; printed and written to $PARLEY_AUDIO_REPORT."""

    def record(name: str, value: object) -> None:
        _FIGURES[name] = value
        print(f"\n[audio figure] {name} = {value}")

    return record


def pytest_sessionfinish(session, exitstatus) -> None:
    path = os.environ.get("PARLEY_AUDIO_REPORT")
    if path and _FIGURES:
        Path(path).write_text(json.dumps(_FIGURES, indent=2, default=str))
