"""A headless live conversation: the app's live stack (``core.compose.live.LiveStack``: AudioIO on the real
devices, the Engine on its one loop, the backend) recording itself, for the live recording acceptance test.

    python tests/session/_live_driver.py SESSION_DIR [--profile lite|freeze-omni] [--seconds 120]
        [--checkpoint DIR --llm DIR]        (freeze-omni: the weights, e.g. the tiny parity fixture)

Prints JSON lines on stdout: ``{"ready": ...}`` once the model is loaded, the audio streams run and the engine
listens; ``{"done": ...}`` after a clean stop (``--seconds`` elapsed or SIGTERM). The test kills it with SIGKILL.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("session")
    ap.add_argument("--profile", default="lite")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--checkpoint")
    ap.add_argument("--llm")
    args = ap.parse_args()

    from core.log import setup_logging
    from core.runtime import configure_torch_threads, force_offline

    setup_logging("INFO", console=True, file=False)
    force_offline()

    from core.compose.live import LiveStack
    from core.engine.events import StateChange
    from core.settings import Settings

    settings = Settings()
    settings.model.profile = args.profile
    settings.sampling.greedy = True
    if args.profile == "freeze-omni":
        settings.model.checkpoint_dir, settings.model.backbone_dir = args.checkpoint or "", args.llm or ""
        settings.model.device, settings.model.precision = "cpu", "fp32"
    stack = LiveStack(settings)
    configure_torch_threads()
    listening = threading.Event()
    stack.subscribe(lambda ev: listening.set() if isinstance(ev, StateChange) and ev.state == "listening" else None)
    stack.start_listening()
    if not stack.audio.wait_running(15.0):
        print(json.dumps({"error": f"audio did not start (state {stack.audio.state})"}), flush=True)
        return 3
    stack.set_recording(True, folder=args.session)
    recorder = stack.recorder
    in_dev, out_dev = stack.audio.devices
    in_rate, out_rate = stack.audio.rates
    recorder.update_meta(devices={"input": in_dev.name if in_dev else None, "output": out_dev.name if out_dev else None,
                                  "input_rate": in_rate, "output_rate": out_rate})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if not listening.wait(120):
        print(json.dumps({"error": "the engine did not start listening"}), flush=True)
        return 4
    print(json.dumps({"ready": str(recorder.path), "input": in_dev.name if in_dev else None,
                      "input_rate": in_rate, "output_rate": out_rate}), flush=True)
    t0 = time.monotonic()
    while not stop.is_set() and time.monotonic() - t0 < args.seconds:
        stop.wait(0.1)
    failed = recorder.failed
    stack.close()
    print(json.dumps({"done": True, "failed": failed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
