"""The Freeze-Omni GPU check: everything only an NVIDIA GPU exercises, run once, reported as ONE JSON object.

Run it with ``scripts/gpu_check.sh`` (or ``python -m core.compose.gpu_check``) on a machine with an NVIDIA
GPU and a CUDA build of torch. It needs no network: the parity fixture (``PARLEY_FIXTURES`` or
``<repo>/../shared/fixtures``, or ``--fixture``) and random release-size weights are all it uses.

Sections of the report (each has ``status``: pass, fail, skipped or error; docs/benchmarks.md lists every key):

* ``environment``: torch, CUDA, cuDNN, driver (``nvidia-smi``), transformers and bitsandbytes versions, the GPUs;
* ``parity``: the fixture through :func:`~core.model.freeze_omni.parity.compare_with_fixture` on the CPU in float32
  (always), on CUDA in float32 (TF32 off; the CPU tolerances) and on CUDA in bfloat16 (same turn decisions and first
  reply tokens);
* ``vram_fit``: the fit check the app and ``parley doctor`` use (``core.settings.models.fit_message``), for real:
  with a ballast tensor leaving less free memory than the release model needs, it must say "does not fit" while
  nothing is loaded; and ``FreezeOmniBackend.load`` under a memory cap must end in a clear out-of-memory
  ``BackendError`` that gives the memory back;
* ``oom_mid_answer``: the engine answering the fixture conversation on CUDA while the allowed memory is capped
  (``torch.cuda.set_per_process_memory_fraction``) after the answer's first text: the turn must end with an
  ``error`` event of kind ``out_of_memory`` and a later turn must be answered normally;
* ``release_bench``: ``parley bench model --synthetic release --device cuda --dtype bfloat16`` in a subprocess,
  with its figures (listen step p50/p95, LLM and decoder tokens/s, codec RTF, turn end to first audio, peak VRAM);
* ``quantized``: with bitsandbytes importable, the fixture through the 8-bit and 4-bit backbone path, and a
  release-width backbone (``--quant-layers`` Qwen2-7B-shaped layers, saved to a temporary folder) loaded in 8 and 4
  bits, with its VRAM and an estimate for all 28 layers.

Exit status: 0 every check that ran passed on a GPU; 1 a check failed (or errored); 3 no usable NVIDIA GPU, the
CPU-only parts passed (one line on stderr says so; the JSON on stdout has what could be checked); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.engine.backend import Backend
from core.runtime import collect_garbage, free_cuda_cache

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_GPU = 0, 1, 2, 3
SECTIONS = ("parity", "vram_fit", "oom_mid_answer", "release_bench", "quantized")
REPO_ROOT = Path(__file__).resolve().parents[3]
MIB = 2 ** 20


# ------------------------------------------------------------------------------------------------ environment
def cuda_problem() -> str | None:
    """Why no NVIDIA GPU can be used, or None when one can."""
    import torch

    if torch.version.cuda is None:
        return f"this torch build has no CUDA (torch {torch.__version__})"
    try:
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU"
    except Exception as exc:  # a broken driver
        return f"CUDA is not usable: {exc}"
    return None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi() -> dict[str, Any] | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total,memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": str(exc)}
    rows = [[part.strip() for part in line.split(",")] for line in out.stdout.strip().splitlines() if line.strip()]
    return {"driver_version": rows[0][1] if rows and len(rows[0]) > 1 else None, "gpus": rows,
            "returncode": out.returncode}


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "transformers": _version("transformers"),
        "bitsandbytes": _version("bitsandbytes"), "cuda_available": cuda_problem() is None, "devices": [],
    }
    if env["cuda_available"]:
        env["cudnn"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            env["devices"].append({"index": i, "name": props.name, "capability": f"{props.major}.{props.minor}",
                                   "total_mb": round(props.total_memory / MIB)})
    smi = _nvidia_smi()
    env["driver"] = smi.get("driver_version") if smi else None
    env["nvidia_smi"] = smi
    return env


# ------------------------------------------------------------------------------------------------ helpers
def _quiet() -> None:
    from core.runtime import quiet_progress_bars

    quiet_progress_bars()
    for name in ("transformers", "accelerate", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _free_cuda() -> None:
    collect_garbage()
    free_cuda_cache()


@contextlib.contextmanager
def _strict_float32() -> Iterator[None]:
    """TF32 off for float32 parity (convolutions use TF32 by default on Ampere and later)."""
    import torch

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _run_section(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one check; an exception becomes ``status: error`` with its last lines (the check goes on)."""
    t0 = time.perf_counter()
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - a failing check must not stop the others
        result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000],
                  "traceback": traceback.format_exc().strip().splitlines()[-6:]}
        _free_cuda()
    result.setdefault("seconds", round(time.perf_counter() - t0, 2))
    return result


