"""The profile builder passes the backbone precision through to the Freeze-Omni loader."""

from __future__ import annotations

import argparse

import pytest

from core.engine.profiles import build_backend, default_fixture
from core.engine.backend import BackendError


def test_eight_bit_request_reaches_the_loader_and_is_refused_on_cpu():
    fixture = default_fixture()
    if not (fixture / "checkpoints").is_dir():
        pytest.skip("tiny Freeze-Omni fixture not found")
    args = argparse.Namespace(checkpoint=str(fixture / "checkpoints"), llm=str(fixture / "llm"), device="cpu",
                              dtype="float32", seed=0, greedy=True)
    with pytest.raises(BackendError, match="8-bit backbones need a CUDA device"):
        build_backend("freeze-omni", args, options={"quantize_bits": 8})
