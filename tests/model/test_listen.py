"""Listen path: encoder (streaming rel-pos transformer + caches + pe_index), adapter, AudioLLM prefill, state head.

The fixture checks run the tiny model loaded through the public loader on the fixture audio, honouring the state
head like the recording did, and compare every array of expected/listen.npz and el_listen.npz.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _fo_pipeline import ROLE, expected, listened_state, max_abs, meta, pipeline, requires_fixture
from core.model.freeze_omni.adapter import AdapterState, build_adapter
from core.model.freeze_omni.audiollm import LLMCache, StaleStateError, turn_decision
from core.model.freeze_omni.config import AdapterConfig, TransformerConfig
from core.model.freeze_omni.encoder import EncoderState, StreamingTransformer

TOL = 1e-4


@requires_fixture
@pytest.mark.parametrize("name,meta_key", [("listen", "main"), ("el_listen", "el_variant")])
def test_listen_reproduces_fixture(name, meta_key):
    ref = expected(name)
    _, steps = listened_state(name)
    n = ref["encoder_out"].shape[0]
    assert [s.decision for s in steps] == meta()[meta_key]["stat_sequence"]
    assert len(steps) == n
    for i, step in enumerate(steps):
        assert step.pe_index_before == ref["pe_index_before"][i]
        assert step.pe_index_after == ref["pe_index_after"][i]
        assert step.kv_before == ref["kv_len_before"][i]
        assert step.kv_after == ref["kv_len_after"][i]
        assert max_abs(step.encoder_out[0], ref["encoder_out"][i]) < TOL
        assert max_abs(step.embeddings[0], ref["adapter_out"][i]) < TOL
        assert max_abs(step.state_logits, ref["state_logits"][i]) < TOL
        assert max_abs(step.probs, ref["state_probs"][i]) < TOL
        assert max_abs(step.hidden[0], ref["llm_last_hidden"][i]) < TOL
    assert max_abs(steps[0].inputs_embeds[0], ref["llm_inputs_embeds_chunk0"]) < TOL
    assert max_abs(steps[1].inputs_embeds[0], ref["llm_inputs_embeds_chunk1"]) < TOL


@requires_fixture
def test_system_role_prefill_matches_fixture():
    pipe = pipeline()
    ref = expected("listen")
    assert pipe.role_ids(ROLE) == meta()["main"]["system_role_ids"]
    # The template's own system turn (no --system-prompt) tokenises to the same ids.
    assert pipe.role_ids(None) == meta()["main"]["system_role_ids"]
    state, probs = pipe.new_dialogue(ROLE)
    assert state.llm.length == meta()["main"]["system_kv_len"] == state.system_length
    assert max_abs(probs, ref["pre_state_probs"]) < TOL


@requires_fixture
@pytest.mark.parametrize("name", ["listen", "el_listen"])
def test_encoder_and_adapter_on_reference_features(name):
    """Fed the fixture's own fbank blocks, encoder and adapter match to float32 precision (no fbank noise)."""
    model = pipeline().audiollm
    ref = expected(name)
    enc_state, ad_state = EncoderState(), AdapterState()
    with torch.inference_mode():
        for i in range(ref["fbank"].shape[0]):
            features = torch.from_numpy(ref["fbank"][i:i + 1])
            assert max_abs(model.encoder.normalize(features)[0], ref["cmvn_out"][i]) < 1e-5
            out = model.encode_chunk(features, enc_state, ad_state)
            enc_state, ad_state = out.encoder_state, out.adapter_state
            assert max_abs(out.encoder_out[0], ref["encoder_out"][i]) < 1e-5
            assert max_abs(out.embeddings[0], ref["adapter_out"][i]) < 1e-5
    # The per-layer K/V cache is trimmed to chunk_size * left_chunks = 12 frames.
    assert enc_state.cached_frames == 12
    assert all(k.shape == (1, 4, 12, 8) and v.shape == k.shape for k, v in enc_state.layer_kv)


def _release_transformer_config() -> TransformerConfig:
    return TransformerConfig(input_dim=8, output_dim=8, attention_dim=8, attention_heads=2, linear_units=16,
                             num_blocks=1, chunk_size=4, left_chunks=16)


def test_pe_index_rule_release_numbers():
    trf = StreamingTransformer(_release_transformer_config())
    cfg = trf.cfg
    assert (cfg.pe_window, cfg.pe_max_len, cfg.cache_frames) == (68, 4932, 64)
    # chunk n (0-based) with c cached frames: positions start at max(0, 4n - 68), pe_index grows by 4.
    positions, nxt = trf.positions(0, 0, 4)
    assert positions.tolist() == [0, 1, 2, 3] and nxt == 4
    positions, nxt = trf.positions(64, 64, 4)      # n = 16: still absolute frame indices
    assert positions.tolist() == list(range(0, 68)) and nxt == 68
    positions, _ = trf.positions(68, 64, 4)        # n = 17: lags the true frames 4..71 by 4
    assert positions.tolist() == list(range(0, 68))
    positions, _ = trf.positions(72, 64, 4)
    assert positions[0] == 4
    positions, nxt = trf.positions(4932, 64, 4)    # wraps modulo 4932
    assert positions.tolist() == list(range(0, 68)) and nxt == 4
    positions, nxt = trf.positions(4936, 64, 4)
    assert positions[0] == 0 and nxt == 8


