"""A scripted user: speaks a :class:`~core.harness.script.ConversationScript` block by block, reacting to whether
the assistant is audible, and records when each utterance was really spoken.

The driver of a conversation calls, for every block (any size, consecutive session times)::

    user.assistant_audio(t, audible)   # is the assistant audible at session time t (from the sink)?
    audio = user.block(t, n)           # the user's voice for [t, t + n / rate)

and stops when ``user.done(t)`` (and the engine is idle). :class:`ScriptedInput` adapts it to file mode's user
input protocol (sample positions). ``timeline()`` then says when each utterance and each of
its parts was spoken, which anchor started it, whether an answer anchor timed out, and how much of it overlapped
the assistant's speech. Everything is deterministic: the same script and the same audible sequence give the same
audio and timeline.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from core.constants import MODEL_INPUT_RATE
from core.harness.script import ConversationScript, Utterance
from core.harness.voices import render


@functools.lru_cache(maxsize=256)
def _speech(text: str, voice: str, speed: int, level_dbfs: float) -> np.ndarray:
    audio = render(text, voice=voice, speed=speed, level_dbfs=level_dbfs)
    audio.setflags(write=False)
    return audio


def cough(seconds: float, level_dbfs: float, seed: int, rate: int = MODEL_INPUT_RATE) -> np.ndarray:
    """A cough-like noise: two band-passed (300 Hz - 3 kHz) noise bursts, a strong one and a weaker echo of it,
    each with a 10 ms attack and an exponential decay, scaled to RMS ``level_dbfs``."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng([seed, 0xC0F])
    n = max(1, int(seconds * rate))
    sos = butter(2, [300, 3000], btype="bandpass", fs=rate, output="sos")
    noise = sosfilt(sos, rng.standard_normal(n))
    t = np.arange(n) / rate
    second = 0.45 * seconds

    def burst(t0: float, decay: float) -> np.ndarray:
        dt = t - t0
        return np.where(dt < 0, 0.0, np.minimum(1.0, dt / 0.01) * np.exp(-np.maximum(dt, 0) / decay))

    x = noise * (burst(0.0, seconds / 5) + 0.5 * burst(second, seconds / 6))
    x *= 10 ** (level_dbfs / 20) / (np.sqrt(np.mean(x ** 2)) + 1e-12)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


@dataclass
class _Rendered:
    audio: np.ndarray
    parts: list[tuple[int, int]]          # (start, end) sample offsets of each part inside ``audio``


@dataclass
class _Record:
    utterance: Utterance
    index: int
    anchor_t: float | None = None
    timed_out: bool = False
    start: int | None = None              # session samples
    end: int | None = None
    audible_at_start: bool | None = None
    overlap: int = 0                      # samples spoken while the assistant was audible
    parts: list[tuple[int, int]] = field(default_factory=list)


