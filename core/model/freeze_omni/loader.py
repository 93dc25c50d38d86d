"""Loading the Freeze-Omni checkpoint folder and the LLM backbone, safely and loudly.

See docs/freeze-omni.md, "Checkpoint layout" and "Deviations from the official code" (D1-D4).

Checkpoint folder (the official layout)::

    <checkpoint>/audiollm/{train.yaml, global_cmvn, final.pt}   encoder + adapter + prompt/task embeddings + state head
    <checkpoint>/decoder/{model.json, final.pt}                  speech decoder (final.pt may wrap it in {"model": ...})
    <checkpoint>/codec/{model.json, final.pt}                    TiCodec ({"generator", "quantizer", "encoder"})
    <checkpoint>/server.json                                     optional streaming settings

Rules kept here:

* every ``.pt`` goes through ``torch.load(weights_only=True)`` (a pickle holding anything but tensors and plain
  containers is refused); nothing is ever loaded with ``trust_remote_code``;
* the AudioLLM keys must sit under an explicit allow-list of prefixes, and missing keys, unexpected keys, wrong
  shapes and non-float values are errors naming the file and the key (the original's ``strict=False`` hid them);
* the backbone folder is checked against the checkpoint before the heavy weights are read: hidden size, head counts
  and the ``<|im_start|>``/``<|im_end|>`` ids must fit, else the load is refused with the numbers;
* device and dtype are parameters; 8-/4-bit backbones use bitsandbytes and exist only on CUDA.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from core.frontend.cmvn import CmvnError, load_cmvn
from core.model.freeze_omni.audiollm import IM_END, IM_START, AudioLLM, ChatTokens, build_chat_tokens
from core.model.freeze_omni.config import TRAIN_YAML, AudioLLMConfig, load_train_config
from core.model.freeze_omni.errors import CheckpointError, check_state_dict, load_torch_state, read_json_file
from core.model.refusals import load_failure, remote_code_problem

if TYPE_CHECKING:
    from core.model.freeze_omni.pipeline import FreezeOmni

log = logging.getLogger(__name__)

AUDIOLLM_DIR = "audiollm"
DECODER_DIR = "decoder"
CODEC_DIR = "codec"
WEIGHTS_FILE = "final.pt"
DEFAULT_CMVN_FILE = "global_cmvn"
CMVN_KEYS = ("encoder.global_cmvn.mean", "encoder.global_cmvn.istd")
SUPPORTED_BACKBONES = ("qwen2",)
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class LoadError(ValueError):
    """The environment cannot do what was asked (e.g. quantisation without CUDA or bitsandbytes)."""


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[name]
    except KeyError:
        raise LoadError(f"unknown dtype {name!r} (use one of {', '.join(DTYPES)})") from None


def parse_device(name: str | torch.device) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise LoadError(f"unknown device {name!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoadError(f"device {name!r} was asked for but CUDA is not available in this torch build/machine")
    return device


def checkpoint_paths(checkpoint: str | Path) -> dict[str, Path]:
    """The three sub-folders of a checkpoint folder; refuses a folder without ``audiollm/train.yaml``."""
    root = Path(checkpoint)
    if not root.is_dir():
        raise CheckpointError(root, None, "checkpoint folder not found")
    paths = {"root": root, "audiollm": root / AUDIOLLM_DIR, "decoder": root / DECODER_DIR, "codec": root / CODEC_DIR}
    if not (paths["audiollm"] / TRAIN_YAML).is_file():
        raise CheckpointError(paths["audiollm"] / TRAIN_YAML, None,
                              "not found: the checkpoint folder must hold audiollm/, decoder/ and codec/")
    return paths


# ------------------------------------------------------------------------------------------------ backbone
def check_backbone(llm_dir: str | Path, config: AudioLLMConfig) -> tuple[Any, Any]:
    """Read the backbone's config and tokenizer and refuse a backbone that does not fit the checkpoint.

    Returns (transformers config, tokenizer). Nothing heavy is loaded.
    """
    from transformers import AutoConfig, AutoTokenizer

    llm_dir = Path(llm_dir)
    config_file = llm_dir / "config.json"
    if not config_file.is_file():
        raise CheckpointError(config_file, None, "backbone LLM folder has no config.json")
    remote_code = remote_code_problem(llm_dir)
    if remote_code:
        raise CheckpointError(llm_dir, None, remote_code)
    try:
        llm_config = AutoConfig.from_pretrained(str(llm_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(config_file, None, f"cannot read the backbone config: {load_failure(exc)}") from None
    model_type = getattr(llm_config, "model_type", None)
    if model_type not in SUPPORTED_BACKBONES:
        raise CheckpointError(config_file, "model_type", f"backbone type {model_type!r} is not supported: the "
                              "Freeze-Omni checkpoint was trained on a Qwen2 backbone (Qwen2-7B-Instruct)")
    hidden = int(llm_config.hidden_size)
    if hidden != config.llm_embed_dim:
        raise CheckpointError(config_file, "hidden_size",
                              f"the backbone's hidden size is {hidden} but the checkpoint's adapter, prompt embeddings"
                              f" and state head are {config.llm_embed_dim} wide (model_conf.llm_embed_dim in "
                              f"{config.source}): use the backbone the checkpoint was trained with")
    if config.llm_head_num is not None and int(llm_config.num_attention_heads) != config.llm_head_num:
        raise CheckpointError(config_file, "num_attention_heads",
                              f"backbone has {llm_config.num_attention_heads} attention heads, the checkpoint "
                              f"expects {config.llm_head_num} (model_conf.llm_head_num)")
    kv_heads = getattr(llm_config, "num_key_value_heads", None)
    if config.llm_kv_heads is not None and kv_heads is not None and int(kv_heads) != config.llm_kv_heads:
        raise CheckpointError(config_file, "num_key_value_heads",
                              f"backbone has {kv_heads} key/value heads, the checkpoint expects {config.llm_kv_heads}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(llm_dir), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(llm_dir, None, f"cannot load the backbone tokenizer: {load_failure(exc)}") from None
    vocab = tokenizer.get_vocab()
    for token in (IM_START, IM_END):
        if token not in vocab:
            raise CheckpointError(llm_dir, token, "the backbone tokenizer lacks this chat special token")
    im_end = vocab[IM_END]
    if config.eod_id is not None and im_end != config.eod_id:
        raise CheckpointError(llm_dir, IM_END, f"the backbone tokenizer maps {IM_END} to id {im_end}, the checkpoint "
                              f"was trained with eod_id {config.eod_id} (dataset_conf.tokenize_conf.eod_id)")
    vocab_size = int(getattr(llm_config, "vocab_size", 0) or 0)
    if vocab_size and max(vocab[IM_START], im_end) >= vocab_size:
        raise CheckpointError(config_file, "vocab_size",
                              f"special token ids {vocab[IM_START]}/{im_end} do not fit the vocabulary of {vocab_size}")
    return llm_config, tokenizer


def _quantization_config(bits: int | None, device: torch.device, dtype: torch.dtype) -> Any:
    if bits is None:
        return None
    if bits not in (4, 8):
        raise LoadError(f"backbone quantisation must be 8 or 4 bits, not {bits}")
    if device.type != "cuda":
        raise LoadError(f"{bits}-bit backbones need a CUDA device (bitsandbytes); device is {device}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise LoadError(f"{bits}-bit backbones need the optional package bitsandbytes "
                        "(pip install 'parley[quant]')") from exc
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")


def load_backbone(llm_dir: str | Path, device: torch.device, dtype: torch.dtype, quantize_bits: int | None = None,
                  attn_implementation: str = "sdpa") -> torch.nn.Module:
    """The frozen causal LM from a local folder (``local_files_only``; never remote code: :func:`check_backbone`
    refuses a folder that asks for it).

    ``attn_implementation`` is explicit: ``sdpa`` or ``eager`` (both plain causal attention here; the backbone is
    always called with a KV cache and no padding, so no mask subtleties arise).
    """
    from transformers import AutoModelForCausalLM

    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise LoadError(f"attention implementation must be one of {ATTENTION_IMPLEMENTATIONS}")
    quant = _quantization_config(quantize_bits, device, dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True, "attn_implementation": attn_implementation}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": device.index if device.index is not None else 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(llm_dir), **kwargs)
    except torch.OutOfMemoryError:
        raise  # not a checkpoint problem: the caller reports it as out of memory
    except Exception as exc:  # noqa: BLE001 - transformers, torch and safetensors raise many types; one line each
        raise CheckpointError(llm_dir, None, f"cannot load the backbone weights: {load_failure(exc)}") from None
    if quant is None:
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    return model


# ------------------------------------------------------------------------------------------------ audiollm
def read_audiollm_state(path: str | Path) -> dict[str, torch.Tensor]:
    """``audiollm/final.pt`` as a flat state dict (a top-level ``model`` wrapper is unwrapped)."""
    state = load_torch_state(path)
    if set(state) == {"model"} and isinstance(state["model"], dict):
        state = state["model"]
    for key in state:
        if not isinstance(key, str):
            raise CheckpointError(path, repr(key), "state-dict keys must be strings")
        if not key.startswith(AudioLLM.TRAINABLE_PREFIXES):
            raise CheckpointError(path, key, "not an AudioLLM key: allowed prefixes are "
                                  + ", ".join(AudioLLM.TRAINABLE_PREFIXES)
                                  + " (the backbone comes from the --llm folder, never from this file)")
    return state


def _cmvn_tensors(audiollm_dir: Path, config: AudioLLMConfig, state: dict[str, torch.Tensor], weights: Path
                  ) -> dict[str, torch.Tensor]:
    """CMVN buffers: from the checkpoint when it has them (as the original's load_state_dict did), else from the
    stats file (``cmvn_file`` from train.yaml, looked up in the audiollm folder)."""
    name = Path(config.cmvn_file).name if config.cmvn_file else DEFAULT_CMVN_FILE
    path = audiollm_dir / name
    from_file = None
    if path.is_file():
        try:
            stats = load_cmvn(path, config.is_json_cmvn)
        except CmvnError as first:
            try:  # the flag in train.yaml may be wrong: try the other format before giving up
                stats = load_cmvn(path, not config.is_json_cmvn)
                log.warning("%s: is_json_cmvn=%s in train.yaml is wrong for this file; read it as %s",
                            path, config.is_json_cmvn, "JSON" if not config.is_json_cmvn else "Kaldi text")
            except CmvnError:
                raise CheckpointError(path, None, str(first)) from first
        if stats.dim != config.input_dim:
            raise CheckpointError(path, None, f"CMVN has {stats.dim} dimensions, the encoder input is "
                                              f"{config.input_dim}")
        from_file = {CMVN_KEYS[0]: stats.mean, CMVN_KEYS[1]: stats.istd}
    in_ckpt = [k for k in CMVN_KEYS if k in state]
    if len(in_ckpt) == 1:
        missing = next(k for k in CMVN_KEYS if k not in state)
        raise CheckpointError(weights, missing, "missing while the other CMVN buffer is present")
    if in_ckpt:
        if from_file is not None:
            diff = max(float((state[k].float() - from_file[k]).abs().max()) for k in CMVN_KEYS
                       if tuple(state[k].shape) == tuple(from_file[k].shape))
            if diff > 1e-4:
                log.warning("CMVN buffers in %s differ from %s by up to %.3g; using the checkpoint's (as the "
                            "original does)", weights, path, diff)
        return {k: state[k] for k in CMVN_KEYS}
    if from_file is None:
        raise CheckpointError(path, None, "CMVN statistics not found (neither this file nor "
                                          f"{CMVN_KEYS[0]} in {weights})")
    return from_file


def build_audiollm(config: AudioLLMConfig, backbone: torch.nn.Module, state: dict[str, torch.Tensor],
                   weights: str | Path, device: torch.device, dtype: torch.dtype) -> AudioLLM:
    """Build the AudioLLM around ``backbone`` and fill it from a checked state dict (CMVN keys included)."""
    with torch.device("meta"):
        shell = AudioLLM(config, torch.nn.Identity())
    expected = shell.trainable_state_dict()
    check_state_dict(expected, state, weights)
    model = AudioLLM(config, torch.nn.Identity())
    model.load_state_dict(state, strict=True)  # keys and shapes were checked above; the backbone is added after
    model = model.to(device=device, dtype=dtype)
    model.encoder.global_cmvn.float()  # CMVN statistics stay float32 (see encoder.GlobalCMVN)
    model.llm_decoder = backbone
    model.eval()
    model.requires_grad_(False)
    return model


@dataclass
class AudioLLMBundle:
    model: AudioLLM
    tokenizer: Any
    chat: ChatTokens
    config: AudioLLMConfig


def load_audiollm(checkpoint: str | Path, llm_dir: str | Path, device: str | torch.device = "cpu",
                  dtype: str | torch.dtype = torch.float32, quantize_bits: int | None = None,
                  attn_implementation: str = "sdpa") -> AudioLLMBundle:
    """Load ``<checkpoint>/audiollm`` plus the backbone from ``llm_dir``; checks everything before heavy work."""
    device, dtype = parse_device(device), parse_dtype(dtype)
    paths = checkpoint_paths(checkpoint)
    config = load_train_config(paths["audiollm"])
    _, tokenizer = check_backbone(llm_dir, config)
    try:
        chat = build_chat_tokens(tokenizer, config.chat_template)
    except ValueError as exc:
        raise CheckpointError(llm_dir, None, str(exc)) from exc
    weights = paths["audiollm"] / WEIGHTS_FILE
    state = read_audiollm_state(weights)
    state = {**state, **_cmvn_tensors(paths["audiollm"], config, state, weights)}
    # Shapes are checked before the (large) backbone is read.
    with torch.device("meta"):
        check_state_dict(AudioLLM(config, torch.nn.Identity()).trainable_state_dict(), state, weights)
    backbone = load_backbone(llm_dir, device, dtype, quantize_bits, attn_implementation)
    model = build_audiollm(config, backbone, state, weights, device, dtype)
    log.info("AudioLLM loaded from %s with backbone %s: encoder %d x %d, adapter %s, llm %d, %s %s",
             paths["audiollm"], llm_dir, config.encoder.transformer.num_blocks, config.encoder.output_dim,
             config.adapter.type, config.llm_embed_dim, device, dtype)
    return AudioLLMBundle(model=model, tokenizer=tokenizer, chat=chat, config=config)


def read_json(path: Path) -> Any:
    return read_json_file(path, "JSON file")


# ------------------------------------------------------------------------------------------------ everything
def load_freeze_omni(checkpoint: str | Path, llm_dir: str | Path, device: str | torch.device = "cpu",
                     dtype: str | torch.dtype = torch.float32, quantize_bits: int | None = None,
                     attn_implementation: str = "sdpa", speech: bool = True,
                     with_codec_encoder: bool = False, progress: Any = None) -> "FreezeOmni":
    """The whole model: AudioLLM + backbone, and (``speech=True``) the speech decoder and the codec.

    One device and one compute dtype for every part (the original mixed fp32, fp16 and bf16: docs/freeze-omni.md,
    "Deviations from the official code", D1).
    """
    from core.model.freeze_omni.codec import TiCodec
    from core.model.freeze_omni.decoder import SpeechDecoder
    from core.model.freeze_omni.pipeline import FreezeOmni

    device, dtype = parse_device(device), parse_dtype(dtype)
    report = progress or (lambda step, fraction, message: None)
    paths = checkpoint_paths(checkpoint)
    decoder = codec = None
    if speech:
        # The small parts first: a broken decoder or codec fails before the backbone is read.
        report("speech decoder", None, "Loading the speech decoder")
        decoder = SpeechDecoder.from_checkpoint(paths["decoder"], device=device, dtype=dtype)
        report("codec", None, "Loading the voice codec")
        codec = TiCodec.from_checkpoint(paths["codec"], device=device, dtype=dtype, with_encoder=with_codec_encoder)
        if decoder.config.odim != codec.config.n_codes:
            raise CheckpointError(paths["decoder"] / "model.json", "odim",
                                  f"the speech decoder emits {decoder.config.odim} codes but the codec has "
                                  f"{codec.config.n_codes} (codec/model.json n_codes)")
    report("language model", None, "Loading the speech encoder and the language model (the longest step)")
    bundle = load_audiollm(paths["root"], llm_dir, device, dtype, quantize_bits, attn_implementation)
    if decoder is not None and bundle.config.llm_embed_dim % decoder.config.idim:
        raise CheckpointError(paths["decoder"] / "model.json", "idim",
                              f"LLM vectors of width {bundle.config.llm_embed_dim} cannot be split into decoder rows "
                              f"of width {decoder.config.idim}")
    return FreezeOmni(bundle.model, bundle.tokenizer, bundle.chat, decoder, codec)
