"""The window a newcomer meets: the first-run welcome (once), the quiet setup check, loading shown as steps with a
progress bar and an estimate, settings changes that keep the conversation, listening paused while Settings is open.
Real widgets (pytest-qt, offscreen); the reload test runs the app's worker on the tiny Freeze-Omni fixture."""

from __future__ import annotations

import pytest

from _shared import default_fixture, event
from app.main_window import MainWindow
from core.settings import Settings

pytestmark = pytest.mark.ui
FIXTURE = default_fixture()


@pytest.fixture
def window(qtbot):
    w = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()
    w.wait_shut_down(10_000)


def test_the_welcome_shows_on_the_first_start_only_and_is_remembered(qtbot, window):
    w = window
    w.run_startup_checks(first_run=True)
    assert w.welcome.isVisible() and "Esc" in w.welcome.text.text() and "Space" in w.welcome.text.text()
    assert not w.settings.ui.first_run_done
    qtbot.mouseClick(w.welcome.ok, __import__("PySide6.QtCore", fromlist=["Qt"]).Qt.MouseButton.LeftButton)
    assert not w.welcome.isVisible() and w.settings.ui.first_run_done
    w2 = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w2)
    w2.run_startup_checks(first_run=False)
    assert not w2.welcome.isVisible()
    w2.close()
    w2.wait_shut_down(10_000)


def test_a_passing_setup_check_is_a_quiet_tick_not_a_dialog(qtbot, window):
    from core.doctor import Check

    w = window
    w._first_run = True
    w._startup_checks_done([Check("audio", "ok", "2 devices", "")])
    assert "Setup check passed" in w.statusBar().currentMessage()
    assert getattr(w, "_doctor_dialog", None) is None and not w.notices.banners
    w._startup_checks_done([Check("audio", "fail", "no microphone", "plug one in")])
    assert w._doctor_dialog is not None and w._doctor_dialog.isVisible()      # the first start: the setup check
    w._doctor_dialog.close()


def test_loading_progress_events_move_the_bar_and_remember_the_time(qtbot, window):
    w = window
    w.settings.ui.load_seconds["lite"] = 2.0
    w.handle_event(event("progress", 0.0, 0, {"step": "lite: start", "fraction": 0.0, "message": "Loading"}))
    card = w.loading_card
    assert card.isVisible() and "lite" in card.title.text()
    w.handle_event(event("progress", 0.0, 0, {"step": "lite: language model", "message": "Loading the language"
                                                                                           " model"}))
    assert "language model" in card.step.text()
    first = card.bar.value()
    qtbot.wait(600)
    assert card.bar.value() > first and "s left" in card.estimate.text()
    w.handle_event(event("progress", 0.0, 0, {"step": "lite: ready", "fraction": 1.0, "done": True,
                                              "message": "Loaded"}))
    assert not card.isVisible()
    assert 0.5 < w.settings.ui.load_seconds["lite"] < 10.0       # the next estimate: how long this one took


def test_the_first_load_without_an_estimate_shows_a_busy_bar_and_says_why(qtbot, window):
    w = window
    w.handle_event(event("progress", 0.0, 0, {"step": "freeze-omni: start", "fraction": 0.0, "message": "x"}))
    card = w.loading_card
    assert card.isVisible() and card.bar.maximum() == 0 and "first start" in card.estimate.text()
    w._on_loading(False, "")
    assert not card.isVisible()


def test_the_first_load_follows_the_conversion_steps_own_progress(qtbot, window):
    """On the first start the bar is busy until a conversion step reports a fraction; then it shows it, never goes
    back, and the estimate comes from the step's pace."""
    w = window
    w.handle_event(event("progress", 0.0, 0, {"step": "lite: start", "fraction": 0.0, "message": "Starting"}))
    card = w.loading_card
    assert card.bar.maximum() == 0
    w.handle_event(event("progress", 0.0, 0, {"step": "lite: export", "fraction": 0.2,
                                              "message": "converting layer 1 of 30"}))
    assert card.bar.maximum() == 1000 and card.bar.value() == 200 and "layer 1" in card.step.text()
    qtbot.wait(1100)
    w.handle_event(event("progress", 0.0, 0, {"step": "lite: export", "fraction": 0.4,
                                              "message": "converting layer 10 of 30"}))
    assert card.bar.value() == 400 and "s left" in card.estimate.text()
    w.handle_event(event("progress", 0.0, 0, {"step": "lite: warm-up", "message": "Warming up"}))
    assert card.bar.value() == 400 and "Warming up" in card.step.text()      # a step without a fraction: kept
    w.handle_event(event("progress", 0.0, 0, {"step": "lite: ready", "fraction": 1.0, "done": True,
                                              "message": "Loaded"}))
    assert not card.isVisible()


