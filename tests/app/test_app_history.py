"""Conversation history and the transcript's copy/export: the store (owner-only files under the data dir, limits,
corrupt files skipped, nothing else touched), the transcript's context menu (copy a message, copy all, export as
Markdown/text), New conversation and closing keeping the conversation, and the History dialog (reopen read-only,
export, delete one or all)."""

from __future__ import annotations

import datetime
import json
import os
import stat
import time
from pathlib import Path

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from app.history_dialog import HistoryDialog
from app.main_window import MainWindow
from _shared import event
from core.history import HistoryStore, TurnRecord, export, history_root, to_markdown, to_text
from core.settings import Settings, load_settings, save_settings

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("PARLEY_SCREENSHOT_DIR") or REPO / "docs" / "screenshots")
T0 = datetime.datetime(2026, 11, 22, 10, 30, 0).timestamp()


def _turns(n: int = 2, t0: float = T0) -> list[TurnRecord]:
    return [TurnRecord(user=f"Question {i}?", assistant=f"Answer {i}.", user_time=t0 + 10 * i,
                       assistant_time=t0 + 10 * i + 2, latency_ms=600.0) for i in range(n)]


def _mode(p: Path) -> str:
    return oct(stat.S_IMODE(p.stat().st_mode))


# ------------------------------------------------------------------------------------------------ the store ----


def test_store_keeps_owner_only_files_newest_first(config_dir):
    store = HistoryStore()
    assert store.root == history_root() == Path(os.environ["PARLEY_DATA_DIR"]) / "history"
    first = store.save(_turns(2, T0), persona="Parley", profile="lite")
    second = store.save(_turns(1, T0 + 3600), persona="Ada")
    assert _mode(store.root) == "0o700"
    for conv in (first, second):
        assert _mode(conv.path) == "0o600"
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []     # no temporary files left
    listed = store.list()
    assert [c.id for c in listed] == [second.id, first.id]
    again = store.load(first.id)
    assert again.turns == first.turns and again.persona == "Parley" and again.profile == "lite"
    assert again.title == "Question 0?"
    assert json.loads(first.path.read_text())["version"] == 1


def test_nothing_is_kept_when_history_is_off_or_nothing_was_said(config_dir):
    assert HistoryStore(keep=False).save(_turns()) is None
    assert HistoryStore().save([TurnRecord(), TurnRecord(user="  ")]) is None
    assert not history_root().exists()
    s = Settings()
    s.history.keep = False
    assert HistoryStore.from_settings(s).keep is False


def test_limits_by_count_and_age(config_dir):
    store = HistoryStore(max_conversations=3, max_days=30)
    now = time.time()
    old = store.save(_turns(1, now - 40 * 86400))             # older than 30 days: pruned at once
    assert old is not None and not old.path.exists()
    kept = [store.save(_turns(1, now - 3600 * (10 - i))) for i in range(5)]
    assert [c.id for c in store.list()] == [c.id for c in kept[::-1][:3]]       # the newest three


def test_corrupt_files_are_skipped_with_a_warning_and_other_files_never_touched(config_dir, caplog):
    store = HistoryStore()
    good = store.save(_turns())
    bad = store.root / "2026-01-01_00-00-00_abcdef.json"
    bad.write_text("{ not json")
    wrong = store.root / "2026-01-02_00-00-00_abcdee.json"
    wrong.write_text(json.dumps({"version": 1, "turns": "nope", "started": 1, "ended": 2}))
    mine = store.root / "my notes.txt"
    mine.write_text("the user's own file")
    listed = store.list()
    assert [c.id for c in listed] == [good.id]
    assert len(store.warnings) == 2 and any("not valid JSON" in w for w in store.warnings)
    assert "cannot be read" in caplog.text
    store.prune()
    assert bad.exists() and wrong.exists()                  # unreadable: left where they are
    assert store.delete("../../etc/passwd") is False
    assert store.delete_all() == 3 and mine.read_text() == "the user's own file"


