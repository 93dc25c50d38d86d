"""Speech decoder (LLM2TTSCodecAR): parity with the tiny fixture, decoding semantics, sampling, loader errors."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from _paths import TINY_A_CHECKPOINTS, TINY_A_EXPECTED
from core.model.freeze_omni.decoder import DecoderConfig, SpeechDecoder, sample_token
from core.model.freeze_omni.errors import CheckpointError
from core.runtime import configure_torch_threads

DECODER_DIR = TINY_A_CHECKPOINTS / "decoder"
EOS_COLUMN_ATOL = 1e-3  # see test_unit_decoder_parity


@pytest.fixture(scope="module")
def decoder() -> SpeechDecoder:
    configure_torch_threads(1)
    return SpeechDecoder.from_checkpoint(DECODER_DIR, device="cpu", dtype=torch.float32)


def _run(decoder: SpeechDecoder, hidden: np.ndarray, prefix: np.ndarray, max_tokens: int = 1000):
    return list(decoder.iter_steps(torch.from_numpy(hidden), torch.from_numpy(prefix), top_k=1,
                                   max_tokens=max_tokens))


def _check_logits(got: np.ndarray, want: np.ndarray, eos: int) -> None:
    assert got.shape == want.shape
    others = np.delete(np.arange(want.shape[1]), eos)
    np.testing.assert_allclose(got[:, others], want[:, others], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[:, eos], want[:, eos], rtol=0, atol=EOS_COLUMN_ATOL)


def test_config_parsed_from_model_json(decoder: SpeechDecoder) -> None:
    c = decoder.config
    assert (c.idim, c.odim, c.hidden_size, c.intermediate_size, c.num_layers, c.num_heads) == (32, 64, 32, 64, 4, 4)
    assert (c.bos, c.sos, c.eos, c.pad, c.vocab_size) == (64, 65, 66, 67, 68)
    assert c.prefix_finetune and c.pre_nn_layers == 2 and c.rms_norm_eps == 1e-6 and c.rope_theta == 10000.0
    assert len(decoder.layers_pre_nn) == 2 and len(decoder.layers) == 4 and len(decoder.layers_prefix) == 4


def test_release_dimensions_give_the_spec_parameter_count() -> None:
    """The released model.json dimensions (896/4864/14 heads, 4+4+2 layers, odim 1024) -> 164 718 980 params."""
    raw = json.loads((DECODER_DIR / "model.json").read_text())
    raw[2].update(idim=896, odim=1024, transformer_attention_dim=896, transformer_linear_units=4864,
                  transformer_attention_heads=14, encoder_output_dim=896)
    with torch.device("meta"):
        model = SpeechDecoder(DecoderConfig.from_obj(raw))
    assert sum(p.numel() for p in model.parameters()) == 164_718_980
    assert model.embedding.weight.shape == (1028, 896) and model.config.eos == 1026


def test_unit_decoder_parity(decoder: SpeechDecoder) -> None:
    """Greedy tokens exactly, logits of every step (incl. the eos step) within 1e-4.

    The fixture's eos row of out_fnn was scaled on purpose (norm ~917) so each segment stops at a known step; float32
    rounding of that one dot product alone is ~1e-4 (float64 from the recorded hidden state still differs by 2e-4),
    so the eos column gets 1e-3. All other columns are held to 1e-4.
    """
    u = np.load(TINY_A_EXPECTED / "unit_decoder.npz")
    steps = _run(decoder, u["hidden"], u["prefix"], max_tokens=40)
    assert [s.token for s in steps if not s.is_eos] == u["tokens"].tolist()
    assert steps[-1].is_eos and len(steps) == 23
    _check_logits(torch.stack([s.logits for s in steps]).numpy(), u["logits"], decoder.config.eos)


@pytest.mark.parametrize("segment", [0, 1])
def test_segment_decoder_parity(decoder: SpeechDecoder, segment: int) -> None:
    """From decoder_hidden_in / decoder_prefix_in: codec tokens exactly, per-step logits and final-norm hidden."""
    d = np.load(TINY_A_EXPECTED / f"segment{segment}.npz")
    steps = _run(decoder, d["decoder_hidden_in"], d["decoder_prefix_in"])
    assert [s.token for s in steps if not s.is_eos] == d["codec_tokens"].tolist()
    assert steps[-1].is_eos
    _check_logits(torch.stack([s.logits for s in steps]).numpy(), d["decoder_logits"], decoder.config.eos)
    np.testing.assert_allclose(torch.stack([s.hidden for s in steps]).numpy(), d["decoder_out_hidden"],
                               rtol=0, atol=1e-5)
    tokens = list(decoder.generate(torch.from_numpy(d["decoder_hidden_in"]),
                                   torch.from_numpy(d["decoder_prefix_in"]).unsqueeze(0), top_k=1))
    assert tokens == d["codec_tokens"].tolist()


def test_state_positions_and_cache_layout(decoder: SpeechDecoder) -> None:
    d = np.load(TINY_A_EXPECTED / "segment0.npz")
    state = decoder.prefill(torch.from_numpy(d["decoder_hidden_in"]), torch.from_numpy(d["decoder_prefix_in"]))
    p, l = d["decoder_prefix_in"].shape[0], d["decoder_hidden_in"].shape[0] + 1
    assert state.prefix_len == p and state.text_len == l
    assert all(layer.length == p + l for layer in state.layers)
    assert state.next_position == l  # AR positions continue the text part, not the prefix
    branch = state.clone()
    decoder.step(state, decoder.config.sos)
    assert state.next_position == l + 1 and state.steps == 1
    assert branch.next_position == l and branch.cache_len == p + l  # the clone is independent


def test_prefill_is_bidirectional(decoder: SpeechDecoder) -> None:
    """No causal mask: changing the LAST text row changes what the bos row (first of X) stores in layer 1."""
    d = np.load(TINY_A_EXPECTED / "segment0.npz")
    hidden = torch.from_numpy(d["decoder_hidden_in"])
    prefix = torch.from_numpy(d["decoder_prefix_in"])
    a = decoder.prefill(hidden, prefix)
    changed = hidden.clone()
    changed[-1] += 1.0
    b = decoder.prefill(changed, prefix)
    p = a.prefix_len
    assert torch.equal(a.layers[0].keys[:, :, :p], b.layers[0].keys[:, :, :p])  # prefix slots untouched
    assert not torch.allclose(a.layers[1].keys[:, :, p], b.layers[1].keys[:, :, p])


def test_empty_text_and_no_prefix(decoder: SpeechDecoder) -> None:
    """An empty post-processed text gives 0 rows: X is just bos; without a prefix P = 0."""
    state = decoder.prefill(torch.zeros(0, decoder.config.idim), None)
    assert (state.text_len, state.prefix_len, state.cache_len, state.next_position) == (1, 0, 1, 1)
    tokens = list(decoder.generate(torch.zeros(0, 32), torch.zeros(0, 32), top_k=1, max_tokens=8))
    assert all(0 <= t < decoder.config.odim for t in tokens)
    with pytest.raises(ValueError, match="hidden must have shape"):
        decoder.prefill(torch.zeros(4, 31))


def test_generate_respects_max_tokens(decoder: SpeechDecoder) -> None:
    d = np.load(TINY_A_EXPECTED / "segment0.npz")
    tokens = list(decoder.generate(torch.from_numpy(d["decoder_hidden_in"]), torch.from_numpy(d["decoder_prefix_in"]),
                                   top_k=1, max_tokens=5))
    assert tokens == d["codec_tokens"][:5].tolist()


def test_top_k_sampling_is_seeded_and_bounded(decoder: SpeechDecoder) -> None:
    d = np.load(TINY_A_EXPECTED / "segment1.npz")
    args = (torch.from_numpy(d["decoder_hidden_in"]), torch.from_numpy(d["decoder_prefix_in"]))
    runs = [list(decoder.generate(*args, top_k=3, max_tokens=30, generator=torch.Generator().manual_seed(7)))
            for _ in range(2)]
    assert runs[0] == runs[1]
    assert all(0 <= t < decoder.config.odim for t in runs[0])


def test_sampling_masks_special_ids_but_not_eos() -> None:
    odim, eos = 4, 6
    logits = torch.tensor([0.0, 1.0, 0.5, 0.2, 50.0, 40.0, -1.0, 30.0])  # bos/sos/pad are the largest
    assert sample_token(logits, 1, odim=odim, eos=eos) == 1
    logits[eos] = 60.0
    assert sample_token(logits, 1, odim=odim, eos=eos) == eos
    gen = torch.Generator().manual_seed(0)
    picks = {sample_token(torch.tensor([0.0, 1.0, 0.9, -5.0, 9.0, 9.0, -9.0, 9.0]), 2, odim=odim, eos=eos,
                          generator=gen) for _ in range(200)}
    assert picks == {1, 2}


def test_repetition_penalty_is_ctrl_style() -> None:
    """Positive logits are divided, negative ones multiplied, each distinct token once, only inside the window."""
    odim, eos = 4, 6
    base = torch.tensor([2.0, -1.0, 1.9, -1.05, -9.0, -9.0, -9.0, -9.0])
    # Without penalty token 0 wins; with penalty 2 over a window holding 0 twice: 2/2 = 1 < 1.9 -> token 2 wins.
    assert sample_token(base, 1, odim=odim, eos=eos) == 0
    assert sample_token(base, 1, odim=odim, eos=eos, history=[5, 0, 0], penalty_window=3, penalty=2.0) == 2
    # Applied once: 2 / 1.05 = 1.905 > 1.9 (twice would give 1.81 < 1.9).
    assert sample_token(base, 1, odim=odim, eos=eos, history=[0, 0, 0], penalty_window=3, penalty=1.05) == 0
    # A negative logit gets more negative: -1 * 1.1 = -1.1 < -1.05, so 3 beats 1 among the negatives.
    neg = torch.tensor([-1.0, -9.0, -9.0, -1.05, -9.0, -9.0, -9.0, -9.0])
    assert sample_token(neg, 1, odim=odim, eos=eos, history=[0], penalty_window=1, penalty=1.1) == 3
    # Outside the window: no effect.
    assert sample_token(base, 1, odim=odim, eos=eos, history=[0, 1, 3], penalty_window=2, penalty=2.0) == 0


def test_runs_in_bfloat16() -> None:
    model = SpeechDecoder.from_checkpoint(TINY_A_CHECKPOINTS, dtype=torch.bfloat16)  # checkpoints root works too
    d = np.load(TINY_A_EXPECTED / "segment0.npz")
    steps = list(model.iter_steps(torch.from_numpy(d["decoder_hidden_in"]), torch.from_numpy(d["decoder_prefix_in"]),
                                  top_k=1, max_tokens=25))
    assert steps and steps[0].logits.dtype == torch.bfloat16
    assert model.rope_inv_freq.dtype == torch.float32  # RoPE angles are computed in float32, then cast
    assert all(0 <= s.token < model.config.odim or s.is_eos for s in steps)


# ------------------------------------------------------------------------------------------------ loader errors
@pytest.fixture()
def decoder_copy(tmp_path):
    folder = tmp_path / "decoder"
    folder.mkdir()
    shutil.copy(DECODER_DIR / "model.json", folder / "model.json")
    state = torch.load(DECODER_DIR / "final.pt", weights_only=True)
    return folder, state


def _expect_error(folder, key: str | None, words: str) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        SpeechDecoder.from_checkpoint(folder)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.file is not None and str(folder) in err.file and err.file in str(err)
    assert err.key == key and (key is None or key in str(err))
    assert words in str(err)
    return err


def test_error_truncated_file(decoder_copy) -> None:
    folder, _ = decoder_copy
    data = (DECODER_DIR / "final.pt").read_bytes()
    (folder / "final.pt").write_bytes(data[: len(data) // 2])
    _expect_error(folder, None, "cannot read the checkpoint")


def test_error_missing_key(decoder_copy) -> None:
    folder, state = decoder_copy
    del state["model"]["layers.2.mlp.up_proj.weight"]
    torch.save(state, folder / "final.pt")
    _expect_error(folder, "layers.2.mlp.up_proj.weight", "missing")


def test_error_unexpected_key(decoder_copy) -> None:
    folder, state = decoder_copy
    state["model"]["layers.9.self_attn.q_proj.weight"] = torch.zeros(32, 32)
    torch.save(state, folder / "final.pt")
    _expect_error(folder, "layers.9.self_attn.q_proj.weight", "unexpected")


def test_error_wrong_shape(decoder_copy) -> None:
    folder, state = decoder_copy
    state["model"]["out_fnn.bias"] = torch.zeros(67)
    torch.save(state, folder / "final.pt")
    _expect_error(folder, "out_fnn.bias", "shape (67,)")


def test_unwrapped_state_dict_is_accepted(decoder_copy) -> None:
    folder, state = decoder_copy
    torch.save(state["model"], folder / "final.pt")
    model = SpeechDecoder.from_checkpoint(folder)
    assert model.config.odim == 64


def test_error_pickled_object_refused(decoder_copy) -> None:
    folder, state = decoder_copy
    state["args"] = argparse.Namespace(odim=64)  # not allowed by weights_only=True
    torch.save(state, folder / "final.pt")
    err = _expect_error(folder, None, "weights_only=True")
    assert "Namespace" in str(err)


def test_error_bad_config(decoder_copy) -> None:
    folder, state = decoder_copy
    raw = json.loads((folder / "model.json").read_text())
    del raw[2]["transformer_num_blocks"]
    (folder / "model.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError) as info:
        SpeechDecoder.from_checkpoint(folder)
    assert info.value.key == "transformer_num_blocks" and "model.json" in str(info.value)


def test_config_reads_idim_odim_from_dict() -> None:
    raw = json.loads((DECODER_DIR / "model.json").read_text())
    raw[0], raw[1] = 999, 999  # the list entries are not what the original uses
    config = DecoderConfig.from_obj(raw)
    assert (config.idim, config.odim) == (32, 64)
