"""Full pipeline: segmentation -> decoder inputs (the idim-wide reshape) -> speech decoder -> codec streaming,
against expected/segment{0,1}.npz and final_wave.npy; and the engine-facing FreezeOmniBackend."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from _paths import TINY_A_EXPECTED
from _fo_pipeline import CHUNK, expected, fixture_settings, listened_state, max_abs, meta, pipeline, requires_fixture
from core.engine.backend import Backend
from core.model.freeze_omni.backend import FreezeOmniBackend
from core.model.freeze_omni.pipeline import FreezeOmni, split_rows
from core.model.freeze_omni.text import TextSegment

TOL = 1e-4


class RecordingCodec:
    """Forwards to the real codec and records every decode call (window tokens, global tokens, raw waveform)."""

    def __init__(self, codec):
        self._codec = codec
        self.calls: list[tuple[list[int], list[int], np.ndarray]] = []

    def __getattr__(self, name):
        return getattr(self._codec, name)

    def decode(self, tokens, global_tokens=None):
        wave = self._codec.decode(tokens, global_tokens)
        g = global_tokens if global_tokens is not None else self._codec.default_global_tokens
        self.calls.append(([int(t) for t in tokens], [int(t) for t in g], wave.detach().numpy().copy()))
        return wave


def _run_reply(codec=None):
    pipe = pipeline()
    if codec is not None:
        pipe = FreezeOmni(pipe.audiollm, pipe.tokenizer, pipe.chat, pipe.decoder, codec, pipe.frontend)
    state, _ = listened_state("listen")
    return list(pipe.reply(state, fixture_settings(), torch.Generator().manual_seed(0)))


@requires_fixture
@pytest.mark.slow
def test_reply_reproduces_segments_codec_calls_and_waveform():
    recorder = RecordingCodec(pipeline().codec)
    events = _run_reply(recorder)
    ends = [e for e in events if e.kind == "segment_end"]
    assert len(ends) == 2
    calls = iter(recorder.calls)
    audio_by_segment: list[list[np.ndarray]] = [[]]
    for e in events:
        if e.kind == "audio" and e.audio is not None:
            audio_by_segment[-1].append(e.audio)
        elif e.kind == "segment_end":
            audio_by_segment.append([])
    for k, end in enumerate(ends):
        ref = expected(f"segment{k}")
        seg_meta = meta()["main"]["segments"][k]
        trace = end.segment
        assert trace.raw_text == seg_meta["text_raw"] and trace.text == seg_meta["text"]
        assert trace.codec_tokens == ref["codec_tokens"].tolist()
        assert trace.pieces == seg_meta["yield_lengths"]
        for j in range(seg_meta["n_codec_calls"]):
            tokens, global_tokens, wave = next(calls)
            assert tokens == ref[f"codec_call{j}_tokens"].tolist()
            assert global_tokens == ref[f"codec_call{j}_global_tokens"].tolist()
            assert wave.shape == ref[f"codec_call{j}_wave"].shape
            assert max_abs(wave, ref[f"codec_call{j}_wave"]) < TOL
        pieces = audio_by_segment[k]
        assert len(pieces) == seg_meta["n_yields"]
        for j, piece in enumerate(pieces):
            assert piece.shape == ref[f"yield{j}"].shape
            assert max_abs(piece, ref[f"yield{j}"]) < TOL
    assert next(calls, None) is None
    final = np.concatenate([e.audio for e in events if e.kind == "audio" and e.audio is not None])
    ref_wave = np.load(TINY_A_EXPECTED / "final_wave.npy")
    assert final.shape == ref_wave.shape == (meta()["main"]["final_wave_samples"],)
    assert max_abs(final, ref_wave) < TOL
    end = events[-1]
    assert end.kind == "end" and end.reason == "im_end" and end.token_ids == meta()["main"]["past_tokens"]
    assert "".join(e.text for e in events if e.kind == "token") == meta()["main"]["whole_text"]


@requires_fixture
def test_speech_inputs_reproduce_decoder_inputs():
    pipe = pipeline()
    ref_hidden = expected("generate")["gen_hidden"]
    start = 0
    for k, seg_meta in enumerate(meta()["main"]["segments"]):
        ref = expected(f"segment{k}")
        n = seg_meta["n_llm_hidden"]
        hidden = [torch.from_numpy(ref_hidden[start + i:start + i + 1]) for i in range(n)]
        start += n
        inputs = pipe.speech_inputs(TextSegment(seg_meta["text_raw"], hidden))
        assert inputs.text == seg_meta["text"]
        assert inputs.text_ids == ref["text_ids"].tolist() == seg_meta["text_ids"]
        assert inputs.hidden_rows.shape == (1, 4 * len(inputs.text_ids), 32)
        assert inputs.prefix_rows.shape == (1, 4 * n, 32)
        assert max_abs(inputs.hidden_rows[0], ref["decoder_hidden_in"]) < TOL
        assert max_abs(inputs.prefix_rows[0], ref["decoder_prefix_in"]) < TOL
        assert max_abs(ref["llm_hidden"], ref_hidden[start - n:start]) < TOL


@requires_fixture
def test_speech_inputs_of_an_empty_segment_do_not_crash():
    """A reply whose segment text is empty (e.g. a single special token) gives zero text rows, not an error."""
    pipe = pipeline()
    hidden = [torch.from_numpy(expected("generate")["gen_hidden"][:1])]
    inputs = pipe.speech_inputs(TextSegment("", hidden))
    assert inputs.text_ids == []
    assert inputs.hidden_rows.shape == (1, 0, 32)
    assert inputs.prefix_rows.shape == (1, 4, 32)


def test_split_rows_is_a_row_major_split():
    v = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 8)
    rows = split_rows(v, 2)
    assert rows.shape == (1, 8, 2)
    assert rows[0, :4].flatten().tolist() == list(range(8))  # vector 0 -> rows 0..3, dims in order
    with pytest.raises(ValueError):
        split_rows(v, 3)
    assert split_rows(torch.zeros(1, 0, 8), 2).shape == (1, 0, 2)


# ------------------------------------------------------------------------------------------------ backend
def _backend() -> FreezeOmniBackend:
    return FreezeOmniBackend(pipeline(), fixture_settings(), seed=0)


def _listen_file(backend, conv, name):
    wav = expected(name)["wav_input"]
    backend.start_turn(conv)
    results = []
    for i in range(wav.size // CHUNK):
        results.append(backend.listen(conv, wav[i * CHUNK:(i + 1) * CHUNK]))
        if results[-1].state != "cl":
            break
    return results


@requires_fixture
@pytest.mark.slow
def test_backend_answers_like_the_fixture():
    backend = _backend()
    assert isinstance(backend, Backend) and backend.name == "freeze-omni" and backend.output_rate == 24000
    conv = backend.new_conversation("You are a helpful assistant.")
    system_tokens = conv.context_tokens
    assert system_tokens == meta()["main"]["system_kv_len"]
    results = _listen_file(backend, conv, "listen")
    assert [r.state for r in results] == meta()["main"]["stat_sequence"]
    np.testing.assert_allclose([r.probs for r in results], expected("listen")["state_probs"], atol=TOL)
    pieces = list(backend.reply(conv, threading.Event()))
    audio = np.concatenate([p.audio for p in pieces if p.audio is not None])
    ref_wave = np.load(TINY_A_EXPECTED / "final_wave.npy")
    assert max_abs(audio, ref_wave) < TOL
    assert "".join(p.text for p in pieces) == meta()["main"]["whole_text"]
    assert sum(p.segment_end for p in pieces) == 2
    assert conv.history[-1] == {"role": "assistant", "content": meta()["main"]["whole_text"]}
    assert conv.context_tokens == expected("generate")["kv_len_before"][-1] + 1

    # An interruption keeps only what was heard: the first sentence (8 tokens) stays in the KV cache.
    heard = meta()["main"]["segments"][0]["text_raw"]
    backend.interrupted(conv, heard)
    reply_start = expected("generate")["kv_len_before"][0] + len(pipeline().chat.suffix)
    assert conv.context_tokens == reply_start + 8
    assert conv.history[-1]["content"] == heard

    # A rejected turn ('el') leaves the dialogue memory as it was.
    before = conv.context_tokens
    results = _listen_file(backend, conv, "el_listen")
    assert [r.state for r in results] == meta()["el_variant"]["stat_sequence"]
    assert conv.context_tokens == before
    assert conv.state.main.llm.kv.get_seq_length() == before


@requires_fixture
@pytest.mark.slow
def test_backend_barge_in_candidate_does_not_disturb_the_reply():
    backend = _backend()
    conv = backend.new_conversation("You are a helpful assistant.")
    _listen_file(backend, conv, "listen")
    reply = backend.reply(conv, threading.Event())
    first = [next(reply) for _ in range(3)]
    # The user speaks over the answer: a candidate turn listens on a branch of the memory.
    results = _listen_file(backend, conv, "el_listen")
    assert results[-1].state == "el"
    rest = list(reply)
    text = "".join(p.text for p in first + rest)
    assert text == meta()["main"]["whole_text"]
    audio = np.concatenate([p.audio for p in first + rest if p.audio is not None])
    assert audio.size == meta()["main"]["final_wave_samples"]


@requires_fixture
def test_backend_cancel_stops_between_steps():
    backend = _backend()
    conv = backend.new_conversation()
    _listen_file(backend, conv, "listen")
    cancel = threading.Event()
    pieces = []
    for piece in backend.reply(conv, cancel):
        pieces.append(piece)
        if len(pieces) == 2:
            cancel.set()
    assert len(pieces) <= 3
    assert not conv.state.reply_alive


@requires_fixture
def test_backend_end_of_input_forces_the_answer():
    backend = _backend()
    conv = backend.new_conversation()
    wav = expected("listen")["wav_input"]
    backend.start_turn(conv)
    for i in range(3):
        assert backend.listen(conv, wav[i * CHUNK:(i + 1) * CHUNK]).state == "cl"
    result = backend.end_of_input(conv)
    assert result.state == "ss"
    assert conv.state.main.llm.length == expected("listen")["kv_len_after"][2]
