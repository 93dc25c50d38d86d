"""Session folders next to a user's own files: retention, prune, --record, repair and export never touch what Parley
did not write (issue 15, items 1, 2, 4, 5)."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _hostile import run_parley, tree
from core.session import SessionRecorder, apply_retention, export_session, list_sessions, repair_session
from core.session.wavfile import parse_wav_layout

OLD = time.time() - 90 * 86400


def age(folder: Path, when: float = OLD) -> None:
    """Make every file of ``folder`` (and the folder) look last touched at ``when``."""
    for path in [*folder.rglob("*"), folder]:
        os.utime(path, (when, when), follow_symlinks=False)


def record(root: Path | None = None, folder: Path | None = None, seconds: float = 0.1, **kw) -> Path:
    rec = SessionRecorder(folder, root=root, **kw)
    assert rec.start(), rec.error
    rec.write_mic_raw(np.zeros(int(16_000 * seconds), np.float32), 16_000)
    rec.close()
    return rec.path


def user_project(parent: Path, name: str = "old-project") -> Path:
    """A user's folder that happens to hold a meta.json and an events.jsonl (many tools write such files)."""
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"title": "thesis data", "version": 3}))
    (folder / "events.jsonl").write_text('{"type": "measurement", "value": 1}\n')
    (folder / "notes.txt").write_text("three years of work")
    age(folder)
    return folder


def unmark(session: Path) -> None:
    """What a session recorded before Parley marked the folders it creates looks like."""
    meta = json.loads((session / "meta.json").read_text())
    meta.pop("created_folder", None)
    (session / "meta.json").write_text(json.dumps(meta))


# ------------------------------------------------------------------------------------------- 1: retention


def test_retention_in_a_user_chosen_folder_deletes_only_parley_sessions(tmp_path):
    documents = tmp_path / "Documents"
    project = user_project(documents)
    before = tree(project)
    old = record(root=documents)
    age(old)
    # the app's path: a recording starts with the default 30-day retention in the chosen recording folder
    new = record(root=documents, retention_days=30)
    assert tree(project) == before
    assert not old.exists() and new.exists()


def test_retention_skips_old_sessions_without_the_marker_and_sessions_holding_user_files(tmp_path):
    root = tmp_path / "sessions"
    deletable = record(root=root)
    legacy = record(root=root)
    unmark(legacy)
    touched = record(root=root)
    (touched / "my-notes.txt").write_text("notes the user put there")
    for folder in (deletable, legacy, touched):
        age(folder)
    result = apply_retention(30, root=root)
    assert result.deleted == [deletable]
    reasons = dict(result.skipped)
    assert set(reasons) == {legacy, touched}
    assert "before" in reasons[legacy] and "my-notes.txt" in reasons[touched]
    assert legacy.exists() and (touched / "my-notes.txt").exists()


def test_retention_never_follows_a_link_out_of_the_sessions_folder(tmp_path):
    root = tmp_path / "sessions"
    elsewhere = record(root=tmp_path / "elsewhere")
    age(elsewhere)
    root.mkdir()
    link = root / "2020-01-01_00-00-00"
    link.symlink_to(elsewhere, target_is_directory=True)
    os.utime(link, (OLD, OLD), follow_symlinks=False)
    result = apply_retention(30, root=root)
    assert result.deleted == [] and elsewhere.exists() and link.is_symlink()


def test_explicit_record_folder_never_prunes_its_neighbours(tmp_path):
    documents = tmp_path / "Documents"
    earlier = record(folder=documents / "interview-1")
    age(earlier)
    record(folder=documents / "interview-2", retention_days=30)
    assert earlier.exists()


def test_prune_command_says_what_it_skipped_and_why(tmp_path):
    root = tmp_path / "sessions"
    project = user_project(root)
    before = tree(project)
    legacy = record(root=root)
    unmark(legacy)
    gone = record(root=root)
    age(legacy)
    age(gone)
    proc = run_parley("session", "prune", "--days", "30", "--folder", str(root))
    assert proc.returncode == 0, proc.stderr
    assert not gone.exists() and legacy.exists() and tree(project) == before
    out = proc.stdout
    assert "deleted 1 session" in out
    assert "kept 1" in out and str(legacy) in out   # the old unmarked session, with the reason
    assert str(project) not in out                  # not a Parley session at all: not even mentioned


def test_session_browser_delete_refuses_folders_holding_user_files(tmp_path):
    from core.session import delete_session

    project = user_project(tmp_path / "Documents")
    with pytest.raises(ValueError, match="not a Parley session"):
        delete_session(project)
    session = record(root=tmp_path / "Documents")
    (session / "draft.docx").write_bytes(b"PK")
    with pytest.raises(ValueError, match="draft.docx"):
        delete_session(session)
    assert (session / "draft.docx").exists()


