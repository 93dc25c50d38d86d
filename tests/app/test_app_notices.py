"""Plain-language notices: every notice code the engine, the audio layer and the recorder emit becomes a sentence
a non-engineer understands (or stays in the log), shown once (repeats coalesce into one banner with a count), with
the engineering text in a Details expander and in the engineering-details panel (off by default)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from app.main_window import MainWindow
from app.notices import SENTENCES, is_jargon_free, plain_notice
from app.widgets.debug import EngineeringPanel
from app.widgets.notify import NotificationArea
from core.settings import Settings, load_settings

pytestmark = pytest.mark.ui
REPO = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("PARLEY_SCREENSHOT_DIR") or REPO / "docs" / "screenshots")

# (code, level, the technical message as the engine/audio layer/recorder writes it, extra fields)
SHOWN = [
    ("slow_step", "warning", "one speak step took 0.81 s (listening waited for it)", {"where": "reply"}),
    ("playback_starved", "warning", "playback starved: 96 since last report", {"source": "audio", "count": 96}),
    ("output_underflow", "warning", "output underflow: 2 since last report", {"source": "audio", "count": 2}),
    ("input_overflow", "warning", "input overflow: 1 since last report", {"source": "audio", "count": 1}),
    ("device_lost", "warning", "audio device lost: input stream stalled", {"source": "audio"}),
    ("reopened", "info", "audio re-opened on 'USB Mic'/'USB Speakers'", {"source": "audio"}),
    ("stopped", "error", "audio could not be re-opened after: input stream stalled", {"source": "audio"}),
    ("device_fallback", "warning", "input device 'Fancy Mic' not found; using 'default'", {"source": "audio"}),
    ("recording_stopped", "warning",
     "session recording stopped while writing audio in /home/u/s: No space left on device", {"source": "session"}),
    ("recording_stopped", "warning", "session recording stopped while writing audio in /x: Permission denied",
     {"source": "session"}),
    ("out_of_memory", "error", "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
     {"where": "reply"}),
    ("backend", "error", "RuntimeError: shape mismatch", {"where": "listen"}),
    ("backend", "error", "BackendError: espeak-ng failed", {"where": "reply"}),
    ("crash", "error", "ValueError: bad chunk", {"where": "engine"}),
    ("empty_reply", "warning", "the backend produced no answer", {}),
    ("something_new", "error", "KeyError: 'x'", {}),
]
LOG_ONLY = [
    ("turn_decision", "info", "el", {}),
    ("turn_decision", "info", "turn 8: decision ignore", {}),
    ("el", "info", "(decision: el)", {}),
    ("stopped", "info", "audio stopped", {"source": "audio"}),
    ("aec_realigned", "info", "echo reference re-aligned", {"source": "audio"}),
    ("cancelled", "error", "the answer was cancelled before it was complete", {"where": "reply"}),
    ("drain_limit", "warning", "drain limit reached", {}),
    ("something_new", "warning", "an unknown engineering warning", {}),
]


@pytest.mark.parametrize("code,level,technical,fields", SHOWN, ids=[f"{c[0]}-{i}" for i, c in enumerate(SHOWN)])
def test_each_shown_notice_is_a_plain_sentence_with_the_technical_text_as_details(code, level, technical, fields):
    sentence, details = plain_notice(code, level, technical, **fields)
    assert sentence, code
    assert is_jargon_free(sentence), sentence
    assert sentence[0].isupper() and sentence.rstrip().endswith((".", "…")), sentence
    assert technical in details and technical not in sentence
    assert "since last report" not in sentence and "decision" not in sentence.lower()


@pytest.mark.parametrize("code,level,technical,fields", LOG_ONLY, ids=[f"{c[0]}-{i}" for i, c in enumerate(LOG_ONLY)])
def test_engineering_notices_stay_out_of_banners(code, level, technical, fields):
    sentence, details = plain_notice(code, level, technical, **fields)
    assert sentence is None and technical in details


def test_specific_meanings():
    full, _ = plain_notice("recording_stopped", "warning", "writing: [Errno 28] No space left on device")
    other, _ = plain_notice("recording_stopped", "warning", "writing: Permission denied")
    assert "disk is full" in full and "disk" not in other and "kept" in full and "kept" in other
    listen, _ = plain_notice("backend", "error", "x", where="listen")
    reply, _ = plain_notice("backend", "error", "x", where="reply")
    assert listen != reply and "say it again" in listen and "ask again" in reply
    assert "Start listening" in plain_notice("stopped", "error", "audio stopped for good")[0]
    assert "memory" in plain_notice("out_of_memory", "error", "OOM")[0]
    # every sentence of the table is plain
    for code, sentence in SENTENCES.items():
        assert sentence is None or is_jargon_free(sentence), code


def test_repeats_coalesce_into_one_banner_with_a_count(qtbot):
    area = NotificationArea()
    panel = EngineeringPanel()
    area.technical.connect(panel.add_notice)
    qtbot.addWidget(area)
    qtbot.addWidget(panel)
    area.show()
    for i in range(11):
        area.notify_code("playback_starved", "warning", f"playback starved: {10 + i} since last report",
                         source="audio", count=10 + i)
    assert len(area.banners) == 1
    b = area.banners[0]
    assert b.count == 11 and b.label.text().endswith("(×11)")
    assert "playback starved: 20 since last report" in b.details        # the latest figures
    qtbot.waitUntil(b.isVisible, timeout=2000)
    assert not b.details_label.isVisible() and b.details_button.isVisible()   # collapsed by default
    b.details_button.click()
    assert b.details_label.isVisible() and "playback starved: 20" in b.details_label.text()
    assert not b._timer.isActive()                                      # being read: it does not fade
    assert panel.notices() == [("warning", "playback_starved", b.details, 11)]
    # a decision and the other engineering notices never make a banner, but the panel has them
    assert area.notify_code("turn_decision", "info", "(decision: el)") is None
    assert area.notify_code("aec_realigned", "info", "echo reference re-aligned", source="audio") is None
    assert len(area.banners) == 1 and not any("decision" in t for t in area.texts())
    assert ("info", "turn_decision", "(decision: el) [code turn_decision]", 1) in panel.notices()
    # another problem is another banner
    area.notify_code("device_lost", "warning", "audio device lost: stalled", source="audio")
    assert len(area.banners) == 2


def test_a_dismissed_warning_stays_away_an_error_comes_back(qtbot, caplog):
    area = NotificationArea()
    qtbot.addWidget(area)
    w = area.notify_code("slow_step", "warning", "one speak step took 0.81 s (listening waited for it)")
    w.closed.emit(w)                                        # the user closes it
    assert area.banners == []
    with caplog.at_level(logging.INFO, logger="app.widgets.notify"):
        assert area.notify_code("slow_step", "warning", "one speak step took 0.92 s (listening waited for it)") \
            is None
    assert area.banners == [] and area.times_notified("slow_step") == 2
    e = area.notify_code("out_of_memory", "error", "OOM")
    e.closed.emit(e)
    assert area.notify_code("out_of_memory", "error", "OOM again") is not None


def test_engineering_panel_is_off_by_default_and_its_toggle_is_kept(qtbot, config_dir):
    w = MainWindow(load_settings())
    qtbot.addWidget(w)
    w.show()
    assert not w.details_dock.isVisible() and not w.act_details.isChecked()
    w.notices.notify_code("output_underflow", "warning", "output underflow: 2 since last report", count=2)
    w.act_details.trigger()
    assert w.details_dock.isVisible()
    assert w.details.notices()[0][1] == "output_underflow"
    w.details.set_figure("context tokens", 212)
    assert w.details.figure("context tokens") == "212"
    w.close()
    assert w.wait_shut_down()
    assert load_settings().settings.ui.engineering_panel is True
    w2 = MainWindow(load_settings())
    qtbot.addWidget(w2)
    w2.show()
    assert w2.details_dock.isVisible()
    w2.close()
    assert w2.wait_shut_down()


def test_screenshot_plain_notices_with_details(qtbot, config_dir):
    w = MainWindow(Settings(), persist=False)
    qtbot.addWidget(w)
    w.resize(1100, 800)
    w.show()
    for n in (96, 41, 12):
        w.notices.notify_code("playback_starved", "warning", f"playback starved: {n} since last report",
                              source="audio", count=n)
    w.notices.notify_code("slow_step", "warning", "one speak step took 0.81 s (listening waited for it)",
                          where="reply")
    b = w.notices.notify_code("recording_stopped", "warning",
                              "session recording stopped while writing audio in /home/you/.local/share/parley/"
                              "sessions/2026-11-22_10-30-00: [Errno 28] No space left on device", source="session")
    b.details_button.click()
    w.details_dock.show()
    for row in range(w.details.table.rowCount()):        # a fixed clock: the same picture on every run
        w.details.table.item(row, 0).setText(f"10:30:0{row}")
    for _ in range(5):
        QApplication.processEvents()
    OUT.mkdir(parents=True, exist_ok=True)
    assert w.grab().save(str(OUT / "notices_plain_with_details.png"))
    w.close()
    assert w.wait_shut_down()
