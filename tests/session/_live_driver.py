"""A headless live conversation: AudioIO (real devices) + Engine + a backend + SessionRecorder, built from their
public APIs, for the live recording acceptance test.

    python tests/session/_live_driver.py SESSION_DIR [--profile lite|freeze-omni] [--seconds 120]

(``freeze-omni`` without weights: the tiny parity fixture, see ``core.engine.profiles.default_fixture``.)

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
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from core.log import setup_logging
    from core.runtime import force_offline

    setup_logging("INFO", console=True, file=False)
    force_offline()

    from core.audio.audio_io import AudioConfig, AudioIO
    from core.engine.clock import WallClock
    from core.engine.engine import Engine, QueueChunkSource
    from core.engine.events import EventBus
    from core.engine.profiles import build_backend, build_vad, settings_from_env
    from core.runtime import configure_torch_threads
    from core.session.livetap import LiveRecording
    from core.session.recorder import SessionRecorder

    config, backend_opts = settings_from_env()
    cli = argparse.Namespace(checkpoint=None, llm=None, device="cpu", dtype="float32", seed=args.seed, greedy=True)
    backend = build_backend(args.profile, cli, config, backend_opts)
    configure_torch_threads()

    audio_cfg = AudioConfig()
    bus = EventBus(WallClock())
    recorder = SessionRecorder(
        args.session, profile=args.profile, mode="live",
        settings={"engine": config.to_dict(), "backend": backend_opts,
                  "cli": {k: getattr(cli, k) for k in ("checkpoint", "llm", "device", "dtype", "seed", "greedy")},
                  "system_prompt": None, "audio": {"reference_lead_ms": audio_cfg.reference_lead_ms}})
    if not recorder.start():
        print(json.dumps({"error": recorder.error}), flush=True)
        return 2
    recorder.attach(bus)
    tap = LiveRecording(recorder, clock=bus.clock, reference_lead_ms=audio_cfg.reference_lead_ms)
    source = QueueChunkSource()

    def on_chunk(chunk) -> None:
        tap.on_chunk(chunk)
        source.push(chunk.samples_16k, chunk.reference_16k)

    audio = AudioIO(audio_cfg, on_chunk=on_chunk)
    audio.start()
    if not audio.wait_running(15.0):
        print(json.dumps({"error": f"audio did not start (state {audio.state})"}), flush=True)
        return 3
    in_dev, out_dev = audio.devices
    in_rate, out_rate = audio.rates
    recorder.update_meta(devices={"input": in_dev.name if in_dev else None, "output": out_dev.name if out_dev else None,
                                  "input_rate": in_rate, "output_rate": out_rate})
    engine = Engine(backend, build_vad(), tap.wrap_sink(audio.player), bus=bus, config=config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    listening = threading.Event()
    bus.subscribe(lambda ev: listening.set() if ev.type == "state" and ev.data.get("state") == "listening" else None)
    worker = threading.Thread(target=engine.run, args=(source, stop), name="engine", daemon=True)
    worker.start()   # run() starts the conversation in the engine thread
    if not listening.wait(120):
        print(json.dumps({"error": "the engine did not start listening"}), flush=True)
        return 4
    print(json.dumps({"ready": str(recorder.path), "input": in_dev.name if in_dev else None,
                      "input_rate": in_rate, "output_rate": out_rate}), flush=True)
    t0 = time.monotonic()
    while not stop.is_set() and time.monotonic() - t0 < args.seconds:
        stop.wait(0.1)
    stop.set()
    worker.join(10)
    audio.stop()
    recorder.close()
    backend.close()
    print(json.dumps({"done": True, "failed": recorder.failed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
