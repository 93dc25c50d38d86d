"""Reply generation: 'ss'/'cs' LLM steps against expected/generate.npz, and the text sampling rules of
docs/freeze-omni.md "Text sampling"."""

from __future__ import annotations

import torch

from _fo_pipeline import ROLE, expected, listened_state, max_abs, meta, pipeline, requires_fixture
from core.model.freeze_omni.audiollm import LLMCache, SamplingSettings, filter_probabilities, sample_token

TOL = 1e-4
FIXTURE_SAMPLING = SamplingSettings(temperature=0.7, top_k=1, top_p=0.8, max_tokens=128)


@requires_fixture
def test_system_role_embeddings_and_hidden_match_fixture():
    pipe = pipeline()
    ref = expected("generate")
    with torch.inference_mode():
        emb = pipe.audiollm.embed_ids(pipe.role_ids(ROLE))
        step = pipe.audiollm.append(LLMCache(), emb)
    assert max_abs(emb[0], ref["system_role_embeds"]) < TOL
    assert max_abs(step.hidden[0], ref["system_role_last_hidden"]) < TOL


@requires_fixture
def test_generation_reproduces_fixture():
    pipe = pipeline()
    ref = expected("generate")
    state, _ = listened_state("listen")
    steps = list(pipe.generate(state, FIXTURE_SAMPLING))
    assert [s.token for s in steps] == ref["gen_token_ids"].tolist() == meta()["main"]["gen_token_ids"]
    assert steps[-1].is_end and not any(s.is_end for s in steps[:-1])
    assert max_abs(steps[0].inputs_embeds[0], ref["suffix_inputs_embeds"]) < TOL
    for i, step in enumerate(steps):
        assert step.kv_before == ref["kv_len_before"][i]
        assert max_abs(step.logits, ref["llm_logits"][i]) < TOL
        if not step.is_end:
            assert max_abs(step.hidden[0], ref["gen_hidden"][i]) < TOL
    # <|im_end|> is not fed: the cache ends just before it.
    assert steps[-1].state.llm.length == steps[-1].kv_before + 1
    text = pipe.decode_text([s.token for s in steps[:-1]])
    assert text == meta()["main"]["whole_text"]


@requires_fixture
def test_generation_stops_at_the_token_cap():
    pipe = pipeline()
    state, _ = listened_state("listen")
    steps = list(pipe.generate(state, SamplingSettings(temperature=0.7, top_k=1, top_p=0.8, max_tokens=3)))
    assert [s.token for s in steps] == expected("generate")["gen_token_ids"][:3].tolist()
    assert not steps[-1].is_end


@requires_fixture
def test_sampling_is_reproducible_with_a_seeded_generator():
    pipe = pipeline()
    settings = SamplingSettings(temperature=1.5, top_k=50, top_p=0.99, max_tokens=12)

    def run(seed):
        state, _ = listened_state("listen")
        return [s.token for s in pipe.generate(state, settings, torch.Generator().manual_seed(seed))]

    assert run(3) == run(3)


def test_top_p_removes_the_crossing_token():
    p = filter_probabilities(torch.log(torch.tensor([0.5, 0.3, 0.2])), temperature=1.0, top_k=0, top_p=0.7)
    # cumulative 0.5, 0.8, 1.0: token 1 crosses 0.7 and is removed (Hugging Face would keep it).
    torch.testing.assert_close(p, torch.tensor([1.0, 0.0, 0.0]))
    p = filter_probabilities(torch.log(torch.tensor([0.4, 0.3, 0.2, 0.1])), temperature=1.0, top_k=0, top_p=0.75)
    torch.testing.assert_close(p, torch.tensor([4 / 7, 3 / 7, 0.0, 0.0]))


def test_top_p_keeps_the_top_token_when_it_alone_exceeds_top_p():
    p = filter_probabilities(torch.log(torch.tensor([0.1, 0.85, 0.05])), temperature=1.0, top_k=0, top_p=0.8)
    torch.testing.assert_close(p, torch.tensor([0.0, 1.0, 0.0]))


def test_top_k_temperature_and_order_of_filters():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    p = filter_probabilities(logits, temperature=0.5, top_k=2, top_p=0.0)
    scaled = torch.softmax(logits / 0.5, dim=0)[:2]
    torch.testing.assert_close(p[:2], scaled / scaled.sum())
    assert p[2:].sum() == 0
    # top-k first, renormalised, then top-p on the renormalised distribution.
    p = filter_probabilities(torch.log(torch.tensor([0.4, 0.35, 0.25])), temperature=1.0, top_k=2, top_p=0.5)
    torch.testing.assert_close(p, torch.tensor([1.0, 0.0, 0.0]))


def test_greedy_sampling_is_argmax():
    logits = torch.tensor([0.1, 3.0, 2.9, -4.0])
    for seed in range(5):
        assert sample_token(logits, SamplingSettings.greedy(), torch.Generator().manual_seed(seed)) == 1
    assert sample_token(logits, FIXTURE_SAMPLING) == 1
