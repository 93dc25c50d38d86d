"""CPU of the Lite app's live path while it listens (the assistant silent), as one JSON line.

Builds the app's real ``LiveStack`` from default settings (Lite), starts listening on the default PulseAudio
devices, waits for the streams to settle, then measures the process's CPU seconds per wall second over
``--seconds``, and silero's share of it (its ``InferenceSession.run`` calls, counted and timed in thread CPU).
``--noise-dbfs`` plays pink noise into the default sink meanwhile (with the test loop, ``scripts/testenv.sh start``,
that is the microphone): over digital silence the VAD's energy gate skips silero, so only a noisy input shows
what the VAD costs in a real room.

    eval "$(scripts/testenv.sh start)"
    .venv/bin/python scripts/bench_live_cpu.py --seconds 30 --noise-dbfs -47

Run it from a checkout's root: that checkout's code is measured (so two trees can be compared with one venv).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--settle", type=float, default=8.0, help="seconds to wait after starting (streams, warm-up)")
    ap.add_argument("--noise-dbfs", type=float, default=None, help="play pink noise at this RMS level meanwhile")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    import onnxruntime as ort

    calls: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    run = ort.InferenceSession.run

    def counted(self, *a, **k):
        t = time.thread_time()
        try:
            return run(self, *a, **k)
        finally:
            entry = calls[os.path.basename(getattr(self, "_model_path", None) or "?")]
            entry[0] += 1
            entry[1] += time.thread_time() - t

    ort.InferenceSession.run = counted

    from core.settings import Settings

    try:
        from core.compose.live import LiveStack
    except ImportError:   # trees before the live path moved into core
        from app.engine_stack import LiveStack

    settings = Settings()
    settings.model.profile = "lite"
    stack = LiveStack(settings)
    player = None
    with tempfile.TemporaryDirectory(prefix="parley-cpu-") as tmp:
        try:
            stack.start_listening()
            if args.noise_dbfs is not None:
                import soundfile as sf

                from core.audio.bench import room_noise

                path = os.path.join(tmp, "noise.wav")
                sf.write(path, room_noise(args.settle + args.seconds + 5.0, args.noise_dbfs), 16000)
                player = subprocess.Popen(["paplay", path])
            time.sleep(args.settle)
            calls.clear()
            t0, c0 = time.monotonic(), os.times()
            time.sleep(args.seconds)
            t1, c1 = time.monotonic(), os.times()
        finally:
            if player is not None:
                player.kill()
            stack.close()
    wall = t1 - t0
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    print(json.dumps({"bench": "live_cpu", "tree": os.getcwd(), "noise_dbfs": args.noise_dbfs,
                      "window_s": round(wall, 1), "cpu_fraction": round(cpu / wall, 4),
                      "onnx_runs": {k: {"calls": v[0], "cpu_fraction": round(v[1] / wall, 4)}
                                    for k, v in calls.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
