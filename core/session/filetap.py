"""Recording a file-driven conversation (``parley chat --record``, ``parley replay``) with a SessionRecorder.

:func:`core.engine.filemode.run_conversation` takes ``subscribers``, an ``on_engine`` and an ``on_chunk`` hook;
:class:`ChatRecording` provides them::

    tap = ChatRecording(recorder, input_audio, input_rate, audio_16k)
    run_conversation(..., subscribers=tap.subscribers, on_engine=tap.on_engine, on_chunk=tap.on_chunk)
    tap.finish()

What lands where: ``mic_raw.wav`` is the input file at its own rate (the user's side only: a replay with the same
simulated room adds the same echo again), ``mic_clean.wav`` the 16 kHz audio the engine was fed (the capture chain's
output: after the echo canceller when a room was simulated), ``playback.wav`` the virtual sink's timeline
(everything "played", silence between), ``assistant.wav`` every piece the backend produced as it was enqueued. The
streams are written as the virtual clock reaches them (not all at once), so a run that is killed leaves streams
that end together.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from core.audio.interfaces import AudioChunk
from core.constants import MODEL_INPUT_RATE
from core.engine.sink import VirtualAudioSink
from core.session.recorder import SessionRecorder
from core.session.teesink import TeeSink

log = logging.getLogger(__name__)


class ChatRecording:
    """Feeds a :class:`SessionRecorder` from a file-driven run of the engine (see the module docstring)."""

    def __init__(self, recorder: SessionRecorder, input_audio: np.ndarray, input_rate: int,
                 audio_16k: np.ndarray, offset_s: float = 0.0) -> None:
        self.recorder = recorder
        self.offset_s = float(offset_s)        # session time at which the input began (after the ready sound)
        self._offset_16k = int(round(self.offset_s * MODEL_INPUT_RATE))
        self.input_audio = np.asarray(input_audio, dtype=np.float32)
        self.input_rate = int(input_rate)
        self.audio_16k = np.asarray(audio_16k, dtype=np.float32)
        self._raw_pos = 0
        self._clean_written = False
        self._play_pos = 0
        self._play_rate = 0
        self.engine: Any = None

    @property
    def subscribers(self) -> list[Callable]:
        return [self.recorder.on_event]

    def on_engine(self, engine: Any) -> None:
        """Hook for ``run_conversation(on_engine=...)``: tee the sink and its timeline writer; the recorder's own
        problems (a full disk) become warning events on the engine's bus."""
        self.engine = engine
        self.recorder.report_to(engine.bus)
        inner = engine.sink
        if isinstance(inner, VirtualAudioSink):
            self._play_rate = inner.rate
            inner.add_tap(self._on_played)
        else:
            log.warning("the engine's sink has no timeline: playback.wav will not be recorded")
        engine.sink = TeeSink(inner, self.recorder, engine.clock.now)

    def _on_played(self, block: np.ndarray) -> None:
        t0 = self._play_pos / self._play_rate
        self._play_pos += len(block)
        self.advance_mic(self._play_pos / self._play_rate)
        self.recorder.write_playback(block, self._play_rate, t=t0)

    def on_chunk(self, chunk: AudioChunk) -> None:
        """Hook for ``run_conversation(on_chunk=...)``: what the engine got, as ``mic_clean.wav`` (input part only)."""
        start = int(chunk.start) - self._offset_16k
        if start >= len(self.audio_16k) or start + len(chunk.samples_16k) <= 0:
            return
        clean = chunk.samples_16k[max(0, -start):len(self.audio_16k) - start]
        start = max(0, start)
        if not self._clean_written:
            self.recorder.write_mic_clean(clean, MODEL_INPUT_RATE, t=self.offset_s + start / MODEL_INPUT_RATE)
            self._clean_written = True
        else:
            self.recorder.write_mic_clean(clean, MODEL_INPUT_RATE)   # chunks come in order: appended

    def advance_mic(self, t: float) -> None:
        """Record the input up to session time ``t`` (``mic_raw.wav``; never past the input's end)."""
        raw_end = min(len(self.input_audio), int(round((t - self.offset_s) * self.input_rate)))
        if raw_end > self._raw_pos:
            self.recorder.write_mic_raw(self.input_audio[self._raw_pos:raw_end], self.input_rate,
                                        t=self.offset_s + self._raw_pos / self.input_rate)
            self._raw_pos = raw_end

    def finish(self) -> None:
        """Write whatever input the clock did not reach (a run that ended early)."""
        self.advance_mic(self.offset_s + len(self.input_audio) / self.input_rate + 1.0)


def read_input(path: str) -> tuple[np.ndarray, int]:
    """The input file as ``load_wav_16k`` reads it (validated, float32, channels kept), and its rate."""
    from core.audio.wavin import read_audio

    data, rate = read_audio(path, what="input file")
    if data.shape[1] == 1:
        data = data[:, 0]
    return data, int(rate)
