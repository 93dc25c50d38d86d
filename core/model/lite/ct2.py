"""Reader for CTranslate2 ``model.bin`` files, and the Whisper CT2 -> transformers name mapping.

The file format (binary version 6, written by CTranslate2's ``ModelSpec``) is, little endian:
``u32 version``, ``str spec name``, ``u32 spec revision``, ``u32 n_variables``, then per variable ``str name``,
``u8 rank``, ``u32 dims[rank]``, ``u8 dtype``, ``u32 n_bytes``, raw data; then ``u32 n_aliases`` and pairs of
``str alias``, ``str target``. A ``str`` is ``u16 length`` (including a trailing NUL) followed by the bytes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# CTranslate2 DataType ids
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5: bfloat16


class Ct2FormatError(ValueError):
    """The file is not a CTranslate2 model this reader understands."""


@dataclass
class Ct2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise Ct2FormatError("unexpected end of file")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values[0] if len(values) == 1 else values

    def string(self) -> str:
        n = self.take("<H")
        raw = self.data[self.pos:self.pos + n]
        if len(raw) != n or n == 0:
            raise Ct2FormatError("unexpected end of file in a string")
        self.pos += n
        return raw[:-1].decode("utf-8")

    def array(self, dtype, dims: list[int], n_bytes: int) -> np.ndarray:
        if self.pos + n_bytes > len(self.data):
            raise Ct2FormatError("unexpected end of file in a tensor")
        arr = np.frombuffer(self.data, dtype=dtype, count=n_bytes // np.dtype(dtype).itemsize, offset=self.pos)
        self.pos += n_bytes
        return arr.reshape(dims) if dims else arr.reshape(())


def read_ct2(path: str | Path) -> Ct2Model:
    data = Path(path).read_bytes()
    r = _Reader(data)
    version = r.take("<I")
    if version != 6:
        raise Ct2FormatError(f"unsupported CTranslate2 binary version {version} (expected 6)")
    spec = r.string()
    revision = r.take("<I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.take("<I")):
        name = r.string()
        rank = r.take("<B")
        dims = [r.take("<I") for _ in range(rank)]
        dtype_id = r.take("<B")
        n_bytes = r.take("<I")
        dtype = _DTYPES.get(dtype_id)
        if dtype is None:
            raise Ct2FormatError(f"{name}: unsupported dtype id {dtype_id}")
        variables[name] = r.array(dtype, dims, n_bytes)
    aliases = {}
    for _ in range(r.take("<I")):
        alias = r.string()
        aliases[alias] = r.string()
    if r.pos != len(data):
        raise Ct2FormatError(f"{len(data) - r.pos} trailing bytes")
    return Ct2Model(spec, revision, variables, aliases)


# ---------------------------------------------------------------------------------------------------- Whisper


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int
    d_model: int
    n_heads: int
    encoder_layers: int
    decoder_layers: int
    ffn_dim: int
    vocab_size: int
    n_audio_ctx: int
    n_text_ctx: int


def whisper_dims(model: Ct2Model) -> WhisperDims:
    v = model.variables
    if model.spec != "WhisperSpec":
        raise Ct2FormatError(f"expected a WhisperSpec model, got {model.spec}")

    def count(prefix: str) -> int:
        return len({m.group(1) for k in v if (m := re.match(prefix + r"/layer_(\d+)/", k))})

    return WhisperDims(
        n_mels=int(v["encoder/conv1/weight"].shape[1]),
        d_model=int(v["encoder/conv1/weight"].shape[0]),
        n_heads=int(v["encoder/num_heads"]),
        encoder_layers=count("encoder"),
        decoder_layers=count("decoder"),
        ffn_dim=int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        vocab_size=int(v["decoder/embeddings/weight"].shape[0]),
        n_audio_ctx=int(v["encoder/position_encodings/encodings"].shape[0]),
        n_text_ctx=int(v["decoder/position_encodings/encodings"].shape[0]),
    )


def _split(arr: np.ndarray, parts: int) -> list[np.ndarray]:
    return list(np.split(arr, parts, axis=0))


def whisper_state_dict(model: Ct2Model) -> dict[str, np.ndarray]:
    """transformers ``WhisperForConditionalGeneration`` state dict (``proj_out`` is tied, so absent).

    CT2 fuses q/k/v of self-attention into one linear (with a zero k bias, which Whisper does not have) and k/v of
    cross-attention into another; they are split back here. Raises :class:`Ct2FormatError` on unexpected names.
    """
    v = model.variables
    dims = whisper_dims(model)
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()

    def get(name: str) -> np.ndarray:
        if name not in v:
            raise Ct2FormatError(f"missing variable {name}")
        used.add(name)
        return v[name]

    def linear(src: str, dst: str, bias: bool = True) -> None:
        out[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            out[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = get(f"{src}/gamma")
        out[f"{dst}.bias"] = get(f"{src}/beta")

    def self_attention(src: str, dst: str) -> None:
        q, k, vv = _split(get(f"{src}/linear_0/weight"), 3)
        qb, kb, vb = _split(get(f"{src}/linear_0/bias"), 3)
        if np.any(kb != 0):
            raise Ct2FormatError(f"{src}: non-zero key bias, which Whisper does not have")
        out.update({f"{dst}.q_proj.weight": q, f"{dst}.q_proj.bias": qb, f"{dst}.k_proj.weight": k,
                    f"{dst}.v_proj.weight": vv, f"{dst}.v_proj.bias": vb})
        linear(f"{src}/linear_1", f"{dst}.out_proj")

    def ffn(src: str, dst: str) -> None:
        norm(f"{src}/layer_norm", f"{dst}.final_layer_norm")
        linear(f"{src}/linear_0", f"{dst}.fc1")
        linear(f"{src}/linear_1", f"{dst}.fc2")

    enc, dec = "model.encoder", "model.decoder"
    linear("encoder/conv1", f"{enc}.conv1")
    linear("encoder/conv2", f"{enc}.conv2")
    out[f"{enc}.embed_positions.weight"] = get("encoder/position_encodings/encodings")
    for i in range(dims.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        self_attention(f"{src}/self_attention", f"{dst}.self_attn")
        ffn(f"{src}/ffn", dst)
    norm("encoder/layer_norm", f"{enc}.layer_norm")

    out[f"{dec}.embed_tokens.weight"] = get("decoder/embeddings/weight")
    out[f"{dec}.embed_positions.weight"] = get("decoder/position_encodings/encodings")
    for i in range(dims.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        self_attention(f"{src}/self_attention", f"{dst}.self_attn")
        norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        k, vv = _split(get(f"{src}/attention/linear_1/weight"), 2)
        kb, vb = _split(get(f"{src}/attention/linear_1/bias"), 2)
        if np.any(kb != 0):
            raise Ct2FormatError(f"{src}: non-zero cross-attention key bias")
        out.update({f"{dst}.encoder_attn.k_proj.weight": k, f"{dst}.encoder_attn.v_proj.weight": vv,
                    f"{dst}.encoder_attn.v_proj.bias": vb})
        linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        ffn(f"{src}/ffn", dst)
    norm("decoder/layer_norm", f"{dec}.layer_norm")

    # Scalars that describe the architecture; check they mean what the mapping assumes.
    flags = {k: v[k] for k in v if v[k].ndim == 0}
    used.update(flags)
    if int(flags.get("decoder/scale_embeddings", 0)) or int(flags.get("decoder/alibi", 0)):
        raise Ct2FormatError("unexpected decoder flags (scaled embeddings or ALiBi)")
    unused = set(v) - used
    if unused:
        raise Ct2FormatError(f"unmapped variables: {sorted(unused)[:5]}")
    return out


def whisper_config_kwargs(dims: WhisperDims) -> dict:
    """``WhisperConfig`` keyword arguments for an English-only Whisper with these dimensions."""
    return dict(
        vocab_size=dims.vocab_size, num_mel_bins=dims.n_mels, d_model=dims.d_model,
        encoder_layers=dims.encoder_layers, decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.n_heads, decoder_attention_heads=dims.n_heads,
        encoder_ffn_dim=dims.ffn_dim, decoder_ffn_dim=dims.ffn_dim,
        max_source_positions=dims.n_audio_ctx, max_target_positions=dims.n_text_ctx,
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True,
        decoder_start_token_id=50257, bos_token_id=50257, eos_token_id=50256, pad_token_id=50256,
    )
