"""silero-vad (ONNX) with its recurrent state held by the caller, for the Lite turn decision.

``load_silero_vad(onnx=True)`` gives a wrapper that keeps one stream's state inside the model object; Parley keeps
model objects stateless, so only its ONNX session is used here and the state (LSTM state + 64-sample context)
lives in a :class:`VadState` owned by the conversation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.constants import MODEL_INPUT_RATE, VAD_WINDOW_SAMPLES_16K

_CONTEXT = 64


@dataclass
class VadState:
    lstm: np.ndarray = field(default_factory=lambda: np.zeros((2, 1, 128), dtype=np.float32))
    context: np.ndarray = field(default_factory=lambda: np.zeros((1, _CONTEXT), dtype=np.float32))
    pending: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))  # < one window

    def reset(self) -> None:
        self.lstm[:] = 0
        self.context[:] = 0
        self.pending = np.zeros(0, dtype=np.float32)


class SileroVad:
    """Speech probability per 32 ms window (512 samples at 16 kHz)."""

    window = VAD_WINDOW_SAMPLES_16K

    def __init__(self) -> None:
        from silero_vad import load_silero_vad

        from core.runtime import configure_torch_threads

        wrapper = load_silero_vad(onnx=True)
        configure_torch_threads()  # importing silero_vad pins torch to 1 thread; re-apply the app's setting
        self.session = wrapper.session
        self._sr = np.array(MODEL_INPUT_RATE, dtype=np.int64)

    def new_state(self) -> VadState:
        return VadState()

    def probabilities(self, state: VadState, samples_16k: np.ndarray) -> np.ndarray:
        """Feed samples; returns one probability per completed 512-sample window (leftovers wait in ``state``)."""
        data = np.concatenate([state.pending, np.asarray(samples_16k, dtype=np.float32).reshape(-1)])
        n = len(data) // self.window
        probs = np.zeros(n, dtype=np.float32)
        for i in range(n):
            frame = data[i * self.window:(i + 1) * self.window].reshape(1, -1)
            x = np.concatenate([state.context, frame], axis=1)
            out, state.lstm = self.session.run(None, {"input": x, "state": state.lstm, "sr": self._sr})
            state.context = x[:, -_CONTEXT:]
            probs[i] = float(np.asarray(out).reshape(-1)[0])
        state.pending = data[n * self.window:].copy()
        return probs
