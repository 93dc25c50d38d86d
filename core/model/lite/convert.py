"""Converting a chat model once for the Lite runtime (onnxruntime-genai), with progress.

Input: a local Hugging Face chat-model folder (``config.json``, safetensors, tokenizer with a chat template) or a
``.gguf`` file. A GGUF is first dequantised to a float32 Hugging Face folder with transformers (a temporary folder
inside the build), then every model goes through onnxruntime-genai's model builder, which writes ``model.onnx`` +
``model.onnx.data`` (weights quantised to int8 or int4 blocks, ``MatMulNBits``), ``genai_config.json`` and the
tokenizer files. The result is checked by running it once on a fixed probe (its *fingerprint*, stored in the cache
manifest and compared on every load).

Progress goes to ``progress(step, fraction, message)``: ``step`` is one of ``dequantise``, ``export``, ``save``,
``check`` (and ``repair`` / ``notice`` from the cache code), ``fraction`` the share of the whole conversion done
(0..1, None when unknown), ``message`` one line for people.

The builder runs in this process (it needs torch and transformers, both already loaded for Whisper): nothing is
downloaded and ``trust_remote_code`` stays off.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from core.model.lite.errors import ConversionError, LiteError
from core.model.refusals import load_failure, remote_code_problem

log = logging.getLogger(__name__)

Progress = Callable[[str, "float | None", str], None]

# Architectures onnxruntime-genai's builder (0.18) converts and that we have pushed through this code (tiny random
# models of each in tests/lite/test_lite_convert.py, the real SmolLM2 in the slow tests). Others are refused in one
# line naming them, before any work is done.
SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "Llama / SmolLM2",
    "Qwen2ForCausalLM": "Qwen2 / Qwen2.5",
    "MistralForCausalLM": "Mistral",
    "Qwen3ForCausalLM": "Qwen3",
    "Phi3ForCausalLM": "Phi-3",
    "GemmaForCausalLM": "Gemma",
    "Gemma2ForCausalLM": "Gemma 2",
    "GraniteForCausalLM": "Granite",
    "OlmoForCausalLM": "OLMo",
    "SmolLM3ForCausalLM": "SmolLM3",
}
PRECISIONS = ("int8", "int4", "fp32", "auto")
# "auto": int4 where it measures as good, else int8. Measured on SmolLM2-135M (teacher-forced next-token agreement
# with the float32 weights on PROBE_TEXT): int8 0.989, int4 0.617 (its answers visibly degrade: 19/30 against 24/30).
INT4_MIN_AGREEMENT = 0.9
AUTO_INT4_MIN_PARAMS = 500_000_000     # "auto" is the default for models of at least this size
PROBE_TEXT = ("<|im_start|>user\nTell me about the history of Paris and why people visit it.<|im_end|>\n"
              "<|im_start|>assistant\nParis, the capital of France, has been a centre of art, science and politics "
              "for more than a thousand years. People visit it for its museums, such as the Louvre, for the Eiffel "
              "Tower, for its food and for its long walks along the river Seine. In the Middle Ages it was already "
              "one of the largest cities in Europe.")

# Shares of the whole conversion, for one progress bar.
_STEP_SPAN = {"dequantise": (0.0, 0.35), "export": (0.35, 0.85), "save": (0.85, 0.95), "check": (0.95, 1.0)}


def _noop(step: str, fraction: float | None, message: str) -> None:
    return None


class StepProgress:
    """Maps a step's own progress (0..1) onto the whole conversion and calls the user's callback."""

    def __init__(self, callback: Progress | None, gguf: bool) -> None:
        self.callback = callback or _noop
        self.gguf = gguf

    def __call__(self, step: str, within: float | None, message: str) -> None:
        lo, hi = _STEP_SPAN.get(step, (None, None))
        fraction = None
        if lo is not None and within is not None:
            if not self.gguf and step != "dequantise":   # no dequantisation: the export starts at 0
                lo, hi = (lo - 0.35) / 0.65, (hi - 0.35) / 0.65
            fraction = round(max(0.0, min(1.0, lo + (hi - lo) * within)), 4)
        try:
            self.callback(step, fraction, message)
        except Exception:  # noqa: BLE001 - a broken progress display must not break the conversion
            log.debug("progress callback failed", exc_info=True)


# ---------------------------------------------------------------------------------------------------- checks


def has_chat_template(folder: Path) -> bool:
    """A chat template in ``tokenizer_config.json``, ``chat_template.jinja`` or ``chat_template.json``."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        cfg = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(cfg.get("chat_template")) if isinstance(cfg, dict) else False


