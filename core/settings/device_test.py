"""The settings dialog's device test: play a short tone on the output device and report the input level.

Devices are chosen by name (as in the settings); "" means the system default. Runs in a background thread and
never touches the engine's streams.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

TEST_RATE = 48_000


def device_names(kind: str) -> list[str]:
    """Names of the devices that can do ``kind`` ("input"|"output"); [] when audio is unavailable."""
    try:
        import sounddevice as sd

        devs = sd.query_devices()
    except Exception as exc:
        log.warning("cannot list audio devices: %s", exc)
        return []
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    names: list[str] = []
    for d in devs:
        if d.get(key, 0) > 0 and d["name"] not in names:
            names.append(str(d["name"]))
    return names


def resolve_device(name: str, kind: str) -> int | None:
    """Index of the device called ``name`` (exact, then case-insensitive, then substring); None = default."""
    if not name:
        return None
    import sounddevice as sd

    key = "max_input_channels" if kind == "input" else "max_output_channels"
    devs = [d for d in sd.query_devices() if d.get(key, 0) > 0]
    for test in (lambda n: n == name, lambda n: n.lower() == name.lower(), lambda n: name.lower() in n.lower()):
        for d in devs:
            if test(str(d["name"])):
                return int(d["index"])
    raise ValueError(f"{kind} device {name!r} is not present")


def tone(seconds: float = 0.6, freq: float = 440.0, rate: int = TEST_RATE, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02).astype(np.float32)   # 20 ms fades: no clicks
    return (amplitude * env * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def run_device_test(input_name: str, output_name: str, on_level: Callable[[float], None],
                    cancel: threading.Event | None = None, seconds: float = 2.5) -> float:
    """Play a tone on the output while metering the input for ``seconds``. ``on_level(dBFS)`` every ~50 ms.
    Returns the loudest input level seen (dBFS). Raises with a readable message when a device cannot open."""
    import sounddevice as sd

    cancel = cancel or threading.Event()
    in_dev = resolve_device(input_name, "input")
    out_dev = resolve_device(output_name, "output")
    peak = [-120.0]
    latest = [-120.0]

    def on_input(indata, frames, time_info, status) -> None:
        rms = float(np.sqrt(np.mean(np.square(indata[:, 0], dtype=np.float64)))) if frames else 0.0
        db = 20 * math.log10(rms) if rms > 1e-6 else -120.0
        latest[0] = db
        peak[0] = max(peak[0], db)

    signal = tone()
    try:
        with sd.InputStream(device=in_dev, channels=1, samplerate=TEST_RATE, dtype="float32", callback=on_input):
            time.sleep(0.3)
            try:
                sd.play(signal, TEST_RATE, device=out_dev)
            except Exception as exc:
                raise ValueError(f"cannot play on the output device: {exc}") from exc
            end = time.monotonic() + seconds
            while time.monotonic() < end and not cancel.is_set():
                on_level(latest[0])
                time.sleep(0.05)
            sd.stop()
    except sd.PortAudioError as exc:
        raise ValueError(f"cannot open the input device: {exc}") from exc
    return peak[0]
