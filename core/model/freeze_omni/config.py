"""Typed configuration of the Freeze-Omni AudioLLM, parsed from ``checkpoints/audiollm/train.yaml``.

See docs/freeze-omni.md, "Speech encoder", "Adapter" and "LLM, prompt embeddings and state head".

The original builds its encoder defaults with ``argparse.parse_known_args()``, which silently reads ``sys.argv``
(docs/freeze-omni.md, "Deviations from the official code", D3). Here the YAML dict is the only input: every value
comes from the file or from a documented default. Keys are read with ``-`` and ``_`` treated alike (the original
turns ``transformer-chunk_size`` into ``transformer_chunk_size``). Anything this implementation cannot run is refused
with a :class:`~core.model.freeze_omni.errors.CheckpointError` naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.model.freeze_omni.errors import CheckpointError

TRAIN_YAML = "train.yaml"
DEFAULT_CHAT_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<audio><|im_end|>\n"
    "<|im_start|>assistant\n"
)
ADAPTER_TYPES = ("subsampling", "cnn", "linear")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
NORMS = ("layer", "batch")


def _norm_key(key: str) -> str:
    return key.replace("-", "_")


class _Section:
    """Read typed values from one mapping of the YAML file, with file/key in every error."""

    def __init__(self, data: Any, path: Path | None, where: str) -> None:
        if not isinstance(data, dict):
            raise CheckpointError(path, where or None, f"expected a mapping, found {type(data).__name__}")
        self.data = {_norm_key(str(k)): v for k, v in data.items()}
        self.path = path
        self.where = where

    def _key(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return _norm_key(key) in self.data

    def raw(self, key: str, default: Any = ...) -> Any:
        k = _norm_key(key)
        if k not in self.data:
            if default is ...:
                raise CheckpointError(self.path, self._key(key), "missing from the config")
            return default
        return self.data[k]

    def int(self, key: str, default: Any = ..., minimum: int | None = 1) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CheckpointError(self.path, self._key(key), f"expected an integer, found {value!r}")
        if minimum is not None and value < minimum:
            raise CheckpointError(self.path, self._key(key), f"must be >= {minimum}, found {value}")
        return value

    def bool(self, key: str, default: Any = ...) -> bool:
        value = self.raw(key, default)
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise CheckpointError(self.path, self._key(key), f"expected true/false, found {value!r}")

    def str(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise CheckpointError(self.path, self._key(key), f"expected a string, found {value!r}")
        if choices is not None and value not in choices:
            raise CheckpointError(self.path, self._key(key), f"{value!r} is not supported (supported: "
                                                             f"{', '.join(choices)})")
        return value

    def section(self, key: str) -> "_Section":
        return _Section(self.raw(key), self.path, self._key(key))


# ------------------------------------------------------------------------------------------------- encoder
@dataclass(frozen=True)
class SubsamplingConfig:
    """``enc.0``: two Conv2d(3x3, stride 2) + ReLU, then Linear(channels * freq -> output_dim)."""

    input_dim: int
    output_dim: int
    rate: int = 4

    @property
    def freq_after(self) -> int:
        return ((self.input_dim - 1) // 2 - 1) // 2

    @property
    def receptive_field(self) -> int:
        return 7

    def out_frames(self, frames: int) -> int:
        return max(0, ((frames - 3) // 2 + 1 - 3) // 2 + 1) if frames >= 7 else 0


@dataclass(frozen=True)
class TransformerConfig:
    """``enc.1``: streaming pre-norm transformer with relative positions (rel-enc, no rel_shift)."""

    input_dim: int
    output_dim: int
    attention_dim: int
    attention_heads: int
    linear_units: int
    num_blocks: int
    chunk_size: int
    left_chunks: int

    @property
    def head_dim(self) -> int:
        return self.attention_dim // self.attention_heads

    @property
    def cache_frames(self) -> int:
        """K/V frames kept per layer between chunks (chunk_size * left_chunks)."""
        return self.chunk_size * self.left_chunks

    @property
    def pe_window(self) -> int:
        """F = (left_chunks + 1) * chunk_size: the look-back used for the first positional index."""
        return (self.left_chunks + 1) * self.chunk_size

    @property
    def pe_max_len(self) -> int:
        """pe_index is taken modulo this: chunk_size * floor(5000 / chunk_size) - F."""
        return self.chunk_size * (5000 // self.chunk_size) - self.pe_window


@dataclass(frozen=True)
class EncoderConfig:
    input_dim: int
    output_dim: int
    subsampling: SubsamplingConfig
    transformer: TransformerConfig


# ------------------------------------------------------------------------------------------------- adapter
@dataclass(frozen=True)
class AdapterConfig:
    type: str            # subsampling | cnn | linear
    enc_out_dim: int
    llm_embed_dim: int
    kernel_size: int
    activation: str      # relu | gelu | silu | tanh
    norm: str            # layer | batch

    @property
    def two_conv(self) -> bool:
        """The subsampling adapter uses two convs when enc_out_dim * 4 < llm_embed_dim."""
        return self.type == "subsampling" and self.enc_out_dim * 4 < self.llm_embed_dim

    @property
    def time_stride(self) -> int:
        return 2 if self.type == "subsampling" else 1


# ------------------------------------------------------------------------------------------------- audiollm
@dataclass(frozen=True)
class AudioLLMConfig:
    """Everything of ``train.yaml`` that inference needs."""

    input_dim: int
    encoder: EncoderConfig
    adapter: AdapterConfig
    llm_embed_dim: int
    llm_head_num: int | None
    llm_kv_heads: int | None
    prompt_num: int          # 0 when prompt_finetune is off
    task_num: int
    predict_usr_state: int   # 0 when there is no predictor head
    chat_template: str
    cmvn_file: str | None
    is_json_cmvn: bool
    eod_id: int | None       # dataset_conf.tokenize_conf.eod_id, when present
    source: str | None = None

    @property
    def has_predictor(self) -> bool:
        return self.predict_usr_state > 0


def _encoder_config(top: _Section, model: _Section) -> EncoderConfig:
    enc = top.section("encoder_conf")
    overview = enc.section("overview_conf")
    para = enc.section("para_conf")
    layers = overview.str("encoder-layer-config").split("-")
    if [name.split("_")[0] for name in layers] != ["subsampling", "transformer"]:
        raise CheckpointError(top.path, "encoder_conf.overview_conf.encoder-layer-config",
                              f"{'-'.join(layers)!r} is not supported: only 'subsampling-transformer' "
                              "(one subsampling, then one streaming transformer) exists in Freeze-Omni")
    sub = para.section(layers[0])
    trf = para.section(layers[1])
    sub_cfg = SubsamplingConfig(
        input_dim=sub.int("subsampling-input-dim"),
        output_dim=sub.int("subsampling-output-dim"),
        rate=sub.int("subsampling-rate", 4),
    )
    if sub_cfg.rate != 4:
        raise CheckpointError(top.path, f"{sub.where}.subsampling-rate", f"only rate 4 exists, found {sub_cfg.rate}")
    if sub_cfg.freq_after < 1:
        raise CheckpointError(top.path, f"{sub.where}.subsampling-input-dim", f"{sub_cfg.input_dim} is too small")
    for key, wanted in (("transformer-pos-enc-class", "rel-enc"), ("transformer-input-layer", "linear"),
                        ("transformer-positionwise-layer-type", "linear")):
        trf.str(key, wanted, choices=(wanted,))
    if not trf.bool("transformer-normalize-before", True):
        raise CheckpointError(top.path, f"{trf.where}.transformer-normalize-before",
                              "only the pre-norm transformer (true) is supported")
    if trf.bool("transformer-concat-after", False):
        raise CheckpointError(top.path, f"{trf.where}.transformer-concat-after", "only false is supported")
    trf_cfg = TransformerConfig(
        input_dim=trf.int("transformer-input-dim"),
        output_dim=trf.int("transformer-output-dim"),
        attention_dim=trf.int("transformer-attention-dim"),
        attention_heads=trf.int("transformer-attention-heads"),
        linear_units=trf.int("transformer-linear-units"),
        num_blocks=trf.int("transformer-num-blocks"),
        chunk_size=trf.int("transformer-chunk_size"),
        left_chunks=trf.int("transformer-left_chunks"),
    )
    if trf_cfg.attention_dim % trf_cfg.attention_heads:
        raise CheckpointError(top.path, f"{trf.where}.transformer-attention-heads",
                              f"{trf_cfg.attention_dim} is not divisible by {trf_cfg.attention_heads} heads")
    if trf_cfg.input_dim != sub_cfg.output_dim:
        raise CheckpointError(top.path, f"{trf.where}.transformer-input-dim",
                              f"{trf_cfg.input_dim} != subsampling output {sub_cfg.output_dim}")
    if trf_cfg.output_dim != trf_cfg.attention_dim:
        raise CheckpointError(top.path, f"{trf.where}.transformer-output-dim",
                              f"{trf_cfg.output_dim} != attention dim {trf_cfg.attention_dim}")
    if trf_cfg.pe_max_len <= 0:
        raise CheckpointError(top.path, f"{trf.where}.transformer-left_chunks",
                              "chunk_size * (left_chunks + 1) must stay below 5000 frames")
    input_dim = overview.int("encoder-input-dim", top.int("input_dim", sub_cfg.input_dim))
    output_dim = overview.int("encoder-output-dim", trf_cfg.output_dim)
    if input_dim != sub_cfg.input_dim:
        raise CheckpointError(top.path, "encoder_conf.overview_conf.encoder-input-dim",
                              f"{input_dim} != subsampling input {sub_cfg.input_dim}")
    if output_dim != trf_cfg.output_dim:
        raise CheckpointError(top.path, "encoder_conf.overview_conf.encoder-output-dim",
                              f"{output_dim} != transformer output {trf_cfg.output_dim}")
    return EncoderConfig(input_dim=input_dim, output_dim=output_dim, subsampling=sub_cfg, transformer=trf_cfg)


def parse_train_config(data: Any, path: str | Path | None = None) -> AudioLLMConfig:
    """Build :class:`AudioLLMConfig` from the parsed YAML mapping."""
    p = Path(path) if path is not None else None
    top = _Section(data, p, "")
    model = top.section("model_conf")
    encoder = _encoder_config(top, model)
    llm_dim = model.int("llm_embed_dim")
    adapter = AdapterConfig(
        type=model.str("adpter_type", "subsampling", choices=ADAPTER_TYPES),
        enc_out_dim=model.int("enc_out_dim", encoder.output_dim),
        llm_embed_dim=llm_dim,
        kernel_size=model.int("kernel_size", 5),
        activation=model.str("activation_func", "relu", choices=ACTIVATIONS),
        norm=model.str("norm", "batch", choices=NORMS),
    )
    if adapter.enc_out_dim != encoder.output_dim:
        raise CheckpointError(p, "model_conf.enc_out_dim",
                              f"{adapter.enc_out_dim} != encoder output {encoder.output_dim}")
    if model.bool("prefix_finetune", False) or model.str("task_type", "prompt_finetune") == "prefix":
        raise CheckpointError(p, "model_conf.prefix_finetune",
                              "per-layer KV prefix embeddings are not supported (the release does not use them)")
    if model.bool("use_lora", False):
        raise CheckpointError(p, "model_conf.use_lora", "LoRA is not supported (broken in the original code)")
    prompt_finetune = model.bool("prompt_finetune", False)
    if prompt_finetune and not model.bool("add_prompt_before", True):
        raise CheckpointError(p, "model_conf.add_prompt_before",
                              "prompt embeddings placed after the speech are not supported (only add_prompt_before)")
    prompt_num = model.int("prompt_num", 25) if prompt_finetune else 0
    predict = model.int("predict_usr_state", 0, minimum=0)
    if 0 < predict < 3:
        raise CheckpointError(p, "model_conf.predict_usr_state",
                              f"the turn-state head needs at least 3 classes (keep/answer/ignore), found {predict}")
    template = model.str("chat_template", DEFAULT_CHAT_TEMPLATE)
    if template.count("<audio>") != 1 or "<|im_end|>" not in template.split("<audio>")[0]:
        raise CheckpointError(p, "model_conf.chat_template",
                              "must contain exactly one <audio> and a <|im_end|> before it")
    eod_id = None
    if top.has("dataset_conf"):
        ds = top.section("dataset_conf")
        if ds.has("tokenize_conf"):
            tok = ds.section("tokenize_conf")
            if tok.has("eod_id"):
                eod_id = tok.int("eod_id", minimum=0)
    cmvn_file = top.raw("cmvn_file", None)
    if cmvn_file is not None and not isinstance(cmvn_file, str):
        raise CheckpointError(p, "cmvn_file", f"expected a file name, found {cmvn_file!r}")
    input_dim = top.int("input_dim", encoder.input_dim)
    if input_dim != encoder.input_dim:
        raise CheckpointError(p, "input_dim", f"{input_dim} != encoder input {encoder.input_dim}")
    return AudioLLMConfig(
        input_dim=input_dim,
        encoder=encoder,
        adapter=adapter,
        llm_embed_dim=llm_dim,
        llm_head_num=model.int("llm_head_num") if model.has("llm_head_num") else None,
        llm_kv_heads=model.int("num_key_value_heads") if model.has("num_key_value_heads") else None,
        prompt_num=prompt_num,
        task_num=model.int("task_num", 0, minimum=0),
        predict_usr_state=predict,
        chat_template=template,
        cmvn_file=cmvn_file,
        is_json_cmvn=top.bool("is_json_cmvn", True),
        eod_id=eod_id,
        source=str(p) if p else None,
    )


def load_train_config(folder_or_file: str | Path) -> AudioLLMConfig:
    """Read ``train.yaml`` (give the file or the ``audiollm`` folder)."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / TRAIN_YAML
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(path, None, "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(path, None, f"cannot read the config: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CheckpointError(path, None, f"not valid YAML: {exc}") from exc
    return parse_train_config(data, path)
