"""core.settings: schema validation, fallback to defaults, broken files kept aside, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.settings import Settings, load_settings, save_settings, settings_path
from core.settings import store as store_mod
from core.settings.schema import RELEASE_GLOBAL_TOKENS, check_global_tokens, default_device, resolve_checkpoint_dir


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PARLEY_CONFIG_DIR", str(tmp_path / "cfg"))
    return tmp_path / "cfg"


def test_defaults_are_valid_without_path_checks():
    s = Settings()
    assert s.validate(check_paths=False) == []
    assert s.model.profile == "lite"
    assert s.model.voices["release"] == list(RELEASE_GLOBAL_TOKENS)


def test_config_dir_env_override(cfg):
    assert settings_path() == cfg / "settings.json"


def test_first_run_has_no_file_and_no_warnings(cfg):
    res = load_settings()
    assert not res.existed and res.warnings == [] and res.kept_aside is None
    assert res.settings == Settings()


def test_round_trip_every_section(cfg):
    s = Settings()
    s.audio.input_device = "USB Mic (hw:2,0)"
    s.audio.aec = False
    s.audio.ready_sound = False
    s.vad.end_of_turn_silence_ms = 1200
    s.sampling.temperature = 0.3
    s.model.profile = "freeze-omni"
    s.model.voices["mine"] = [1, 2, 3, 4, 5, 6, 7, 8]
    s.model.voice = "mine"
    s.persona.system_prompt = "Talk like a pirate."
    s.recording.enabled = True
    s.recording.retention_days = 7
    s.ui.geometry = "AdnQywADAAA="
    s.ui.last_profile = "lite"
    save_settings(s)
    res = load_settings()
    assert res.warnings == []
    assert res.settings == s
    assert json.loads(settings_path().read_text())["version"] == 1


def test_unknown_and_invalid_values_fall_back_with_warnings_and_original_kept(cfg):
    cfg.mkdir(parents=True)
    original = {
        "version": 1,
        "vad": {"onset_threshold": 7, "end_of_turn_silence_ms": 900, "bogus": 1},
        "model": {"profile": "gpt-9", "precision": "fp16", "device": "tpu", "voice": "ghost"},
        "sampling": {"top_k": 2.5, "temperature": 1},
        "persona": "not an object",
        "plugins": {},
    }
    settings_path().write_text(json.dumps(original))
    res = load_settings()
    s = res.settings
    assert s.vad.onset_threshold == 0.5            # out of range -> default
    assert s.vad.end_of_turn_silence_ms == 900     # valid value kept
    assert s.model.profile == "lite"
    assert s.model.precision == "fp16"
    assert s.model.device == default_device()     # the machine's: cuda with a GPU, else cpu
    assert s.model.voice == "release"
    assert s.sampling.top_k == 20                  # 2.5 is not a whole number
    assert s.sampling.temperature == 1.0           # int accepted for a float
    text = "\n".join(res.warnings)
    for needle in ("vad.onset_threshold", "vad.bogus", "model.profile", "model.device", "ghost",
                   "sampling.top_k", "'persona'", "'plugins'"):
        assert needle in text, needle
    # the user's file is kept aside before anything overwrites it
    assert res.kept_aside is not None and res.kept_aside.name.startswith("settings.json.broken-")
    assert json.loads(res.kept_aside.read_text()) == original


def test_broken_json_is_renamed_aside_never_overwritten(cfg):
    cfg.mkdir(parents=True)
    settings_path().write_text('{"vad": {"onset_threshold": 0.6,,,')
    res = load_settings()
    assert res.settings == Settings()
    assert res.kept_aside is not None and res.kept_aside.exists()
    assert res.kept_aside.read_text() == '{"vad": {"onset_threshold": 0.6,,,'
    assert not settings_path().exists()
    assert "broken" in res.warnings[0]
    # a second broken file the same second gets its own name
    settings_path().write_text("[[[")
    res2 = load_settings()
    assert res2.kept_aside != res.kept_aside and res2.kept_aside.exists()


def test_non_object_json_falls_back(cfg):
    cfg.mkdir(parents=True)
    settings_path().write_text("[1, 2, 3]")
    res = load_settings()
    assert res.settings == Settings()
    assert res.warnings and "JSON object" in res.warnings[0]


def test_atomic_write_leaves_old_file_when_write_fails(cfg, monkeypatch):
    s = Settings()
    s.persona.name = "first"
    save_settings(s)
    before = settings_path().read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "replace", boom)
    s.persona.name = "second"
    with pytest.raises(OSError):
        save_settings(s)
    assert settings_path().read_text() == before
    assert [p.name for p in cfg.iterdir()] == ["settings.json"]  # no temp file left behind


def test_validate_messages():
    s = Settings()
    s.model.precision = "4-bit"
    s.model.device = "cpu"
    s.vad.offset_threshold = 0.9
    s.sampling.top_p = 0
    problems = s.validate(check_paths=False)
    joined = "\n".join(problems)
    assert "4-bit precision needs a CUDA GPU" in joined
    assert "offset threshold must be lower" in joined
    assert "Top-p must be between" in joined


def test_freeze_omni_paths_are_checked(tmp_path):
    s = Settings()
    s.model.profile = "freeze-omni"
    problems = s.validate()
    assert any("checkpoint folder" in p for p in problems)
    assert any("backbone folder" in p for p in problems)
    s.model.backbone_dir = str(tmp_path / "nope")
    s.model.checkpoint_dir = str(tmp_path)
    problems = s.validate()
    assert any("does not exist" in p for p in problems)
    assert any("lacks audiollm/train.yaml" in p for p in problems)


def test_freeze_omni_fixture_layout_is_accepted():
    fixture = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "freeze_omni_tiny_a"
    if not fixture.exists():
        pytest.skip("shared fixtures not present")
    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir = str(fixture)   # the parent of checkpoints/ is resolved too
    s.model.backbone_dir = str(fixture / "llm")
    s.model.device = "cpu"
    s.model.precision = "fp32"
    assert s.validate() == []
    assert resolve_checkpoint_dir(fixture) == fixture / "checkpoints"


def test_lite_voice_and_backbone_paths(tmp_path):
    s = Settings()
    s.model.lite_voice = str(tmp_path / "voice.onnx")
    (tmp_path / "voice.onnx").write_bytes(b"x")
    assert any("has no voice.onnx.json" in p for p in s.validate())
    (tmp_path / "voice.onnx.json").write_text("{}")
    assert s.validate() == []
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    s.model.lite_backbone = str(gguf)
    assert s.validate() == []
    s.model.lite_backbone = str(tmp_path)
    assert any("no config.json" in p for p in s.validate())


def test_global_token_check():
    assert check_global_tokens(list(RELEASE_GLOBAL_TOKENS)) is None
    assert check_global_tokens([])
    assert check_global_tokens("1 2 3")
    assert check_global_tokens([1] * 7 + [1024])
    assert check_global_tokens([1] * 7 + [True])


def test_save_creates_folder_and_is_readable_json(tmp_path):
    target = tmp_path / "deep" / "er" / "settings.json"
    save_settings(Settings(), target)
    assert json.loads(target.read_text())["model"]["profile"] == "lite"
    assert not any(p.name.endswith(".tmp") for p in target.parent.iterdir())
    assert os.access(target, os.R_OK)
