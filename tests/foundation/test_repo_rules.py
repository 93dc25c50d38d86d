"""Static guards for the engineering rules that every module must keep."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Modules whose job is to print results for a person or a script (CLI handlers, benchmarks, self-test, doctor).
PRINTING_MODULES = {"cli.py", "commands.py", "gpu_check.py", "bench.py", "selftest.py", "doctor.py", "__main__.py"}


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


@pytest.mark.parametrize("script", ["bootstrap.sh", ".ci/run", "scripts/testenv.sh", "scripts/gpu_check.sh",
                                    "packaging/build.sh"])
def test_shell_scripts_are_valid_bash(script):
    import subprocess

    path = REPO / script
    assert path.stat().st_mode & 0o111, f"{script} must be executable"
    subprocess.run(["bash", "-n", str(path)], check=True)


# ------------------------------------------------------------------------------------------------- imports
# The import rules of docs/architecture.md. Every import counts, also one inside a function (lazy imports keep
# start-up fast, but an arrow is an arrow).


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in _python_files("core", "app")}

    def owner(name: str) -> str | None:
        while name:
            if name in files:
                return name
            name = name.rpartition(".")[0]
        return None

    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {owner(a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    targets.add(full if full in files else owner(node.module))
        graph[name] = {t for t in targets if t and t != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] == "app" else ".".join(parts[:2])


def test_no_import_circles_between_modules_or_packages():
    graph = _import_graph()
    assert not _cycles(graph), f"import circles: {_cycles(graph)}"
    packages: dict[str, set[str]] = {}
    for src, targets in graph.items():
        for dst in targets:
            if _package(src) != _package(dst):
                packages.setdefault(_package(src), set()).add(_package(dst))
    assert not _cycles(packages), f"import circles between packages: {_cycles(packages)}"


def _offenders(graph: dict[str, set[str]], src_prefix: str, allowed) -> list[str]:
    return sorted(f"{src} -> {dst}" for src, targets in graph.items() if src.startswith(src_prefix)
                  for dst in targets if not allowed(dst))


def test_engine_never_imports_model_app_session_or_the_composition_root():
    forbidden = ("core.model", "core.session", "core.compose", "core.settings", "app")
    bad = _offenders(_import_graph(), "core.engine", lambda dst: not dst.startswith(forbidden))
    assert not bad, f"core.engine imports upwards: {bad}"


def test_model_imports_only_the_engines_contract():
    bad = _offenders(_import_graph(), "core.model",
                     lambda dst: not dst.startswith("core.engine") or dst == "core.engine.backend")
    assert not bad, f"core.model may import only core.engine.backend of the layers above it: {bad}"


# Layers, bottom first: a package imports only its own layer and the layers below it.
LAYERS = [
    {"core", "core.constants", "core.errors", "core.queues", "core.fsutil", "core.runtime", "core.log",
     "core.speech_acts"},
    {"core.frontend", "core.audio"},
    {"core.engine", "core.harness"},
    {"core.model"},
    {"core.settings"},
    {"core.session", "core.history"},
    {"core.compose", "core.doctor"},
    {"core.cli"},
    {"app"},
]


def _layer(module: str) -> int:
    package = _package(module)
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"{module} belongs to no layer: add its package to LAYERS (and docs/architecture.md)")


def test_nothing_imports_upwards():
    graph = _import_graph()
    bad = sorted(f"{src} -> {dst}" for src, targets in graph.items() for dst in targets
                 if _layer(dst) > _layer(src))
    assert not bad, f"imports that run back up: {bad}"
