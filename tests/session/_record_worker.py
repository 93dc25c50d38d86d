"""A process that records a synthetic conversation in real time, for kill and disk-full tests.

    python _record_worker.py FOLDER [--seconds S] [--fsize-limit BYTES]

Prints one JSON line ``{"ready": ...}`` once audio is flowing, and at the end ``{"done": ..., "failed": ...,
"problems": [...]}``. With ``--fsize-limit`` the process gets RLIMIT_FSIZE (SIGXFSZ ignored), so a write past the
limit fails with EFBIG the way a full disk fails with ENOSPC.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.engine.events import event_from_dict  # noqa: E402
from core.session.recorder import SessionRecorder  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--fsize-limit", type=int)
    ap.add_argument("--sync", type=float, default=0.05)
    args = ap.parse_args()
    if args.fsize_limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize_limit, args.fsize_limit))
    problems: list[dict] = []
    rec = SessionRecorder(args.folder, profile="synthetic", sync_interval_s=args.sync, meta_interval_s=0.2,
                          on_problem=lambda ev: problems.append(ev.to_dict()))
    rec.start()
    rng = np.random.default_rng(0)
    t0 = time.monotonic()
    block = 0
    turn = 0
    ready = False
    while time.monotonic() - t0 < args.seconds:
        t = block * 0.01
        rec.write_mic_raw(rng.uniform(-0.1, 0.1, 480).astype(np.float32), 48_000, t=t)
        rec.write_mic_clean(rng.uniform(-0.1, 0.1, 160).astype(np.float32), t=t)
        rec.write_playback(np.full(240, 0.05, np.float32), 24_000, t=t)
        if block % 50 == 0:
            turn += 1
            rec.on_event(event_from_dict({"type": "turn_decision", "t": t, "turn": turn, "state": "ss"}))
            rec.on_event(event_from_dict({"type": "user_text", "t": t, "turn": turn, "text": f"question {turn}", "final": True}))
        rec.write_assistant(np.full(240, 0.05, np.float32), 24_000, turn=turn, t=t)
        rec.on_event(event_from_dict({"type": "assistant_text", "t": t, "turn": turn, "text": f"w{block} "}))
        block += 1
        if not ready and block == 30:
            ready = True
            print(json.dumps({"ready": str(rec.path)}), flush=True)
        # real time: 10 ms per block
        delay = t0 + block * 0.01 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    rec.close()
    print(json.dumps({"done": True, "failed": rec.failed, "error": rec.error, "problems": problems,
                      "blocks": block}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