# ------------------------------------------------------------------------------------------- 2: numeric options


@pytest.mark.parametrize("days", ["nan", "inf", "-inf", "-1", "1e308", "100000", "thirty"])
def test_prune_refuses_days_that_are_not_a_sane_number(tmp_path, days):
    root = tmp_path / "sessions"
    session = record(root=root)
    age(session)
    proc = run_parley("session", "prune", f"--days={days}", "--folder", str(root))
    assert proc.returncode == 2
    assert session.exists()
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "--days" in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def test_retention_function_refuses_a_nan_cutoff(tmp_path):
    root = tmp_path / "sessions"
    age(record(root=root))
    with pytest.raises(ValueError):
        apply_retention(float("nan"), root=root)
    assert len(list_sessions(root)) == 1


# ------------------------------------------------------------------------------------------- 4: --record DIR


def test_record_into_a_non_empty_user_folder_is_refused_and_nothing_changes(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    (folder / "report.pdf").write_bytes(b"%PDF")
    before = tree(folder)
    rec = SessionRecorder(folder)
    assert rec.start() is False
    assert "not empty" in rec.error and str(folder) in rec.error
    rec.close()
    assert tree(folder) == before


def test_record_into_an_existing_empty_folder_keeps_its_mode(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    os.chmod(folder, 0o755)
    path = record(folder=folder)
    assert path == folder and (folder / "meta.json").exists()
    assert folder.stat().st_mode & 0o777 == 0o755
    assert (folder / "meta.json").stat().st_mode & 0o777 == 0o600
    # Parley did not create this folder: retention may never delete it
    assert "created_folder" not in json.loads((folder / "meta.json").read_text())


def test_sessions_go_to_parleys_own_folder_by_default(home):
    path = record()
    assert path.parent == home.sessions
    assert path.stat().st_mode & 0o777 == 0o700
    assert json.loads((path / "meta.json").read_text())["created_folder"] is True
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in path.iterdir())


def test_record_creates_a_new_folder_owner_only_and_marks_it(tmp_path):
    path = record(folder=tmp_path / "new" / "session")
    assert path.stat().st_mode & 0o777 == 0o700
    assert json.loads((path / "meta.json").read_text())["created_folder"] is True


# ------------------------------------------------------------------------------------------- 5: links out


def _outside_wav(tmp_path: Path) -> Path:
    """A WAV outside the session whose header is 'wrong' (data size 0), as a crash leaves them."""
    src = record(root=tmp_path / "src", seconds=0.2)
    target = tmp_path / "outside" / "precious.wav"
    target.parent.mkdir()
    raw = bytearray((src / "mic_raw.wav").read_bytes())
    layout = parse_wav_layout(src / "mic_raw.wav")
    raw[layout.data_size_pos:layout.data_size_pos + 4] = (0).to_bytes(4, "little")
    target.write_bytes(bytes(raw))
    return target


def test_repair_leaves_files_linked_from_outside_alone(tmp_path):
    outside = _outside_wav(tmp_path)
    secret = tmp_path / "outside" / "secret.jsonl"
    secret.write_text('{"type": "user_text", "t": 0, "turn": 1, "text": "my bank password"}\n')
    before = tree(outside.parent)
    session = record(root=tmp_path / "sessions")
    (session / "mic_clean.wav").symlink_to(outside)
    (session / "events.jsonl").unlink()
    (session / "events.jsonl").symlink_to(secret)
    report = repair_session(session)
    assert tree(outside.parent) == before
    text = " ".join(report.problems)
    assert "mic_clean.wav" in text and "events.jsonl" in text and "link" in text
    assert "my bank password" not in (session / "transcript.md").read_text()


def test_export_skips_links_and_says_so(tmp_path):
    outside = tmp_path / "outside" / "diary.txt"
    outside.parent.mkdir()
    outside.write_text("dear diary")
    session = record(root=tmp_path / "sessions")
    (session / "notes.txt").symlink_to(outside)
    (session / "linked-dir").symlink_to(outside.parent, target_is_directory=True)
    out = tmp_path / "out.zip"
    proc = run_parley("session", "export", str(session), str(out))
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert not any("notes.txt" in n or "linked-dir" in n for n in names)
        assert all(b"dear diary" not in zf.read(n) for n in names)
    assert "notes.txt" in proc.stdout + proc.stderr and "skipped" in proc.stdout + proc.stderr
    skipped: list[str] = []
    export_session(session, tmp_path / "again.zip", skipped=skipped)
    assert sorted(skipped) == ["linked-dir", "notes.txt"]
