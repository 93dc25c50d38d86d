"""Echo-aware streaming voice activity detection with silero-vad (ONNX, weights shipped in the silero-vad wheel).

:class:`EchoAwareVad` is the capture chain's one VAD (``core.audio.chain``). It runs silero on the echo-cancelled
16 kHz signal in 512-sample windows, keeping the model's recurrent state and 64-sample context between windows.

Echo awareness:

* While the assistant is silent a user turn opens on ``threshold`` held for ``min_speech_ms``.
* While it speaks (``assistant_speaking=True``) the bar is higher (``speaking_threshold``, ``speaking_min_speech_ms``)
  and every candidate window must also pass a residual-echo check against the far-end reference
  (:class:`ResidualEchoCheck`):

  - *similarity*: the correlation of the log band energies (10 bands, 8 ms steps, over the last
    ``echo_window_ms``) of the cleaned microphone and of the reference at the echo's lag. Residual or not yet
    cancelled echo keeps the reference's spectro-temporal pattern (similarity 0.8-1); a user talking over the
    assistant does not (around 0.2). The lag is estimated from the last 1.5 s (raw microphone when given, else
    the cleaned signal) or hinted by the caller; until it is known every lag up to ``echo_max_lag_ms`` is tried
    (stricter: slower double-talk detection, never more false barge-ins).
  - *return ratio* (only when the raw microphone is given): energy of the cleaned signal relative to the raw one
    over the last 96 ms. Residual echo after cancellation sits 20-50 dB under the raw microphone; near-end speech
    only a few dB.

  A window that looks like echo cannot start or continue an onset candidate.

* **Two rules for barge-ins, both on.** Both helped barge-ins in the simulated rooms (below). The dominant
  near-end rule (below) was off for a while: on the real PulseAudio loop, in one CI run, 20 s of the assistant
  speaking alone opened two false onsets, and rooms whose echo path jumps (``core.audio.room``, ``glitch_ms``)
  showed that the rule let the moved echo through. It is on again since it also asks the linear canceller to still
  remove echo (``near_end_dominant_max_ratio_db``), which a moved echo path does not let it do.
* **One dip per run** (``speaking_dip_prob``, on by default at 0.0; None turns it off). Over the echo the user's
  voice is found window by window, and a
  word often has one window in it that falls short: a softer sound, or a window the near-end path below refuses.
  While the assistant speaks, one such window inside a run neither counts nor breaks it; a second one ends the
  run. Replayed on recorded suite runs (28 barge-ins), this brought three onsets that came 0.5-0.9 s after the user
  began to 0.1 s; it added no onset in 23 minutes of echo alone (both rooms, steady), none in 35 minutes with an
  echo path that jumps (3, 12, 5 and 18 false onsets against 3, 12, 5 and 17 without it, in four glitchy rooms), and
  one on 60 backchannels (a backchannel's onset only holds the answer until its transcript is judged).

* **Double talk through the linear canceller** (``near_16k`` given, ``near_end_check``). AEC3's suppressor also
  removes much of the user's voice while the assistant talks: in the simulated laptop room a user speaking over the
  assistant was detected on AEC3's output only after about 0.9 s, and "Wait.", "okay" or "No, stop." not at all.
  The linear canceller (:mod:`core.audio.linear_aec`) suppresses nothing: its output holds the user's voice whole
  plus a residual echo that sits a steady ``ERLE`` under the microphone once the filter has converged (20-30 dB
  after a few seconds of the assistant speaking). A second silero instance listens to that output, and a window
  counts as the user's when silero hears speech there *and* the output's energy relative to the raw microphone
  (over ~96 ms) rises ``near_end_margin_db`` above its tracked echo-only floor (a minimum that creeps up
  0.05 dB per window) and above ``near_end_min_ratio_db``, and the same residual-echo check as above finds that
  what stands out does not follow the reference, and AEC3's own output is not far under the microphone
  (``near_end_aec_ratio_db``: a linear filter thrown off by an echo path that moved must not open a turn). When the
  user dominates both outputs (the linear one ``near_end_dominant_db`` above its floor, AEC3's within
  ``near_end_dominant_aec_db`` of the microphone), a likeness to the reference may be a chance match of two voices
  (``near_end_dominant_db``; None turns the rule off). In the speakerphone room the likeness refused two windows
  of "Stop." at -0.6 dB over a -22 dB floor, and the onset came with the next sentence, 0.85 s late; the rule heard
  it at once. But an echo path that jumps also dominates both outputs for a while: in the glitchy rooms the rule
  alone opened 24-30 false onsets per 530 s of echo alone where the VAD without it opened 3-17. Two conditions
  tell the two apart. ``near_end_dominant_max_similarity`` (0.75) caps the likeness the rule overrules (the
  user's windows measured 0.51-0.73, the moved echo's 0.5-0.99, median 0.76-0.83). ``near_end_dominant_max_ratio_db``
  (-0.75 dB) asks the linear canceller's output to stay under the microphone: its echo estimate is still right,
  so subtracting it still removes something, and what stands out above the floor is the user. After a latency
  jump the estimate is wrong, the canceller hands on the microphone as it is (it never outputs more than the
  microphone), and the ratio sits at 0 dB. On traced windows where the rule would overrule a likeness (three
  seeds of the barge-in scripts, a 184 s glitchy speakerphone run): the user's 25 of 34 passed both conditions,
  the moved echo's 0 of 62 (2 of 62 with the ratio alone, 19-39 with the likeness cap alone). The ratio alone
  can be fooled for a moment: in a later trace (3 minutes of the assistant alone, the speakerphone's path jumping
  30 ms six times a minute) 10 of 60 moved-echo windows under the rule had the linear output 0.8-2.3 dB under the
  microphone, but in every one of them some 10 ms frame of the last 96 ms had been made 3.7-12.7 times louder than
  the microphone by the canceller's wrong estimate (``LinearEchoCanceller.excess``, handed on per sample by the
  chain as ``near_excess_16k``). A user over a right estimate makes a frame at most a little louder (1.39 at most
  in the 41 windows of users the rule took in four seeds of the barge-in scripts), so the rule also asks that no
  frame of the last 96 ms exceeded 1.5 (``near_end_dominant_max_excess``). A user who
  drowns the echo completely also brings the ratio to about 0 dB and is then refused, as before. Residual echo of a steady path
  never rises above that floor; a user over the echo brings it to a few dB under the microphone. This path is used
  only once the floor shows a converged filter (``near_end_min_erle_db``), so a fresh filter falls back to AEC3's
  path alone. Measured (``scripts/bench`` ``parley bench rooms`` and the
  conversation suite, docs/engine.md): detection within 0-130 ms of the user's speech in both rooms once converged.

The model is loaded from the wheel's data folder without importing the ``silero_vad`` package (that import pulls
in torch and sets its thread count); onnxruntime runs with one thread.
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from core.audio.interfaces import VadEvent
from core.constants import MODEL_INPUT_RATE, VAD_WINDOW_SAMPLES_16K

log = logging.getLogger(__name__)

_CONTEXT = 64          # silero v5+ prepends the last 64 samples of the previous window
_SUB = 128             # envelope step for the echo check: 8 ms at 16 kHz


def silero_model_path(name: str = "silero_vad.onnx") -> str:
    """Path of a model file shipped in the silero-vad wheel (found without importing the package)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("silero-vad is not installed (pip install silero-vad==6.2.3)")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "data", name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{name} not found in the silero-vad package")


