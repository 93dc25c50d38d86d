"""The system prompt is bounded: an absolute cap in the settings and on the command line, and by the model's context
in both backends, each with a message naming the limit (issue 15, item 9). The tiny Freeze-Omni backbone has 4096
positions and a byte-level tokenizer (about one token per character), so a few thousand characters exceed it."""

from __future__ import annotations


import pytest

from _hostile import backbone_copy, fixture, freeze_omni_args, one_line, run_parley
from core.errors import BackendError

QUIET = ["--log-level", "ERROR"]


def prompt(chars: int) -> str:
    words = "You are a patient assistant who answers in plain words and never in lists. "
    return (words * (chars // len(words) + 1))[:chars]


# ------------------------------------------------------------------------------------------- settings and CLI


def test_settings_refuse_a_huge_system_prompt_and_keep_the_default():
    from core.settings.schema import DEFAULT_SYSTEM_PROMPT, SYSTEM_PROMPT_MAX_CHARS, Settings

    settings, warnings = Settings.from_dict({"persona": {"system_prompt": "x" * 20_000_000}})
    assert settings.persona.system_prompt == DEFAULT_SYSTEM_PROMPT
    assert any("system_prompt" in w and f"{SYSTEM_PROMPT_MAX_CHARS}" in w for w in warnings), warnings
    fits, warnings = Settings.from_dict({"persona": {"system_prompt": prompt(SYSTEM_PROMPT_MAX_CHARS)}})
    assert len(fits.persona.system_prompt) == SYSTEM_PROMPT_MAX_CHARS and not warnings


def test_settings_validation_names_the_cap():
    from core.settings.schema import SYSTEM_PROMPT_MAX_CHARS, Settings

    settings = Settings()
    settings.persona.system_prompt = prompt(SYSTEM_PROMPT_MAX_CHARS + 1)
    problems = settings.validate(check_paths=False)
    assert len(problems) == 1 and "System prompt" in problems[0] and f"{SYSTEM_PROMPT_MAX_CHARS}" in problems[0]


@pytest.mark.parametrize("command", ["chat", "reply"])
def test_the_command_line_refuses_a_huge_system_prompt(tmp_path, command):
    from core.settings.schema import SYSTEM_PROMPT_MAX_CHARS

    extra = ["--events", str(tmp_path / "e.jsonl")] if command == "chat" else []
    proc = run_parley(*QUIET, command, "--input", str(fixture() / "input.wav"), "--output", str(tmp_path / "a.wav"),
                      *extra, "--system-prompt", prompt(SYSTEM_PROMPT_MAX_CHARS + 100))
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "--system-prompt" in last and f"{SYSTEM_PROMPT_MAX_CHARS}" in last and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------- Freeze-Omni


@pytest.fixture(scope="module")
def freeze_omni():
    from core.model.freeze_omni.backend import FreezeOmniBackend

    fx = fixture()
    backend = FreezeOmniBackend.load(fx / "checkpoints", fx / "llm")
    yield backend
    backend.close()


def test_parley_reply_freeze_omni_names_the_token_limit(tmp_path):
    proc = run_parley(*QUIET, "reply", *freeze_omni_args(), "--input", str(fixture() / "input.wav"),
                      "--output", str(tmp_path / "a.wav"), "--system-prompt", prompt(6000))
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, "system prompt", "2048 tokens")
    assert not (tmp_path / "a.wav").exists()


def test_parley_chat_names_the_token_limit(tmp_path):
    proc = run_parley(*QUIET, "chat", *freeze_omni_args(), "--input", str(fixture() / "input.wav"),
                      "--output", str(tmp_path / "a.wav"), "--events", str(tmp_path / "e.jsonl"),
                      "--system-prompt", prompt(6000))
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, "system prompt", "2048 tokens")


# ------------------------------------------------------------------------------------------- Lite


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """Lite with the tiny backbone as its chat model (a 4096-position Qwen2; Lite's own context is 2048)."""
    import shutil

    from core.model.lite import weights

    if weights.missing_packages() or not shutil.which("espeak-ng"):
        pytest.skip("the Lite weight packages or espeak-ng are not installed")
    from core.model.lite.backend import LiteBackend, LiteSettings

    llm = backbone_copy(tmp_path_factory.mktemp("lite") / "chat")
    backend = LiteBackend(LiteSettings(llm=str(llm), speculate=False))
    yield backend
    backend.close()


@pytest.mark.parametrize("profile,chars,limit,context", [("freeze_omni", 6000, 2048, 4096),
                                                          ("lite", 3000, 1024, 2048)])
def test_a_backend_refuses_a_prompt_longer_than_half_its_context(request, profile, chars, limit, context):
    backend = request.getfixturevalue(profile)
    with pytest.raises(BackendError) as exc:
        backend.new_conversation(prompt(chars))
    text = str(exc.value)
    assert len(text.splitlines()) == 1 and f"{limit} tokens" in text and f"{context}-token" in text, text
    conv = backend.new_conversation(prompt(chars // 4))       # a long but fitting prompt still works
    assert 200 < conv.context_tokens < limit


def test_lite_keeps_the_old_persona_when_a_new_one_is_too_long(lite):
    conv = lite.new_conversation("Be brief.")
    with pytest.raises(BackendError):
        lite.set_system_prompt(conv, prompt(3000))
    assert conv.system_prompt == "Be brief." and lite.settings.system_prompt != prompt(3000)
    assert lite.set_system_prompt(conv, "Be kind.") and conv.system_prompt == "Be kind."