def test_typed_text_while_loading_is_queued_and_says_so(qtbot, window):
    w = window
    w.loading = True
    sent: list[str] = []
    w.req_text.connect(sent.append)
    w.message.setText("  hello   there ")
    w.send_message()
    assert sent == [] and w._queued_messages == ["hello there"] and w.message.text() == ""
    assert any("as soon as" in t for t in w.notices.texts())
    w.loading = False
    w.profile_loaded = "lite"
    w._send_queued_messages()
    assert sent == ["hello there"] and w._queued_messages == []


@pytest.mark.slow
@pytest.mark.skipif(not (FIXTURE / "checkpoints").is_dir(), reason="tiny Freeze-Omni fixture missing")
def test_a_reload_with_the_same_language_model_keeps_the_conversation():
    from app.worker import EngineWorker, keeps_memory

    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir, s.model.backbone_dir = str(FIXTURE), str(FIXTURE / "llm")
    s.model.device, s.model.precision = "cpu", "fp32"
    worker = EngineWorker()
    progress: list = []
    worker.events_ready.connect(lambda: progress.extend(e for e in worker.take_events() if e.type == "progress"))
    worker.load(s)
    try:
        assert worker.stack is not None
        steps = [e.step for e in progress]
        assert steps[0] == "freeze-omni: start" and steps[-1] == "freeze-omni: ready"
        assert any("language model" in st for st in steps)
        said = [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "Hi!"}]
        worker.stack.restore_history(said)
        old = worker.stack
        s2 = s.copy()
        s2.model.precision = "bf16"                  # a reload, the same backbone
        assert keeps_memory(s, s2)
        worker.load(s2)
        assert worker.stack is not old and worker.stack.history() == said
        s3 = s2.copy()
        s3.model.backbone_dir = str(FIXTURE / "llm") + "/"     # another folder: another model as far as we know
        assert not keeps_memory(s2, s3)
    finally:
        worker.shutdown()


def test_a_backchannel_leaves_no_bubble_and_an_unheard_joined_answer_disappears(qtbot, window):
    w = window
    for ev in (event("user_text", 1.0, 1, {"text": "Tell me a story", "final": True, "full": "Tell me a story"}),
               event("turn_decision", 1.1, 1, {"state": "ss"}),
               event("assistant_text", 1.2, 1, {"text": "Once upon a time"}),
               event("user_text", 2.0, 2, {"text": "Mm-hmm.", "final": True, "full": "Mm-hmm.", "candidate": True}),
               event("turn_decision", 2.5, 2, {"state": "el", "reason": "backchannel", "candidate": True})):
        w.handle_event(ev)
    assert w.transcript.entry(2, "user", create=False) is None          # no bubble for the backchannel
    assert w.transcript.entry(1, "assistant", create=False) is not None  # the story goes on
    for ev in (event("user_text", 5.0, 3, {"text": "What is the capital", "final": True,
                                           "full": "What is the capital"}),
               event("turn_decision", 5.4, 3, {"state": "ss"}),
               event("assistant_text", 5.5, 3, {"text": "The capital of"}),
               event("interruption", 5.9, 3, {"reply_turn": 3, "reason": "joined", "unheard_text": "The capital of"})):
        w.handle_event(ev)
    assert w.transcript.entry(3, "assistant", create=False) is None       # nobody heard it: gone
    assert w.transcript.entry(3, "user", create=False) is not None        # the user's turn goes on
