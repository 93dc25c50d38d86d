"""Outputs that cannot be written are refused before any model loads, in one line naming the option; a recording
that stops on a full disk shows in ``parley chat``'s summary and as a warning event (issue 15, item 13; the
--output/--trace cases of item 14).

"Before any model loads" is shown with a backbone whose weights are cut short: a command that tried to load it would
fail with a message about the backbone, not about the output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from _hostile import damaged_backbone, fixture, freeze_omni_args, one_line, run_parley, tmpfs_prefix

QUIET = ["--log-level", "ERROR"]


def chat(tmp_path: Path, llm: Path | None = None, **paths: str) -> list[str]:
    """``parley chat`` on the fixture's input; ``paths`` override output/events/record."""
    out = {"output": str(tmp_path / "answer.wav"), "events": str(tmp_path / "events.jsonl"), **paths}
    args = [*QUIET, "chat", *freeze_omni_args(llm), "--input", str(fixture() / "input.wav")]
    for key, value in out.items():
        args += [f"--{key}", value]
    return args


def reply(tmp_path: Path, profile: str, llm: Path, **paths: str) -> list[str]:
    out = {"output": str(tmp_path / "answer.wav"), **paths}
    model = freeze_omni_args(llm) if profile == "freeze-omni" else ["--profile", "lite", "--llm", str(llm)]
    args = [*QUIET, "reply", *model, "--input", str(fixture() / "input.wav")]
    for key, value in out.items():
        args += [f"--{key}", value]
    return args


@pytest.fixture
def trap(tmp_path) -> Path:
    return damaged_backbone(tmp_path / "damaged-backbone")


def _cases(tmp_path: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    return {
        "output-not-wav": ({"output": str(tmp_path / "answer.mp3")}, ["--output", "answer.mp3", ".wav"]),
        "output-no-suffix": ({"output": str(tmp_path / "answer")}, ["--output", ".wav"]),
        "output-is-a-folder": ({"output": str(folder)}, ["--output", str(folder), "is a folder"]),
        "output-under-a-file": ({"output": str(tmp_path / "notes.txt" / "answer.wav")}, ["--output", "not a folder"]),
    }


@pytest.mark.parametrize("case", ["output-not-wav", "output-no-suffix", "output-is-a-folder", "output-under-a-file"])
@pytest.mark.parametrize("command", ["chat", "reply freeze-omni", "reply lite"])
def test_a_bad_output_path_is_refused_before_the_model_loads(tmp_path, trap, command, case):
    (tmp_path / "notes.txt").write_text("a user's file")
    paths, needles = _cases(tmp_path)[case]
    if command == "chat":
        args = chat(tmp_path, trap, **paths)
    else:
        args = reply(tmp_path, command.split()[1], trap, **paths)
    proc = run_parley(*args, timeout=300)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, *needles)
    assert (tmp_path / "notes.txt").read_text() == "a user's file"


def test_chat_refuses_an_events_path_that_is_a_folder(tmp_path, trap):
    proc = run_parley(*chat(tmp_path, trap, events=str(tmp_path)), timeout=300)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, "--events", "is a folder")


@pytest.mark.parametrize("option", ["events", "output", "record"])
def test_chat_refuses_an_unwritable_place_before_the_model_loads(tmp_path, trap, option, without_root_file_access):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    target = {"events": "events.jsonl", "output": "answer.wav", "record": "session"}[option]
    proc = run_parley(*chat(tmp_path, trap, **{option: str(locked / target)}), timeout=300,
                      prefix=without_root_file_access)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, f"--{option}", str(locked), "not writable")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("profile", ["freeze-omni", "lite"])
def test_reply_refuses_an_unwritable_trace_before_the_model_loads(tmp_path, trap, profile, without_root_file_access):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    proc = run_parley(*reply(tmp_path, profile, trap, trace=str(locked / "trace.json")), timeout=300,
                      prefix=without_root_file_access)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, "--trace", "not writable")
    assert not (tmp_path / "answer.wav").exists()


def test_an_output_on_a_full_disk_is_refused_before_the_model_loads(tmp_path, trap):
    disk = tmp_path / "disk"
    prefix = tmpfs_prefix(disk, size_kb=64, fill_kb=64)
    proc = run_parley(*chat(tmp_path, trap, output=str(disk / "answer.wav")), timeout=300, prefix=prefix)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, "--output", "full")


def test_a_recording_that_stops_on_a_full_disk_shows_in_the_summary_and_as_a_warning_event(tmp_path):
    """The disk of --record has room for the start of the session only: the conversation goes on, the summary says
    the recording stopped and why, and events.jsonl holds the recorder's warning."""
    disk = tmp_path / "disk"
    prefix = tmpfs_prefix(disk, size_kb=160)
    proc = run_parley(*chat(tmp_path, record=str(disk / "session")), timeout=300, prefix=prefix)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert "No space left" in summary["recording_error"], summary
    assert summary["turns"] >= 1 and summary["errors"] == 0     # the conversation itself went on
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    warnings = [e for e in events if e["type"] == "warning" and e.get("code") == "recording_stopped"]
    assert len(warnings) == 1 and "No space left" in warnings[0]["message"], warnings


def test_an_output_whose_disk_fills_during_the_run_is_one_line(tmp_path):
    """--output passes the check (the disk has room) but fills before the answer is written: one line naming the
    file, not an internal error."""
    disk = tmp_path / "disk"
    prefix = tmpfs_prefix(disk, size_kb=100)
    proc = run_parley(*chat(tmp_path, output=str(disk / "answer.wav")), timeout=300, prefix=prefix)
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, str(disk / "answer.wav"), "disk full")