def read_model_config(folder: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LiteError(f"language model folder {folder} not found or has no config.json (expected a local Hugging "
                        "Face chat model folder or a .gguf file)") from None
    except (OSError, ValueError) as exc:
        raise LiteError(f"the config.json of the language model at {folder} is not readable: {exc}") from None
    if not isinstance(cfg, dict):
        raise LiteError(f"the config.json of the language model at {folder} is not a JSON object")
    return cfg


def check_chat_folder(folder: Path) -> dict[str, Any]:
    """Refuse (one line) what cannot become a Lite chat model: no config, an unsupported architecture, no chat
    template, no weights. Returns the model config."""
    cfg = read_model_config(folder)
    if (remote_code := remote_code_problem(folder)) is not None:   # before the architecture: the real reason
        raise ConversionError(remote_code)
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(f"the language model at {folder} has the architecture {arch or '(none given)'}, which "
                              "the Lite runtime (onnxruntime-genai) cannot convert; supported: "
                              + ", ".join(sorted(SUPPORTED_ARCHITECTURES)))
    if not has_chat_template(folder):
        raise LiteError(f"the language model '{folder.name}' has no chat template; choose a chat/instruct model")
    if not (any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))):
        raise LiteError(f"the language model folder {folder} has no weights (*.safetensors)")
    return cfg


