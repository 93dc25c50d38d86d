"""Front-end: Kaldi fbank (written in torch), CMVN files, and the streaming chunker with its overlaps.

Parity tolerance for the raw log-fbank: the reference was computed in float32, whose rounding noise in bins with
almost no energy is far above 1e-4 in the log domain (torchaudio 2.11's own Kaldi fbank differs from the fixture by
1.8e-4 on this machine, and by 1.2e-3 in one near-silent bin of input_el.wav). So the raw features are compared
(a) in the energy domain, relative to the frame energy (<= 1e-5), and (b) in the log domain with at most 0.2 % of
the values beyond 1e-4. Everything after the encoder is held to 1e-4 absolute (tests in test_listen.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _fo_pipeline import expected, requires_fixture
from _paths import TINY_A_CHECKPOINTS
from core.frontend import (
    CmvnError, FbankOptions, StreamingFbank, fbank, load_cmvn, mel_banks, pad_to_chunks, parse_json_cmvn,
    parse_kaldi_cmvn,
)

CHUNK = 2560


def _stream_features(wav: np.ndarray, n_chunks: int) -> np.ndarray:
    frontend = StreamingFbank()
    state = frontend.initial_state()
    blocks = []
    for i in range(n_chunks):
        state, block = frontend.step(state, wav[i * CHUNK:(i + 1) * CHUNK])
        blocks.append(block[0].numpy())
    return np.stack(blocks)


def _assert_log_fbank_close(ours: np.ndarray, ref: np.ndarray) -> None:
    ours64, ref64 = ours.astype(np.float64), ref.astype(np.float64)
    frame_energy = np.exp(ref64).sum(-1)
    rel = np.abs(np.exp(ours64) - np.exp(ref64)).max(-1) / frame_energy
    assert rel.max() <= 1e-5, f"energy error relative to the frame energy: {rel.max():.3g}"
    err = np.abs(ours64 - ref64)
    assert (err > 1e-4).mean() <= 0.002, f"{(err > 1e-4).mean():.4%} of log-fbank values beyond 1e-4"


@requires_fixture
@pytest.mark.parametrize("name", ["listen", "el_listen"])
def test_streaming_fbank_matches_fixture(name):
    ref = expected(name)
    ours = _stream_features(ref["wav_input"], ref["fbank"].shape[0])
    assert ours.shape == ref["fbank"].shape
    np.testing.assert_array_equal(ours[0, :3], 0.0)  # zero *features* carried into the first chunk
    np.testing.assert_array_equal(ours[1:, :3], ours[:-1, -3:])  # 3-frame overlap
    _assert_log_fbank_close(ours[:, 3:], ref["fbank"][:, 3:])


@requires_fixture
@pytest.mark.parametrize("name", ["listen", "el_listen"])
def test_cmvn_matches_fixture(name):
    ref = expected(name)
    stats = load_cmvn(TINY_A_CHECKPOINTS / "audiollm" / "global_cmvn", is_json=False)
    # The CMVN arithmetic alone is exact on the reference features ...
    np.testing.assert_allclose(stats.apply(torch.from_numpy(ref["fbank"])).numpy(), ref["cmvn_out"], atol=1e-6)
    # ... and on our features it inherits only the fbank's float32 noise.
    ours = _stream_features(ref["wav_input"], ref["fbank"].shape[0])
    normed = stats.apply(torch.from_numpy(ours)).numpy()
    err = np.abs(normed.astype(np.float64) - ref["cmvn_out"])
    assert (err > 1e-4).mean() <= 0.002 and err.max() < 1e-3


@requires_fixture
def test_cmvn_file_equals_checkpoint_buffers():
    stats = load_cmvn(TINY_A_CHECKPOINTS / "audiollm" / "global_cmvn", is_json=False)
    state = torch.load(TINY_A_CHECKPOINTS / "audiollm" / "final.pt", weights_only=True)
    torch.testing.assert_close(stats.mean, state["encoder.global_cmvn.mean"].float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(stats.istd, state["encoder.global_cmvn.istd"].float(), atol=1e-5, rtol=1e-6)


def test_fbank_agrees_with_kaldi_native_fbank():
    """An independent Kaldi implementation (C++) agrees on random speech-like audio."""
    knf = pytest.importorskip("kaldi_native_fbank")
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size))
    wave = (wave * 32768).astype(np.float32)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0
    opts.mel_opts.num_bins = 80
    opts.mel_opts.high_freq = 0
    online = knf.OnlineFbank(opts)
    online.accept_waveform(16000, wave.tolist())
    online.input_finished()
    theirs = np.stack([online.get_frame(i) for i in range(online.num_frames_ready)])
    ours = fbank(torch.from_numpy(wave)).numpy()
    assert ours.shape == theirs.shape == (98, 80)
    _assert_log_fbank_close(ours, theirs)


def test_chunked_features_equal_whole_signal_features():
    """The 240-sample carry makes chunk-by-chunk fbank equal to fbank over the whole (zero-prefixed) stream."""
    rng = np.random.default_rng(2)
    wav = (0.2 * rng.standard_normal(CHUNK * 4)).astype(np.float32)
    blocks = _stream_features(wav, 4)
    new_frames = blocks[:, 3:].reshape(-1, 80)
    whole = fbank(torch.from_numpy(np.concatenate([np.zeros(240, np.float32), wav]) * 32768)).numpy()
    assert whole.shape == new_frames.shape == (64, 80)
    np.testing.assert_allclose(new_frames, whole, atol=1e-5)


def test_frontend_state_is_explicit_and_untouched():
    frontend = StreamingFbank()
    first = frontend.initial_state()
    chunk = np.full(CHUNK, 0.1, dtype=np.float32)
    second, block_a = frontend.step(first, chunk)
    again, block_b = frontend.step(first, chunk)  # the old state still works and gives the same result
    assert torch.equal(block_a, block_b) and torch.equal(first.samples, torch.zeros(240))
    assert second.chunks_seen == 1 and block_a.shape == (1, 19, 80)
    assert torch.equal(second.samples, torch.full((240,), 0.1 * 32768))
    assert frontend.frames_per_chunk == 16 and frontend.block_frames == 19


def test_chunk_shape_checks_and_channel_zero():
    frontend = StreamingFbank()
    state = frontend.initial_state()
    with pytest.raises(ValueError, match="2560"):
        frontend.step(state, np.zeros(2000, dtype=np.float32))
    stereo = np.stack([np.full(CHUNK, 0.2), np.full(CHUNK, -0.7)], axis=1).astype(np.float32)
    _, block = frontend.step(state, stereo)
    _, mono = frontend.step(state, stereo[:, 0].copy())
    assert torch.equal(block, mono)


def test_pad_to_chunks():
    assert pad_to_chunks(np.ones(1)).size == CHUNK
    assert pad_to_chunks(np.ones(CHUNK)).size == CHUNK
    padded = pad_to_chunks(np.ones(CHUNK + 1))
    assert padded.size == 2 * CHUNK and padded[CHUNK + 1:].sum() == 0


def test_fbank_options_and_mel_banks():
    opts = FbankOptions()
    assert (opts.frame_length, opts.frame_shift, opts.fft_size) == (400, 160, 512)
    assert opts.num_frames(2800) == 16 and opts.num_frames(399) == 0
    banks = mel_banks(opts)
    assert banks.shape == (80, 256)
    assert torch.all(banks >= 0) and torch.all(banks.max(dim=1).values > 0.4)  # every filter sees some bin
    assert float(banks[:, 0].sum()) == 0.0  # DC is below low_freq = 20 Hz
    with pytest.raises(ValueError):
        FbankOptions(dither=1.0)


def test_cmvn_json_and_kaldi_formats_agree(tmp_path):
    sums, sumsq, n = [2.0, 4.0, 6.0], [6.0, 20.0, 12.0], 2.0
    js = tmp_path / "cmvn.json"
    js.write_text(json.dumps({"mean_stat": sums, "var_stat": sumsq, "frame_num": n}))
    kaldi = tmp_path / "cmvn.txt"
    kaldi.write_text(f" [ {' '.join(map(str, sums))} {n}\n  {' '.join(map(str, sumsq))} 0 ]\n")
    a, b = load_cmvn(js, is_json=True), load_cmvn(kaldi, is_json=False)
    torch.testing.assert_close(a.mean, b.mean)
    torch.testing.assert_close(a.istd, b.istd)
    torch.testing.assert_close(a.mean, torch.tensor([1.0, 2.0, 3.0]))
    # var = [3-1, 10-4, 6-9 -> floored at 1e-20]
    torch.testing.assert_close(a.istd[:2], torch.tensor([2.0 ** -0.5, 6.0 ** -0.5]))
    assert float(a.istd[2]) == pytest.approx(1e10)


@pytest.mark.parametrize("text,parser", [
    ("{}", parse_json_cmvn),
    ('{"mean_stat": [1], "var_stat": [1, 2], "frame_num": 3}', parse_json_cmvn),
    ('{"mean_stat": [1], "var_stat": [1], "frame_num": 0}', parse_json_cmvn),
    ("1 2 3", parse_kaldi_cmvn),
    ("[ 1 2 3 ]", parse_kaldi_cmvn),
    ("[ 1 x 2 0 ]", parse_kaldi_cmvn),
])
def test_bad_cmvn_files_are_refused(text, parser):
    with pytest.raises(CmvnError):
        parser(text, "f")


def test_missing_cmvn_file(tmp_path):
    with pytest.raises(CmvnError, match="cannot read"):
        load_cmvn(tmp_path / "nope", is_json=True)