def test_export_formats(tmp_path):
    store = HistoryStore(tmp_path / "h")
    turns = _turns(1) + [TurnRecord(user="And the population?", assistant="About two million", unheard="people.",
                                    interrupted=True, user_time=T0 + 30, assistant_time=T0 + 32)]
    conv = store.save(turns, persona="Ada")
    md = to_markdown(conv)
    assert md.startswith("# Conversation with Ada\n") and "**You** (10:30:00): Question 0?" in md
    assert "**Ada** (10:30:32): About two million (interrupted)" in md and "people." not in md
    txt = to_text(conv)
    assert "[10:30:02] Ada: Answer 0." in txt and "[10:30:30] You: And the population?" in txt
    assert export(conv, tmp_path / "c.md").read_text() == md
    assert export(conv, tmp_path / "c.txt").read_text() == txt
    assert _mode(tmp_path / "c.md") == "0o600"


# ------------------------------------------------------------------------------------------- the window ----


def _converse(w: MainWindow) -> None:
    w.handle_event(event("user_text", 0.5, 1, {"text": "What is the capital of France?", "final": True}))
    w.handle_event(event("assistant_text", 1.0, 1, {"text": "The capital of France is Paris."}))
    w.handle_event(event("latency", 1.1, 1, {"first_played_ms": 640.0}))
    w.handle_event(event("user_text", 4.0, 2, {"text": "And how many people live there?", "final": True}))
    w.handle_event(event("assistant_text", 4.5, 2, {"text": "About two million in the city, "}))
    w.handle_event(event("assistant_text", 4.6, 2, {"text": "and twelve million around it."}))
    w.handle_event(event("interruption", 5.0, 3, {"reply_turn": 2, "unheard_text": "and twelve million around it."}))


@pytest.fixture
def window(qtbot, config_dir):
    w = MainWindow(load_settings())
    qtbot.addWidget(w)
    w.resize(1100, 700)
    w.show()
    yield w
    w.close()
    assert w.wait_shut_down()


def test_the_unheard_end_of_an_answer_is_struck_through_once_whatever_the_spaces(qtbot, window):
    """Lite hands its text out clause by clause, each with the space after it; the engine's unheard text is
    stripped. Tried as a user: the bubble showed "... It's a tale of courage, " and then the unheard part struck
    through after it, so those words appeared twice."""
    w = window
    w.handle_event(event("user_text", 0.5, 1, {"text": "Tell me a long story.", "final": True}))
    for i, clause in enumerate(("The story of a brave knight is one that has been passed down ",
                                "through generations. ", "It's a tale of courage, ")):
        w.handle_event(event("assistant_text", 1.0 + i / 10, 1, {"text": clause}))
    w.handle_event(event("interruption", 3.0, 2, {"reply_turn": 1,
                                                   "unheard_text": "through generations. It's a tale of courage,"}))
    d = w.transcript.entry(1, "assistant", create=False).data
    assert d.heard.strip() == "The story of a brave knight is one that has been passed down"
    assert d.message == "The story of a brave knight is one that has been passed down"
    html = w.transcript.entry(1, "assistant", create=False).body_html()
    assert html.count("courage") == 1 and html.count("generations") == 1 and "<s " in html


def test_copy_a_message_copy_all_and_export_from_the_context_menu(qtbot, window, tmp_path):
    w = window
    _converse(w)
    qtbot.wait(50)
    entry = w.transcript.entry(2, "assistant")
    pos = entry.body.mapTo(w.transcript.viewport(), entry.body.rect().center())
    assert w.transcript.entry_at(pos) is entry
    menu = w.transcript.context_menu(w.transcript.entry_at(pos))
    actions = {a.text(): a for a in menu.actions() if a.text()}
    assert list(actions) == ["Copy message", "Copy conversation", "Export conversation…"]
    actions["Copy message"].trigger()
    assert QGuiApplication.clipboard().text() == "About two million in the city,"     # as heard
    w.act_copy.trigger()                                                               # Ctrl+Shift+C
    text = QGuiApplication.clipboard().text()
    assert "You: What is the capital of France?" in text and "Parley: The capital of France is Paris." in text
    assert "twelve million" not in text and "(interrupted)" in text
    out = w.transcript.export_to(tmp_path / "conversation.md")
    assert "**You**" in out.read_text() and "(interrupted)" in out.read_text()
    assert "You: " in w.transcript.export_to(tmp_path / "conversation.txt").read_text()
    # right-clicking empty space offers the conversation actions only
    assert [a.text() for a in w.transcript.context_menu(None).actions() if a.text()] == [
        "Copy conversation", "Export conversation…"]