def count_parameters(cfg: dict[str, Any]) -> int:
    """Rough parameter count of a decoder-only transformer from its config (for the precision choice and the RAM
    estimate)."""
    h = int(cfg.get("hidden_size", 0) or 0)
    n = int(cfg.get("num_hidden_layers", 0) or 0)
    inter = int(cfg.get("intermediate_size", 4 * h) or 4 * h)
    vocab = int(cfg.get("vocab_size", 0) or 0)
    heads = int(cfg.get("num_attention_heads", 1) or 1)
    kv = int(cfg.get("num_key_value_heads", heads) or heads)
    head_dim = int(cfg.get("head_dim", h // max(1, heads)) or h // max(1, heads))
    attn = h * heads * head_dim * 2 + h * kv * head_dim * 2
    mlp = 3 * h * inter
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings") else 2)
    return n * (attn + mlp) + embed


def default_precision(cfg: dict[str, Any]) -> str:
    """int8 for small models (int4 degrades SmolLM2-135M visibly); "auto" (int4 if it measures as good, else int8)
    from 0.5B parameters."""
    return "auto" if count_parameters(cfg) >= AUTO_INT4_MIN_PARAMS else "int8"


def estimate_bytes(n_params: int, precision: str) -> int:
    return int(n_params * {"int8": 1.1, "int4": 0.6, "fp32": 4.0, "auto": 1.7}.get(precision, 1.1))


# ---------------------------------------------------------------------------------------------------- GGUF


@contextlib.contextmanager
def reuse_gguf_parsing() -> Iterator[None]:
    """Make transformers' GGUF loading parse each file once instead of once per use.

    transformers 5.23 builds a ``gguf.GGUFReader`` (which walks every metadata array element by element: ~9 s for
    SmolLM2's 49k-token vocabulary here) for the config, again for the weights and again for the tokenizer, and
    rebuilds ``gguf.get_tensor_name_map(arch, n_layers)`` once per tensor (~15 s). Both are pure functions of their
    arguments, so during the one-time conversion they are memoised. Nothing is patched if ``gguf`` lacks them.
    """
    import functools
    import os

    try:
        import gguf as gguf_module
    except ImportError:
        yield
        return
    original_reader = getattr(gguf_module, "GGUFReader", None)
    original_map = getattr(gguf_module, "get_tensor_name_map", None)
    if original_reader is None or original_map is None:
        yield
        return
    readers: dict = {}

    def reader(path, *args, **kwargs):
        key = (os.fspath(path), args, tuple(sorted(kwargs.items())))
        if key not in readers:
            readers[key] = original_reader(path, *args, **kwargs)
        return readers[key]

    gguf_module.GGUFReader = reader
    gguf_module.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_map)
    try:
        yield
    finally:
        gguf_module.GGUFReader = original_reader
        gguf_module.get_tensor_name_map = original_map
        readers.clear()


def dequantise_gguf(gguf: Path, out: Path, progress: StepProgress, repair_hint: str = "") -> None:
    """Dequantise a GGUF chat model with transformers into a float32 Hugging Face folder ``out``."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress("dequantise", 0.0, f"reading {gguf.name} (dequantising to float32)")
    sink = _BuilderOutput(progress, step="dequantise")
    try:
        with reuse_gguf_parsing(), quiet_transformers(), contextlib.redirect_stderr(sink):
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as exc:  # noqa: BLE001 - one clear line
        raise LiteError(f"cannot read the GGUF model {gguf} ({exc})" + (f". Repair: {repair_hint}" if repair_hint
                                                                         else "")) from None
    progress("dequantise", 0.8, "writing the float32 weights")
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config.pop("_model_name_or_path", None)
    config["architectures"] = [type(model).__name__]
    tied = bool(config.get("tie_word_embeddings"))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
             if not (tied and k == "lm_head.weight")}
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    tokenizer.save_pretrained(out)
    del model, state
    progress("dequantise", 1.0, "dequantised")


# ---------------------------------------------------------------------------------------------------- builder


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars or info logs while loading (they are noise in Parley's log)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class _BuilderOutput(io.TextIOBase):
    """Receives the converters' prints: ``Reading layer N`` lines (model builder) and tqdm counts (transformers'
    GGUF reader) become progress, the rest goes to the debug log."""

    _LAYER = re.compile(r"Reading layer (\d+)")
    _TQDM = re.compile(r"(\d+)/(\d+) \[")

    def __init__(self, progress: StepProgress, n_layers: int = 1, step: str = "export") -> None:
        self.progress = progress
        self.n_layers = max(1, n_layers)
        self.step = step
        self.buffer_text = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer_text += text
        while "\n" in self.buffer_text or "\r" in self.buffer_text:
            cut = min(i for i in (self.buffer_text.find("\n"), self.buffer_text.find("\r")) if i >= 0)
            line, self.buffer_text = self.buffer_text[:cut].strip(), self.buffer_text[cut + 1:]
            if not line:
                continue
            match = self._LAYER.search(line)
            counted = self._TQDM.findall(line) if self.step == "dequantise" else []
            if counted:
                done, total = counted[-1]
                self.progress("dequantise", 0.8 * int(done) / max(1, int(total)), "dequantising the GGUF weights")
            elif match:
                layer = int(match.group(1))
                self.progress("export", (layer + 1) / self.n_layers, f"converting layer {layer + 1} of "
                                                                     f"{self.n_layers}")
            elif line.startswith("Saving ONNX model"):
                self.progress("save", 0.0, "writing the converted model")
            elif "Saving" not in line:   # tqdm lines of the tensor writer are skipped
                log.debug("model builder: %s", line[:300])
        return len(text)


def build_onnx(hf_folder: Path, out: Path, precision: str, progress: StepProgress, threads: int = 1) -> None:
    """onnxruntime-genai's model builder: ``hf_folder`` -> ``out`` (ONNX + genai_config + tokenizer), CPU."""
    import importlib

    if precision not in PRECISIONS:
        raise LiteError(f"unknown precision {precision!r} for the Lite language model (choose {', '.join(PRECISIONS)})")
    cfg = read_model_config(hf_folder)
    n_layers = int(cfg.get("num_hidden_layers", 1) or 1)
    models_dir = Path(importlib.import_module("onnxruntime_genai.models").__file__).parent
    if str(models_dir) not in sys.path:    # the builder imports its siblings as top-level modules
        sys.path.append(str(models_dir))
    builder = importlib.import_module("onnxruntime_genai.models.builder")
    quant_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    old_level = quant_logger.level
    work = out / ".builder-cache"
    sink = _BuilderOutput(progress, n_layers)
    progress("export", 0.0, f"converting to onnxruntime-genai ({precision})")
    try:
        quant_logger.setLevel(logging.CRITICAL)   # e.g. "Gather only supports 4 bits" for int8: noise
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), quiet_transformers():
            options = builder.parse_extra_options(None, str(hf_folder), str(out), precision, "cpu", str(work),
                                                  ["hf_token=false"])
            builder.create_model(None, str(hf_folder), str(out), precision, "cpu", str(work), **options)
    except NotImplementedError as exc:
        raise ConversionError(f"the Lite runtime cannot convert the language model at {hf_folder}: {exc}") from None
    except OSError:
        raise                                  # disk full and friends: the cache code reports them
    except Exception as exc:  # noqa: BLE001 - the builder's errors are many; one line for the user
        raise ConversionError(f"converting the language model at {hf_folder} failed: {load_failure(exc)}") from None
    finally:
        quant_logger.setLevel(old_level)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    _set_session_options(out, threads)
    progress("save", 1.0, "converted model written")


