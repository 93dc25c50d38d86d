"""Every session test gets its own data dir (PARLEY_DATA_DIR), so nothing touches the real user folder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path / "data"))
    yield tmp_path / "data"