def test_encoder_state_is_not_mutated():
    torch.manual_seed(0)
    trf = StreamingTransformer(_release_transformer_config()).eval()
    x = torch.randn(1, 4, 8)
    with torch.no_grad():
        a, s1 = trf(x, EncoderState())
        b, s2 = trf(x, s1)
        b_again, _ = trf(x, s1)  # reusing an old state is allowed and deterministic
    assert s1.pe_index == 4 and s2.pe_index == 8 and s1.cached_frames == 4 and s2.cached_frames == 8
    assert torch.equal(b, b_again)


def _causal_reference(adapter, x: torch.Tensor, cfg: AdapterConfig) -> torch.Tensor:
    """The adapter over the whole sequence at once, left-padded with k-1 zeros (what streaming must equal)."""
    pad = cfg.kernel_size - 1
    h = torch.nn.functional.pad(x.transpose(1, 2), (pad, 0))
    if cfg.type == "cnn":
        h = adapter.act(adapter.bn1(adapter.conv1d1(h)))
        h = torch.nn.functional.pad(h, (pad, 0))
        h = adapter.act(adapter.bn2(adapter.conv1d2(h)))
    else:
        if adapter.two_conv:
            h = adapter.relu1(adapter.bn1(adapter.conv1d1(h)))
            h = torch.nn.functional.pad(h, (pad, 0))
        h = adapter.relu2(adapter.bn2(adapter.conv1d2(h)))
    return adapter.project(h.transpose(1, 2))


@pytest.mark.parametrize("kind,enc,llm,norm,act", [
    ("subsampling", 8, 24, "layer", "gelu"),    # one-conv branch (8*4 >= 24), LayerNorm: the release shape
    ("subsampling", 8, 24, "batch", "relu"),    # one-conv branch, BatchNorm: the fixture shape
    ("subsampling", 8, 48, "batch", "relu"),    # two-conv branch (8*4 < 48)
    ("cnn", 8, 24, "batch", "relu"),
])
def test_adapter_streaming_equals_whole_sequence(kind, enc, llm, norm, act):
    cfg = AdapterConfig(type=kind, enc_out_dim=enc, llm_embed_dim=llm, kernel_size=5, activation=act, norm=norm)
    torch.manual_seed(0)
    adapter = build_adapter(cfg).eval()
    for module in adapter.modules():  # non-default norm statistics, so a wrong layout would show
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 16, enc)
    with torch.no_grad():
        whole = _causal_reference(adapter, x, cfg)
        state, outs = AdapterState(), []
        for i in range(4):
            y, state = adapter(x[:, 4 * i:4 * i + 4], state)
            outs.append(y)
    streamed = torch.cat(outs, dim=1)
    assert streamed.shape == whole.shape == (1, 16 // cfg.time_stride, llm)
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=1e-5)
    assert all(c.shape[-1] == 4 for c in state.caches)


def test_linear_adapter_is_stateless():
    cfg = AdapterConfig(type="linear", enc_out_dim=8, llm_embed_dim=16, kernel_size=5, activation="relu", norm="batch")
    adapter = build_adapter(cfg)
    assert list(adapter.state_dict()) == ["adpter.weight", "adpter.bias"]
    y, state = adapter(torch.randn(1, 4, 8), AdapterState())
    assert y.shape == (1, 4, 16) and state.caches is None


def test_turn_decision_thresholds():
    def logits_for(p0, p1, p2, extra=5.0):
        return torch.tensor([np.log(p0), np.log(p1), np.log(p2), extra])  # class 3 is ignored

    assert turn_decision(logits_for(0.2, 0.2, 0.6))[0] == "el"
    assert turn_decision(logits_for(0.2, 0.6, 0.2))[0] == "ss"
    assert turn_decision(logits_for(0.6, 0.2, 0.2))[0] == "cl"
    assert turn_decision(logits_for(0.5, 0.5, 1e-9))[0] == "cl"  # strictly greater than 0.5
    state, probs = turn_decision(logits_for(0.1, 0.3, 0.6, extra=100.0))
    assert state == "el" and probs == pytest.approx((0.1, 0.3, 0.6), abs=1e-6)


@requires_fixture
def test_consumed_state_is_refused_and_fork_is_independent():
    pipe = pipeline()
    wav = expected("listen")["wav_input"]
    state, _ = pipe.new_dialogue(ROLE)
    state = pipe.start_turn(state)
    branch = state.fork()
    step = pipe.listen(state, wav[:2560])
    with pytest.raises(StaleStateError):
        pipe.listen(state, wav[:2560])  # the KV cache moved on: the old handle is consumed
    other = pipe.listen(branch, wav[:2560])  # the fork was untouched
    assert other.kv_after == step.kv_after
    torch.testing.assert_close(other.hidden, step.hidden)
    truncated = other.state.llm.truncate(state.llm.length)
    assert truncated.length == state.llm.length == truncated.kv.get_seq_length()


def test_llm_cache_truncate_bounds():
    cache = LLMCache()
    with pytest.raises(ValueError):
        cache.truncate(3)
    assert cache.fork().length == 0
