"""The PulseAudio null-sink loop used by ``parley bench audio`` and the audio tests (``scripts/testenv.sh start``).

What plays into a null sink comes back, sample-exact and in real time, from its ``.monitor`` source: a real audio
path through PortAudio's ALSA->PulseAudio plugin with no sound card.

:class:`PrivateSink` loads an extra null sink on the running server and routes this process's new streams to it
(``PULSE_SINK`` / ``PULSE_SOURCE``, read by libpulse whenever a stream is opened), so a benchmark is not disturbed
by other programs playing into the shared default sink, and does not disturb them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

log = logging.getLogger(__name__)

START_HINT = 'start it with: eval "$(scripts/testenv.sh start)"'


def pactl(*args: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=timeout)


def pulse_loop_problem() -> str | None:
    """None when the loop is usable; otherwise what is missing, in one line."""
    if shutil.which("pactl") is None:
        return "pactl not found (apt-get install pulseaudio pulseaudio-utils libasound2-plugins)"
    try:
        info = pactl("info")
    except (subprocess.TimeoutExpired, OSError) as exc:
        return f"pactl info failed: {exc}"
    if info.returncode != 0:
        return "no PulseAudio server answers (pactl info failed)"
    from core.audio import devices

    devices.refresh_devices()   # PortAudio may have scanned before the server was up
    names = {d.name for d in devices.list_devices()}
    if not names & {"pulse", "default"}:
        return "PortAudio lists no 'pulse'/'default' device (is libasound2-plugins installed?)"
    return None


class PrivateSink:
    """A temporary null sink on the running PulseAudio server; this process's streams go to it while active."""

    def __init__(self, name: str | None = None, rate: int = 48000) -> None:
        self.name = name or f"parley_private_{os.getpid()}"
        self.rate = rate
        self.module: str | None = None
        self._saved: dict[str, str | None] = {}

    @property
    def monitor(self) -> str:
        return f"{self.name}.monitor"

    def __enter__(self) -> "PrivateSink":
        r = pactl("load-module", "module-null-sink", f"sink_name={self.name}", f"rate={self.rate}",
                  f"sink_properties=device.description={self.name}")
        if r.returncode != 0:
            raise RuntimeError(f"cannot load a null sink: {r.stderr.strip()}")
        self.module = r.stdout.strip()
        for key, value in (("PULSE_SINK", self.name), ("PULSE_SOURCE", self.monitor)):
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value
        log.debug("private null sink %s (module %s)", self.name, self.module)
        return self

    def __exit__(self, *exc: object) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.module is not None:
            try:
                pactl("unload-module", self.module)
            except Exception as e:  # the server may be gone already
                log.debug("unloading %s: %s", self.module, e)
            self.module = None
