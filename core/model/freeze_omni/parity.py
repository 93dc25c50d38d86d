"""The tiny parity fixture: how it is run, and how a run compares with what the official code recorded for it.

The fixture (``freeze_omni_tiny_a``, found through ``PARLEY_FIXTURES`` or ``<repo>/../shared/fixtures``) is a small,
randomly initialised Freeze-Omni in the official checkpoint layout with two inputs and every intermediate value the
official implementation computed for them on a CPU in float32 (``expected/``). The model tests, ``parley bench model``
and the GPU check (``gpu_check.py``) all run it through the functions here, so "parity" means the same thing on every
device: see docs/freeze-omni.md, "Parity fixture".
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from core.constants import CHUNK_SAMPLES_16K

FIXTURE_NAME = "freeze_omni_tiny_a"
FIXTURE_ROLE = "You are a helpful assistant."
STRICT_TOLERANCE = 1e-4   # float32 parity: every compared array within this (max abs), ids exactly equal
FIRST_TOKENS = 4          # reduced precision: the turn decisions and this many first reply tokens must match


def default_fixture() -> Path:
    """``PARLEY_FIXTURES/freeze_omni_tiny_a`` or ``<repo>/../shared/fixtures/freeze_omni_tiny_a``."""
    root = os.environ.get("PARLEY_FIXTURES")
    base = Path(root) if root else Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures"
    return (base / FIXTURE_NAME).resolve()


def fixture_settings() -> Any:
    """The recording's reply settings: greedy LLM (top-k 1) and decoder, codec windows 8/2, N 2401, threshold 0.01,
    the offline sentence rule, at most 128 reply tokens."""
    from core.model.freeze_omni.audiollm import SamplingSettings
    from core.model.freeze_omni.pipeline import ReplySettings
    from core.model.freeze_omni.streaming import StreamOptions

    return ReplySettings(sampling=SamplingSettings(temperature=0.7, top_k=1, top_p=0.8, max_tokens=128),
                         decoder_top_k=1, stream=StreamOptions(chunk_size=8, padding=2, window=2401, threshold=0.01),
                         segmentation="offline")


def listen_until_decided(pipe: Any, wave_16k: np.ndarray, role: str | None = FIXTURE_ROLE) -> tuple[Any, list[Any]]:
    """New dialogue with ``role``, then 160 ms chunks until the state head says 'ss' or 'el' (or the audio ends).
    Returns (state after the last chunk, the listen steps)."""
    state, _ = pipe.new_dialogue(role)
    state = pipe.start_turn(state)
    steps = []
    for i in range(wave_16k.size // CHUNK_SAMPLES_16K):
        step = pipe.listen(state, wave_16k[i * CHUNK_SAMPLES_16K:(i + 1) * CHUNK_SAMPLES_16K])
        steps.append(step)
        state = step.state
        if step.decision != "cl":
            break
    return state, steps


def _max_abs(a: Any, b: np.ndarray) -> float:
    import torch

    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


def compare_with_fixture(pipe: Any, fixture: Path | None = None, strict: bool = True,
                         tolerance: float = STRICT_TOLERANCE, first_tokens: int = FIRST_TOKENS) -> dict[str, Any]:
    """Run the fixture's listen, generate and reply paths on ``pipe`` (any device and dtype) and compare them with
    the recorded results. Returns a JSON-ready dict: ``status`` ("pass"/"fail"), ``failures`` (what did not
    match), the turn decisions, token and codec-token matches, and the largest differences per array.

    ``strict`` (float32): decisions, reply tokens and codec tokens equal and every array within ``tolerance``, as
    the CPU tests demand. Otherwise (16-bit): the decisions of both inputs and the first ``first_tokens`` reply
    tokens must match; the differences are reported only."""
    import torch

    fixture = fixture or default_fixture()
    expected = fixture / "expected"
    meta = json.loads((expected / "meta.json").read_text(encoding="utf-8"))

    def ref(name: str) -> dict[str, np.ndarray]:
        with np.load(expected / f"{name}.npz") as data:
            return {k: data[k] for k in data.files}

    failures: list[str] = []
    diffs: dict[str, float] = {}

    def diff(name: str, value: float) -> None:
        diffs[name] = max(diffs.get(name, 0.0), value)

    out: dict[str, Any] = {"device": str(pipe.audiollm.device), "dtype": str(pipe.audiollm.dtype).replace("torch.", ""),
                           "strict": strict}
    with torch.inference_mode():
        # -- listening: both inputs, honouring the state head as the recording did -------------------------------
        decisions: dict[str, Any] = {}
        listened = None
        for name, key in (("listen", "main"), ("el_listen", "el_variant")):
            r = ref(name)
            state, steps = listen_until_decided(pipe, r["wav_input"])
            got, want = [s.decision for s in steps], meta[key]["stat_sequence"]
            decisions[name] = {"got": got, "expected": want, "match": got == want}
            if got != want:
                failures.append(f"{name}: turn decisions {got} != {want}")
            for i, step in enumerate(steps[:len(r["encoder_out"])]):
                diff("encoder_out", _max_abs(step.encoder_out[0], r["encoder_out"][i]))
                diff("adapter_out", _max_abs(step.embeddings[0], r["adapter_out"][i]))
                diff("state_probs", _max_abs(step.probs, r["state_probs"][i]))
                diff("llm_hidden_listen", _max_abs(step.hidden[0], r["llm_last_hidden"][i]))
            if name == "listen":
                listened = state
        out["decisions"] = decisions

        # -- the reply's LLM tokens ---------------------------------------------------------------------------------
        g = ref("generate")
        settings = fixture_settings()
        steps = list(pipe.generate(listened, settings.sampling))
        tokens, want_tokens = [s.token for s in steps], g["gen_token_ids"].tolist()
        for i, step in enumerate(steps[:len(want_tokens)]):
            diff("llm_logits", _max_abs(step.logits, g["llm_logits"][i]))
            if i < len(g["gen_hidden"]) and not step.is_end:
                diff("llm_hidden_reply", _max_abs(step.hidden[0], g["gen_hidden"][i]))
        same_prefix = next((i for i, (a, b) in enumerate(zip(tokens, want_tokens)) if a != b),
                           min(len(tokens), len(want_tokens)))
        out["tokens"] = {"got": tokens, "expected": want_tokens, "matching_prefix": same_prefix}
        if strict and tokens != want_tokens:
            failures.append(f"reply tokens differ from token {same_prefix} on")
        if not strict and same_prefix < min(first_tokens, len(want_tokens)):
            failures.append(f"the first {first_tokens} reply tokens differ (only {same_prefix} match)")

    # -- speech: segments, codec tokens and the waveform ----------------------------------------------------------
    state, _ = listen_until_decided(pipe, ref("listen")["wav_input"])
    events = list(pipe.reply(state, settings, torch.Generator().manual_seed(0)))
    segments = [e.segment for e in events if e.kind == "segment_end" and e.segment is not None]
    want_codes = [ref(f"segment{k}")["codec_tokens"].tolist() for k in range(len(meta["main"]["segments"]))]
    got_codes = [s.codec_tokens for s in segments]
    out["codec_tokens_match"] = got_codes == want_codes
    pieces = [e.audio for e in events if e.kind == "audio" and e.audio is not None]
    wave = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    want_wave = np.load(expected / "final_wave.npy")
    out["wave_samples"] = {"got": int(wave.size), "expected": int(want_wave.size)}
    diff("final_wave", _max_abs(wave, want_wave))
    if strict:
        if got_codes != want_codes:
            failures.append("codec tokens differ")
        for name, value in diffs.items():
            if not value <= tolerance:
                failures.append(f"{name}: max abs difference {value:.3g} > {tolerance:g}")
    out["max_abs_diff"] = {k: (round(v, 9) if np.isfinite(v) else str(v)) for k, v in diffs.items()}
    out["tolerance"] = tolerance if strict else None
    out["failures"] = failures
    out["status"] = "fail" if failures else "pass"
    return out
