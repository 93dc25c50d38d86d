"""Audio device enumeration and selection by name.

Settings store devices by *name* (indices change when devices come and go). A saved name is matched again on every
start: exactly first, then ignoring case, ALSA card numbers such as ``(hw:1,0)`` and spacing, then as a prefix (MME
truncates names to 31 characters), then as a unique substring. A device that cannot be found falls back to the
system default and a warning event says so.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Literal

import sounddevice as sd

from core.audio.events import WARNING, AudioEventQueue

log = logging.getLogger(__name__)

Kind = Literal["input", "output"]

_open_streams = 0
_open_lock = threading.Lock()


class AudioDeviceError(RuntimeError):
    """No usable device of the requested kind (the user can fix this: plug one in, start the sound server)."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    default_low_input_latency: float
    default_low_output_latency: float
    is_default_input: bool = False
    is_default_output: bool = False

    def supports(self, kind: Kind) -> bool:
        return (self.max_input_channels if kind == "input" else self.max_output_channels) > 0

    def to_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "hostapi": self.hostapi,
                "inputs": self.max_input_channels, "outputs": self.max_output_channels,
                "default_samplerate": self.default_samplerate,
                "default_input": self.is_default_input, "default_output": self.is_default_output}


@dataclass(frozen=True)
class DeviceChoice:
    """The device to open and how it was found."""

    device: DeviceInfo
    requested: str | None
    how: str            # "default" | "exact" | "normalized" | "prefix" | "substring" | "fallback"

    @property
    def fallback(self) -> bool:
        return self.how == "fallback"


def _default_indices() -> tuple[int, int]:
    try:
        dev = sd.default.device
        in_idx, out_idx = int(dev[0]), int(dev[1])
    except Exception:  # sounddevice may return a single int or fail when nothing is there
        in_idx, out_idx = -1, -1
    if in_idx < 0 or out_idx < 0:
        try:
            hostapi = sd.query_hostapis(sd.default.hostapi if sd.default.hostapi >= 0 else 0)
            in_idx = in_idx if in_idx >= 0 else int(hostapi["default_input_device"])
            out_idx = out_idx if out_idx >= 0 else int(hostapi["default_output_device"])
        except Exception:
            pass
    return in_idx, out_idx


def list_devices(kind: Kind | None = None) -> list[DeviceInfo]:
    """All PortAudio devices (optionally only those with inputs or outputs)."""
    try:
        raw = sd.query_devices()
        hostapis = sd.query_hostapis()
    except Exception as exc:  # PortAudio not initialised or broken
        log.warning("cannot list audio devices: %s", exc)
        return []
    in_idx, out_idx = _default_indices()
    devices = []
    for d in raw:
        info = DeviceInfo(
            index=int(d["index"]), name=str(d["name"]), hostapi=str(hostapis[d["hostapi"]]["name"]),
            max_input_channels=int(d["max_input_channels"]), max_output_channels=int(d["max_output_channels"]),
            default_samplerate=float(d["default_samplerate"]),
            default_low_input_latency=float(d["default_low_input_latency"]),
            default_low_output_latency=float(d["default_low_output_latency"]),
            is_default_input=int(d["index"]) == in_idx, is_default_output=int(d["index"]) == out_idx)
        if kind is None or info.supports(kind):
            devices.append(info)
    return devices


_HW_SUFFIX = re.compile(r"\((?:plug)?hw:[^)]*\)")


def normalize_device_name(name: str) -> str:
    """Lower case, without ALSA ``(hw:N,M)`` card numbers, host-API suffixes or repeated spaces."""
    s = _HW_SUFFIX.sub(" ", name.lower())
    s = re.sub(r",\s*(mme|windows directsound|windows wasapi|windows wdm-ks|alsa|oss|core audio)\s*$", "", s)
    s = re.sub(r"[\s_]+", " ", s)
    return s.strip(" :-")


