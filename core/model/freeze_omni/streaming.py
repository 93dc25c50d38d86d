"""Chunked codec decoding with silence-aligned splitting (the original ``llm2TTS.run``).

See docs/freeze-omni.md, "Codec windows".

Codec tokens arrive one at a time from the speech decoder. Every ``left + C + right`` tokens the codec decodes a
window; only the C "owned" tokens' samples are kept (``left`` tokens of left context, ``right = Pd`` of look-ahead,
600 samples per token for the slicing). Then :func:`split_at_quiet_point` releases audio only up to a near-silent
sample in the second half of the window, and buffers the rest. At the end of a segment the remaining tokens are
decoded and everything left is released.

:class:`CodecStreamer` holds the streaming state explicitly (:class:`StreamState`); the codec weights are shared and
untouched. Life cycle: ``start_reply()`` once per assistant reply, then per text segment ``start_segment()``,
``push(token)`` for every codec token (returns a piece or None), ``finish_segment()`` (returns the last piece or None).

Server options (checkpoints/server.json, bin/server.py): a different chunk size and split threshold for the segments
that start before the reply has produced any audio (``decoder_first_chunk_size``,
``decoder_seg_threshold_first_pack``), and cutting the near-silent start (everything before the first |x| > 0.03)
of the first piece of a reply. Both are off by default (``bin/inference.py`` behaviour, parity fixture).

Deviations from the original, on purpose:

* ``padding = 0`` works: the original slices ``audio[left*600 : -0]`` (empty) and keeps ``tokens[-0:]`` (all of
  them), so it produces no audio (docs/freeze-omni.md, D9). Here the slice end is ``len - right*600`` and no context
  is kept.
* A window shorter than N samples (the original's conv1d would raise) is buffered; a search start before 0 (only
  when the window is shorter than about N samples; the original then wraps around with a negative slice) is clamped
  to 0. Neither happens with the release or fixture settings (C*600 >= 4800 > N).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from core.constants import CODEC_SAMPLES_PER_TOKEN_24K
from core.model.freeze_omni.codec import TiCodec
from core.model.freeze_omni.errors import CheckpointError, read_json_file

log = logging.getLogger(__name__)

SERVER_JSON = "server.json"


# ---------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class StreamOptions:
    """Windowing parameters. Defaults are ``bin/inference.py``'s (40 / 10 / 2401 / 0.01, no server extras)."""

    chunk_size: int = 40                  # C: owned tokens per codec window (decoder_chunk_size)
    padding: int = 10                     # Pd: context / look-ahead tokens (decoder_chunk_overlap_size)
    window: int = 2401                    # N: quiet-window length in samples (decoder_N), ~100 ms at 24 kHz
    threshold: float = 0.01               # θ: mean |x| below which a window counts as quiet (decoder_seg_threshold)
    first_chunk_size: int | None = None   # C for segments started before any audio of the reply (server: 20)
    first_threshold: float | None = None  # θ for those segments (server: decoder_seg_threshold_first_pack 0.1)
    trim_leading_silence: bool = False    # cut the first piece of a reply before its first |x| > silence_level
    silence_level: float = 0.03
    samples_per_token: int = CODEC_SAMPLES_PER_TOKEN_24K  # used only for slicing, as in the original

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or (self.first_chunk_size is not None and self.first_chunk_size < 1):
            raise ValueError("codec chunk sizes must be >= 1")
        if self.padding < 0:
            raise ValueError("codec padding must be >= 0")
        if self.window < 1:
            raise ValueError("the quiet window N must be >= 1 sample")
        if self.threshold < 0 or (self.first_threshold is not None and self.first_threshold < 0):
            raise ValueError("split thresholds must be >= 0")
        if self.samples_per_token < 1:
            raise ValueError("samples_per_token must be >= 1")