def test_new_conversation_and_closing_keep_the_conversation(qtbot, config_dir):
    w = MainWindow(load_settings())
    qtbot.addWidget(w)
    w.show()
    _converse(w)
    w.new_conversation()
    assert w.transcript.order == []
    store = HistoryStore()
    convs = store.list()
    assert len(convs) == 1 and convs[0].turns[1].assistant == "About two million in the city,"
    assert convs[0].turns[1].interrupted and convs[0].turns[1].unheard == "and twelve million around it."
    w.new_conversation()                          # nothing said: nothing kept
    assert len(store.list()) == 1
    w.handle_event(event("user_text", 9.0, 5, {"text": "Goodbye.", "final": True}))
    w.close()
    assert w.wait_shut_down()
    assert [c.title for c in store.list()] == ["Goodbye.", "What is the capital of France?"]
    # with history off, nothing more is kept
    s = load_settings().settings
    s.history.keep = False
    save_settings(s)
    w2 = MainWindow(load_settings())
    qtbot.addWidget(w2)
    _converse(w2)
    w2.new_conversation()
    w2.close()
    assert w2.wait_shut_down()
    assert len(store.list()) == 2


def test_history_dialog_reopens_exports_and_deletes(qtbot, window, tmp_path, monkeypatch):
    store = HistoryStore()
    store.save(_turns(2, T0 - 86400), persona="Parley")
    window.transcript.set_persona("Parley")
    _converse(window)
    window.new_conversation()
    monkeypatch.setattr(HistoryDialog, "_confirm", lambda self, q: True)     # the Yes of the question box
    window.act_history.trigger()
    dlg = window._history_dialog
    assert dlg.isVisible()
    convs = dlg.conversations()
    assert len(convs) == 2 and dlg.list.count() == 2
    assert "What is the capital of France?" in dlg.list.item(0).text()       # newest first
    # reopened read-only: the transcript view shows it as it was heard
    assert dlg.view.read_only
    assert dlg.view.plain_text().splitlines()[:2] == ["You: What is the capital of France?",
                                                      "Parley: The capital of France is Paris."]
    assert dlg.view.entry(2, "assistant").data.interrupted
    dlg.list.setCurrentRow(1)
    assert dlg.view.plain_text().startswith("You: Question 0?")
    out = dlg.export_current(tmp_path / "old.md")
    assert "Question 1?" in out.read_text()
    dlg.list.setCurrentRow(1)
    dlg.delete_button.click()                              # the older one
    assert [c.title for c in store.list()] == ["What is the capital of France?"] and dlg.list.count() == 1
    dlg.delete_all_button.click()
    assert store.list() == [] and dlg.list.count() == 0 and not dlg.delete_all_button.isEnabled()
    assert "No conversations kept yet." in dlg.status.text()


def test_screenshot_history_dialog(qtbot, config_dir):
    store = HistoryStore()
    day = 86400
    store.save([TurnRecord("Can you suggest a name for a grey cat?", "How about Smokey, or Ash?", T0 - 2 * day,
                           T0 - 2 * day + 2)], persona="Parley")
    store.save([TurnRecord("Remind me, how long do I boil an egg?", "About seven minutes for a soft yolk.",
                           T0 - day, T0 - day + 2, typed=True)], persona="Parley")
    store.save([TurnRecord("What is the capital of France?", "The capital of France is Paris.", T0, T0 + 4,
                           latency_ms=640.0),
                TurnRecord("And how many people live there?", "About two million in the city,", T0 + 8, T0 + 12,
                           interrupted=True, unheard="and twelve million around it.", latency_ms=597.0)],
               persona="Parley")
    dlg = HistoryDialog(Settings())
    qtbot.addWidget(dlg)
    dlg.resize(980, 560)
    dlg.show()
    assert dlg.list.count() == 3 and dlg.view.entry(2, "assistant").data.interrupted
    assert dlg.view.entry(1, "user").data.typed is False
    dlg.status.setText("3 conversations in ~/.local/share/parley/history")   # not the test's temporary folder
    for _ in range(5):
        QApplication.processEvents()
    OUT.mkdir(parents=True, exist_ok=True)
    assert dlg.grab().save(str(OUT / "history_dialog.png"))