def _skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


def _combine(parts: dict[str, dict[str, Any]]) -> str:
    statuses = [p.get("status") for p in parts.values()]
    if any(s in ("fail", "error") for s in statuses):
        return "fail"
    return "pass" if "pass" in statuses else "skipped"


# ------------------------------------------------------------------------------------------------ parity
def fixture_parity(fixture: Path, device: str, dtype: str) -> dict[str, Any]:
    """Load the fixture on ``device`` in ``dtype`` and compare it with the recording (strict in float32)."""
    from core.model.freeze_omni.loader import load_freeze_omni
    from core.model.freeze_omni.parity import compare_with_fixture

    strict = dtype == "float32"
    guard = _strict_float32() if strict and device.startswith("cuda") else contextlib.nullcontext()
    with guard:
        pipe = load_freeze_omni(fixture / "checkpoints", fixture / "llm", device=device, dtype=dtype)
        result = compare_with_fixture(pipe, fixture, strict=strict)
    if strict and device.startswith("cuda"):
        result["tf32"] = False
    del pipe
    _free_cuda()
    return result


# ------------------------------------------------------------------------------------------------ VRAM fit
def vram_fit(fixture: Path, device: str) -> dict[str, Any]:
    """The fit check with a ballast tensor (refusal before anything is loaded), then a load under a memory cap."""
    import torch

    from core.doctor import check_gpu
    from core.errors import BackendError
    from core.model.freeze_omni.backend import FreezeOmniBackend
    from core.settings.models import estimate_vram_bytes, fit_message, gpu_info

    index = torch.device(device).index or 0
    need = estimate_vram_bytes("freeze-omni", "bf16")
    failures: list[str] = []
    out: dict[str, Any] = {"estimate_bf16_mb": round(need / MIB)}

    # 1. Not enough free memory: refused by the check, nothing loaded.
    _free_cuda()
    free, total = torch.cuda.mem_get_info(index)
    leave = need // 2
    ballast = torch.empty(max(0, free - leave), dtype=torch.uint8, device=device) if free > leave else None
    allocated_before = torch.cuda.memory_allocated(index)
    fits, message = fit_message("freeze-omni", "bf16", device, gpu_info(index))
    doctor = check_gpu("freeze-omni", "bf16", device)
    loaded = torch.cuda.memory_allocated(index) - allocated_before
    out["with_ballast"] = {"free_mb": round(torch.cuda.mem_get_info(index)[0] / MIB), "fits": fits,
                           "message": message, "doctor_status": doctor.status, "allocated_by_check_mb":
                           round(loaded / MIB, 1)}
    if fits is not False or "does not fit" not in message:
        failures.append(f"the fit check did not refuse with {out['with_ballast']['free_mb']} MB free: {message}")
    if doctor.status != "fail":
        failures.append(f"parley doctor's GPU check says {doctor.status!r}, not 'fail', when the model cannot fit")
    if loaded:
        failures.append(f"the fit check allocated {loaded} bytes of GPU memory")
    del ballast
    _free_cuda()

    # 2. With the memory free again: the answer follows the real free memory.
    free, total = torch.cuda.mem_get_info(index)
    fits, message = fit_message("freeze-omni", "bf16", device, gpu_info(index))
    out["without_ballast"] = {"free_mb": round(free / MIB), "total_mb": round(total / MIB), "fits": fits,
                              "message": message}
    if fits is not (need <= free):
        failures.append(f"fit check says {fits} with {free} bytes free for an estimate of {need}")

    # 3. Loading under a memory cap (a caller that skipped the check): a clear error, the memory comes back.
    _free_cuda()
    baseline = torch.cuda.memory_allocated(index)
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_reserved(index) + 2 * MIB) / total),
                                               index)
    error = None
    try:
        backend = FreezeOmniBackend.load(fixture / "checkpoints", fixture / "llm", device=device, dtype="float32")
        backend.close()
    except BackendError as exc:
        error = str(exc)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, index)
    _free_cuda()
    left = torch.cuda.memory_allocated(index) - baseline
    out["load_under_cap"] = {"error": error, "left_allocated_mb": round(left / MIB, 2)}
    if error is None or "out of memory" not in error:
        failures.append(f"loading under a 2 MB cap did not end in an out-of-memory BackendError: {error!r}")
    if left > MIB:
        failures.append(f"{left} bytes stayed allocated after the failed load")
    out["failures"] = failures
    out["status"] = "fail" if failures else "pass"
    return out