@dataclass(frozen=True)
class ServerConfig:
    """``checkpoints/server.json``; the defaults are the released file's values (docs/freeze-omni.md, "Codec
    windows")."""

    decoder_top_k: int = 2
    decoder_first_chunk_size: int = 20
    decoder_chunk_size: int = 40
    decoder_chunk_overlap_size: int = 10
    decoder_penalty_window_size: int = -1
    decoder_penalty: float = 1.1
    decoder_N: int = 2401
    decoder_seg_threshold_first_pack: float = 0.1
    decoder_seg_threshold: float = 0.015
    path: Path | None = field(default=None, compare=False)  # the file read, None when the defaults were used

    def stream_options(self, trim_leading_silence: bool = True) -> StreamOptions:
        """The server's streaming behaviour (first-segment chunk/threshold, leading-silence cut)."""
        return StreamOptions(chunk_size=self.decoder_chunk_size, padding=self.decoder_chunk_overlap_size,
                             window=self.decoder_N, threshold=self.decoder_seg_threshold,
                             first_chunk_size=self.decoder_first_chunk_size,
                             first_threshold=self.decoder_seg_threshold_first_pack,
                             trim_leading_silence=trim_leading_silence)


def load_server_config(folder: str | Path) -> ServerConfig:
    """Read ``<folder>/server.json`` (folder = the checkpoints root) if present, else return the release defaults.

    Unknown keys are ignored (logged); a value of the wrong type raises CheckpointError naming file and key.
    """
    path = Path(folder) / SERVER_JSON
    if not path.is_file():
        log.info("no %s: using the released server.json values", path)
        return ServerConfig()
    raw = read_json_file(path, "server config")
    if not isinstance(raw, dict):
        raise CheckpointError(path, None, "expected a JSON object")
    known = {f.name: f for f in fields(ServerConfig) if f.name != "path"}
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key not in known:
            log.debug("%s: ignoring unknown key %r", path, key)
            continue
        default = getattr(ServerConfig, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CheckpointError(path, key, f"expected a number, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise CheckpointError(path, key, f"expected an integer, got {value!r}")
        values[key] = type(default)(value)
    config = ServerConfig(**values, path=path)  # type: ignore[arg-type]
    try:
        config.stream_options()
    except ValueError as exc:
        raise CheckpointError(path, None, str(exc)) from exc
    if config.decoder_top_k < 1:
        raise CheckpointError(path, "decoder_top_k", "must be >= 1")
    return config


# ------------------------------------------------------------------------------------------------- splitting
def split_at_quiet_point(buffer: np.ndarray, audio: np.ndarray, window: int,
                         threshold: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The original ``find_min_sum_index``: returns (new buffer, piece to output or None).

    Over the second half of ``audio`` (window starts s >= len//2 - window//2) find the start s* of the length-``window``
    stretch with the smallest sum of |x|. If that mean is below ``threshold``, cut at the quietest sample q of the
    search stretch: output = buffer + audio[:q], new buffer = audio[q:]. Otherwise everything is buffered.

    The quietest sample is searched in [s*, min(len, s* + window + (s* - start))): the original computes the end
    from the offset of s* inside the searched range, so the stretch is longer than ``window`` when s* is not the
    first candidate, where [s*, s* + window) would be the plain reading; the parity fixture follows the code, and so
    does this.
    """
    length = audio.shape[0]
    if length < window:
        return np.concatenate([buffer, audio]), None
    magnitude = np.abs(audio.astype(np.float64))
    cumulative = np.concatenate([[0.0], np.cumsum(magnitude)])
    sums = cumulative[window:] - cumulative[:-window]            # sums[s] = sum |x[s : s+window]|
    start = max(0, length // 2 - window // 2)
    offset = int(np.argmin(sums[start:]))
    best = start + offset
    mean = sums[best] / window
    end = min(length, best + offset + window)
    quietest = best + int(np.argmin(magnitude[best:end]))
    if mean < threshold:
        return audio[quietest:].copy(), np.concatenate([buffer, audio[:quietest]])
    return np.concatenate([buffer, audio]), None


def trim_leading_silence(piece: np.ndarray, level: float) -> np.ndarray:
    """Drop everything before the first sample with |x| > level; unchanged when there is none."""
    loud = np.flatnonzero(np.abs(piece) > level)
    return piece[loud[0]:] if loud.size else piece


# ---------------------------------------------------------------------------------------------------- streamer
@dataclass
class StreamState:
    """Mutable streaming state of one reply (see the module docstring for the life cycle)."""

    tokens: list[int] = field(default_factory=list)   # tokens not yet fully decoded, including context
    left: int = 0                                      # left-context tokens at the start of ``tokens``
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    chunk_size: int = 0                                # C of the current segment
    threshold: float = 0.0                             # θ of the current segment
    in_segment: bool = False
    pieces_in_reply: int = 0                           # pieces handed out since start_reply()
    codec_calls: int = 0                               # windows decoded since start_reply() (diagnostics)


WindowObserver = Callable[[list[int], np.ndarray], None]


class CodecStreamer:
    """Turns a stream of codec tokens into waveform pieces (float32, 24 kHz), exactly like ``llm2TTS.run``.

    ``global_tokens`` (the voice) default to the codec's release tokens. ``observer``, if given, is called with
    (window tokens, raw window waveform before slicing) for every codec call (tests, diagnostics).
    """

    def __init__(self, codec: TiCodec, options: StreamOptions | None = None,
                 global_tokens: Sequence[int] | None = None, observer: WindowObserver | None = None) -> None:
        self.codec = codec
        self.options = options or StreamOptions()
        self.global_tokens = list(global_tokens) if global_tokens is not None else codec.default_global_tokens
        self.observer = observer
        self.state = StreamState()

    # --------------------------------------------------------------------------------------- life cycle
    def start_reply(self) -> None:
        """Forget everything: a new assistant reply begins (the first-segment options apply again)."""
        self.state = StreamState()

    def start_segment(self) -> None:
        """A new text segment begins: empty token window, no left context, empty buffer."""
        options, state = self.options, self.state
        if state.in_segment and (state.tokens or state.buffer.size):
            log.warning("start_segment() dropped %d undecoded tokens / %d buffered samples of the previous segment",
                        len(state.tokens), state.buffer.size)
        first = state.pieces_in_reply == 0
        state.chunk_size = options.first_chunk_size if first and options.first_chunk_size else options.chunk_size
        state.threshold = (options.first_threshold if first and options.first_threshold is not None
                           else options.threshold)
        state.tokens = []
        state.left = 0
        state.buffer = np.zeros(0, dtype=np.float32)
        state.in_segment = True

    def push(self, token: int) -> np.ndarray | None:
        """Add one codec token; returns a waveform piece when a window was decoded and split, else None."""
        state, options = self.state, self.options
        if not state.in_segment:
            self.start_segment()
        state.tokens.append(int(token))
        right = options.padding
        if len(state.tokens) < state.left + state.chunk_size + right:
            return None
        audio = self._decode(state.tokens)
        hop = options.samples_per_token
        audio = audio[state.left * hop: audio.shape[0] - right * hop]
        state.left = options.padding
        keep = state.left + right
        state.tokens = state.tokens[-keep:] if keep else []
        state.buffer, piece = split_at_quiet_point(state.buffer, audio, options.window, state.threshold)
        return self._hand_out(piece)

    def finish_segment(self) -> np.ndarray | None:
        """Decode the remaining tokens and release everything still buffered (None if there is nothing)."""
        state = self.state
        piece: np.ndarray | None = None
        if state.tokens:
            audio = self._decode(state.tokens)[state.left * self.options.samples_per_token:]
            piece = np.concatenate([state.buffer, audio])
        elif state.buffer.size:
            piece = state.buffer
        state.tokens = []
        state.left = 0
        state.buffer = np.zeros(0, dtype=np.float32)
        state.in_segment = False
        return self._hand_out(piece)

    def stream_segment(self, tokens: Iterable[int]) -> Iterator[np.ndarray]:
        """Convenience: start_segment, push every token, finish_segment; yields the pieces."""
        self.start_segment()
        for token in tokens:
            piece = self.push(token)
            if piece is not None:
                yield piece
        piece = self.finish_segment()
        if piece is not None:
            yield piece

    # ------------------------------------------------------------------------------------------ helpers
    def _decode(self, tokens: list[int]) -> np.ndarray:
        wave = self.codec.decode(tokens, self.global_tokens).detach().to("cpu").numpy().astype(np.float32, copy=False)
        self.state.codec_calls += 1
        if self.observer is not None:
            self.observer(list(tokens), wave)
        return wave

    def _hand_out(self, piece: np.ndarray | None) -> np.ndarray | None:
        if piece is None:
            return None
        if self.options.trim_leading_silence and self.state.pieces_in_reply == 0:
            piece = trim_leading_silence(piece, self.options.silence_level)
        self.state.pieces_in_reply += 1
        return piece.astype(np.float32, copy=False)