@dataclass
class VadDecision(VadEvent):
    """A :class:`VadEvent` that also says when it was decided (the onset lies ``min_speech`` earlier)."""

    detected_at: int = -1          # 16 kHz stream position at which the decision was made
    echo_similarity: float = 0.0   # residual-echo similarity of the deciding window (0 when not checked)


class SileroOnnx:
    """Stateful silero-vad v5/v6 ONNX model for 16 kHz, one 512-sample window per call."""

    window = VAD_WINDOW_SAMPLES_16K

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(path or silero_model_path(), sess_options=opts,
                                             providers=["CPUExecutionProvider"])
        self._input = np.zeros((1, _CONTEXT + self.window), dtype=np.float32)
        self._sr = np.array(MODEL_INPUT_RATE, dtype=np.int64)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def reset(self) -> None:
        self._input[:] = 0.0
        self._state = np.zeros((2, 1, 128), dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        x = self._input
        x[0, _CONTEXT:] = window
        prob, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        x[0, :_CONTEXT] = x[0, -_CONTEXT:]
        return float(prob[0, 0])


@dataclass
class VadConfig:
    threshold: float = 0.5               # onset probability while the assistant is silent
    min_speech_ms: float = 96.0          # ... held this long (3 windows)
    speaking_threshold: float = 0.6      # onset probability while the assistant speaks
    speaking_min_speech_ms: float = 128.0
    speaking_dip_prob: float | None = 0.0   # while the assistant speaks, one window of a run below the onset
                                            # probability but at least this sure neither counts nor breaks it
                                            # (one per run; None: every such window breaks the run)
    offset_threshold: float = 0.35       # below this for min_silence_ms ends the speech
    min_silence_ms: float = 400.0
    pre_roll_ms: float = 500.0
    echo_check: bool = True
    echo_similarity_max: float = 0.5     # above: the cleaned signal follows the reference (residual echo)
    echo_window_ms: float = 128.0
    echo_max_lag_ms: float = 320.0       # the reference leads its echo by up to this (after the caller's alignment)
    echo_ratio_min_db: float = -25.0     # cleaned/raw energy below this while speaking: residual echo
    history_seconds: float = 3.0         # cleaned audio kept for pre_roll()/history()
    gate_dbfs: float | None = -70.0      # windows quieter than this (RMS) skip the model: probability 0
    near_end_check: bool = True          # while the assistant speaks, also listen to the linear canceller's output
    near_end_margin_db: float = 8.0      # ... its output/microphone ratio must rise this far above the echo floor
    near_end_min_erle_db: float = 12.0   # ... and only once the floor shows this much cancellation
    near_end_min_ratio_db: float = -20.0  # ... and never below this (a user over the echo: -10 to -2 dB)
    near_end_aec_ratio_db: float = -28.0  # ... while AEC3 lets something through too (its output/microphone ratio:
                                          # echo alone -33 to -60 dB, a user over the echo -8 to -15 dB)
    near_end_dominant_db: float | None = 15.0   # this far above the floor, with AEC3 passing
    near_end_dominant_aec_db: float = -15.0     # at least this much, the user dominates both outputs: a likeness
                                                # to the reference does not veto (None: the rule is off)
    near_end_dominant_max_similarity: float | None = 0.75   # ... unless the likeness reaches this (None: any
                                                # likeness is overruled)
    near_end_dominant_max_ratio_db: float | None = -0.75   # ... and only while the linear canceller's output stays
                                                # this far under the microphone: its echo path still holds, so
                                                # what stands out is not a moved echo (None: not asked)
    near_end_dominant_max_excess: float | None = 1.5   # ... and no 10 ms frame of the last 96 ms in which the
                                                # canceller's estimate, subtracted, made the frame this many times
                                                # louder than the microphone (its echo path is wrong: it moved).
                                                # Needs the chain's ``near_excess_16k``; None: not asked


class EchoAwareVad:
    """Streaming, echo-aware VAD (see the module docstring). Feed any number of samples at a time."""

    def __init__(self, config: VadConfig | None = None, model: SileroOnnx | None = None) -> None:
        self.config = config or VadConfig()
        self._model = model or SileroOnnx()
        self._near_model: SileroOnnx | None = None     # the second silero, for the linear canceller's output
        w = VAD_WINDOW_SAMPLES_16K
        self._win = np.zeros(w, dtype=np.float32)
        self._win_ref = np.zeros(w, dtype=np.float32)
        self._win_raw = np.zeros(w, dtype=np.float32)
        self._win_near = np.zeros(w, dtype=np.float32)
        self._win_excess = np.zeros(w, dtype=np.float32)
        c = self.config
        self.echo = ResidualEchoCheck(c)
        self.near_echo = ResidualEchoCheck(c)       # the same check on the linear canceller's output
        self._hist_len = int((c.history_seconds + c.pre_roll_ms / 1000) * MODEL_INPUT_RATE) // 512 * 512 + 512
        self._hist = np.zeros(self._hist_len, dtype=np.float32)
        self.reset()

    # -- life cycle -------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._model.reset()
        if self._near_model is not None:
            self._near_model.reset()
        self._fill = 0
        self._fill_has_ref = False
        self._fill_has_raw = False
        self._fill_has_near = False
        self._fill_has_excess = False
        # (near energy, raw energy, the canceller's largest frame excess) of the latest windows
        self._near_ratio = collections.deque(maxlen=3)
        self._near_floor_db = 0.0      # echo-only level of the linear canceller's output under the microphone
        self.near_prob = 0.0           # silero on the linear output, when it counted (else 0)
        self.near_windows = 0          # windows in which the near-end path found the user
        self._pos = 0                  # samples received
        self._win_pos = 0              # samples consumed into windows
        self._prob = 0.0
        self._in_speech = False
        self._run_start: int | None = None
        self._run_windows = 0
        self._run_echo = 0
        self._run_dipped = False
        self._silence_start: int | None = None
        self._silence_windows = 0
        self._last_onset: int | None = None
        self.echo.reset()
        self.near_echo.reset()
        self._hist[:] = 0.0
        self.echo_similarity = 0.0
        self.echo_ratio_db: float | None = None
        self.windows = 0
        self.gated_windows = 0
        self.echo_rejected_windows = 0
        self._window_probs: collections.deque[tuple[int, float]] = collections.deque(maxlen=512)

    def restart_segmentation(self) -> None:
        """Forget whether speech is going on (the next voiced run is a new onset) but keep the model's state, the
        window alignment and the audio history: a turn was just decided while the user may still be speaking."""
        self._in_speech = False
        self._run_start = None
        self._run_windows = 0
        self._run_echo = 0
        self._run_dipped = False
        self._silence_start = None
        self._silence_windows = 0

    def hold_echo(self, windows: int) -> None:
        """The echo path changed (a new device, a re-alignment): treat the assistant's audio as echo for this many
        windows while the canceller re-converges."""
        self.echo.hold(windows)
        self.near_echo.hold(windows)

    def set_echo_lag_hint(self, lag_ms: float | None) -> None:
        """The caller measured the echo's lag behind the reference it passes (None: estimate it here)."""
        self.echo.lag_hint_ms = lag_ms
        self.near_echo.lag_hint_ms = lag_ms

    def take_window_probs(self) -> list[tuple[int, float]]:
        """``(end position, speech probability)`` of every window completed since the last call."""
        out = list(self._window_probs)
        self._window_probs.clear()
        return out

    # -- contract -----------------------------------------------------------------------------------------------
    @property
    def probability(self) -> float:
        return self._prob

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def position(self) -> int:
        """Samples received so far (the 16 kHz stream position of the next sample)."""
        return self._pos

    def process(self, samples_16k: np.ndarray, assistant_speaking: bool,
                reference_16k: np.ndarray | None = None, *, raw_16k: np.ndarray | None = None,
                near_16k: np.ndarray | None = None, near_excess_16k: np.ndarray | None = None) -> list[VadEvent]:
        """Feed cleaned samples (and optionally the aligned far-end reference, the raw microphone and the linear
        canceller's output, same length; ``near_excess_16k``: per sample, the canceller's
        :attr:`~core.audio.linear_aec.LinearEchoCanceller.excess` of its 10 ms frame). Returns the onsets/offsets
        decided in the windows completed by these samples."""
        x = np.asarray(samples_16k, dtype=np.float32).reshape(-1)
        events: list[VadEvent] = []
        w = VAD_WINDOW_SAMPLES_16K
        i = 0
        n = len(x)
        while i < n:
            k = min(n - i, w - self._fill)
            self._win[self._fill:self._fill + k] = x[i:i + k]
            self._copy_side(self._win_ref, reference_16k, i, k, "_fill_has_ref")
            self._copy_side(self._win_raw, raw_16k, i, k, "_fill_has_raw")
            self._copy_side(self._win_near, near_16k, i, k, "_fill_has_near")
            self._copy_side(self._win_excess, near_excess_16k, i, k, "_fill_has_excess")
            self._fill += k
            i += k
            if self._fill == w:
                self._push_history(self._win)
                self._pos += w
                self._window(assistant_speaking, self._pos, events)
                self._fill = 0
                self._fill_has_ref = False
                self._fill_has_raw = False
                self._fill_has_near = False
                self._fill_has_excess = False
        return events

    def _copy_side(self, dst: np.ndarray, src: np.ndarray | None, i: int, k: int, flag: str) -> None:
        if src is None:
            dst[self._fill:self._fill + k] = 0.0
            return
        part = np.asarray(src[i:i + k], dtype=np.float32)
        dst[self._fill:self._fill + len(part)] = part
        if len(part) < k:
            dst[self._fill + len(part):self._fill + k] = 0.0
        setattr(self, flag, True)

    def pre_roll(self) -> np.ndarray:
        """Cleaned audio just before the latest onset (``pre_roll_ms``); before any onset, the latest audio."""
        n = int(self.config.pre_roll_ms / 1000 * MODEL_INPUT_RATE)
        end = self._last_onset if self._last_onset is not None else self._pos
        return self.history(end - n, end)

    def history(self, start: int, end: int) -> np.ndarray:
        """Cleaned audio between two stream positions, clipped to what is still kept (windows completed only)."""
        start = max(start, self._pos - self._hist_len, 0)
        end = min(end, self._pos)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        n, cap = end - start, self._hist_len
        a = start % cap
        first = min(n, cap - a)
        out = np.empty(n, dtype=np.float32)
        out[:first] = self._hist[a:a + first]
        if first < n:
            out[first:] = self._hist[:n - first]
        return out

    # -- internals ----------------------------------------------------------------------------------------------
    def _push_history(self, win: np.ndarray) -> None:
        """Store the window that starts at stream position ``self._pos`` (ring indexed by absolute position)."""
        w, cap = len(win), self._hist_len
        a = self._pos % cap
        first = min(w, cap - a)
        self._hist[a:a + first] = win[:first]
        if first < w:
            self._hist[:w - first] = win[first:]

    def _echo_like(self) -> bool:
        echo = self.echo.is_echo()
        self.echo_similarity = self.echo.similarity
        self.echo_ratio_db = self.echo.ratio_db
        return echo

    def _near_end(self, speaking: bool) -> float:
        """Silero's probability on the linear canceller's output for this window when that output stands
        ``near_end_margin_db`` above its echo-only floor under the microphone (the user talks over the echo); 0
        otherwise, when the assistant is silent, or before the filter has converged."""
        c = self.config
        self.near_prob = 0.0
        if not (speaking and c.near_end_check and self._fill_has_near and self._fill_has_raw):
            self._near_ratio.clear()
            return 0.0
        near_e = float(np.dot(self._win_near, self._win_near))
        raw_e = float(np.dot(self._win_raw, self._win_raw))
        if raw_e < 1e-7 * len(self._win_raw):          # nothing at the microphone (-70 dBFS): nothing to judge
            return 0.0
        self._near_ratio.append((near_e, raw_e, float(self._win_excess.max()) if self._fill_has_excess else 0.0))
        ratio_db = 10.0 * math.log10((sum(a for a, _, _ in self._near_ratio) + 1e-12)
                                     / (sum(b for _, b, _ in self._near_ratio) + 1e-12))
        self._near_floor_db = min(ratio_db, self._near_floor_db + 0.05)
        self.near_echo.push(self._win_near, self._win_ref if self._fill_has_ref else None, self._win_raw)
        if self._near_floor_db > -c.near_end_min_erle_db:
            return 0.0
        if self._near_model is None:
            self._near_model = SileroOnnx()
        p = self._near_model(self._win_near)   # every window once converged: the model's state stays continuous
        if (ratio_db < max(self._near_floor_db + c.near_end_margin_db, c.near_end_min_ratio_db)
                or p < c.offset_threshold):
            return 0.0
        echo_like = c.echo_check and self.near_echo.is_echo()   # what stands out still follows the reference
        aec = self.echo.current_ratio_db()
        if aec is not None and aec < c.near_end_aec_ratio_db:   # AEC3 found nothing but echo here
            return 0.0
        dominant = (c.near_end_dominant_db is not None and aec is not None and aec >= c.near_end_dominant_aec_db
                    and not self.near_echo.held       # the echo path just moved: what stands out is the echo
                    and ratio_db >= self._near_floor_db + c.near_end_dominant_db
                    and (c.near_end_dominant_max_similarity is None
                         or self.near_echo.similarity < c.near_end_dominant_max_similarity)
                    and (c.near_end_dominant_max_ratio_db is None or ratio_db <= c.near_end_dominant_max_ratio_db)
                    and (c.near_end_dominant_max_excess is None
                         or max(x for _, _, x in self._near_ratio) <= c.near_end_dominant_max_excess))
        if echo_like and not dominant:
            return 0.0
        if echo_like:
            log.debug("near-end window at %d taken as the user's though it follows the reference: ratio %.1f dB "
                      "(floor %.1f), AEC3 %.1f dB, similarity %.2f", self._pos, ratio_db, self._near_floor_db, aec,
                      self.near_echo.similarity)
        self.near_prob = p
        if p >= c.speaking_threshold:
            self.near_windows += 1
            log.debug("near-end speech at %d: p %.2f, ratio %.1f dB (floor %.1f), similarity %.2f", self._pos, p,
                      ratio_db, self._near_floor_db, self.near_echo.similarity)
        return p

    def reset_near_end(self) -> None:
        """The linear canceller starts over (a new echo path): its echo floor must be learned again."""
        self._near_floor_db = 0.0
        self._near_ratio.clear()
        self.near_echo.reset()
        if self._near_model is not None:
            self._near_model.reset()

    def _window(self, speaking: bool, end_pos: int, events: list[VadEvent]) -> None:
        c = self.config
        w = VAD_WINDOW_SAMPLES_16K
        start = end_pos - w
        self.echo.push(self._win, self._win_ref if self._fill_has_ref else None,
                       self._win_raw if self._fill_has_raw else None)
        self.echo_similarity = 0.0
        self.echo_ratio_db = None
        gate = self.config.gate_dbfs
        if gate is not None and self.echo.last_clean_energy() < 10.0 ** (gate / 10.0):
            p = 0.0   # digital/near silence: nothing to classify (saves the model run)
            self.gated_windows += 1
        else:
            p = self._model(self._win)
        p_near = self._near_end(speaking)
        self._prob = max(p, p_near)
        self.windows += 1
        self._window_probs.append((end_pos, self._prob))
        if not self._in_speech:
            thr = c.speaking_threshold if speaking else c.threshold
            min_ms = c.speaking_min_speech_ms if speaking else c.min_speech_ms
            need = max(1, int(math.ceil(min_ms / 1000 * MODEL_INPUT_RATE / w)))
            candidate = p >= thr
            echo_hit = False
            if candidate and speaking and c.echo_check and self._echo_like():
                candidate = False
                echo_hit = True
                self.echo_rejected_windows += 1
            if p_near >= thr:        # the user's voice stands out of the linear canceller's residual echo
                candidate, echo_hit = True, False
            # Over the echo the user's voice has short dips: a softer sound, a window the near-end path refuses.
            # One such window in a run neither counts nor breaks it; a second one breaks it.
            dip = (not candidate and not echo_hit and speaking and self._run_start is not None
                   and not self._run_dipped and c.speaking_dip_prob is not None
                   and self._prob >= c.speaking_dip_prob)
            self._run_dipped = self._run_dipped or dip
            if (echo_hit or dip) and self._run_start is not None and self._run_echo < need:
                # inside a run, an echo-like speech window (the check is noisy in double talk) or a dip neither
                # counts nor breaks it; more than ``need`` of them do
                self._run_echo += 1
            elif candidate:
                if self._run_start is None:
                    self._run_start = start
                    self._run_windows = 0
                    self._run_echo = 0
                self._run_windows += 1
                if self._run_windows >= need:
                    self._in_speech = True
                    self._last_onset = self._run_start
                    self._silence_start = None
                    self._silence_windows = 0
                    events.append(VadDecision("onset", self._run_start, p, end_pos, self.echo_similarity))
                    self._run_start = None
                    self._run_dipped = False
            else:
                self._run_start = None
                self._run_windows = 0
                self._run_echo = 0
                self._run_dipped = False
        else:
            need = max(1, int(math.ceil(c.min_silence_ms / 1000 * MODEL_INPUT_RATE / w)))
            if max(p, p_near) < c.offset_threshold:
                if self._silence_start is None:
                    self._silence_start = start
                    self._silence_windows = 0
                self._silence_windows += 1
                if self._silence_windows >= need:
                    self._in_speech = False
                    events.append(VadDecision("offset", self._silence_start, p, end_pos))
                    self._silence_start = None
            else:
                self._silence_start = None
                self._silence_windows = 0


class ResidualEchoCheck:
    """Is the cleaned signal of the latest window (residual) echo of the reference? See the module docstring.

    The similarity of the cleaned signal to the reference is the correlation of their log band energies (10 bands,
    0-8 kHz, 16 ms every 8 ms) over the last ``echo_window_ms`` (each band's mean removed, so a room's static
    colouring does not matter), at the echo's lag. Echo, even after non-linear suppression, keeps the reference's
    spectro-temporal pattern (similarity 0.8-1); another voice has its own (around 0.2). Across time *and*
    frequency there are enough points that chance matches between two voices stay rare, unlike with a plain
    energy envelope.

    Only the time signals are kept per window (a copy); band energies and the lag are computed when a decision is
    asked for, i.e. only for speech-like windows while the assistant talks, so the check costs nothing otherwise.
    """

    lag_every = 8          # windows between lag re-estimations (256 ms) while decisions are asked for
    lag_history_ms = 1500.0
    floor_decades = 6.0    # log energies are floored 60 dB under the window's loudest band
    silent = 1e-9          # band energy under which the reference counts as silent

    def __init__(self, config: VadConfig) -> None:
        self.config = config
        rate = MODEL_INPUT_RATE / _SUB
        self.max_lag = max(1, int(config.echo_max_lag_ms / 1000 * rate))
        self.window = max(8, int(config.echo_window_ms / 1000 * rate))
        self.long = max(self.window, int(self.lag_history_ms / 1000 * rate))
        self.n = self.long + self.max_lag + 2              # 8 ms steps kept
        self.clean = _SampleRing(self.n * _SUB)
        self.ref = _SampleRing(self.n * _SUB)
        self.raw = _SampleRing(self.n * _SUB)
        self.lag_hint_ms: float | None = None   # set by the caller when it knows the echo delay
        self._taper = np.hanning(_SUB).astype(np.float32)
        self.reset()

    def reset(self) -> None:
        for ring in (self.clean, self.ref, self.raw):
            ring.clear()
        self.raw_valid = 0       # steps of history with a raw microphone / a reference
        self.ref_valid = 0
        self.ref_active_at = -10**9
        self.pushes = 0
        self.clean_power = 0.0
        self._energy = np.zeros((3, 2))     # last 3 windows: (clean, raw) sum of squares
        self._lags: list[int] = []
        self._lag_at = -10**9
        self.lag: int | None = None
        self.hold_until = 0
        self.similarity = 0.0
        self.ratio_db: float | None = None

    def push(self, clean: np.ndarray, ref: np.ndarray | None, raw: np.ndarray | None) -> None:
        m = len(clean) // _SUB
        self.clean.push(clean)
        self.ref.push(ref if ref is not None else None, len(clean))
        self.raw.push(raw if raw is not None else None, len(clean))
        ce = float(np.einsum("i,i->", clean, clean, dtype=np.float64))
        self.clean_power = ce / max(1, len(clean))
        self._energy[:-1] = self._energy[1:]
        self._energy[-1, 0] = ce
        self._energy[-1, 1] = float(np.einsum("i,i->", raw, raw, dtype=np.float64)) if raw is not None else 0.0
        self.raw_valid = min(self.n, self.raw_valid + m) if raw is not None else 0
        self.ref_valid = min(self.n, self.ref_valid + m) if ref is not None else 0
        self.pushes += 1
        if ref is not None and ref.any():
            self.ref_active_at = self.pushes

    def current_ratio_db(self) -> float | None:
        """The cleaned signal's energy relative to the raw microphone's over the last three windows (None: no raw
        microphone, or silence there)."""
        if self.raw_valid < 12:
            return None
        clean_e, raw_e = self._energy.sum(axis=0)
        if raw_e <= 1e-10 * VAD_WINDOW_SAMPLES_16K:
            return None
        return 10.0 * math.log10(max(clean_e, 1e-12) / raw_e)

    def last_clean_energy(self) -> float:
        """Mean square of the latest cleaned window (for the silence gate)."""
        return self.clean_power

    def _bands(self, ring: "_SampleRing", steps: int) -> np.ndarray:
        """Band energies of the newest ``steps`` 8 ms steps, each over 16 ms (this step and the one before):
        tolerant to echo lags between two steps."""
        x = ring.recent((steps + 1) * _SUB).reshape(steps + 1, _SUB) * self._taper
        power = np.abs(np.fft.rfft(x, axis=1)) ** 2
        b = np.add.reduceat(power, _BAND_EDGES[:-1], axis=1)
        return b[1:] + b[:-1]

    def _estimate_lag(self) -> None:
        """Echo lag (in 8 ms steps) from the last 1.5 s: the raw microphone if we have it, else the cleaned one."""
        self._lag_at = self.pushes
        steps = self.long + self.max_lag
        if self.ref_valid < steps + 1:
            return
        ref = self._bands(self.ref, steps)
        if ref.max() <= self.silent:
            return
        sig = self._bands(self.raw if self.raw_valid >= steps + 1 else self.clean, self.long)
        best, lag = _best_lag(sig, ref, self.long, range(0, self.max_lag + 1), self.floor_decades)
        if best > 0.6:
            self._lags = (self._lags + [lag])[-3:]
            self.lag = int(np.median(self._lags))

    def hold(self, windows: int) -> None:
        """The echo path just changed (a lost block, an underrun, a re-alignment): forget the lag and treat every
        speech-like window while the reference plays as echo for the next ``windows`` windows, while the echo
        canceller re-converges. Barge-in is impossible meanwhile; false barge-ins too."""
        self._lags = []
        self.lag = None
        self._lag_at = -10**9
        self.hold_until = max(self.hold_until, self.pushes + int(windows))

    @property
    def held(self) -> bool:
        """Within a :meth:`hold`: the echo path moved a moment ago."""
        return self.pushes < self.hold_until

    def _lags_to_try(self) -> range:
        lag = self.lag
        if lag is None and self.lag_hint_ms is not None:
            lag = int(round(self.lag_hint_ms / 1000 * MODEL_INPUT_RATE / _SUB))
        if lag is None:
            return range(0, self.max_lag + 1)
        return range(max(0, lag - 2), min(self.max_lag, lag + 2) + 1)

    def is_echo(self) -> bool:
        c = self.config
        echo = False
        self.similarity = 0.0
        self.ratio_db = None
        w = self.window
        recent_ref = self.pushes - self.ref_active_at <= (w + self.max_lag) * _SUB // VAD_WINDOW_SAMPLES_16K + 1
        if recent_ref and self.pushes < self.hold_until:
            self.similarity = 1.0
            return True
        if recent_ref:
            if self.pushes - self._lag_at >= self.lag_every:
                self._estimate_lag()
            lags = self._lags_to_try()
            usable = range(lags.start, min(lags.stop, self.ref_valid - w))
            if len(usable) == 0:
                echo = True    # the reference just started: too little history to tell, so assume echo
                self.similarity = 1.0
            else:
                ref = self._bands(self.ref, w + usable.stop - 1)
                if ref.max() > self.silent:
                    self.similarity, _ = _best_lag(self._bands(self.clean, w), ref, w, usable, self.floor_decades)
                    echo = self.similarity > c.echo_similarity_max
        if self.raw_valid >= 12:
            clean_e, raw_e = self._energy.sum(axis=0)
            if raw_e > 1e-10 * VAD_WINDOW_SAMPLES_16K:
                self.ratio_db = 10.0 * math.log10(max(clean_e, 1e-12) / raw_e)
                echo = echo or self.ratio_db < c.echo_ratio_min_db
        return echo


class _SampleRing:
    """The newest samples of a signal (zeros before anything was written)."""

    def __init__(self, size: int) -> None:
        self.buf = np.zeros(size, dtype=np.float32)
        self.size = size
        self.pos = 0

    def clear(self) -> None:
        self.buf[:] = 0.0
        self.pos = 0

    def push(self, x: np.ndarray | None, n: int | None = None) -> None:
        n = len(x) if x is not None else int(n or 0)
        a = self.pos % self.size
        first = min(n, self.size - a)
        if x is None:
            self.buf[a:a + first] = 0.0
            self.buf[:n - first] = 0.0
        else:
            self.buf[a:a + first] = x[:first]
            self.buf[:n - first] = x[first:n]
        self.pos += n

    def recent(self, n: int) -> np.ndarray:
        a = (self.pos - n) % self.size
        if a + n <= self.size:
            return self.buf[a:a + n]
        return np.concatenate([self.buf[a:], self.buf[:a + n - self.size]])


# 10 bands over a 128-point spectrum at 16 kHz (125 Hz bins): narrow at the bottom, wide at the top
_BAND_EDGES = np.array([0, 2, 4, 6, 9, 13, 18, 26, 36, 48, 65])


def _log_floor(x: np.ndarray, decades: float) -> np.ndarray:
    top = float(x.max())
    return np.log10(np.maximum(x, max(top * 10.0 ** -decades, 1e-14)))


def _best_lag(x: np.ndarray, ref: np.ndarray, w: int, lags: range, decades: float) -> tuple[float, int]:
    """Highest correlation between the log band energies ``x`` (the newest ``w`` steps, shape (w, bands)) and
    ``ref`` delayed by each lag (``ref[len - w - lag : len - lag]``), each band's mean removed. Returns
    (correlation, lag); (0, first lag) when ``x`` is flat, -1 for a silent or flat reference."""
    n = len(ref)
    lo, hi = lags.start, lags.stop - 1
    xl = _log_floor(x, decades)
    xc = xl - xl.mean(axis=0)
    xn = math.sqrt(float(np.einsum("ij,ij->", xc, xc)))
    if xn <= 1e-9:
        return 0.0, lo
    seg = ref[n - w - hi:n - lo]                       # every lag's window lies in here
    if seg.max() <= 1e-12:
        return -1.0, lo
    rl = _log_floor(seg, decades)
    views = sliding_window_view(rl, w, axis=0)[::-1]   # (lags, bands, w); row k is lag lo + k
    rc = views - views.mean(axis=2, keepdims=True)
    rn = np.sqrt(np.einsum("kbt,kbt->k", rc, rc))
    dots = np.einsum("kbt,tb->k", rc, xc)
    corr = np.where(rn > 1e-9, dots / np.maximum(rn, 1e-12) / xn, -1.0)
    k = int(np.argmax(corr))
    return float(corr[k]), lo + k
