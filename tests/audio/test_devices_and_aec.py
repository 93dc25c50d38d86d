"""Device matching by name (pure and against the real PortAudio list) and the echo canceller offline."""

from __future__ import annotations

import numpy as np
import pytest

from core.audio.aec import AecConfig, EchoCanceller
from core.audio.devices import DeviceInfo, choose_device, list_devices, match_device, normalize_device_name
from core.audio.events import WARNING, AudioEventQueue


def dev(i, name, ins=2, outs=2, hostapi="ALSA", din=False, dout=False):
    return DeviceInfo(i, name, hostapi, ins, outs, 48000.0, 0.01, 0.01, din, dout)


DEVICES = [
    dev(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", din=True, dout=True),
    dev(1, "USB Audio Device: - (hw:2,0)", ins=1, outs=2),
    dev(2, "Jabra SPEAK 510 USB: Audio (hw:3,0)", ins=1, outs=2),
    dev(3, "HDMI 0 (hw:0,3)", ins=0, outs=8),
    dev(4, "Microphone (Realtek(R) Audio)", ins=2, outs=0, hostapi="MME"),
    dev(5, "Microphone (Realtek(R) Audio)", ins=2, outs=0, hostapi="Windows WASAPI"),
    dev(6, "pulse"),
    dev(7, "default"),
]


def test_normalized_names_ignore_card_numbers_case_and_spacing():
    assert normalize_device_name("Jabra SPEAK 510 USB: Audio (hw:3,0)") == "jabra speak 510 usb: audio"
    assert normalize_device_name("jabra  speak 510 usb: audio (hw:1,0)") == "jabra speak 510 usb: audio"


def test_saved_name_is_found_again_after_replug_on_another_card():
    found = match_device("Jabra SPEAK 510 USB: Audio (hw:1,0)", "input", DEVICES)
    assert found is not None and found[0].index == 2 and found[1] == "normalized"
    assert match_device("pulse", "output", DEVICES) == (DEVICES[6], "exact")


def test_truncated_and_partial_names_and_host_api_preference():
    # MME cuts names to 31 characters
    found = match_device("Microphone (Realtek(R) Audi", "input", DEVICES, hostapi="Windows WASAPI")
    assert found is not None and found[0].index == 5 and found[1] == "prefix"
    assert match_device("jabra", "output", DEVICES)[0].index == 2
    assert match_device("audio", "input", DEVICES) is None          # ambiguous
    assert match_device("HDMI 0", "input", DEVICES) is None         # no inputs


def test_missing_device_falls_back_to_default_with_a_warning_event():
    events = AudioEventQueue()
    choice = choose_device("Headset that was unplugged", "input", events, devices=DEVICES)
    assert choice.fallback and choice.device.index == 0
    ev = events.get(timeout=0)
    assert ev.type == WARNING and ev.code == "device_fallback" and ev.data["requested"] == "Headset that was unplugged"
    assert choose_device(None, "output", devices=DEVICES).how == "default"


@pytest.mark.audio
def test_real_portaudio_devices_match_by_name_and_fall_back(pulse_loop):
    names = {d.name for d in list_devices()}
    assert names & {"pulse", "default"}
    choice = choose_device("PULSE", "output")
    assert choice.device.name == "pulse" and choice.how == "normalized"
    events = AudioEventQueue()
    missing = choose_device("No Such Device 42", "input", events)
    assert missing.fallback and missing.device.supports("input")
    assert events.get(timeout=0).code == "device_fallback"


def test_echo_canceller_removes_a_synthetic_echo(espeak):
    far, _ = espeak("The quick brown fox jumps over the lazy dog, again and again, for a while.", rate=16000)
    far = np.tile(far, 2) * 0.8
    mic = np.zeros_like(far)
    mic[480:] = 0.5 * far[:-480]                     # 30 ms, -6 dB
    mic += (np.random.default_rng(0).standard_normal(len(mic)) * 1e-4).astype(np.float32)
    out = EchoCanceller(AecConfig()).process_block(mic, far)
    s = 3 * 16000
    erle = 10 * np.log10(np.mean(mic[s:len(out)] ** 2) / np.mean(out[s:] ** 2))
    print(f"\n[aec offline] ERLE {erle:.1f} dB")
    assert erle > 25


def test_echo_canceller_off_is_a_pass_through():
    aec = EchoCanceller(AecConfig(echo_cancellation=False, high_pass_filter=False))
    assert not aec.enabled
    x = np.linspace(-0.5, 0.5, 160, dtype=np.float32)
    np.testing.assert_array_equal(aec.process(x, np.ones(160, np.float32)), x)
