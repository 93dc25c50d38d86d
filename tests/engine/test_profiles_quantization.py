"""The composition root passes the backbone precision through to the Freeze-Omni loader."""

from __future__ import annotations

import pytest

from _shared import default_fixture, fixture_spec
from core.compose.build import build_backend
from core.errors import BackendError


def test_eight_bit_request_reaches_the_loader_and_is_refused_on_cpu():
    if not (default_fixture() / "checkpoints").is_dir():
        pytest.skip("tiny Freeze-Omni fixture not found")
    with pytest.raises(BackendError, match="8-bit backbones need a CUDA device"):
        build_backend(fixture_spec(quantize_bits=8))