# ------------------------------------------------------------------------------------------------ OOM mid-answer
class CapAfterFirstText(Backend):
    """The real backend; its first reply calls ``cap()`` after the first text piece (on CUDA: the allowed GPU memory
    is capped, so the speech synthesis that follows runs out of memory for real) and ``uncap()`` when that reply
    ends. Everything else is forwarded unchanged."""

    def __init__(self, inner: Any, cap: Callable[[], None], uncap: Callable[[], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.output_rate = inner.output_rate
        self._cap, self._uncap = cap, uncap
        self.capped_replies = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def new_conversation(self, system_prompt: str | None = None) -> Any:
        return self.inner.new_conversation(system_prompt)

    def start_turn(self, conv: Any) -> None:
        return self.inner.start_turn(conv)

    def listen(self, conv: Any, chunk: Any, speech_probs: Any = None) -> Any:
        return self.inner.listen(conv, chunk, speech_probs)

    def end_of_input(self, conv: Any) -> Any:
        return self.inner.end_of_input(conv)

    def interrupted(self, conv: Any, heard_text: str) -> None:
        return self.inner.interrupted(conv, heard_text)

    def reply(self, conv: Any, cancel: Any) -> Iterator[Any]:
        capped = False
        try:
            for piece in self.inner.reply(conv, cancel):
                yield piece
                if self.capped_replies == 0 and getattr(piece, "text", ""):
                    self._cap()
                    capped = True
                    self.capped_replies += 1
        finally:
            if capped:
                self._uncap()

    def close(self) -> None:
        self.inner.close()


def cuda_memory_cap(device: str, headroom: int = 0) -> tuple[Callable[[], None], Callable[[], None]]:
    """(cap, uncap): cap allows only what is allocated now plus ``headroom`` (after freeing the cache), so the next
    allocation that needs a new block of GPU memory fails."""
    import torch

    index = torch.device(device).index or 0

    def cap() -> None:
        _free_cuda()
        total = torch.cuda.mem_get_info(index)[1]
        torch.cuda.set_per_process_memory_fraction((torch.cuda.memory_allocated(index) + headroom) / total, index)

    def uncap() -> None:
        torch.cuda.set_per_process_memory_fraction(1.0, index)

    return cap, uncap


def fixture_conversation(fixture: Path) -> np.ndarray:
    """The fixture's main input, its rejected input and the main input again, with pauses: the tiny model answers
    the first turn, rejects some and decides others (what it answers later depends on its context)."""
    import soundfile as sf

    main, rate = sf.read(str(fixture / "input.wav"), dtype="float32")
    rejected, _ = sf.read(str(fixture / "input_el.wav"), dtype="float32")

    def pause(seconds: float) -> np.ndarray:
        return np.zeros(int(rate * seconds), np.float32)

    return np.concatenate([pause(0.3), main, pause(2.0), rejected, pause(2.0), main, pause(4.0)])


def run_engine_on(backend: Any, audio_16k: np.ndarray, folder: Path) -> tuple[Any, list[dict[str, Any]]]:
    """The engine's file mode on ``audio_16k`` (fast, virtual clock); returns (summary, events as JSONL dicts)."""
    from core.engine.filemode import run_conversation

    events_path = folder / "events.jsonl"
    summary = run_conversation(backend, audio_16k, folder / "out.wav", events_path=events_path)
    events = [json.loads(line) for line in events_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return summary, events


def oom_mid_answer(fixture: Path, device: str, inject: bool = True) -> dict[str, Any]:
    """The fixture conversation through the engine on ``device``; with ``inject`` (CUDA only) the first answer runs
    out of memory after its first text: that turn must end with an ``out_of_memory`` error event, and the engine
    must go on deciding later turns without errors and end idle. Without ``inject`` the same scenario runs with the
    cap as a no-op (an answered turn, no error), which also works on a CPU."""
    from core.model.freeze_omni.backend import FreezeOmniBackend
    from core.model.freeze_omni.parity import fixture_settings

    settings = fixture_settings()
    inner = FreezeOmniBackend.load(fixture / "checkpoints", fixture / "llm", device=device, dtype="float32",
                                   settings=settings)
    cap, uncap = cuda_memory_cap(device) if inject else (lambda: None, lambda: None)
    backend = CapAfterFirstText(inner, cap, uncap)
    with tempfile.TemporaryDirectory(prefix="parley-gpu-check-") as tmp:
        summary, events = run_engine_on(backend, fixture_conversation(fixture), Path(tmp))
    backend.close()
    _free_cuda()
    errors = [e for e in events if e.get("type") == "error"]
    oom = [e for e in errors if e.get("kind") == "out_of_memory"]
    answered = sorted({e["turn"] for e in events if e.get("type") == "latency"})
    decided = sorted({e["turn"] for e in events if e.get("type") == "turn_decision"})
    states = [e.get("state") for e in events if e.get("type") == "state"]
    out: dict[str, Any] = {"injected": inject, "decided_turns": decided, "answered_turns": answered,
                           "errors": [{k: e.get(k) for k in ("turn", "where", "kind", "message")} for e in errors],
                           "final_state": states[-1] if states else None,
                           "replies_capped": getattr(backend, "capped_replies", 0)}
    failures = []
    if inject:
        if not oom:
            failures.append("no error event of kind out_of_memory")
        else:
            first = oom[0]
            if "memory" not in str(first.get("message", "")).lower():
                failures.append(f"the error message does not say what happened: {first.get('message')!r}")
            if not any(turn > first["turn"] for turn in decided):
                failures.append(f"the engine decided no turn after the out-of-memory turn {first['turn']}")
            if [e for e in errors if e["turn"] > first["turn"]]:
                failures.append("errors in the turns after the out-of-memory one")
        if [e for e in errors if e.get("kind") != "out_of_memory"]:
            failures.append("errors of another kind than out_of_memory")
    else:
        if errors:
            failures.append(f"errors without injection: {out['errors']}")
        if not answered or len(decided) < 2:
            failures.append(f"expected an answered turn and more decided turns, got answered {answered}, "
                            f"decided {decided}")
    if out["final_state"] != "idle":
        failures.append(f"the engine ended in state {out['final_state']!r}, not idle")
    out["failures"] = failures
    out["status"] = "fail" if failures else "pass"
    return out


# ------------------------------------------------------------------------------------------------ release bench
BENCH_SUMMARY = {
    "listen_step_ms_p50": ("listen", "step_ms", "p50"), "listen_step_ms_p95": ("listen", "step_ms", "p95"),
    "llm_tokens_per_s": ("llm", "tokens_per_s"), "decoder_tokens_per_s": ("decoder", "tokens_per_s"),
    "codec_rtf": ("codec", "rtf"), "turn_end_to_first_audio_ms": ("first_audio", "turn_end_to_first_audio_ms"),
    "peak_vram_mb": ("memory", "cuda_max_allocated_mb"), "load_s": ("load_s",),
}


def _dig(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)  # type: ignore[assignment]
    return data


def release_bench(device: str, chunks: int, tokens: int, timeout_s: float) -> dict[str, Any]:
    """``parley bench model --synthetic release`` in its own process (its 16 GB are freed when it ends)."""
    cmd = [sys.executable, "-m", "core.cli", "--log-level", "ERROR", "bench", "model", "--synthetic", "release",
           "--device", device, "--dtype", "bfloat16", "--chunks", str(chunks), "--tokens", str(tokens)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH"))
                                                       if p))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=str(REPO_ROOT), env=env)
    except subprocess.TimeoutExpired:
        return {"status": "fail", "error": f"timed out after {timeout_s:g} s", "command": cmd[2:]}
    if proc.returncode != 0:
        return {"status": "fail", "returncode": proc.returncode, "stderr": proc.stderr.strip()[-2000:],
                "command": cmd[2:]}
    report = json.loads(proc.stdout)
    summary = {name: _dig(report, path) for name, path in BENCH_SUMMARY.items()}
    return {"status": "pass", "summary": summary, "report": report, "command": cmd[2:]}


# ------------------------------------------------------------------------------------------------ quantised
def quantized(fixture: Path, device: str, layers: int) -> dict[str, Any]:
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a bitsandbytes without a usable CUDA library
        return _skipped(f"bitsandbytes is not importable ({type(exc).__name__}: {exc}); pip install bitsandbytes")
    parts = {f"fixture_{bits}bit": _run_section(lambda bits=bits: quantized_fixture(fixture, device, bits))
             for bits in (8, 4)}
    if layers > 0:
        parts["release_width"] = _run_section(lambda: release_width_quantized(device, layers))
    return {"status": _combine(parts), **parts}


def quantized_fixture(fixture: Path, device: str, bits: int) -> dict[str, Any]:
    """The whole fixture model with an 8- or 4-bit backbone: it must load with bitsandbytes layers and run the
    fixture's listen, answer and speech paths; agreement with the float32 recording is reported, not required
    (random tiny weights quantise coarsely, so even the turn decisions may differ)."""
    import torch

    from core.model.freeze_omni.loader import load_freeze_omni
    from core.model.freeze_omni.parity import compare_with_fixture

    index = torch.device(device).index or 0
    before = torch.cuda.memory_allocated(index)
    pipe = load_freeze_omni(fixture / "checkpoints", fixture / "llm", device=device, dtype="bfloat16",
                            quantize_bits=bits)
    loaded_mb = (torch.cuda.memory_allocated(index) - before) / MIB
    comparison = compare_with_fixture(pipe, fixture, strict=False)
    linear = type(pipe.audiollm.llm_decoder.model.layers[0].mlp.up_proj).__name__
    del pipe
    _free_cuda()
    out = {"backbone_linear": linear, "loaded_mb": round(loaded_mb, 1), "agreement": comparison}
    out["status"] = "pass" if linear in ("Linear8bitLt", "Linear4bit") else "fail"
    return out


def release_width_quantized(device: str, layers: int) -> dict[str, Any]:
    """A Qwen2-7B-shaped backbone with ``layers`` layers (random, bf16, written to a temporary folder: about 4.3 GB
    for 2 layers) through the loader's bitsandbytes path in 8 and 4 bits: memory after loading, one forward pass, and
    the memory estimated for the 28 layers of the real backbone (the layer part scaled by 28 / layers)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from core.model.freeze_omni.bench import RELEASE_QWEN2_7B
    from core.model.freeze_omni.loader import load_backbone

    index = torch.device(device).index or 0
    out: dict[str, Any] = {"layers": layers}
    with tempfile.TemporaryDirectory(prefix="parley-gpu-check-qwen2-") as tmp:
        torch.manual_seed(0)
        with torch.device(device):  # random initialisation on the GPU: seconds instead of a minute on one CPU thread
            model = AutoModelForCausalLM.from_config(
                Qwen2Config(**{**RELEASE_QWEN2_7B, "num_hidden_layers": layers}), dtype=torch.bfloat16)
        model.save_pretrained(tmp)
        del model
        _free_cuda()
        for bits in (8, 4):
            _free_cuda()
            before = torch.cuda.memory_allocated(index)
            backbone = load_backbone(tmp, torch.device(device), torch.bfloat16, quantize_bits=bits)
            loaded = torch.cuda.memory_allocated(index) - before
            layer_bytes = sum(t.numel() * t.element_size()
                              for t in (*backbone.model.layers.parameters(), *backbone.model.layers.buffers()))
            with torch.inference_mode():
                x = torch.randn(1, 8, RELEASE_QWEN2_7B["hidden_size"], device=device, dtype=torch.bfloat16)
                hidden = backbone.model(inputs_embeds=x).last_hidden_state
                logits = backbone.lm_head(hidden[:, -1])
            finite = bool(torch.isfinite(hidden).all() and torch.isfinite(logits).all())
            full = loaded + layer_bytes * (RELEASE_QWEN2_7B["num_hidden_layers"] / layers - 1)
            out[f"{bits}bit"] = {"loaded_mb": round(loaded / MIB, 1), "layer_weights_mb": round(layer_bytes / MIB, 1),
                                 "estimated_28_layers_mb": round(full / MIB), "finite": finite,
                                 "linear": type(backbone.model.layers[0].mlp.up_proj).__name__}
            del backbone, hidden, logits
            _free_cuda()
    out["status"] = "pass" if all(out[f"{b}bit"]["finite"] for b in (8, 4)) else "fail"
    return out


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class CheckResult:
    """What a run prints (``core.model.freeze_omni.cli.run_gpu_check``): the report on stdout, the one-line verdict on
    stderr (None when all passed on a GPU), and the exit status."""

    code: int
    report: dict[str, Any] | None = None
    message: str | None = None


def run(argv: list[str] | None = None) -> CheckResult:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixture", type=Path, default=None, help="the tiny parity fixture folder")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here (after every section)")
    parser.add_argument("--skip", default="", help=f"comma-separated sections to skip: {', '.join(SECTIONS)}")
    parser.add_argument("--bench-chunks", type=int, default=20)
    parser.add_argument("--bench-tokens", type=int, default=32)
    parser.add_argument("--bench-timeout", type=float, default=480.0)
    parser.add_argument("--quant-layers", type=int, default=2,
                        help="layers of the release-width 8-/4-bit backbone check (0: skip that part)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage or the help
        return CheckResult(EXIT_USAGE if exc.code else EXIT_OK)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(SECTIONS):
        return CheckResult(EXIT_USAGE, message=f"gpu_check: unknown section(s) {sorted(skip - set(SECTIONS))}; "
                                               f"known: {', '.join(SECTIONS)}")

    from core.model.freeze_omni.parity import default_fixture
    from core.runtime import configure_torch_threads, force_offline

    force_offline()
    threads = configure_torch_threads()
    _quiet()
    t0 = time.perf_counter()
    fixture = (args.fixture or default_fixture()).resolve()
    problem = cuda_problem()
    gpu = problem is None
    device = args.device
    report: dict[str, Any] = {"check": "gpu", "status": "running", "gpu": gpu, "no_gpu_reason": problem,
                              "device": device if gpu else None, "fixture": str(fixture), "torch_threads": threads,
                              "environment": _run_section(environment)}
    have_fixture = (fixture / "checkpoints").is_dir() and (fixture / "expected").is_dir()
    no_gpu = _skipped(f"no NVIDIA GPU: {problem}") if not gpu else None
    no_fixture = _skipped(f"parity fixture not found at {fixture}") if not have_fixture else None

    def save() -> None:
        if args.out is not None:
            args.out.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")

    def section(name: str, make: Callable[[], dict[str, Any]], needs_fixture: bool = True,
                needs_gpu: bool = True) -> None:
        if name in skip:
            report[name] = _skipped("--skip")
        elif needs_gpu and no_gpu:
            report[name] = no_gpu
        elif needs_fixture and no_fixture:
            report[name] = no_fixture
        else:
            log.info("gpu_check: %s ...", name)
            report[name] = _run_section(make)
        save()

    def parity() -> dict[str, Any]:
        parts = {"cpu_float32": _run_section(lambda: fixture_parity(fixture, "cpu", "float32"))}
        if gpu:
            parts["cuda_float32"] = _run_section(lambda: fixture_parity(fixture, device, "float32"))
            parts["cuda_bfloat16"] = _run_section(lambda: fixture_parity(fixture, device, "bfloat16"))
        else:
            parts["cuda_float32"] = parts["cuda_bfloat16"] = no_gpu  # type: ignore[assignment]
        return {"status": _combine(parts), **parts}

    section("parity", parity, needs_gpu=False)
    section("vram_fit", lambda: vram_fit(fixture, device))
    section("oom_mid_answer", lambda: oom_mid_answer(fixture, device))
    section("release_bench", lambda: release_bench(device, args.bench_chunks, args.bench_tokens, args.bench_timeout),
            needs_fixture=False)
    section("quantized", lambda: quantized(fixture, device, args.quant_layers))

    failed = [name for name in SECTIONS if report[name].get("status") in ("fail", "error")]
    report["failed"] = failed
    report["status"] = "fail" if failed else ("pass" if gpu else "no_gpu")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    save()
    if failed:
        return CheckResult(EXIT_FAILED, report, f"gpu_check: FAILED: {', '.join(failed)}")
    if not gpu:
        ran = [name for name in SECTIONS if report[name].get("status") == "pass"]
        return CheckResult(EXIT_NO_GPU, report, f"gpu_check: no NVIDIA GPU: {problem}; only the CPU parts ran "
                                                f"({', '.join(ran) or 'none'}), see the JSON; exit code {EXIT_NO_GPU}")
    return CheckResult(EXIT_OK, report)


def main(argv: list[str] | None = None) -> int:
    """``scripts/gpu_check.sh``: the JSON report on stdout, the one-line verdict on stderr, :func:`run`'s exit
    status."""
    result = run(argv)
    if result.report is not None:
        print(json.dumps(result.report, indent=1, default=str))
    if result.message:
        print(result.message, file=sys.stderr)
    return result.code


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    sys.exit(main())