def _set_session_options(out: Path, threads: int) -> None:
    """Nothing device-specific is stored: the CPU provider, threads set at load time (see ChatLlm)."""
    path = out / "genai_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"the model builder wrote no usable genai_config.json in {out}: {exc}") from None
    options = cfg.setdefault("model", {}).setdefault("decoder", {}).setdefault("session_options", {})
    options["intra_op_num_threads"] = int(threads)
    options["inter_op_num_threads"] = 1
    path.write_text(json.dumps(cfg, indent=1), encoding="utf-8")


def convert_chat_model(source: Path, out: Path, precision: str, progress: Progress | None = None,
                       repair_hint: str = "") -> dict[str, Any]:
    """Convert ``source`` (HF folder or .gguf) into ``out``; returns manifest fields (source, precision, ...)."""
    t0 = time.perf_counter()
    is_gguf = source.is_file() and source.suffix == ".gguf"
    steps = StepProgress(progress, is_gguf)
    hf_folder = source
    tmp_hf = out / ".dequantised"
    try:
        if is_gguf:
            dequantise_gguf(source, tmp_hf, steps, repair_hint)
            hf_folder = tmp_hf
        cfg = check_chat_folder(hf_folder)
        extra: dict[str, Any] = {}
        chosen = "int4" if precision == "auto" else precision
        build_onnx(hf_folder, out, chosen, steps)
        if precision == "auto":
            steps("check", 0.2, "comparing the int4 model with the original weights")
            agreement = top1_agreement(hf_folder, out)
            extra = {"requested_precision": "auto", "int4_agreement": round(agreement, 4)}
            if agreement < INT4_MIN_AGREEMENT:
                log.info("int4 agrees with the original weights on %.0f %% of the probe tokens (< %.0f %%): "
                         "converting to int8 instead", 100 * agreement, 100 * INT4_MIN_AGREEMENT)
                steps("check", 0.5, f"int4 is not good enough for this model ({agreement:.0%} agreement); "
                                    "converting to int8")
                _clear(out)
                chosen = "int8"
                build_onnx(hf_folder, out, chosen, steps)
    finally:
        import shutil

        shutil.rmtree(tmp_hf, ignore_errors=True)
    stat = source.stat()
    return {"source": str(source), "source_size": stat.st_size if is_gguf else None, "precision": chosen,
            "architecture": (cfg.get("architectures") or [None])[0], "parameters": count_parameters(cfg),
            "runtime": "onnxruntime-genai", "convert_s": round(time.perf_counter() - t0, 1), **extra}


def _clear(folder: Path) -> None:
    import shutil

    for child in folder.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink()


def top1_agreement(hf_folder: Path, onnx_folder: Path) -> float:
    """Share of PROBE_TEXT's tokens where the converted model predicts the same next token as the float32 source
    (teacher-forced: both read the same text)."""
    import numpy as np
    import onnxruntime_genai as og
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(hf_folder, local_files_only=True, trust_remote_code=False)
        ids = [int(i) for i in tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]]
        model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32, local_files_only=True,
                                                     trust_remote_code=False)
    with torch.inference_mode():
        reference = model(torch.tensor([ids])).logits[0].argmax(-1).numpy()
    del model
    config = og.Config(str(onnx_folder))
    config.clear_providers()
    converted = og.Model(config)
    params = og.GeneratorParams(converted)
    params.set_search_options(max_length=len(ids) + 2)
    generator = og.Generator(converted, params)
    got = []
    for token in ids:   # the runtime returns the last position's logits only: one token at a time
        generator.append_tokens(np.asarray([token], dtype=np.int32))
        logits = generator.get_logits()
        got.append(int(np.argmax(np.asarray(logits).reshape(-1, logits.shape[-1])[-1])))
    return float(np.mean(np.asarray(got) == reference))
