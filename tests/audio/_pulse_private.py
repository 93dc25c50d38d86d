"""A second, private PulseAudio daemon with a single null sink, for device-loss tests.

Unloading the only sink of a server leaves its streams nowhere to go, so the server kills them: PortAudio then
sees a real device loss. (On the shared test server a removed sink's streams are silently moved to another sink.)
:meth:`PrivatePulse.kill` and :meth:`PrivatePulse.restart` kill the whole server and bring it back on the same socket.
This process's streams are sent to the private server by ``PULSE_SERVER``, which libpulse reads when a stream opens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time


class PrivatePulse:
    def __init__(self, sink: str = "parley_loss_sink") -> None:
        self.sink = sink
        self.dir = tempfile.mkdtemp(prefix="parley_pa_")
        os.chmod(self.dir, 0o700)
        self.env = dict(os.environ, XDG_RUNTIME_DIR=self.dir, HOME=self.dir)
        for key in ("PULSE_SERVER", "PULSE_RUNTIME_PATH", "PULSE_SINK", "PULSE_SOURCE"):
            self.env.pop(key, None)
        self.module: str | None = None
        self._saved: dict[str, str | None] = {}

    @property
    def server(self) -> str:
        return f"unix:{self.dir}/pulse/native"

    def pactl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)

    def start(self) -> "PrivatePulse":
        """Start the daemon with its null sink. Like a real server, it has its sink before it takes clients: the
        sink module is loaded before the protocol module."""
        subprocess.run(["pulseaudio", "--start", "--exit-idle-time=-1", "-n",
                        f"--load=module-null-sink sink_name={self.sink} rate=48000",
                        "--load=module-native-protocol-unix", "--daemonize=yes",
                        f"--log-target=file:{self.dir}/pulse.log"],
                       env=self.env, capture_output=True, text=True, timeout=20, check=True)
        for _ in range(100):
            if self.pactl("info").returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("private PulseAudio did not start")
        modules = self.pactl("list", "short", "modules").stdout.splitlines()
        self.module = next((line.split()[0] for line in modules if "module-null-sink" in line), None)
        if self.module is None:
            raise RuntimeError("the private PulseAudio has no null sink")
        return self

    def route_here(self) -> None:
        """Streams opened from now on go to the private server's sink/monitor."""
        for key, value in (("PULSE_SERVER", self.server), ("PULSE_SINK", self.sink),
                           ("PULSE_SOURCE", f"{self.sink}.monitor")):
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value

    def route_back(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved.clear()

    def unload_sink(self) -> None:
        assert self.module is not None
        self.pactl("unload-module", self.module)
        self.module = None

    def kill(self) -> None:
        """Kill the daemon (as a crash or ``pulseaudio --kill`` would): its streams die, its socket goes away."""
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=10)
        for _ in range(100):
            if self.pactl("info").returncode != 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("private PulseAudio did not die")
        self.module = None

    def restart(self) -> "PrivatePulse":
        """Start the daemon again on the same socket (a sound server that comes back)."""
        return self.start()

    def stop(self) -> None:
        self.route_back()
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
