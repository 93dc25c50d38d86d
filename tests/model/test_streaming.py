"""Streaming codec windows (llm2TTS.run): fixture parity, quiet-point splitting, padding 0, server options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _paths import TINY_A_CHECKPOINTS, TINY_A_EXPECTED
from core.model.freeze_omni.codec import TiCodec
from core.model.freeze_omni.errors import CheckpointError
from core.model.freeze_omni.streaming import (CodecStreamer, ServerConfig, StreamOptions, load_server_config,
                                              split_at_quiet_point, trim_leading_silence)
from core.runtime import configure_torch_threads

FIXTURE_OPTIONS = StreamOptions(chunk_size=8, padding=2, window=2401, threshold=0.01)


@pytest.fixture(scope="module")
def codec() -> TiCodec:
    configure_torch_threads(1)
    return TiCodec.from_checkpoint(TINY_A_CHECKPOINTS / "codec", with_encoder=False)


def _segment(i: int):
    return np.load(TINY_A_EXPECTED / f"segment{i}.npz")


def test_fixture_yields_and_codec_calls(codec: TiCodec) -> None:
    """Both segments of the reply: every codec window (tokens and raw wave) and every yielded piece (exact lengths,
    values within 1e-4); the concatenation is final_wave.npy."""
    calls: list[tuple[list[int], np.ndarray]] = []
    streamer = CodecStreamer(codec, FIXTURE_OPTIONS, observer=lambda tokens, wave: calls.append((tokens, wave)))
    streamer.start_reply()
    everything = []
    for i in (0, 1):
        d = _segment(i)
        calls.clear()
        pieces = list(streamer.stream_segment(d["codec_tokens"].tolist()))
        n_calls = sum(1 for k in d.files if k.endswith("_wave"))
        assert len(calls) == n_calls
        for j, (tokens, wave) in enumerate(calls):
            assert tokens == d[f"codec_call{j}_tokens"].tolist()
            assert streamer.global_tokens == d[f"codec_call{j}_global_tokens"].tolist()
            np.testing.assert_allclose(wave, d[f"codec_call{j}_wave"], rtol=0, atol=1e-4)
        expected = [d[f"yield{j}"] for j in range(sum(1 for k in d.files if k.startswith("yield")))]
        assert [p.shape[0] for p in pieces] == [e.shape[0] for e in expected]
        for piece, want in zip(pieces, expected):
            assert piece.dtype == np.float32
            np.testing.assert_allclose(piece, want, rtol=0, atol=1e-4)
        everything.extend(pieces)
    final = np.load(TINY_A_EXPECTED / "final_wave.npy")
    np.testing.assert_allclose(np.concatenate(everything), final, rtol=0, atol=1e-4)


def test_push_api_matches_stream_segment(codec: TiCodec) -> None:
    d = _segment(0)
    streamer = CodecStreamer(codec, FIXTURE_OPTIONS)
    streamer.start_reply()
    streamer.start_segment()
    pieces = [p for t in d["codec_tokens"].tolist() if (p := streamer.push(t)) is not None]
    assert len(pieces) == 2  # two windows split at quiet points while decoding ...
    pieces.append(streamer.finish_segment())  # ... and the flush
    assert [p.shape[0] for p in pieces] == [4330, 4420, 2650]
    assert streamer.finish_segment() is None  # nothing left


def test_split_at_quiet_point_branches() -> None:
    window = 5
    loud = np.full(40, 0.5, dtype=np.float32)
    buffer = np.ones(3, dtype=np.float32)
    new_buffer, out = split_at_quiet_point(buffer, loud, window, 0.01)
    assert out is None and new_buffer.shape[0] == 43  # not quiet: everything buffered
    quiet = loud.copy()
    quiet[25:30] = 0.001  # the quietest 5-sample stretch starts at 25 (search starts at 40//2 - 5//2 = 18)
    quiet[27] = 0.0005
    new_buffer, out = split_at_quiet_point(buffer, quiet, window, 0.01)
    assert out is not None and out.shape[0] == 3 + 27 and np.array_equal(new_buffer, quiet[27:])


def test_quietest_sample_search_follows_the_original_code() -> None:
    """The original searches the quietest sample in [s*, s* + N + (s* - start)), longer than the plain reading
    [s*, s* + N) whenever s* is not the first candidate (docs/freeze-omni.md, "Codec windows"). Here s* = 25,
    start = 18: the 0.0 at 32 is found."""
    audio = np.full(40, 0.5, dtype=np.float32)
    audio[25:30] = 0.001
    audio[32] = 0.0
    _, out = split_at_quiet_point(np.zeros(0, dtype=np.float32), audio, 5, 0.01)
    assert out is not None and out.shape[0] == 32


def test_window_shorter_than_n_is_buffered() -> None:
    buffer, out = split_at_quiet_point(np.zeros(0, dtype=np.float32), np.zeros(100, dtype=np.float32), 2401, 0.5)
    assert out is None and buffer.shape[0] == 100


def test_padding_zero_keeps_all_audio(codec: TiCodec) -> None:
    """Padding 0 (broken in the original: empty slice, context never dropped) decodes disjoint windows of C tokens."""
    tokens = _segment(0)["codec_tokens"].tolist()  # 18 tokens -> windows of 8, 8 and a flush of 2
    windows: list[list[int]] = []
    options = StreamOptions(chunk_size=8, padding=0, window=2401, threshold=1.0)  # always quiet enough to cut
    streamer = CodecStreamer(codec, options, observer=lambda t, w: windows.append(t))
    pieces = list(streamer.stream_segment(tokens))
    assert windows == [tokens[:8], tokens[8:16], tokens[16:]]
    whole = np.concatenate([codec.decode(w).numpy() for w in windows])
    np.testing.assert_allclose(np.concatenate(pieces), whole, rtol=0, atol=1e-6)


def test_first_segment_options_and_leading_silence_trim(codec: TiCodec) -> None:
    """Server behaviour: segments started before any audio of the reply use first_chunk_size / first_threshold;
    the first piece of a reply loses its start up to the first |x| > 0.03."""
    tokens = _segment(0)["codec_tokens"].tolist()
    windows: list[int] = []
    options = StreamOptions(chunk_size=8, padding=2, window=2401, threshold=0.0, first_chunk_size=4,
                            first_threshold=1.0, trim_leading_silence=True)
    streamer = CodecStreamer(codec, options, observer=lambda t, w: windows.append(len(t)))
    streamer.start_reply()
    first = list(streamer.stream_segment(tokens))
    assert windows[:3] == [6, 8, 8]  # C=4: 0+4+2, then 2+4+2
    assert len(first) == len(windows)  # threshold 1.0: every window is cut and yielded, plus the flush
    plain = CodecStreamer(codec, StreamOptions(chunk_size=8, padding=2, window=2401, threshold=0.0,
                                               first_chunk_size=4, first_threshold=1.0))
    untrimmed = list(plain.stream_segment(tokens))
    assert np.array_equal(first[0], trim_leading_silence(untrimmed[0], 0.03))
    assert abs(first[0][0]) > 0.03 or first[0].shape == untrimmed[0].shape
    for a, b in zip(first[1:], untrimmed[1:]):
        assert np.array_equal(a, b)  # only the first piece of the reply is trimmed
    windows.clear()
    second = list(streamer.stream_segment(tokens))
    assert windows[0] == 10  # audio was produced: the later-segment chunk size 8 applies (0+8+2)
    assert len(second) == 1  # threshold 0.0: nothing is quiet enough, everything comes at the flush
    d = _segment(0)  # same windows as the fixture run (C 8, Pd 2): the flush holds exactly its three pieces
    np.testing.assert_allclose(second[0], np.concatenate([d["yield0"], d["yield1"], d["yield2"]]), rtol=0, atol=1e-4)


def test_trim_leading_silence() -> None:
    piece = np.array([0.0, 0.01, -0.02, 0.5, 0.0], dtype=np.float32)
    assert trim_leading_silence(piece, 0.03).tolist() == pytest.approx([0.5, 0.0])
    quiet = np.zeros(4, dtype=np.float32)
    assert trim_leading_silence(quiet, 0.03) is quiet


def test_options_validation() -> None:
    with pytest.raises(ValueError):
        StreamOptions(chunk_size=0)
    with pytest.raises(ValueError):
        StreamOptions(padding=-1)


def test_load_server_config(tmp_path) -> None:
    defaults = load_server_config(tmp_path)
    assert defaults == ServerConfig() and defaults.path is None
    release = {"decoder_top_k": 2, "decoder_first_chunk_size": 20, "decoder_chunk_size": 40,
               "decoder_chunk_overlap_size": 10, "decoder_penalty_window_size": -1, "decoder_penalty": 1.1,
               "decoder_N": 2401, "decoder_seg_threshold_first_pack": 0.1, "decoder_seg_threshold": 0.015}
    (tmp_path / "server.json").write_text(json.dumps({**release, "decoder_chunk_size": 32, "unknown": "x"}))
    config = load_server_config(tmp_path)
    assert config.decoder_chunk_size == 32 and config.path == tmp_path / "server.json"
    options = config.stream_options()
    assert (options.chunk_size, options.first_chunk_size, options.padding, options.window) == (32, 20, 10, 2401)
    assert (options.threshold, options.first_threshold, options.trim_leading_silence) == (0.015, 0.1, True)
    (tmp_path / "server.json").write_text(json.dumps({**release, "decoder_N": "2401"}))
    with pytest.raises(CheckpointError) as info:
        load_server_config(tmp_path)
    assert info.value.key == "decoder_N" and "server.json" in str(info.value)
    (tmp_path / "server.json").write_text(json.dumps({**release, "decoder_chunk_size": 0}))
    with pytest.raises(CheckpointError):
        load_server_config(tmp_path)


def test_custom_voice_is_passed_to_the_codec(codec: TiCodec) -> None:
    tokens = _segment(1)["codec_tokens"].tolist()
    voice = [3, 5]
    pieces = list(CodecStreamer(codec, StreamOptions(chunk_size=40, padding=10), global_tokens=voice)
                  .stream_segment(tokens))
    assert len(pieces) == 1  # 12 tokens < C + Pd: one decode at the flush
    np.testing.assert_array_equal(pieces[0], codec.decode(torch.tensor(tokens), voice).numpy())
