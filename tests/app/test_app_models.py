"""core.settings.models / download: inventory, checksums, VRAM fit, and downloads without any network."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from pathlib import Path

import pytest

from core.settings import Settings
from core.settings import download as dl
from core.settings.models import (
    FREEZE_OMNI_CHECKSUMS,
    ChecksumCancelled,
    GpuInfo,
    estimate_vram_bytes,
    fit_message,
    freeze_omni_inventory,
    lite_inventory,
    sha256_file,
)


def _make_source(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path / "src"
    files = {
        "checkpoints/audiollm/final.pt": b"a" * 3_000_000,
        "checkpoints/codec/model.json": b"{}",
        "checkpoints/decoder/final.pt": b"d" * 1_500_000,
        "README.md": b"not wanted",
    }
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return src, files


def test_sha256_matches_hashlib_and_reports_progress(tmp_path):
    p = tmp_path / "f.bin"
    data = bytes(range(256)) * 40_000
    p.write_bytes(data)
    seen = []
    assert sha256_file(p, progress=seen.append, chunk_bytes=1 << 16) == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data)


def test_sha256_cancel(tmp_path):
    p = tmp_path / "big.bin"
    p.write_bytes(b"x" * 2_000_000)
    ev = threading.Event()
    ev.set()
    with pytest.raises(ChecksumCancelled):
        sha256_file(p, cancel=ev)


def test_freeze_omni_inventory_flags_missing_and_wrong_sizes(tmp_path):
    s = Settings()
    s.model.profile = "freeze-omni"
    inv = freeze_omni_inventory(s.model)
    assert any("checkpoint folder" in p for p in inv.problems)
    ck = tmp_path / "checkpoints" / "audiollm"
    ck.mkdir(parents=True)
    (ck / "final.pt").write_bytes(b"short")
    s.model.checkpoint_dir = str(tmp_path)
    inv = freeze_omni_inventory(s.model)
    audio = [f for f in inv.files if f.role == "audiollm/final.pt"][0]
    assert audio.expected_sha256 == FREEZE_OMNI_CHECKSUMS["audiollm/final.pt"][1]
    assert any("incomplete download" in p for p in inv.problems)
    assert any("missing codec/final.pt" in p for p in inv.problems)


def test_lite_inventory_finds_the_wheels():
    inv = lite_inventory(Settings().model)
    if inv.problems:
        pytest.skip("lite weight packages not installed: " + "; ".join(inv.problems))
    roles = " ".join(f.role for f in inv.files)
    assert "SmolLM2" in roles and "Whisper" in roles and "joe" in roles
    assert inv.total_bytes > 100_000_000


def test_vram_fit_messages():
    gpu = GpuInfo("Test GPU", free_bytes=20 * 1024 ** 3, total_bytes=24 * 1024 ** 3)
    ok, msg = fit_message("freeze-omni", "bf16", "cuda", gpu)
    assert ok is True and "fits" in msg
    small = GpuInfo("Small GPU", free_bytes=8 * 1024 ** 3, total_bytes=8 * 1024 ** 3)
    ok, msg = fit_message("freeze-omni", "bf16", "cuda", small)
    assert ok is False and "8-bit or 4-bit" in msg
    assert fit_message("freeze-omni", "4-bit", "cuda", small)[0] is True
    ok, msg = fit_message("freeze-omni", "bf16", "cuda", None)
    assert ok is False and "no GPU" in msg
    assert fit_message("lite", "fp32", "cpu", None)[0] is None
    assert estimate_vram_bytes("freeze-omni", "8-bit") < estimate_vram_bytes("freeze-omni", "bf16")


def test_local_download_progress_and_checksums(tmp_path):
    src, files = _make_source(tmp_path)
    good = hashlib.sha256(files["checkpoints/audiollm/final.pt"]).hexdigest()
    source = dl.LocalFolderSource(src, patterns=("checkpoints/*",),
                                  checksums={"checkpoints/audiollm/final.pt": good})
    events = []
    paths = dl.download(source, tmp_path / "dest", on_progress=events.append)
    assert sorted(p.relative_to(tmp_path / "dest").as_posix() for p in paths) == sorted(
        k for k in files if k.startswith("checkpoints/"))
    assert not (tmp_path / "dest" / "README.md").exists()
    assert events[-1].done_bytes == events[-1].total_bytes == 4_500_002
    assert any(e.phase == "verify" for e in events)
    # a second run skips everything (resume at file level)
    events.clear()
    dl.download(source, tmp_path / "dest", on_progress=events.append)
    assert {e.phase for e in events} == {"skip"}


def test_local_download_checksum_mismatch_is_reported_and_kept_aside(tmp_path):
    src, _ = _make_source(tmp_path)
    source = dl.LocalFolderSource(src, patterns=("checkpoints/audiollm/*",),
                                  checksums={"checkpoints/audiollm/final.pt": "0" * 64})
    with pytest.raises(dl.DownloadError, match="checksum mismatch"):
        dl.download(source, tmp_path / "dest")
    assert (tmp_path / "dest" / "checkpoints/audiollm/final.pt.bad").exists()


def test_local_download_cancel_then_resume(tmp_path):
    src, files = _make_source(tmp_path)
    source = dl.LocalFolderSource(src, patterns=("checkpoints/*",))
    cancel = threading.Event()

    def stop_midway(p: dl.DownloadProgress) -> None:
        if p.done_bytes >= 1_000_000:
            cancel.set()

    with pytest.raises(dl.DownloadCancelled):
        dl.download(source, tmp_path / "dest", on_progress=stop_midway, cancel=cancel)
    part = tmp_path / "dest" / "checkpoints/audiollm/final.pt.part"
    assert part.exists() and 0 < part.stat().st_size < 3_000_000
    events = []
    dl.download(source, tmp_path / "dest", on_progress=events.append)
    assert (tmp_path / "dest" / "checkpoints/audiollm/final.pt").read_bytes() == files["checkpoints/audiollm/final.pt"]
    assert not part.exists()
    assert events[-1].done_bytes == events[-1].total_bytes


def test_missing_source_folder_is_a_clear_error(tmp_path):
    with pytest.raises(dl.DownloadError, match="does not exist"):
        dl.download(dl.LocalFolderSource(tmp_path / "nope"), tmp_path / "dest")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_hub_download_without_network_fails_fast_and_clearly(tmp_path):
    """No network here: point the Hub endpoint at a closed local port (nothing leaves the machine)."""
    source = dl.freeze_omni_source(endpoint=f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    with pytest.raises(dl.DownloadError) as err:
        dl.download(source, tmp_path / "dest")
    assert time.monotonic() - t0 < 3.0
    assert "cannot reach" in str(err.value) and "internet connection" in str(err.value)


def test_hub_online_context_restores_offline_mode():
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    with dl._hub_online():
        assert constants.HF_HUB_OFFLINE is False
    assert constants.HF_HUB_OFFLINE == before


def test_progress_class_cancels():
    ev = threading.Event()
    got = []
    cls = dl._progress_class(got.append, ev)
    bar = cls(total=10)
    bar.update(3)
    ev.set()
    with pytest.raises(dl.DownloadCancelled):
        bar.update(3)
    assert got == [3]


# ------------------------------------------------------------------------------------------------ Lite upgrades

def _lite_test_helpers():
    import sys

    lite_tests = str(Path(__file__).resolve().parents[1] / "lite")
    if lite_tests not in sys.path:
        sys.path.insert(0, lite_tests)
    import hub_server
    import tiny_models

    return hub_server, tiny_models


@pytest.mark.ui
def test_model_manager_shows_the_curated_lite_upgrades(qtbot, config_dir, tmp_path, monkeypatch):
    """The curated list with download size, RAM and speed; a screenshot for docs/screenshots (looked at)."""
    from app.model_manager import ModelManagerDialog
    from core.model.lite import catalog

    monkeypatch.setattr("app.model_manager.gpu_info", lambda: None)
    models = tmp_path / "models"
    installed = catalog.by_key("whisper-base.en")                # one installed upgrade, for the picture
    folder = catalog.install_dir(installed, catalog.upgrades_dir(models))
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    catalog.mark_installed(installed, folder, [folder / "config.json"])
    d = ModelManagerDialog(Settings())
    qtbot.addWidget(d)
    d.dest.setText(str(models))
    d.refresh_upgrades()
    d.resize(1000, 980)
    d.show()
    qtbot.waitUntil(lambda: d.gpu_known, timeout=5000)
    tree = d.upgrades_box.tree
    assert tree.topLevelItemCount() == len(catalog.CATALOG)
    rows = {tree.topLevelItem(i).text(0): [tree.topLevelItem(i).text(c) for c in range(6)]
            for i in range(tree.topLevelItemCount())}
    assert rows["Qwen2.5-0.5B-Instruct"][2] == "988.0 MB" and rows["Qwen2.5-0.5B-Instruct"][5] == "not downloaded"
    assert rows["Whisper base.en"][5] == "installed, in use"        # the best installed one is used by default
    assert "gated" in rows["Llama-3.2-1B-Instruct"][5]
    assert all(r[3].endswith("GB") and r[4] for r in rows.values())
    d.upgrades_box.select("qwen2.5-1.5b-instruct")
    assert d.upgrades_box.get_button.isEnabled() and d.upgrades_box.get_button.text() == "Download and use"
    out = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    out = Path(__import__("os").environ.get("PARLEY_SCREENSHOT_DIR") or out)
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        __import__("PySide6.QtWidgets", fromlist=["QApplication"]).QApplication.processEvents()
    assert d.grab().save(str(out / "model_manager_lite_upgrades.png"))
    d.close()


@pytest.mark.ui
@pytest.mark.slow
def test_one_click_lite_upgrade_downloads_converts_and_uses_it(qtbot, config_dir, tmp_path, monkeypatch):
    """Download and use, from a local stand-in for the Hugging Face Hub, with a tiny model of the same
    architecture: the dialog reports the download and the conversion, then asks to use the folder."""
    hub_server, tiny_models = _lite_test_helpers()
    from app.model_manager import ModelManagerDialog
    from core.model.lite import catalog

    monkeypatch.setattr("app.model_manager.gpu_info", lambda: None)
    monkeypatch.setenv("PARLEY_CACHE_DIR", str(tmp_path / "cache"))
    source = tiny_models.build_chat_model(tmp_path / "tiny-qwen2", "qwen2")
    upgrade = catalog.by_key("qwen2.5-0.5b-instruct")
    with hub_server.LocalHub() as hub:
        hub.add(upgrade.repo, source)
        d = ModelManagerDialog(Settings())
        qtbot.addWidget(d)
        d.show()
        d.dest.setText(str(tmp_path / "models"))
        d.refresh_upgrades()
        d.upgrade_endpoint = hub.endpoint
        used = []
        d.use_folders.connect(used.append)
        statuses = []
        d.upgrades_box.progress.valueChanged.connect(lambda v: statuses.append(d.upgrades_box.status.text()))
        d.upgrades_box.select(upgrade.key)
        qtbot.mouseClick(d.upgrades_box.get_button, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: bool(used), timeout=120_000)
    folder = catalog.install_dir(upgrade, catalog.upgrades_dir(tmp_path / "models"))
    assert used == [{"lite_backbone": str(folder)}]
    assert any(s.startswith("downloading") for s in statuses) and any("converting" in s for s in statuses)
    assert d.upgrades_box.status_of(upgrade.key) == "installed, in use"
    assert d.upgrades_box.progress.value() == 1000
    assert any(p.name.startswith("qwen2.5-0.5b-instruct") for p in (tmp_path / "cache" / "lite").iterdir())
    d.close()
