"""File mode and live mode make the same decisions on one conversation (issue 13, item 6).

The same script is spoken twice by the scripted user: once in file mode (``run_conversation``, the virtual clock),
once live, into the app's stack (``core.compose.live.LiveStack``: AudioIO on the PulseAudio null sink, the capture
chain, the engine on its own thread, Lite with the app's default settings) in real time. Live, the user's voice is
played into a private null sink with ``pacat`` while the assistant plays into the same sink, so the microphone (the
sink's monitor) hears both, echo included; the user is told when the assistant is audible from the engine's own
per-chunk ``levels`` events, as in file mode. Both runs are scored with the harness, and every utterance must come
out the same way: answered or not, interrupting or not, left in the transcript or not.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))   # tests/app/_loop.py
from _loop import private_loop  # noqa: E402
from _shared import require_espeak, require_lite_weights  # noqa: E402

from core.harness import ScriptedInput, ScriptedUser, parse_script, read_events, score  # noqa: E402

pytestmark = [pytest.mark.audio, pytest.mark.slow]

RATE = 16_000
BLOCK = 320                      # 20 ms of the user's voice per write
SCRIPT = {
    "name": "live_vs_file",
    "description": "A question, a story with a backchannel over it, and a barge-in question.",
    "voice": "en-us",
    "utterances": [
        {"id": "france", "text": "What is the capital of France?", "timing": {"at_s": 1.0}, "expect": "answered",
         "keywords": {"any": ["paris"]}},
        {"id": "story", "text": "Tell me a long story about a dragon.", "timing": {"after": "answer_end", "delay_s": 1.0},
         "expect": "answered"},
        {"id": "bc", "text": "mm-hm", "voice": "en-us+f3", "timing": {"after": "answer_start", "delay_s": 2.5},
         "expect": "ignored"},
        {"id": "japan", "text": "Stop. What is the capital of Japan?", "voice": "en-gb-x-rp",
         "timing": {"after": "previous_end", "delay_s": 2.0}, "expect": "interrupts", "keywords": {"any": ["tokyo"]}},
    ],
}


def _outcome(report: dict) -> list[tuple]:
    return [(u["id"], u["spoken"], u["answered"], u["interrupted"], u["left_in_transcript"])
            for u in report["utterances"]]


@pytest.fixture(scope="module")
def loop():
    if not shutil.which("pacat"):
        pytest.skip("pacat not found (apt-get install pulseaudio-utils)")
    yield from private_loop("conversation", "paplay")


@pytest.fixture(scope="module")
def needs():
    require_espeak()
    require_lite_weights()


def _file_run(tmp: Path) -> dict:
    from core.compose.build import build_backend, engine_config, vad_config
    from core.compose.spec import spec_from_settings
    from core.engine.filemode import run_conversation
    from core.settings import Settings

    app = Settings()
    spec = spec_from_settings(app)
    config = engine_config(app)
    backend = build_backend(spec, config)
    try:
        script = parse_script(SCRIPT)
        user = ScriptedUser(script)
        run_conversation(backend, ScriptedInput(user), tmp / "file.wav", events_path=tmp / "file.jsonl",
                         config=config, system_prompt=spec.system_prompt, vad=vad_config(app))
    finally:
        backend.close()
    return score(script, user.timeline(), read_events(tmp / "file.jsonl"))


def _live_run(loop, tmp: Path, limit_s: float = 150.0) -> dict:
    from core.compose.live import LiveStack
    from core.engine.events import StateChange, VadLevel
    from core.settings import Settings

    stack = LiveStack(Settings())
    events: list[dict] = []
    audible = threading.Event()
    listening = threading.Event()

    def on_event(ev) -> None:
        if isinstance(ev, VadLevel):
            (audible.set if ev.assistant_audible else audible.clear)()
        if isinstance(ev, StateChange) and ev.state == "listening":
            listening.set()
        try:
            events.append(ev.to_dict())
        except Exception:  # noqa: BLE001 - UI-only events (meters) have no record form
            pass

    stack.subscribe(on_event)
    player = None
    try:
        stack.start_listening()
        assert stack.audio.wait_running(20.0), f"audio did not start ({stack.audio.state})"
        assert listening.wait(60.0), "the engine did not start listening"
        time.sleep(2.5)                       # the first input callback can come ~2 s after the start
        script = parse_script(SCRIPT)
        user = ScriptedUser(script)
        player = subprocess.Popen(["pacat", "--playback", f"--device={loop.name}", "--format=float32le",
                                   f"--rate={RATE}", "--channels=1", "--latency-msec=30"], stdin=subprocess.PIPE)

        def paced(block_at, limit: float) -> None:
            """Write ``block_at(t)`` (None: stop) at real-time pace from now."""
            wall0, t = time.monotonic(), 0.0
            while t < limit and (block := block_at(t)) is not None:
                player.stdin.write(block.astype("<f4").tobytes())
                t += BLOCK / RATE
                ahead = t - (time.monotonic() - wall0)
                if ahead > 0.06:                   # keep about 60 ms queued, no more: the user reacts in time
                    time.sleep(ahead - 0.06)

        def user_at(t: float):
            if user.done(t):
                return None
            user.assistant_audio(t, audible.is_set())
            return user.block(t, BLOCK)

        # a second of silence first, so that pacat has connected and its stream flows before the user's t = 0
        paced(lambda t: np.zeros(BLOCK, dtype=np.float32), 1.0)
        offset = stack.clock.now() + 0.09          # the session time of the user's t = 0 (the queue and pacat)
        paced(user_at, limit_s)
        player.stdin.close()
        player.wait(10)
        time.sleep(1.0)
    finally:
        if player is not None and player.poll() is None:
            player.kill()
        stack.close()
    (tmp / "live.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    return score(script, user.timeline(), events, offset_s=offset)


def test_file_mode_and_live_mode_decide_the_same(loop, needs, tmp_path):
    file_report = _file_run(tmp_path)
    live_report = _live_run(loop, tmp_path)
    print("\nfile:", json.dumps(_outcome(file_report)), "\nlive:", json.dumps(_outcome(live_report)))
    print("live transcripts:", [u["transcript"] for u in live_report["utterances"]])
    assert all(u["spoken"] for u in live_report["utterances"])
    assert _outcome(live_report) == _outcome(file_report)
    # the conversation itself went right in both: the question answered, the story told, the backchannel
    # ignored, the barge-in interrupting the story
    for report in (file_report, live_report):
        france, story, bc, japan = report["utterances"]
        assert france["answered"] and story["answered"] and japan["interrupted"]
        assert not (bc["interrupted"] or bc["answered"] or bc["left_in_transcript"])