class ScriptedUser:
    """See the module docstring. ``rate`` is the block rate (16 kHz)."""

    def __init__(self, script: ConversationScript, rate: int = MODEL_INPUT_RATE) -> None:
        self.script = script
        self.rate = int(rate)
        self._rendered = [self._render(i, u) for i, u in enumerate(script.utterances)]
        self._records = [_Record(u, i) for i, u in enumerate(script.utterances)]
        self._next = 0                     # the utterance waiting for its turn to be spoken
        self._playing: _Record | None = None
        self._start_at: float | None = None   # resolved start of the waiting utterance (session seconds)
        self._ref = 0.0                    # anchors count from here: the end of the previous utterance
        self._seen_audible = False         # the assistant was audible since _ref
        self._audible = False
        self._last_audible_t: float | None = None

    # ------------------------------------------------------------------------------------------------------------

    def _render(self, index: int, u: Utterance) -> _Rendered:
        level = self.script.level_dbfs + u.level_db
        if u.sound == "cough":
            audio = cough(u.duration_s, level, seed=index, rate=self.rate)
            return _Rendered(audio, [(0, len(audio))])
        pieces, spans, pos = [], [], 0
        for part in u.parts:
            gap = int(round(part.pause_before_s * self.rate))
            if gap:
                pieces.append(np.zeros(gap, np.float32))
                pos += gap
            speech = _speech(part.text, u.voice, u.speed, level)
            if self.rate != MODEL_INPUT_RATE:
                from core.audio.resample import resample

                speech = resample(speech, MODEL_INPUT_RATE, self.rate)
            pieces.append(speech)
            spans.append((pos, pos + len(speech)))
            pos += len(speech)
        return _Rendered(np.concatenate(pieces).astype(np.float32), spans)

    def utterance_audio(self, index: int) -> np.ndarray:
        """The rendered audio of one utterance (pauses included)."""
        return self._rendered[index].audio.copy()

    # ------------------------------------------------------------------------------------------------------------

    def assistant_audio(self, t: float, audible: bool) -> None:
        """Whether the assistant is audible at session time ``t``."""
        self._audible = bool(audible)
        if audible:
            self._last_audible_t = t
            if t >= self._ref - 1e-9:
                self._seen_audible = True
            if (self._playing is None and self._next < len(self._records) and self._start_at is not None
                    and self._records[self._next].utterance.timing.after == "answer_end"
                    and not self._records[self._next].timed_out):
                # the answer went on after a short gap: wait for its real end
                self._start_at = None
                self._records[self._next].anchor_t = None
        self._resolve(t)

    def _resolve(self, t: float) -> None:
        """Work out when the waiting utterance starts, as far as it is known at ``t``."""
        if self._playing is not None or self._next >= len(self._records) or self._start_at is not None:
            return
        rec = self._records[self._next]
        timing = rec.utterance.timing
        if timing.at_s is not None:
            self._start_at = max(timing.at_s, self._ref)
        elif timing.after == "previous_end":
            self._start_at = self._ref + timing.delay_s
        else:
            fired = (self._audible if timing.after == "answer_start" else self._seen_audible and not self._audible)
            if fired and t >= self._ref - 1e-9:
                rec.anchor_t = round(t, 6)
                self._start_at = t + timing.delay_s
            elif t >= self._ref + (timing.effective_timeout_s or 0.0):
                rec.timed_out = True
                self._start_at = t

    def block(self, t: float, n: int) -> np.ndarray:
        """The user's audio for ``[t, t + n / rate)`` (float32, silence where the user says nothing)."""
        out = np.zeros(int(n), np.float32)
        s0 = int(round(t * self.rate))
        end = s0 + int(n)
        pos = s0
        while pos < end:
            if self._playing is None:
                self._resolve(pos / self.rate)
                if self._start_at is None:
                    break
                start = max(int(round(self._start_at * self.rate)), pos)
                if start >= end:
                    break
                self._begin(start)
                pos = start
            rec = self._playing
            assert rec is not None and rec.start is not None
            audio = self._rendered[rec.index].audio
            offset = pos - rec.start
            take = min(end - pos, len(audio) - offset)
            out[pos - s0:pos - s0 + take] = audio[offset:offset + take]
            if self._audible:
                rec.overlap += take
            pos += take
            if offset + take >= len(audio):
                self._finish(rec, pos)
        return out

    def _begin(self, start: int) -> None:
        rec = self._records[self._next]
        rec.start = start
        rec.audible_at_start = self._audible
        rec.parts = [(start + a, start + b) for a, b in self._rendered[rec.index].parts]
        self._playing = rec
        self._start_at = None

    def _finish(self, rec: _Record, end: int) -> None:
        rec.end = end
        self._playing = None
        self._next += 1
        self._ref = end / self.rate
        self._seen_audible = False

    # ------------------------------------------------------------------------------------------------------------

    def done(self, t: float) -> bool:
        """Every utterance spoken, and the last one had time to be answered: the assistant spoke after it (unless
        it is to be ignored) and has been quiet for ``tail_s``; or ``answer_timeout_s`` passed since it ended."""
        if self._playing is not None or self._next < len(self._records):
            return False
        last = self._records[-1]
        last_end = last.end / self.rate
        since = t - last_end
        if since >= self.script.answer_timeout_s:
            return True
        if since < self.script.tail_s or self._audible:
            return False
        answered = self._last_audible_t is not None and self._last_audible_t >= last_end
        if last.utterance.expect != "ignored" and not answered:
            return False
        quiet_since = max(last_end, self._last_audible_t or 0.0)
        return t - quiet_since >= self.script.tail_s

    def timeline(self) -> list[dict]:
        """One dict per utterance (times in session seconds; ``start_s`` None when it was not spoken)."""
        r = self.rate
        out = []
        for rec in self._records:
            u = rec.utterance
            out.append({
                "id": u.id, "index": rec.index, "text": u.spoken_text, "sound": u.sound, "label": u.label,
                "expect": u.expect, "voice": u.voice, "speed": u.speed,
                "keywords": {"any": list(u.keywords_any), "all": list(u.keywords_all)},
                "timing": u.timing.to_dict(), "anchor_t": rec.anchor_t, "timed_out": rec.timed_out,
                "start_s": None if rec.start is None else round(rec.start / r, 4),
                "end_s": None if rec.end is None else round(rec.end / r, 4),
                "parts": [{"text": p.text, "start_s": round(a / r, 4), "end_s": round(b / r, 4)}
                          for p, (a, b) in zip(u.parts, rec.parts)],
                "assistant_audible_at_start": rec.audible_at_start,
                "overlap_s": round(rec.overlap / r, 3),
            })
        return out


class ScriptedInput:
    """A :class:`ScriptedUser` seen as file mode's user input (``core.engine.filemode.UserInput``: sample
    positions instead of times, ``ended`` when the script is done), for ``run_conversation(backend,
    ScriptedInput(user), ..., room=EchoRoom(...))``."""

    def __init__(self, user: ScriptedUser) -> None:
        self.user = user

    def block(self, start: int, n: int) -> np.ndarray:
        return self.user.block(start / self.user.rate, n)

    def ended(self, position: int) -> bool:
        return self.user.done(position / self.user.rate)

    def assistant_audible(self, t: float, audible: bool) -> None:
        self.user.assistant_audio(t, audible)
