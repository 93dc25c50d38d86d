"""Helpers for the hostile tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PARLEY = Path(sys.executable).with_name("parley")


@dataclass
class Home:
    root: Path

    @property
    def config(self) -> Path:
        """Parley's config folder (settings.json)."""
        return self.root / ".config" / "parley"

    @property
    def data(self) -> Path:
        return self.root / ".local" / "share" / "parley"

    @property
    def sessions(self) -> Path:
        return self.data / "sessions"

    @property
    def logs(self) -> Path:
        return self.root / ".local" / "state" / "parley" / "log"

    @property
    def settings(self) -> Path:
        return self.config / "settings.json"


def run_parley(*args: str, timeout: float = 300, prefix: list[str] | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """The installed ``parley`` command in a subprocess (text output captured)."""
    return subprocess.run([*(prefix or []), str(PARLEY), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, **kwargs)


def run_python(code: str, timeout: float = 300, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def tree(folder: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``folder`` (not following links) with its mode and, for files, content: a snapshot to prove
    that nothing changed."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted([folder, *folder.rglob("*")]):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        out[str(path.relative_to(folder))] = (st.st_mode, content)
    return out


# ------------------------------------------------------------------------------------------- models and disks


def fixture() -> Path:
    """The tiny Freeze-Omni model (checkpoints/ and llm/) the model tests use."""
    from _shared import default_fixture

    return default_fixture()


def freeze_omni_args(llm: Path | None = None) -> list[str]:
    """``--profile freeze-omni`` with the tiny fixture (``llm``: another backbone folder)."""
    fx = fixture()
    return ["--profile", "freeze-omni", "--checkpoint", str(fx / "checkpoints"), "--llm", str(llm or fx / "llm")]


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def backbone_copy(folder: Path, edit=None, template: str = CHATML) -> Path:
    """A writable copy of the fixture's backbone folder (a tiny Qwen2 with 4096 positions), with a chat template so
    that Lite takes it as a chat model too, changed by ``edit(folder)``."""
    import json

    shutil.copytree(fixture() / "llm", folder)
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if edit is not None:
        edit(folder)
    return folder


def damaged_backbone(folder: Path) -> Path:
    """A backbone whose model.safetensors is cut short: any attempt to load it fails (so an error about something
    else proves that the model was never loaded)."""
    def cut(f: Path) -> None:
        data = (f / "model.safetensors").read_bytes()
        (f / "model.safetensors").write_bytes(data[:len(data) // 3])

    return backbone_copy(folder, cut)


def tmpfs_prefix(mountpoint: Path, size_kb: int, fill_kb: int = 0) -> list[str]:
    """A command prefix that runs the command in a private mount namespace with a ``size_kb`` tmpfs (``fill_kb`` of
    it used by a file) on ``mountpoint``: a small or full disk for that process alone. Skips the test where mount
    namespaces are not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    script = ('mount -t tmpfs -o size="$1"k tmpfs "$0" || exit 97; '
              '[ "$2" = 0 ] || head -c "$2"k /dev/zero > "$0/.filler" 2>/dev/null; shift 2; exec "$@"')
    prefix = [unshare, "-m", "sh", "-c", script, str(mountpoint), str(size_kb), str(fill_kb)]
    mountpoint.mkdir(parents=True, exist_ok=True)
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {probe.stderr.decode(errors='replace').strip()}")
    return prefix


def one_line(text: str, *needles: str) -> str:
    """The single line of ``text`` (stderr of a refused command), checked to hold every needle."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text and "internal error" not in text, text
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
