"""Loading: the public loader on the fixture, and broken checkpoints / mismatched backbones refused with clear
messages that name the file and the key (copies in tmp_path; the fixture itself is never modified)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from _fo_pipeline import LLM_DIR, expected, max_abs, requires_fixture
from _paths import TINY_A_CHECKPOINTS
from core.model.freeze_omni.adapter import AdapterState
from core.model.freeze_omni.config import load_train_config, parse_train_config
from core.model.freeze_omni.errors import CheckpointError
from core.model.freeze_omni.loader import LoadError, load_audiollm, load_freeze_omni, parse_dtype

pytestmark = requires_fixture

AUDIOLLM_PT = "audiollm/final.pt"


class NotAStateDict:
    """A custom object: a pickle holding it must be refused by torch.load(weights_only=True)."""

    def __init__(self) -> None:
        self.weights = torch.zeros(2)


def _checkpoint_copy(tmp_path: Path, with_decoder: bool = False) -> Path:
    """audiollm/ (and decoder/) copied, codec/ linked (18 MB, never modified here)."""
    root = tmp_path / "checkpoints"
    root.mkdir()
    shutil.copytree(TINY_A_CHECKPOINTS / "audiollm", root / "audiollm")
    if with_decoder:
        shutil.copytree(TINY_A_CHECKPOINTS / "decoder", root / "decoder")
    else:
        os.symlink(TINY_A_CHECKPOINTS / "decoder", root / "decoder")
    os.symlink(TINY_A_CHECKPOINTS / "codec", root / "codec")
    return root


def _llm_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "llm"
    shutil.copytree(LLM_DIR, dst)
    return dst


def _edit_state(root: Path, edit) -> Path:
    path = root / AUDIOLLM_PT
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


def _first_chunk_encoder_out(bundle) -> np.ndarray:
    with torch.inference_mode():
        out = bundle.model.encode_chunk(torch.from_numpy(expected("listen")["fbank"][:1]),
                                        bundle.model.encoder.initial_state(), AdapterState())
    return out.encoder_out[0].float().numpy()


def test_public_loader_builds_the_fixture_model():
    bundle = load_audiollm(TINY_A_CHECKPOINTS, LLM_DIR)
    cfg = bundle.config
    assert (cfg.encoder.transformer.num_blocks, cfg.encoder.output_dim, cfg.llm_embed_dim) == (2, 32, 128)
    assert bundle.chat.im_end == 402 and bundle.chat.im_start == 401
    assert bundle.chat.prefix == [198, 401, 84, 82, 263, 198] and bundle.chat.suffix[0] == 402
    assert not any(p.requires_grad for p in bundle.model.parameters())
    assert bundle.model.llm_decoder.config._attn_implementation == "sdpa"
    assert max_abs(_first_chunk_encoder_out(bundle), expected("listen")["encoder_out"][0]) < 1e-5


def test_truncated_checkpoint(tmp_path):
    root = _checkpoint_copy(tmp_path)
    path = root / AUDIOLLM_PT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_audiollm(root, LLM_DIR)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


def test_wrong_shape(tmp_path):
    root = _checkpoint_copy(tmp_path)
    key = "encoder.enc.1.encoders.0.self_attn.linear_q.weight"
    path = _edit_state(root, lambda s: s.__setitem__(key, torch.zeros(32, 16)))
    with pytest.raises(CheckpointError) as err:
        load_audiollm(root, LLM_DIR)
    msg = str(err.value)
    assert str(path) in msg and key in msg and "(32, 16)" in msg and "(32, 32)" in msg


def test_missing_key(tmp_path):
    root = _checkpoint_copy(tmp_path)
    key = "adpter.project.weight"
    path = _edit_state(root, lambda s: s.pop(key))
    with pytest.raises(CheckpointError) as err:
        load_audiollm(root, LLM_DIR)
    assert str(path) in str(err.value) and key in str(err.value) and "missing" in str(err.value)


@pytest.mark.parametrize("key", ["llm_decoder.model.embed_tokens.weight", "adpter.extra.weight"])
def test_unexpected_key(tmp_path, key):
    root = _checkpoint_copy(tmp_path)
    path = _edit_state(root, lambda s: s.__setitem__(key, torch.zeros(3)))
    with pytest.raises(CheckpointError) as err:
        load_audiollm(root, LLM_DIR)
    assert str(path) in str(err.value) and key in str(err.value)


def test_pickle_with_custom_object_is_refused(tmp_path):
    root = _checkpoint_copy(tmp_path)
    path = root / AUDIOLLM_PT
    torch.save({"encoder.global_cmvn.mean": NotAStateDict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_audiollm(root, LLM_DIR)
    assert str(path) in str(err.value) and "weights_only" in str(err.value)


def test_non_dict_pickle_is_refused(tmp_path):
    root = _checkpoint_copy(tmp_path)
    path = root / AUDIOLLM_PT
    torch.save([torch.zeros(3)], path)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_audiollm(root, LLM_DIR)


def test_integer_tensor_for_a_weight_is_refused(tmp_path):
    root = _checkpoint_copy(tmp_path)
    key = "predictor_head.bias"
    _edit_state(root, lambda s: s.__setitem__(key, torch.zeros(4, dtype=torch.int64)))
    with pytest.raises(CheckpointError, match="predictor_head.bias"):
        load_audiollm(root, LLM_DIR)


@pytest.mark.slow
def test_decoder_checkpoint_with_and_without_model_wrapper(tmp_path):
    root = _checkpoint_copy(tmp_path, with_decoder=True)
    wrapped = torch.load(root / "decoder" / "final.pt", weights_only=True)
    assert set(wrapped) == {"model"}
    a = load_freeze_omni(root, LLM_DIR)
    torch.save(wrapped["model"], root / "decoder" / "final.pt")  # the bare state dict
    b = load_freeze_omni(root, LLM_DIR)
    for (ka, va), (kb, vb) in zip(a.decoder.state_dict().items(), b.decoder.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_missing_cmvn_everywhere(tmp_path):
    root = _checkpoint_copy(tmp_path)
    (root / "audiollm" / "global_cmvn").unlink()
    _edit_state(root, lambda s: [s.pop(k) for k in ("encoder.global_cmvn.mean", "encoder.global_cmvn.istd")])
    with pytest.raises(CheckpointError, match="CMVN statistics not found"):
        load_audiollm(root, LLM_DIR)


def test_json_cmvn_without_checkpoint_buffers(tmp_path):
    """The release layout: JSON stats file, no CMVN buffers in final.pt."""
    root = _checkpoint_copy(tmp_path)
    tokens = (root / "audiollm" / "global_cmvn").read_text().replace("[", " ").replace("]", " ").split()
    values = [float(t) for t in tokens]
    sums, count, sumsq = values[:80], values[80], values[81:161]
    (root / "audiollm" / "global_cmvn").write_text(json.dumps({"mean_stat": sums, "var_stat": sumsq,
                                                              "frame_num": count}))
    cfg_path = root / "audiollm" / "train.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["is_json_cmvn"] = True
    cfg_path.write_text(yaml.safe_dump(cfg))
    _edit_state(root, lambda s: [s.pop(k) for k in ("encoder.global_cmvn.mean", "encoder.global_cmvn.istd")])
    bundle = load_audiollm(root, LLM_DIR)
    assert max_abs(_first_chunk_encoder_out(bundle), expected("listen")["encoder_out"][0]) < 1e-5


def test_backbone_hidden_size_mismatch_names_the_numbers(tmp_path):
    llm = _llm_copy(tmp_path)
    config = json.loads((llm / "config.json").read_text())
    config.update(hidden_size=64, intermediate_size=128)
    (llm / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_audiollm(TINY_A_CHECKPOINTS, llm)
    msg = str(err.value)
    assert "hidden_size" in msg and "64" in msg and "128" in msg


def test_backbone_head_count_mismatch(tmp_path):
    llm = _llm_copy(tmp_path)
    config = json.loads((llm / "config.json").read_text())
    config.update(num_attention_heads=8)
    (llm / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="8 attention heads, the checkpoint expects 4"):
        load_audiollm(TINY_A_CHECKPOINTS, llm)


def test_backbone_special_token_mismatch_names_the_ids(tmp_path):
    root = _checkpoint_copy(tmp_path)
    cfg_path = root / "audiollm" / "train.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["dataset_conf"] = {"tokenize_conf": {"eod_id": 151645}}
    cfg_path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError) as err:
        load_audiollm(root, LLM_DIR)
    assert "402" in str(err.value) and "151645" in str(err.value) and "<|im_end|>" in str(err.value)


def test_backbone_of_another_family_is_refused(tmp_path):
    llm = _llm_copy(tmp_path)
    config = json.loads((llm / "config.json").read_text())
    config.update(model_type="llama", architectures=["LlamaForCausalLM"])
    (llm / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'llama' is not supported"):
        load_audiollm(TINY_A_CHECKPOINTS, llm)


def test_missing_folders_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint folder not found"):
        load_audiollm(tmp_path / "nope", LLM_DIR)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="train.yaml"):
        load_audiollm(tmp_path / "empty", LLM_DIR)
    with pytest.raises(CheckpointError, match="config.json"):
        load_audiollm(TINY_A_CHECKPOINTS, tmp_path / "empty")


def test_quantisation_needs_cuda():
    with pytest.raises(LoadError, match="CUDA"):
        load_audiollm(TINY_A_CHECKPOINTS, LLM_DIR, quantize_bits=8)


def test_device_and_dtype_are_checked():
    with pytest.raises(LoadError, match="dtype"):
        parse_dtype("float64x")
    if not torch.cuda.is_available():
        with pytest.raises(LoadError, match="CUDA is not available"):
            load_audiollm(TINY_A_CHECKPOINTS, LLM_DIR, device="cuda")


def test_bfloat16_load_runs():
    bundle = load_audiollm(TINY_A_CHECKPOINTS, LLM_DIR, dtype="bfloat16")
    assert bundle.model.dtype == torch.bfloat16 and bundle.model.llm_dtype() == torch.bfloat16
    assert bundle.model.encoder.global_cmvn.mean.dtype == torch.float32
    out = _first_chunk_encoder_out(bundle)
    ref = expected("listen")["encoder_out"][0]
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


# ------------------------------------------------------------------------------------------------ config
def _fixture_yaml() -> dict:
    return yaml.safe_load((TINY_A_CHECKPOINTS / "audiollm" / "train.yaml").read_text())


def test_config_parses_the_fixture_without_argv(monkeypatch):
    monkeypatch.setattr("sys.argv", ["parley", "--transformer-num-blocks", "7"])  # must be ignored
    cfg = load_train_config(TINY_A_CHECKPOINTS / "audiollm")
    assert cfg.encoder.transformer.num_blocks == 2 and cfg.encoder.transformer.cache_frames == 12
    assert cfg.adapter.type == "subsampling" and cfg.adapter.norm == "batch" and not cfg.adapter.two_conv
    assert cfg.prompt_num == 5 and cfg.predict_usr_state == 4 and not cfg.is_json_cmvn


@pytest.mark.parametrize("path,value,key", [
    (("encoder_conf", "overview_conf", "encoder-layer-config"), "transformer", "encoder-layer-config"),
    (("encoder_conf", "para_conf", "transformer", "transformer-pos-enc-class"), "abs-enc",
     "transformer-pos-enc-class"),
    (("encoder_conf", "para_conf", "transformer", "transformer-attention-heads"), 5, "transformer-attention-heads"),
    (("model_conf", "adpter_type"), "lstm", "adpter_type"),
    (("model_conf", "norm"), "group", "norm"),
    (("model_conf", "predict_usr_state"), 2, "predict_usr_state"),
    (("model_conf", "chat_template"), "no audio mark", "chat_template"),
    (("model_conf", "llm_embed_dim"), "big", "llm_embed_dim"),
])
def test_config_errors_name_the_key(path, value, key):
    data = _fixture_yaml()
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(CheckpointError) as err:
        parse_train_config(data, "train.yaml")
    assert key in str(err.value) and "train.yaml" in str(err.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weight_is_refused_naming_file_and_key(tmp_path, value):
    root = _checkpoint_copy(tmp_path)
    key = "encoder.enc.1.encoders.1.feed_forward.w_2.weight"

    def poison(state):
        state[key] = state[key].clone()
        state[key][3, 5] = value

    path = _edit_state(root, poison)
    with pytest.raises(CheckpointError) as err:
        load_audiollm(root, LLM_DIR)
    msg = str(err.value)
    assert str(path) in msg and key in msg and "NaN or infinite" in msg and len(msg.splitlines()) == 1


def test_non_finite_decoder_and_codec_weights_are_refused(tmp_path):
    """The same check guards the speech decoder's and the codec's final.pt (one shared state-dict check)."""
    from core.model.freeze_omni.codec import TiCodec
    from core.model.freeze_omni.decoder import SpeechDecoder

    decoder = tmp_path / "decoder"
    shutil.copytree(TINY_A_CHECKPOINTS / "decoder", decoder)
    state = torch.load(decoder / "final.pt", weights_only=True)
    state["model"]["layers.2.mlp.up_proj.weight"][0, 0] = float("-inf")
    torch.save(state, decoder / "final.pt")
    with pytest.raises(CheckpointError, match=r"decoder/final.pt, key 'layers.2.mlp.up_proj.weight': 1 of"):
        SpeechDecoder.from_checkpoint(decoder)
    codec = tmp_path / "codec"
    shutil.copytree(TINY_A_CHECKPOINTS / "codec", codec)
    state = torch.load(codec / "final.pt", weights_only=True)
    state["quantizer"]["quantizer_modules.0.embedding.weight"][7] = float("nan")
    torch.save(state, codec / "final.pt")
    with pytest.raises(CheckpointError, match=r"key 'quantizer.quantizer_modules.0.embedding.weight': 512 of"):
        TiCodec.from_checkpoint(codec)
