"""The model manager: each profile's files with size and checksum status, whether the profile fits the GPU,
downloads of the official Freeze-Omni checkpoints and Qwen2-7B-Instruct (progress, resume, cancel, sha256), and the
curated Lite upgrades (bigger chat models, Whisper base.en/small.en): one click downloads, converts once for this
CPU and uses them.

Everything slow (hashing gigabytes, querying the GPU, downloading) runs in background tasks; the dialog stays
responsive and can be closed at any time (running jobs are cancelled).

``use_folders(dict)`` asks the main window to point the settings at folders (after a download, or when the user
chooses folders already on disk); the main window validates them before anything changes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.tasks import BackgroundTask
from core.settings import Settings
from core.settings import download as dl
from core.settings.models import (
    FREEZE_OMNI_CHECKSUMS,
    FREEZE_OMNI_SMALL_FILES,
    QWEN2_7B_REPO,
    ModelFile,
    ProfileInventory,
    UpgradeRow,
    fit_message,
    freeze_omni_inventory,
    gpu_info,
    lite_inventory,
    lite_upgrade_rows,
    sha256_file,
)
from core.settings.store import default_models_dir

log = logging.getLogger(__name__)

SourceFactory = Callable[[], "dl.Source"]

STATUS_COLORS = {"ok": "#2e7d32", "bad": "#b3261e", "pending": "#666666", "missing": "#b3261e", "info": "#555555"}


def _human(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


class ProfileBox(QGroupBox):
    """Files of one profile, their checksum status, and the GPU fit line."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        lay = QVBoxLayout(self)
        self.tree = QTreeWidget(self)
        self.tree.setColumnCount(4)
        self.tree.setHeaderLabels(["File", "Size", "Checksum", "Path"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        hdr = self.tree.header()
        hdr.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setStretchLastSection(True)
        lay.addWidget(self.tree, 1)
        self.problems = QLabel("", self)
        self.problems.setWordWrap(True)
        self.problems.setStyleSheet("color: #b3261e;")
        lay.addWidget(self.problems)
        self.fit = QLabel("", self)
        self.fit.setWordWrap(True)
        lay.addWidget(self.fit)
        self.buttons = QHBoxLayout()
        lay.addLayout(self.buttons)
        self.items: dict[str, QTreeWidgetItem] = {}
        self.inventory: ProfileInventory | None = None

    def show_inventory(self, inv: ProfileInventory) -> None:
        self.inventory = inv
        self.tree.clear()
        self.items.clear()
        for f in inv.files:
            item = QTreeWidgetItem([f.role, _human(f.size), "", str(f.path)])
            item.setToolTip(3, str(f.path))
            self.tree.addTopLevelItem(item)
            self.items[str(f.path)] = item
            if not f.exists:
                self.set_status(f, "missing", "missing")
            elif f.expected_sha256:
                self.set_status(f, "pending", "not verified yet")
            else:
                self.set_status(f, "info", "present (no reference checksum)")
        self.problems.setText("\n".join(inv.problems))
        self.problems.setVisible(bool(inv.problems))

    def set_status(self, f: ModelFile, kind: str, text: str) -> None:
        item = self.items.get(str(f.path))
        if item is None:
            return
        item.setText(2, text)
        item.setForeground(2, QColor(STATUS_COLORS.get(kind, "#555")))
        item.setData(2, Qt.ItemDataRole.UserRole, kind)

    def status_of(self, path: Path) -> str | None:
        item = self.items.get(str(path))
        return None if item is None else item.data(2, Qt.ItemDataRole.UserRole)


class UpgradesBox(QGroupBox):
    """The curated Lite upgrades: what each costs (download, RAM), how fast it runs here, whether it is in use."""

    COLUMNS = ["Model", "For", "Download", "RAM to run", "Speed here", "Status"]

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Lite upgrades (download once, converted for this CPU, then used by the Lite profile)",
                         parent)
        lay = QVBoxLayout(self)
        self.tree = QTreeWidget(self)
        self.tree.setColumnCount(len(self.COLUMNS))
        self.tree.setHeaderLabels(self.COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setAlternatingRowColors(True)
        hdr = self.tree.header()
        for col in range(len(self.COLUMNS) - 1):
            hdr.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        hdr.setStretchLastSection(True)
        self.tree.setMinimumHeight(170)
        lay.addWidget(self.tree, 1)
        self.buttons = QHBoxLayout()
        self.get_button = QPushButton("Download and use", self)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.buttons.addWidget(self.get_button)
        self.buttons.addWidget(self.cancel_button)
        self.buttons.addStretch(1)
        lay.addLayout(self.buttons)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1000)
        self.progress.setVisible(False)
        lay.addWidget(self.progress)
        self.status = QLabel("Speeds were measured on a 2-core x86-64 CPU (one thread); RAM is what the converted "
                             "model needs while it runs.", self)
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        self.rows: list[UpgradeRow] = []
        self.tree.itemSelectionChanged.connect(self._selection_changed)

    def show_rows(self, rows: list[UpgradeRow]) -> None:
        selected = self.selected_key()
        self.rows = rows
        self.tree.clear()
        for row in rows:
            u = row.upgrade
            kind = "chat" if u.kind == "chat" else "speech recognition"
            ram = f"{u.ram_mb / 1000:.1f} GB"
            item = QTreeWidgetItem([u.title, kind, _human(u.download_mb * 1_000_000), ram, u.speed, row.status])
            item.setData(0, Qt.ItemDataRole.UserRole, u.key)
            tip = f"{u.repo} ({u.license})" + (f": {u.note}" if u.note else "")
            if u.kind == "chat" and u.precision == "auto":
                tip += (f"\nConverted once to int4 if it measures as good (else int8: "
                        f"{u.ram_int8_mb / 1000:.1f} GB, about {u.tokens_per_s_int8:.0f} tokens/s); converting "
                        f"needs about {u.convert_ram_mb / 1000:.1f} GB of RAM.")
            elif u.kind == "chat":
                tip += (f"\nConverted once to {u.precision}; converting needs about "
                        f"{u.convert_ram_mb / 1000:.1f} GB of RAM.")
            for col in range(len(self.COLUMNS)):
                item.setToolTip(col, tip)
            color = "#2e7d32" if row.installed else ("#b3261e" if u.gated else STATUS_COLORS["pending"])
            item.setForeground(5, QColor(color))
            self.tree.addTopLevelItem(item)
            if u.key == selected:
                item.setSelected(True)
        self._selection_changed()

    def selected_key(self) -> str | None:
        items = self.tree.selectedItems()
        return items[0].data(0, Qt.ItemDataRole.UserRole) if items else None

    def select(self, key: str) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            item.setSelected(item.data(0, Qt.ItemDataRole.UserRole) == key)

    def row(self, key: str) -> UpgradeRow | None:
        return next((r for r in self.rows if r.upgrade.key == key), None)

    def status_of(self, key: str) -> str | None:
        row = self.row(key)
        return None if row is None else row.status

    def _selection_changed(self) -> None:
        row = self.row(self.selected_key() or "")
        busy = self.cancel_button.isEnabled()
        self.get_button.setEnabled(row is not None and not row.in_use and not busy)
        self.get_button.setText("Use" if row is not None and row.installed else "Download and use")


class ModelManagerDialog(QDialog):
    use_folders = Signal(dict)   # e.g. {"checkpoint_dir": "...", "backbone_dir": "..."}

    def __init__(self, settings: Settings, parent: QWidget | None = None,
                 source_factories: dict[str, SourceFactory] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Parley models")
        self.setMinimumSize(900, 860)
        self.settings = settings.copy()
        self.source_factories: dict[str, SourceFactory] = {
            "freeze-omni": dl.freeze_omni_source, "qwen2": dl.qwen2_source}
        if source_factories:
            self.source_factories.update(source_factories)
        self.gpu = None
        self.gpu_known = False
        self.tasks: dict[str, BackgroundTask] = {}
        lay = QVBoxLayout(self)
        self.gpu_label = QLabel("GPU: checking…", self)
        self.gpu_label.setStyleSheet("font-weight: bold;")
        lay.addWidget(self.gpu_label)

        self.fo_box = ProfileBox("Freeze-Omni (speech encoder + frozen Qwen2-7B-Instruct + speech decoder + codec)",
                                 self)
        self.verify_button = QPushButton("Verify checksums", self.fo_box)
        self.verify_button.clicked.connect(self.verify_checksums)
        self.use_ckpt_button = QPushButton("Use checkpoint folder…", self.fo_box)
        self.use_ckpt_button.clicked.connect(lambda: self._choose_folder("checkpoint_dir"))
        self.use_llm_button = QPushButton("Use backbone folder…", self.fo_box)
        self.use_llm_button.clicked.connect(lambda: self._choose_folder("backbone_dir"))
        for b in (self.verify_button, self.use_ckpt_button, self.use_llm_button):
            self.fo_box.buttons.addWidget(b)
        self.fo_box.buttons.addStretch(1)
        self.verify_progress = QProgressBar(self.fo_box)
        self.verify_progress.setVisible(False)
        self.fo_box.layout().addWidget(self.verify_progress)
        self.fo_box.tree.setMinimumHeight(150)
        lay.addWidget(self.fo_box, 3)

        self.lite_box = ProfileBox("Lite (Whisper tiny.en + SmolLM2-135M + Piper voice; runs on the CPU)", self)
        self.lite_box.tree.setMinimumHeight(110)
        self.lite_box.tree.setMaximumHeight(130)
        lay.addWidget(self.lite_box, 0)

        self.upgrades_box = UpgradesBox(self)
        self.upgrades_box.get_button.clicked.connect(lambda: self.start_upgrade(self.upgrades_box.selected_key()))
        self.upgrades_box.cancel_button.clicked.connect(self.cancel_upgrade)
        self.upgrade_endpoint: str | None = None     # None: the Hugging Face Hub (HF_ENDPOINT)
        lay.addWidget(self.upgrades_box, 2)

        dl_box = QGroupBox("Download (needs internet; files are checked against their sha256)", self)
        dl_lay = QVBoxLayout(dl_box)
        dest_row = QHBoxLayout()
        dest_row.addWidget(QLabel("Save to", dl_box))
        self.dest = QLineEdit(str(default_models_dir()), dl_box)
        self.dest.editingFinished.connect(self.refresh_upgrades)
        dest_row.addWidget(self.dest, 1)
        browse = QPushButton("Browse…", dl_box)
        browse.clicked.connect(self._choose_dest)
        dest_row.addWidget(browse)
        dl_lay.addLayout(dest_row)
        btn_row = QHBoxLayout()
        self.dl_fo_button = QPushButton("Download Freeze-Omni checkpoints (2.3 GB)", dl_box)
        self.dl_fo_button.clicked.connect(lambda: self.start_download("freeze-omni"))
        self.dl_qwen_button = QPushButton("Download Qwen2-7B-Instruct (15 GB)", dl_box)
        self.dl_qwen_button.clicked.connect(lambda: self.start_download("qwen2"))
        self.cancel_button = QPushButton("Cancel download", dl_box)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_download)
        for b in (self.dl_fo_button, self.dl_qwen_button, self.cancel_button):
            btn_row.addWidget(b)
        btn_row.addStretch(1)
        dl_lay.addLayout(btn_row)
        self.dl_progress = QProgressBar(dl_box)
        self.dl_progress.setRange(0, 1000)
        self.dl_progress.setValue(0)
        dl_lay.addWidget(self.dl_progress)
        self.dl_status = QLabel("Interrupted downloads resume where they stopped.", dl_box)
        self.dl_status.setWordWrap(True)
        dl_lay.addWidget(self.dl_status)
        lay.addWidget(dl_box)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        buttons.button(QDialogButtonBox.StandardButton.Close).setFocus()
        self.refresh()
        self._query_gpu()

    # ------------------------------------------------------------------------------------------ inventory ----

    def set_settings(self, settings: Settings) -> None:
        self.settings = settings.copy()
        self.refresh()

    def refresh(self) -> None:
        self.fo_box.show_inventory(freeze_omni_inventory(self.settings.model))
        m = self.settings.model
        expected: list[tuple[str, str]] = []
        if not m.checkpoint_dir.strip():
            expected += [(f"checkpoints/{rel}", "") for rel in FREEZE_OMNI_SMALL_FILES]
            expected += [(f"checkpoints/{rel}", _human(size)) for rel, (size, _) in FREEZE_OMNI_CHECKSUMS.items()]
        if not m.backbone_dir.strip():
            expected.append((f"backbone {QWEN2_7B_REPO} (4 safetensors shards)", "15.2 GB"))
        for name, size in expected:
            item = QTreeWidgetItem([name, size or "—", "not downloaded", "—"])
            item.setForeground(2, QColor(STATUS_COLORS["pending"]))
            self.fo_box.tree.addTopLevelItem(item)
        self.lite_box.show_inventory(lite_inventory(self.settings.model))
        self.refresh_upgrades()
        self._update_fit()
        has_hash = any(f.expected_sha256 and f.exists for f in self.fo_box.inventory.files)
        self.verify_button.setEnabled(has_hash and "verify" not in self.tasks)

    def refresh_upgrades(self) -> None:
        if not hasattr(self, "dest"):
            return   # still building the dialog
        self.upgrades_box.show_rows(lite_upgrade_rows(self.settings.model, self.models_dir()))

    def models_dir(self) -> Path:
        return Path(self.dest.text().strip() or default_models_dir()).expanduser()

    def _query_gpu(self) -> None:
        self._run_task("gpu", lambda _t: gpu_info(), None, self._gpu_known, self._gpu_failed)

    def _run_task(self, key: str, work, progress, done, failed) -> BackgroundTask:
        """Start ``work`` in the background as ``self.tasks[key]``, its signals wired to these slots."""
        task = BackgroundTask(work, key, self)
        if progress is not None:
            task.progress.connect(progress)
        task.done.connect(done)
        task.failed.connect(failed)
        self.tasks[key] = task
        return task.start()

    @Slot(str)
    def _gpu_failed(self, _message: str) -> None:
        self._gpu_known(None)

    @Slot(object)
    def _gpu_known(self, gpu) -> None:
        self.tasks.pop("gpu", None)
        self.gpu, self.gpu_known = gpu, True
        if gpu is None:
            self.gpu_label.setText("GPU: no GPU (CUDA not available)")
        else:
            self.gpu_label.setText(f"GPU: {gpu.name}, {gpu.free_bytes / 1024 ** 3:.1f} of "
                                   f"{gpu.total_bytes / 1024 ** 3:.1f} GiB free")
        self._update_fit()

    def _update_fit(self) -> None:
        m = self.settings.model
        for box, profile, precision, device in ((self.fo_box, "freeze-omni", m.precision, m.device),
                                                (self.lite_box, "lite", "fp32", m.lite_device)):
            if not self.gpu_known and device.startswith("cuda"):
                box.fit.setText("GPU fit: checking…")
                continue
            fits, msg = fit_message(profile, precision, device, self.gpu)
            color = {True: "#2e7d32", False: "#b3261e", None: "#555"}[fits]
            box.fit.setText(f"<span style='color:{color}'>{precision} on {device}: {msg}</span>")

    # ------------------------------------------------------------------------------------------ checksums ----

    def verify_checksums(self) -> None:
        if "verify" in self.tasks:
            return
        files = [f for f in self.fo_box.inventory.files if f.expected_sha256 and f.exists]
        total = sum(f.size or 0 for f in files) or 1
        self.verify_progress.setRange(0, 1000)
        self.verify_progress.setValue(0)
        self.verify_progress.setVisible(True)
        self.verify_button.setEnabled(False)
        for f in files:
            self.fo_box.set_status(f, "pending", "queued")

        def work(task: BackgroundTask):
            done = 0
            results = []
            last = 0.0
            for f in files:
                task.report(("file", f))

                def on_bytes(n: int) -> None:
                    nonlocal done, last
                    done += n
                    now = time.monotonic()
                    if now - last > 0.05:
                        last = now
                        task.report(("bytes", done / total))

                digest = sha256_file(f.path, progress=on_bytes, cancel=task.cancel_event)
                results.append((f, digest))
                task.report(("result", (f, digest)))
            return results

        self._run_task("verify", work, self._verify_progress, self._verify_done, self._verify_finished)

    @Slot(object)
    def _verify_done(self, _results) -> None:
        self._verify_finished(None)

    @Slot(object)
    def _verify_progress(self, value) -> None:
        kind, payload = value
        if kind == "file":
            self.fo_box.set_status(payload, "pending", "computing sha256…")
        elif kind == "bytes":
            self.verify_progress.setValue(int(payload * 1000))
        elif kind == "result":
            f, digest = payload
            if digest == f.expected_sha256:
                self.fo_box.set_status(f, "ok", "sha256 OK (official)")
            else:
                self.fo_box.set_status(f, "bad", f"MISMATCH: {digest[:12]}… (re-download)")

    @Slot(str)
    def _verify_finished(self, error: str | None) -> None:
        self.tasks.pop("verify", None)
        self.verify_progress.setValue(1000)
        self.verify_progress.setVisible(False)
        self.verify_button.setEnabled(True)
        if error:
            self.fo_box.problems.setText(f"Checksum verification stopped: {error}")
            self.fo_box.problems.setVisible(True)

    # ------------------------------------------------------------------------------------------ folders ----

    def _choose_folder(self, key: str) -> None:
        title = "Freeze-Omni checkpoint folder" if key == "checkpoint_dir" else "Qwen2-7B-Instruct folder"
        path = QFileDialog.getExistingDirectory(self, title, getattr(self.settings.model, key) or str(Path.home()))
        if path:
            self.point_at(key, path)

    def point_at(self, key: str, path: str) -> None:
        setattr(self.settings.model, key, path)
        self.refresh()
        self.use_folders.emit({key: path})

    def _choose_dest(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Download to", self.dest.text())
        if path:
            self.dest.setText(path)
            self.refresh_upgrades()

    # ------------------------------------------------------------------------------------------ downloads ----

    def start_download(self, what: str) -> None:
        if "download" in self.tasks:
            return
        folder = Path(self.dest.text().strip() or default_models_dir())
        dest = folder / ("Freeze-Omni" if what == "freeze-omni" else "Qwen2-7B-Instruct")
        try:
            source = self.source_factories[what]()
        except Exception as exc:
            self.dl_status.setText(f"Download not started: {exc}")
            return
        self._set_downloading(True)
        self.dl_progress.setValue(0)
        self.dl_status.setText(f"Connecting to {source.description}…")
        self._dl_started = time.monotonic()
        self._dl_what, self._dl_dest = what, dest

        def work(task: BackgroundTask):
            return dl.download(source, dest, on_progress=task.report, cancel=task.cancel_event)

        self._run_task("download", work, self._download_progress, self._download_done, self._download_failed)

    def _set_downloading(self, on: bool) -> None:
        self.dl_fo_button.setEnabled(not on)
        self.dl_qwen_button.setEnabled(not on)
        self.cancel_button.setEnabled(on)

    @Slot(object)
    def _download_progress(self, p: "dl.DownloadProgress") -> None:
        started = self._dl_started
        frac = p.done_bytes / p.total_bytes if p.total_bytes else 0.0
        self.dl_progress.setValue(int(frac * 1000))
        rate = p.done_bytes / max(1e-3, time.monotonic() - started)
        verb = {"verify": "checking sha256 of", "skip": "already complete:", "download": "downloading"}[p.phase]
        self.dl_status.setText(f"{verb} {p.file} (file {p.file_index + 1} of {p.file_count}) — "
                               f"{_human(p.done_bytes)} of {_human(p.total_bytes)}"
                               + (f", {_human(int(rate))}/s" if p.phase == "download" else ""))

    @Slot(object)
    def _download_done(self, _paths) -> None:
        what, dest = self._dl_what, self._dl_dest
        self.tasks.pop("download", None)
        self._set_downloading(False)
        self.dl_progress.setValue(1000)
        self.dl_status.setText(f"Done: {dest} (checksums verified where known).")
        self.point_at("checkpoint_dir" if what == "freeze-omni" else "backbone_dir", str(dest))

    @Slot(str)
    def _download_failed(self, message: str) -> None:
        task = self.tasks.pop("download", None)
        self._set_downloading(False)
        if task is not None and task.cancelled:
            self.dl_status.setText("Download cancelled. Start it again to resume where it stopped.")
        else:
            self.dl_status.setText(f"Download failed: {message}")

    def cancel_download(self) -> None:
        task = self.tasks.get("download")
        if task is not None:
            task.cancel()
            self.dl_status.setText("Cancelling…")

    # ------------------------------------------------------------------------------------------ upgrades ----

    def start_upgrade(self, key: str | None) -> None:
        """One click: download (resumable, sha256-checked), convert once (chat models), then use it."""
        from core.model.lite import catalog

        if not key or "upgrade" in self.tasks:
            return
        upgrade = catalog.by_key(key)
        box = self.upgrades_box
        root = catalog.upgrades_dir(self.models_dir())
        setting = "lite_backbone" if upgrade.kind == "chat" else "lite_asr"
        if catalog.is_installed(upgrade, root) and upgrade.kind == "asr":
            self.point_at(setting, str(catalog.install_dir(upgrade, root)))
            return
        endpoint = self.upgrade_endpoint
        box.get_button.setEnabled(False)
        box.cancel_button.setEnabled(True)
        box.progress.setValue(0)
        box.progress.setVisible(True)
        box.status.setText(f"{upgrade.title}: connecting…")
        self._up_started = time.monotonic()

        def work(task: BackgroundTask):
            folder = dl.download_upgrade(upgrade, root, on_progress=lambda p: task.report(("download", p)),
                                      cancel=task.cancel_event, endpoint=endpoint)
            if task.cancelled:
                raise dl.DownloadCancelled(upgrade.key)
            if upgrade.kind == "chat":
                from core.model.lite.llm import ChatLlm

                llm = ChatLlm.load(folder, precision=upgrade.precision,
                                   progress=lambda step, fraction, message: task.report(
                                       ("convert", (step, fraction, message))))
                llm.close()
            else:
                from core.model.lite.asr import WhisperAsr

                task.report(("convert", ("check", None, "checking the speech recognition model")))
                WhisperAsr.load(model=folder)
            return upgrade, folder

        self._run_task("upgrade", work, self._upgrade_progress, self._upgrade_done, self._upgrade_failed)

    @Slot(object)
    def _upgrade_progress(self, value) -> None:
        kind, payload = value
        box = self.upgrades_box
        if kind == "download":
            p = payload
            frac = p.done_bytes / p.total_bytes if p.total_bytes else 0.0
            box.progress.setValue(int(frac * 700))        # the download is the first 70 % of the bar
            rate = p.done_bytes / max(1e-3, time.monotonic() - self._up_started)
            verb = {"verify": "checking sha256 of", "skip": "already complete:", "download": "downloading"}[p.phase]
            box.status.setText(f"{verb} {p.file} (file {p.file_index + 1} of {p.file_count}) — "
                               f"{_human(p.done_bytes)} of {_human(p.total_bytes)}"
                               + (f", {_human(int(rate))}/s" if p.phase == "download" else ""))
        else:
            step, fraction, message = payload
            if fraction is not None:
                box.progress.setValue(700 + int(fraction * 300))
            box.status.setText(f"converting for this CPU (once): {message}")

    @Slot(object)
    def _upgrade_done(self, result) -> None:
        upgrade, folder = result
        self.tasks.pop("upgrade", None)
        box = self.upgrades_box
        box.cancel_button.setEnabled(False)
        box.progress.setValue(1000)
        box.status.setText(f"{upgrade.title} is installed in {folder} and is now used by the Lite profile.")
        self.point_at("lite_backbone" if upgrade.kind == "chat" else "lite_asr", str(folder))

    @Slot(str)
    def _upgrade_failed(self, message: str) -> None:
        task = self.tasks.pop("upgrade", None)
        box = self.upgrades_box
        box.cancel_button.setEnabled(False)
        box.progress.setVisible(False)
        if task is not None and task.cancelled:
            box.status.setText("Download cancelled. Start it again to resume where it stopped.")
        else:
            box.status.setText(f"Upgrade failed: {message}")
        self.refresh_upgrades()

    def cancel_upgrade(self) -> None:
        task = self.tasks.get("upgrade")
        if task is not None:
            task.cancel()
            self.upgrades_box.status.setText("Cancelling…")

    def busy(self) -> bool:
        return any(t.running for t in self.tasks.values())

    def done(self, r: int) -> None:  # noqa: D401 - Qt override: closing cancels running jobs
        for task in list(self.tasks.values()):
            task.cancel()
        super().done(r)