def match_device(name: str, kind: Kind, devices: list[DeviceInfo], hostapi: str | None = None
                 ) -> tuple[DeviceInfo, str] | None:
    """Find ``name`` among ``devices`` that support ``kind``; returns (device, how) or None.

    Levels, best first: exact, normalized, prefix, unique substring. Within a level the requested host API
    (when given) and then the lowest index win.
    """
    candidates = [d for d in devices if d.supports(kind)]
    if not candidates or not name:
        return None

    def best(matches: list[DeviceInfo]) -> DeviceInfo | None:
        if not matches:
            return None
        if hostapi:
            same = [d for d in matches if d.hostapi == hostapi]
            if same:
                return min(same, key=lambda d: d.index)
        return min(matches, key=lambda d: d.index)

    exact = best([d for d in candidates if d.name == name])
    if exact:
        return exact, "exact"
    wanted = normalize_device_name(name)
    if not wanted:
        return None
    normalized = best([d for d in candidates if normalize_device_name(d.name) == wanted])
    if normalized:
        return normalized, "normalized"
    if len(wanted) >= 8:
        prefix = best([d for d in candidates
                       if (n := normalize_device_name(d.name)) and len(n) >= 8
                       and (n.startswith(wanted) or wanted.startswith(n))])
        if prefix:
            return prefix, "prefix"
    subs = [d for d in candidates if wanted in normalize_device_name(d.name)]
    if len({normalize_device_name(d.name) for d in subs}) == 1:
        return best(subs), "substring"
    return None


def default_device(kind: Kind, devices: list[DeviceInfo] | None = None) -> DeviceInfo:
    """The system default device of ``kind``; the first capable device when no default is set."""
    devices = list_devices() if devices is None else devices
    flag = "is_default_input" if kind == "input" else "is_default_output"
    for d in devices:
        if getattr(d, flag) and d.supports(kind):
            return d
    capable = [d for d in devices if d.supports(kind)]
    if capable:
        return capable[0]
    raise AudioDeviceError(f"no audio {kind} device found (is a sound server running? see 'parley doctor')")


def choose_device(name: str | None, kind: Kind, events: AudioEventQueue | None = None,
                  hostapi: str | None = None, devices: list[DeviceInfo] | None = None) -> DeviceChoice:
    """Resolve a saved device name to a device to open now.

    ``None``, ``""`` and ``"default"`` mean the system default. A name that matches nothing falls back to the
    default with a ``warning`` event (code ``device_fallback``). Raises :class:`AudioDeviceError` when there is no
    device of that kind at all.
    """
    devices = list_devices() if devices is None else devices
    if name and name.strip().lower() != "default":
        found = match_device(name, kind, devices, hostapi)
        if found is not None:
            device, how = found
            if how != "exact":
                log.info("audio %s %r matched %r (%s)", kind, name, device.name, how)
            return DeviceChoice(device, name, how)
        device = default_device(kind, devices)
        msg = f"audio {kind} device {name!r} not found; using the default {device.name!r}"
        log.warning(msg)
        if events is not None:
            events.emit(WARNING, "device_fallback", msg, kind=kind, requested=name, device=device.name)
        return DeviceChoice(device, name, "fallback")
    return DeviceChoice(default_device(kind, devices), name, "default")


def note_stream_opened() -> None:
    global _open_streams
    with _open_lock:
        _open_streams += 1


def note_stream_closed() -> None:
    global _open_streams
    with _open_lock:
        _open_streams = max(0, _open_streams - 1)


def refresh_devices() -> bool:
    """Re-scan devices (after a replug) by re-initialising PortAudio. Only possible while none of our streams is
    open; returns whether the scan happened."""
    with _open_lock:
        if _open_streams:
            log.debug("device refresh skipped: %d stream(s) open", _open_streams)
            return False
        try:
            sd._terminate()   # sounddevice's documented way to make PortAudio re-enumerate devices
            sd._initialize()
        except Exception as exc:
            log.warning("PortAudio re-initialisation failed: %s", exc)
            try:
                sd._initialize()
            except Exception:
                pass
            return False
        return True
