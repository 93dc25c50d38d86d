"""Static guards for the engineering rules that every module must keep."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Modules whose job is to print results for a person or a script (CLI handlers, benchmarks, self-test, doctor).
PRINTING_MODULES = {"cli.py", "bench.py", "selftest.py", "doctor.py", "__main__.py"}


def _python_files(*roots: str) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        files += sorted((REPO / root).rglob("*.py"))
    return files


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _call_name(node: ast.Call) -> str:
    func = node.func
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def test_core_never_imports_qt():
    offenders = []
    for path in _python_files("core"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] in {"PySide6", "PyQt5", "PyQt6", "shiboken6"} for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"core must not import Qt: {offenders}"


def test_torch_load_always_weights_only():
    offenders = []
    for path in _python_files("core", "app"):
        tree = ast.parse(path.read_text(), str(path))
        for call in _calls(tree):
            if _call_name(call) in {"torch.load", "load"} and _call_name(call) == "torch.load":
                kw = {k.arg: k.value for k in call.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not offenders, f"torch.load without weights_only=True: {offenders}"


def test_no_trust_remote_code():
    offenders = []
    for path in _python_files("core", "app"):
        tree = ast.parse(path.read_text(), str(path))
        for call in _calls(tree):
            for kw in call.keywords:
                if kw.arg == "trust_remote_code" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not offenders, f"trust_remote_code must never be enabled: {offenders}"


def test_no_bare_prints_in_library_code():
    offenders = []
    for path in _python_files("core", "app"):
        if path.name in PRINTING_MODULES:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for call in _calls(tree):
            if _call_name(call) == "print":
                offenders.append(f"{path.relative_to(REPO)}:{call.lineno}")
    assert not offenders, f"library code logs, it does not print: {offenders}"


def test_dependencies_pin_torch_exactly_and_never_torchaudio():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        deps += extra
    assert "torch==2.13.0" in deps
    for dep in deps:
        name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower()
        assert name != "torchaudio", dep
        if name == "silero-vad":
            assert "[" not in dep, "silero-vad extras pull torchaudio"
        if name not in {"bitsandbytes"}:
            assert "==" in dep, f"direct dependencies are pinned: {dep}"


def test_ci_runs_the_readme_test_command_verbatim():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    assert command == "./bootstrap.sh test"
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines
    setup = re.search(r"```bash\n(.+?)\n```", readme.split("## Set up and start", 1)[1], re.S).group(1).strip()
    assert setup == "./bootstrap.sh"


@pytest.mark.parametrize("script", ["bootstrap.sh", ".ci/run", "scripts/testenv.sh", "packaging/build.sh"])
def test_shell_scripts_are_valid_bash(script):
    import subprocess

    path = REPO / script
    assert path.stat().st_mode & 0o111, f"{script} must be executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
