"""Every release dimension on the CPU, in a few minutes and a few GB: the release-size encoder, adapter, prompt
embeddings, state head, speech decoder and codec around a shallow backbone of the release width (two Qwen2-7B-shaped
layers, the full 152064-token vocabulary), random weights in bfloat16, built by the same code as
``parley bench model --synthetic release`` and timed by the same ``measure``: one listen step (after the 'sl' one),
three LLM tokens, four speech-decoder tokens and one streaming codec window of the release ``server.json``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.model.freeze_omni import bench
from core.runtime import configure_torch_threads

pytestmark = pytest.mark.slow

LLM_LAYERS = 2


@pytest.fixture(scope="module")
def pipe():
    configure_torch_threads(1)
    pipeline = bench.build_synthetic_release(torch.device("cpu"), torch.bfloat16, llm_layers=LLM_LAYERS)
    yield pipeline
    del pipeline


def test_release_dimensions_run_end_to_end(pipe):
    from core.model.freeze_omni.audiollm import SamplingSettings
    from core.model.freeze_omni.pipeline import ReplySettings
    from core.model.freeze_omni.streaming import ServerConfig

    dims = bench._dims(pipe)
    assert dims == {
        "encoder_layers": 24, "encoder_dim": 1024, "encoder_heads": 16, "encoder_chunk": 4, "encoder_left_chunks": 16,
        "adapter": "subsampling", "llm_hidden": 3584, "llm_layers": LLM_LAYERS, "llm_heads": 28, "llm_kv_heads": 4,
        "llm_vocab": 152064, "prompt_num": 25, "decoder_idim": 896, "decoder_layers": 4, "decoder_codes": 1024,
        "codec_upsample_rates": [8, 5, 5, 3], "codec_channels": 512,
    }
    # Parameter counts of the official release (encoder 357 950 464 + adapter 17 835 520 + task, prompt embeddings
    # and state head; decoder 164 718 980; codec generator + quantizer), and the shallow backbone as estimated.
    audiollm = sum(p.numel() for p in pipe.audiollm.parameters())
    llm = sum(p.numel() for p in pipe.audiollm.llm_decoder.parameters())
    assert audiollm - llm == 375_961_604
    assert sum(p.numel() for p in pipe.decoder.parameters()) == 164_718_980
    assert sum(p.numel() for p in pipe.codec.parameters()) == 15_369_857 + 655_360
    built = audiollm + 164_718_980 + 16_025_217
    assert abs(bench.synthetic_params(LLM_LAYERS) - built) < 1e-3 * built  # the estimate the CPU refusal uses

    stream = ServerConfig().stream_options()
    settings = ReplySettings(sampling=SamplingSettings.greedy(), decoder_top_k=1, stream=stream,
                             segmentation="offline")
    result = bench.measure(pipe, chunks=1, tokens=3, fixture=None, settings=settings, decoder_tokens=4,
                           codec_repeats=1)
    assert result["listen"]["chunks"] == 1 and result["listen"]["step_ms"]["p50"] > 0
    # template system turn (9) + 'sl' (<|im_end|> + 4 prefix tokens + 25 prompts + 2 speech) + 'cl' (2) + suffix (5)
    # + 3 tokens
    assert result["llm"]["tokens"] == 3 and result["llm"]["context_len_end"] == 9 + 32 + 2 + 5 + 3
    assert result["decoder"]["tokens"] == 4 and result["decoder"]["segment_llm_tokens"] == 3
    assert result["codec"]["window_tokens"] == 60 and result["codec"]["rtf"] > 0
    assert result["first_audio"]["first_window_tokens"] == 30


def test_release_shapes_of_one_listen_step_and_one_codec_window(pipe):
    from core.constants import CHUNK_SAMPLES_16K

    rng = np.random.default_rng(0)
    chunk = (0.1 * rng.standard_normal(CHUNK_SAMPLES_16K)).astype(np.float32)
    state, _ = pipe.new_dialogue(None)
    step = pipe.listen(pipe.start_turn(state), chunk)
    assert step.features.shape == (1, 19, 80)
    assert step.encoder_out.shape == (1, 4, 1024) and step.embeddings.shape == (1, 2, 3584)
    assert step.inputs_embeds.shape == (1, 32, 3584) and step.hidden.shape == (1, 3584)
    assert step.decision in ("cl", "ss", "el") and abs(sum(step.probs) - 1) < 1e-3
    assert all(torch.isfinite(t.float()).all() for t in (step.encoder_out, step.embeddings, step.hidden))
    wave = pipe.codec.decode(rng.integers(0, 1024, size=60).tolist())
    assert wave.shape == (60 * 600,) and torch.isfinite(wave).all()
