"""MainWindow + worker on real parts.

* Rendering (transcript, partial/final text, interruptions, latency, state panel, malformed events, recurring
  warnings): no engine stack is needed; real :class:`core.engine.events.Event` objects are published on a real
  :class:`~core.engine.events.EventBus` whose subscriber is the worker's own callback, so they reach the window
  through the path every engine event takes (worker buffer -> ``events_ready`` -> ``MainWindow._drain_events``).
* Settings persistence, geometry restore, a broken settings file: the window alone.
* The GUI's GIL switch interval: the window sets it, and renders while a thread that never leaves the interpreter
  publishes events on such a bus (a CPU load, not an engine part; ``app.bench``, which ``parley bench gui`` runs
  to measure the event loop's lateness).
* Everything that needs a loaded engine runs the stack the app builds by default (``core.compose.live.LiveStack``)
  over the PulseAudio null-sink loop (a private sink per module; what is played into it is the microphone):
  the tiny Freeze-Omni parity fixture (loads in seconds) for the worker, settings and profile-swap tests; Lite for
  the keyboard controls (Esc needs an answer long enough to be cut, and the tiny fixture's answers have no audio),
  for the event loop's responsiveness while a model computes (the tiny fixture computes next to nothing) and for
  the start that falls back to Lite. Each group shares one loaded window. Failures are real: a backbone whose
  config does not match the checkpoint, folders that do not exist, a sound server that cannot be reached, a
  recording folder under a file.

Run the engine tests after ``eval "$(scripts/testenv.sh start)"``; without the loop they are skipped.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtWidgets import QApplication

from app.bench import LatenessProbe, measure
from _loop import private_loop
from app.main_window import GUI_SWITCH_INTERVAL_S, MainWindow
from app.widgets.theme import css
from _shared import default_fixture, event
from core.engine.events import EventBus
from core.settings import Settings, load_settings

pytestmark = pytest.mark.ui

FIXTURE = default_fixture()            # PARLEY_FIXTURES or <repo>/../shared/fixtures
DIRECT = Qt.ConnectionType.DirectConnection

needs_fixture = pytest.mark.skipif(not (FIXTURE / "checkpoints" / "audiollm" / "final.pt").is_file(),
                                   reason="tiny Freeze-Omni fixture missing (set PARLEY_FIXTURES)")


# ------------------------------------------------------------------------------------------------- helpers ----


@pytest.fixture
def make_window(qtbot, config_dir):
    windows = []

    def make(settings=None, resize=True, **kw):
        w = MainWindow(settings if settings is not None else load_settings(), **kw)
        qtbot.addWidget(w)
        if resize:
            w.resize(1000, 640)
        w.show()
        windows.append(w)
        return w

    yield make
    for w in windows:
        w.close()
        assert w.wait_shut_down(60_000), "the worker thread must stop when the window closes"


def deliver(qtbot, w: MainWindow, *events) -> None:
    """Publish ``events`` on an event bus the window's worker subscribes to (as it subscribes to the engine's bus),
    and wait until the window has rendered them all."""
    bus = EventBus()
    sub = bus.subscribe(w.worker._on_event)
    rendered: list = []

    def count(ev) -> None:
        rendered.append(ev)

    w.event_handled.connect(count, DIRECT)
    try:
        for ev in events:
            bus.publish(ev)
        qtbot.waitUntil(lambda: len(rendered) >= len(events), timeout=3000)
    finally:
        w.event_handled.disconnect(count)
        sub.close()


def _fo_settings(fixture: Path = FIXTURE) -> Settings:
    s = Settings()
    s.model.profile = "freeze-omni"
    s.model.checkpoint_dir = str(fixture)           # the folder holding checkpoints/
    s.model.backbone_dir = str(fixture / "llm")
    s.model.device, s.model.precision = "cpu", "fp32"
    return s


def _lite_installed() -> bool:
    from core.settings.models import lite_missing_packages

    return not lite_missing_packages()


def _wait(seconds: float, until) -> bool:
    """Run the Qt event loop for up to ``seconds`` until ``until()`` holds (for class fixtures, which get no
    qtbot)."""
    loop = QEventLoop()
    check = QTimer()
    check.setInterval(20)
    check.timeout.connect(lambda: loop.quit() if until() else None)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    check.start()
    deadline.start(int(seconds * 1000))
    if not until():
        loop.exec()
    check.stop()
    deadline.stop()
    return bool(until())


@contextlib.contextmanager
def _config_dir(tmp_path_factory, name: str):
    old = os.environ.get("PARLEY_CONFIG_DIR")
    os.environ["PARLEY_CONFIG_DIR"] = str(tmp_path_factory.mktemp(name))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PARLEY_CONFIG_DIR", None)
        else:
            os.environ["PARLEY_CONFIG_DIR"] = old


def _close(w: MainWindow) -> None:
    w.close()
    assert w.wait_shut_down(60_000), "the worker thread must stop when the window closes"


@pytest.fixture(scope="module")
def loop():
    """The PulseAudio null-sink loop with a private sink for this module: this process's streams record its
    monitor and play into it; ``play`` puts sound on the 'microphone'. Skipped when the loop is not running."""
    yield from private_loop("window", "paplay")


def play(sink, path: Path) -> subprocess.Popen:
    return subprocess.Popen(["paplay", f"--device={sink.name}", str(path)])


def _say(text: str, path: Path) -> Path:
    """A WAV of ``text`` spoken by espeak-ng."""
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True, timeout=30)
    return path


def _load(qtbot, w: MainWindow, listen: bool = False) -> None:
    w.start_engine(listen=listen)
    qtbot.waitUntil(lambda: w.profile_loaded is not None, timeout=60_000)
    if listen:
        qtbot.waitUntil(lambda: w.listening, timeout=30_000)


class _Seen:
    """Records every event the window rendered, the thread it was rendered in, and every event the stack
    published with the thread that published it (through the stack's own ``subscribe``)."""

    def __init__(self, w: MainWindow, stack=None) -> None:
        self.w = w
        self.rendered: list = []
        self.rendered_in_gui: set[bool] = set()
        self.published: list[tuple[str, object]] = []
        self._sub = stack.subscribe(self._on_published) if stack is not None else None
        w.event_handled.connect(self._on_rendered, DIRECT)

    def _on_rendered(self, ev) -> None:
        self.rendered_in_gui.add(threading.current_thread() is threading.main_thread())
        self.rendered.append(ev)

    def _on_published(self, ev) -> None:
        self.published.append((threading.current_thread().name, ev))

    def types(self, start: int = 0) -> collections.Counter:
        return collections.Counter(getattr(ev, "type", None) for ev in self.rendered[start:])

    def by_thread(self, name: str, etype: str) -> int:
        return sum(1 for th, ev in list(self.published) if th == name and ev.type == etype)

    def close(self) -> None:
        self.w.event_handled.disconnect(self._on_rendered)
        if self._sub is not None:
            self._sub.close()


# ------------------------------------------------------------------------------------- the window alone ----


def test_window_needs_no_devices_or_models_and_accepts_load_result(make_window):
    w = make_window(load_settings())      # what app.selftest passes
    assert w.windowTitle() == "Parley"
    assert w.panel.badge.text() == "Idle"
    assert not w.act_listen.isEnabled()    # nothing loaded yet
    assert w.worker.stack is None          # and nothing is loaded by building the window
    img = w.grab()
    assert not img.isNull() and img.width() > 500


def test_transcript_partial_final_interruption_and_latency(qtbot, make_window):
    w = make_window()
    # the engine's semantics: pieces are appended, partial=True replaces the whole hypothesis, final marks it done
    deliver(qtbot, w,
            event("user_text", 0.5, 1, {"text": "what is the", "final": False}),
            event("user_text", 0.8, 1, {"text": " capitol", "final": False}),
            event("user_text", 0.9, 1, {"text": "What is the capital", "partial": True, "final": False}))
    user = w.transcript.entry(1, "user")
    live = css(user.theme.user_muted)
    assert user.body.text() == f"<i style='color:{live}'>What is the capital…</i>"   # live, in italics
    deliver(qtbot, w, event("user_text", 1.0, 1, {"text": " of France?", "final": True,
                                                  "full": "What is the capital of France?"}))
    assert user.data.text == "What is the capital of France?" and user.data.final
    assert user.body.text() == "What is the capital of France?"
    deliver(qtbot, w,
            event("assistant_text", 1.2, 1, {"text": "Paris is the capital."}),
            event("assistant_text", 1.3, 1, {"text": " It has the Eiffel tower."}),
            event("latency", 1.4, 1, {"first_audio_ms": 455.0}),
            event("latency", 1.5, 1, {"first_audio_ms": 455.0, "first_played_ms": 520.0}),
            # emitted on the barge-in turn (2); reply_turn names the answer that was cut off
            event("interruption", 2.0, 2, {"reply_turn": 1, "heard_text": "Paris is the capital.",
                                           "unheard_text": "It has the Eiffel tower."}))
    a = w.transcript.entry(1, "assistant")
    body = a.body.text()
    assert body.startswith("Paris is the capital.")
    unheard = css(a.theme.unheard)
    assert f"<s style='color:{unheard}'>It has the Eiffel tower.</s>" in body   # unheard: struck through, faded
    assert "520 ms" in a.header.text() and "interrupted" in a.header.text()
    assert "last 520 ms" in w.panel.latency_label.text() and "p50 520 ms" in w.panel.latency_label.text()
    assert w.transcript.plain_text().splitlines() == [
        "You: What is the capital of France?",
        "Parley: Paris is the capital. [unheard: It has the Eiffel tower.]"]
    # a second turn updates the running statistic
    deliver(qtbot, w, event("latency", 5.0, 2, {"first_played_ms": 300.0}))
    assert "last 300 ms" in w.panel.latency_label.text() and "p50 410 ms" in w.panel.latency_label.text()


def test_badge_says_getting_ready_until_the_ready_sound_has_played(qtbot, make_window):
    """Listening starts: the badge waits for the audio layer's word (the ready sound handed to the speakers, and its
    length) before it says "Listening"; a user who started talking still sees "You are speaking"."""
    w = make_window()
    w.profile_loaded = "lite"
    w._on_listening(True)
    assert w.panel.badge.text() == "Getting ready" and "whoosh" in w.hint()
    deliver(qtbot, w, event("state", 0.1, 0, {"state": "user_speaking"}))
    assert w.panel.badge.text() == "You are speaking"
    deliver(qtbot, w, event("state", 0.5, 0, {"state": "listening"}))
    assert w.panel.badge.text() == "Getting ready"
    deliver(qtbot, w, event("info", 1.0, 0, {"kind": "audio_ready", "source": "audio", "seconds": 0.3}))
    assert w.panel.badge.text() == "Getting ready"           # the sound is still playing
    qtbot.waitUntil(lambda: w.panel.badge.text() == "Listening", timeout=3000)
    assert w.hint().startswith("Just talk")
    w._on_listening(False)
    assert w.panel.badge.text() == "Idle"
    w._on_listening(True)                                     # each start waits again
    assert w.panel.badge.text() == "Getting ready"
    w._on_listening(False)


def test_state_panel_probs_and_levels(qtbot, make_window):
    w = make_window()
    for i, st in enumerate(["listening", "user_speaking", "thinking", "speaking", "interrupted", "listening"]):
        deliver(qtbot, w, event("state", i * 0.5, 1, {"state": st}))
        if st == "speaking":
            assert w.panel.badge.text() == "Speaking"
    assert w.states_seen == ["listening", "user_speaking", "thinking", "speaking", "interrupted", "listening"]
    deliver(qtbot, w, *[event("state_probs", 3 + i * 0.16, 1, {"probs": [0.8, 0.15, 0.05]}) for i in range(20)])
    deliver(qtbot, w, event("meter", 6.5, 1, {"mic_db": -20.0, "clean_db": -30.0, "out_db": -12.0, "vad": 0.9}))
    chart = w.panel.chart
    assert len(chart.samples["p_cl"]) == 20 and chart.samples["p_ss"][-1][1] == pytest.approx(0.15)
    assert chart.samples["vad"][-1][1] == pytest.approx(0.9)
    assert [s for _, s in chart.states][:3] == ["listening", "user_speaking", "thinking"]
    assert w.panel.meters["mic"].db == pytest.approx(-20.0)
    assert w.panel.meters["out"].db == pytest.approx(-12.0)
    w.panel.chart.repaint()   # paints without error
    deliver(qtbot, w, {"type": "meter", "t": 7.0, "turn": 1, "mic_db": -10.0})   # the dict form (events.jsonl)
    assert w.panel.meters["mic"].db == pytest.approx(-10.0)                          # louder: shown at once


def test_malformed_events_never_crash(qtbot, make_window):
    w = make_window()
    deliver(qtbot, w,
            event("state_probs", 0.0, 1, {"probs": ["x", None]}),
            event("latency", 0.0, 1, {"first_audio_ms": "soon"}),
            event("meter", 0.0, 1, {"mic_db": "loud"}),
            event("no_such_type", 0.0, 1, {}),
            event("error", 0.0, 1, {"message": "decoder exploded"}))
    # a plain sentence for the user; the engineering text stays in the banner's details
    assert w.notices.banners and any("decoder exploded" in b.details for b in w.notices.banners)


def test_recurring_warnings_share_one_banner(qtbot, make_window):
    w = make_window()
    deliver(qtbot, w, *[event("warning", i * 1.0, 0, {"source": "audio", "code": "output_underflow",
                                                      "message": f"output underflow: {i} since last report"})
                        for i in range(30)])
    deliver(qtbot, w, event("warning", 31.0, 0, {"source": "audio", "code": "device_lost", "message": "mic lost"}))
    banners = w.notices.banners
    assert len(banners) == 2
    # one plain sentence with a count; the latest engineering text is in its details
    assert banners[0].count == 30 and "×30" in banners[0].label.text()
    assert "since last report" not in banners[0].label.text() and "29 since last report" in banners[0].details


def test_the_window_lowers_the_switch_interval_and_renders_beside_a_gil_heavy_python_thread(qtbot, make_window):
    """The window lowers the interpreter's GIL switch interval (``GUI_SWITCH_INTERVAL_S``) so that a thread busy
    in Python does not stall the GUI, and renders the events such a thread publishes at engine rates (levels every
    10 ms, state probabilities every 160 ms). How late the event loop runs meanwhile, with the default interval and
    with the window's, is a benchmark (``parley bench gui``, docs/benchmarks.md): its figures depend on the machine
    and its load, so this test prints them and does not assert them."""
    sys.setswitchinterval(0.005)
    w = make_window()
    assert sys.getswitchinterval() == pytest.approx(GUI_SWITCH_INTERVAL_S)
    deliver(qtbot, w, event("meter", 0.0, 0, {"mic_db": -30.0}), event("state_probs", 0.0, 0, {"probs": [1, 0, 0]}))
    figures = measure(w, 1.0, qtbot.wait)
    assert figures["events_published"] > 10 and figures["ticks"] > 0
    assert len(w.panel.chart.samples["p_cl"]) >= 5 and w.panel.meters["mic"].db == pytest.approx(-30.0)
    print(f"event loop beside a busy Python thread: {figures}")


def test_the_gui_benchmark_prints_one_json_object(capsys, config_dir):
    """``parley bench gui`` runs the measurement with the default interval and the window's and prints JSON."""
    import json

    from app.bench import run_gui_bench

    before = sys.getswitchinterval()
    assert run_gui_bench(argparse.Namespace(seconds=0.5)) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bench"] == "gui" and out["window_switch_interval_s"] == GUI_SWITCH_INTERVAL_S
    assert [r["switch_interval_s"] for r in out["runs"]] == pytest.approx([0.005, GUI_SWITCH_INTERVAL_S])
    assert all(r["ticks"] > 0 and r["events_published"] > 0 for r in out["runs"])
    assert sys.getswitchinterval() == before
    assert os.environ["PARLEY_CONFIG_DIR"] == str(config_dir)     # the temporary folders were the bench's only


def test_settings_and_geometry_persist_across_restart(qtbot, make_window, config_dir):
    w = make_window()
    w.resize(780, 520)    # within the offscreen screen (800x600): restoreGeometry clamps to the screen
    w.move(10, 20)
    new = w.settings.copy()
    new.vad.end_of_turn_silence_ms = 1234
    new.audio.input_device = "Fancy USB Mic"
    new.model.lite_device = "cpu"
    w.apply_settings(new)
    w.act_ptt.trigger()
    w.close()
    res = load_settings()
    assert res.warnings == []
    s = res.settings
    assert s.vad.end_of_turn_silence_ms == 1234 and s.audio.input_device == "Fancy USB Mic"
    assert s.ui.push_to_talk and s.ui.geometry and s.ui.first_run_done
    w2 = make_window(res, resize=False)
    assert w2.settings.vad.end_of_turn_silence_ms == 1234
    assert w2.act_ptt.isChecked()
    assert (w2.width(), w2.height()) == (780, 520)


def test_broken_settings_file_shows_a_banner(make_window, config_dir):
    config_dir.mkdir(parents=True)
    (config_dir / "settings.json").write_text("{not json")
    w = make_window(load_settings())
    assert any("broken" in t for t in w.notices.texts())
    assert any(p.name.startswith("settings.json.broken-") for p in config_dir.iterdir())


def test_pyside_refcount_fix_holds():
    from PySide6.QtWidgets import QWidget

    wdg = QWidget()
    for _ in range(20000):
        wdg.update()
    if sys.version_info < (3, 12):
        assert sys.getrefcount(None) > 1 << 39


# --------------------------------------------------- a loaded Freeze-Omni stack (tiny fixture), listening ----


@pytest.fixture(scope="class")
def fo_window(qapp, loop, tmp_path_factory):
    with _config_dir(tmp_path_factory, "fo-window-config"):
        w = MainWindow(_fo_settings())
        w.resize(1000, 640)
        w.show()
        try:
            w.start_engine(listen=True)
            assert _wait(60, lambda: w.profile_loaded == "freeze-omni" and w.listening), w.notices.history
            stack = w.worker.stack
            assert stack.audio is not None and stack.audio.wait_running(10), "the loop's streams did not run"
            yield w
        finally:
            _close(w)


@contextlib.contextmanager
def _restoring_working_settings(w: MainWindow):
    """Yields the settings the running stack was built with; afterwards their model section is put back into the
    window (a refused or failed swap leaves the window showing the folders the user chose)."""
    good = w.worker.active_settings.copy()
    try:
        yield good
    finally:
        w.settings.model = good.copy().model


@needs_fixture
@pytest.mark.audio
@pytest.mark.slow
class TestFreezeOmniWindow:
    """One window for the class: the tiny Freeze-Omni profile loaded by the app's own stack factory and listening
    to the loop. Each test leaves it loaded, listening and with its working settings."""

    def test_worker_loads_and_forwards_events_from_another_thread(self, qtbot, fo_window, loop):
        from core.compose.live import LiveStack

        w = fo_window
        stack = w.worker.stack
        # the real stack, loaded in the worker thread, listening to the microphone
        assert isinstance(stack, LiveStack) and stack.profile == "freeze-omni" and stack.backend is not None
        assert w.status_profile.text() == f"Profile: {stack.description}"
        assert "freeze-omni on cpu (fp32)" in w.status_profile.text()
        assert w.listening and w.act_listen.isChecked() and stack.is_listening() and stack.audio.running
        seen = _Seen(w, stack)
        try:
            # a conversation published on the engine's bus from a thread that is not the GUI thread
            w.transcript.clear()
            turn = 1000
            script = [("state", {"state": "user_speaking"}),
                      ("user_text", {"text": "hello there", "final": True, "full": "hello there"}),
                      ("state", {"state": "thinking"}),
                      ("assistant_text", {"text": "Hi!"}),
                      ("state", {"state": "speaking"})]
            script += [("levels", {"vad": 0.3})] * 500     # a burst: batched, never one wake-up per event

            def publish() -> None:
                for type_, data in script:
                    stack.bus.emit(event(type_, None, turn, data))
                    time.sleep(0.001)

            th = threading.Thread(target=publish, name="test-publisher", daemon=True)
            th.start()
            th.join(10)
            qtbot.waitUntil(lambda: w.transcript.entry(turn, "assistant", create=False) is not None, timeout=3000)
            qtbot.waitUntil(lambda: w.states_seen[-3:] == ["user_speaking", "thinking", "speaking"], timeout=3000)
            assert w.transcript.plain_text() == "You: hello there\nParley: Hi!"
            # the engine's own events, from its thread: speech played into the loop opens a turn that the
            # model listens to and decides on
            start = len(seen.rendered)
            states0 = len(w.states_seen)
            p = play(loop, FIXTURE / "input.wav")
            qtbot.waitUntil(lambda: "user_speaking" in w.states_seen[states0:], timeout=15_000)
            p.wait(15)
            qtbot.waitUntil(lambda: seen.types(start)["turn_decision"] >= 1 and w.state == "listening",
                            timeout=15_000)
            types = seen.types(start)
            assert types["vad_onset"] >= 1 and types["state_probs"] >= 1 and types["levels"] >= 1
        finally:
            seen.close()
        assert seen.by_thread("test-publisher", "user_text") == 1
        assert seen.by_thread("parley-engine", "vad_onset") >= 1 and seen.by_thread("parley-engine", "levels") >= 1
        assert seen.rendered_in_gui == {True}, "events must be rendered in the GUI thread only"

    def test_bad_backbone_folder_is_refused_and_old_profile_keeps_running(self, qtbot, fo_window, tmp_path):
        w = fo_window
        stack = w.worker.stack
        loads: list[bool] = []

        def on_loading(busy: bool, _text: str) -> None:
            loads.append(busy)

        w.worker.loading.connect(on_loading, DIRECT)
        seen = _Seen(w, stack)
        try:
            with _restoring_working_settings(w) as good:
                bad = w.settings.copy()
                bad.model.checkpoint_dir = str(tmp_path / "missing")
                bad.model.backbone_dir = str(tmp_path / "nope")
                w.apply_settings(bad)
                qtbot.waitUntil(lambda: any("cannot load the freeze-omni profile" in t for t in w.notices.texts()),
                                timeout=10_000)
                msg = [t for t in w.notices.texts() if "cannot load the freeze-omni profile" in t][-1]
                assert "does not exist" in msg and "Still using freeze-omni" in msg
                # never unloaded, not even briefly: the same stack, still loaded and listening
                assert loads == [] and w.worker.stack is stack and stack.backend is not None
                assert w.worker.active_settings.model.checkpoint_dir == good.model.checkpoint_dir
                assert w.worker.active_settings.model.backbone_dir == good.model.backbone_dir
                # the window and the saved file keep the folders that work, not the refused ones
                assert w.settings.model.checkpoint_dir == good.model.checkpoint_dir
                assert w.settings.model.backbone_dir == good.model.backbone_dir
                saved = load_settings().settings.model
                assert (saved.checkpoint_dir, saved.backbone_dir) == (good.model.checkpoint_dir,
                                                                      good.model.backbone_dir)
                assert w.listening and stack.is_listening()
                # ... and still working: its engine thread keeps sending events to the window
                n = seen.by_thread("parley-engine", "levels")
                qtbot.waitUntil(lambda: seen.by_thread("parley-engine", "levels") > n + 2, timeout=5000)
        finally:
            seen.close()
            w.worker.loading.disconnect(on_loading)

    def test_live_settings_apply_without_reload(self, qtbot, fo_window):
        w = fo_window
        stack = w.worker.stack
        assert stack.engine.config.silence_timeout_s < 1.8
        loads: list[bool] = []

        def on_loading(busy: bool, _text: str) -> None:
            loads.append(busy)

        w.worker.loading.connect(on_loading, DIRECT)
        try:
            new = w.settings.copy()
            new.vad.end_of_turn_silence_ms = 1500
            new.persona.name = "Ada"
            w.apply_settings(new)
            qtbot.waitUntil(lambda: stack.settings.vad.end_of_turn_silence_ms == 1500, timeout=5000)
            # applied inside the running engine (its thread runs the change between two steps)
            qtbot.waitUntil(lambda: stack.engine.config.silence_timeout_s == pytest.approx(1.8), timeout=5000)
            assert w.worker.active_settings.vad.end_of_turn_silence_ms == 1500
            assert loads == [] and w.worker.stack is stack and stack.backend is not None and stack.is_listening()
            assert w.transcript.persona == "Ada"
        finally:
            w.worker.loading.disconnect(on_loading)

    def test_failed_load_goes_back_to_the_previous_profile(self, qtbot, fo_window, tmp_path):
        w = fo_window
        first = w.worker.stack
        # a backbone folder that passes every file check but does not match the checkpoint
        llm = tmp_path / "llm"
        llm.mkdir()
        for f in (FIXTURE / "llm").iterdir():
            shutil.copyfile(f, llm / f.name)
        config = json.loads((llm / "config.json").read_text())
        config["hidden_size"] //= 2
        (llm / "config.json").write_text(json.dumps(config))
        with _restoring_working_settings(w) as good:
            new = w.settings.copy()
            new.model.backbone_dir = str(llm)
            w.apply_settings(new)
            qtbot.waitUntil(lambda: any("Went back to the previous freeze-omni profile" in t
                                        for t in w.notices.texts()), timeout=30_000)
            msg = [t for t in w.notices.texts() if "Went back" in t][-1]
            assert "loading the freeze-omni profile failed" in msg and "hidden size" in msg
            assert first.backend is None                 # the old model was unloaded before trying the new one
            now = w.worker.stack
            assert now is not first and now.backend is not None and now.profile == "freeze-omni"
            assert now.settings.model.backbone_dir == good.model.backbone_dir
            assert w.worker.active_settings.model.backbone_dir == good.model.backbone_dir
            assert w.profile_loaded == "freeze-omni"
            # the window (and the saved file) show what runs, not the refused folder
            assert w.settings.model.backbone_dir == good.model.backbone_dir
            qtbot.waitUntil(lambda: w.listening and now.is_listening(), timeout=10_000)   # it was listening


# ------------------------------------------------------------------------- failures of a loaded stack ----


@needs_fixture
@pytest.mark.audio
@pytest.mark.slow
def test_worker_errors_are_notifications_not_crashes(qtbot, make_window, loop, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    s = _fo_settings()
    s.recording.folder = str(tmp_path / "a-file" / "sessions")    # cannot be created
    w = make_window(s)
    _load(qtbot, w)
    stack = w.worker.stack
    with monkeypatch.context() as m:
        m.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-such-server")   # the sound server cannot be reached
        w.act_listen.trigger()
        qtbot.waitUntil(lambda: any("Starting the microphone failed" in t for t in w.notices.texts()),
                        timeout=15_000)
        # the worker reports the notice, then listening(False): both queued, the second may come a moment later
        qtbot.waitUntil(lambda: not w.act_listen.isChecked(), timeout=5000)
    assert not w.listening and not w.act_listen.isChecked() and not stack.is_listening()
    w.act_record.trigger()
    qtbot.waitUntil(lambda: any("Switching session recording failed" in t and "cannot record the session" in t
                                for t in w.notices.texts()), timeout=5000)
    assert stack.recorder is None
    # the button and the saved setting say that nothing is recorded
    qtbot.waitUntil(lambda: not w.act_record.isChecked(), timeout=5000)
    assert not w.settings.recording.enabled and not load_settings().settings.recording.enabled
    w.stop_speaking()
    assert w.isVisible() and w.worker.stack is stack and stack.backend is not None
    # the server is back: the same window listens
    w.act_listen.trigger()
    qtbot.waitUntil(lambda: w.listening and stack.is_listening(), timeout=15_000)


# -------------------------------------------------------------------- the Lite profile, listening ----


@pytest.fixture(scope="class")
def lite_window(qapp, loop, tmp_path_factory):
    if not _lite_installed():
        pytest.skip("Lite weight packages not installed")
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not found (apt-get install espeak-ng)")
    gone = tmp_path_factory.mktemp("gone")
    with _config_dir(tmp_path_factory, "lite-window-config"):
        s = Settings()
        s.model.profile = "freeze-omni"          # configured, but its folders are gone
        s.model.checkpoint_dir = str(gone / "checkpoints")
        s.model.backbone_dir = str(gone / "Qwen2-7B-Instruct")
        s.ui.last_profile = "lite"
        s.sampling.greedy = True
        s.sampling.max_new_tokens = 60
        s.persona.system_prompt = "You are a helpful assistant. Answer in English."
        w = MainWindow(s)
        w.resize(1000, 640)
        w.show()
        try:
            w.start_engine(listen=True)
            # the banners as the user sees them while the fallback loads
            assert _wait(10, lambda: any("Starting with the lite profile" in t for t in w.notices.texts()))
            banners = list(w.notices.texts())
            assert _wait(180, lambda: w.profile_loaded is not None and w.listening), w.notices.history
            stack = w.worker.stack
            assert stack.audio is not None and stack.audio.wait_running(10), "the loop's streams did not run"
            yield w, banners
        finally:
            _close(w)


@pytest.mark.audio
@pytest.mark.slow
class TestLiteWindow:
    """Started with Freeze-Omni configured but its folders gone, and Lite as the last working profile: the window
    falls back to Lite, which then answers questions spoken into the loop."""

    def test_start_falls_back_to_the_last_working_profile(self, lite_window):
        w, banners = lite_window
        assert w.profile_loaded == "lite" and w.worker.stack.profile == "lite"
        assert any("cannot load the freeze-omni profile" in t for t in banners)
        assert any("Starting with the lite profile" in t for t in banners)
        assert w.settings.model.profile == "lite" and w.settings.ui.last_profile == "lite"

    def test_controls_and_keys_reach_the_engine(self, qtbot, lite_window, loop, tmp_path):
        w, _ = lite_window
        stack = w.worker.stack
        seen = _Seen(w, stack)
        try:
            qtbot.waitUntil(lambda: w.state == "listening", timeout=60_000)
            w.activateWindow()
            w.setFocus()
            # Esc while the assistant answers a spoken question: the engine stops the answer
            wav = _say("Tell me a long story about a dragon and a knight.", tmp_path / "question.wav")
            n0 = len(w.transcript.order)
            states0 = len(w.states_seen)
            p = play(loop, wav)
            qtbot.waitUntil(lambda: "speaking" in w.states_seen[states0:], timeout=90_000)
            p.wait(15)
            qtbot.wait(400)
            qtbot.keyClick(w, Qt.Key.Key_Escape)
            qtbot.waitUntil(lambda: any(ev.type == "interruption" and ev.get("reason") == "user"
                                        for _, ev in seen.published), timeout=10_000)
            answer = [e for e in w.transcript.order[n0:] if e.data.role == "assistant"][0]
            qtbot.waitUntil(lambda: answer.data.interrupted, timeout=3000)
            qtbot.waitUntil(lambda: w.state == "listening", timeout=30_000)
            # mute: the engine gets silence (its level reports say so)
            start = len(seen.rendered)
            w.act_mute.trigger()
            qtbot.waitUntil(lambda: stack.muted, timeout=2000)
            assert w.act_mute.text() == "Unmute mic"
            qtbot.waitUntil(lambda: any(getattr(ev, "type", "") == "meter" and ev.get("muted")
                                        for ev in seen.rendered[start:]), timeout=3000)
            # session recording starts in the engine
            w.act_record.trigger()
            qtbot.waitUntil(lambda: stack.recorder is not None and stack.recorder.active, timeout=5000)
            assert (stack.recorder.path / "events.jsonl").is_file()
            qtbot.waitUntil(lambda: any("Recording this session to" in t for t in w.notices.texts()), timeout=3000)
            assert w.settings.recording.enabled and "recording" in w.status_record.text()
            # new conversation: the transcript is cleared and the engine starts a fresh conversation
            assert w.transcript.order
            w.act_new.trigger()
            qtbot.waitUntil(lambda: any(ev.type == "info" and ev.get("kind") == "conversation_reset"
                                        for _, ev in seen.published), timeout=5000)
            assert w.transcript.order == []
            # push-to-talk: Space while the window has focus, even with a toolbar button around
            w.act_ptt.trigger()
            qtbot.waitUntil(lambda: stack.ptt_mode, timeout=2000)
            qtbot.keyPress(w, Qt.Key.Key_Space)
            qtbot.waitUntil(lambda: stack.ptt_down, timeout=2000)
            qtbot.keyRelease(w, Qt.Key.Key_Space)
            qtbot.waitUntil(lambda: not stack.ptt_down, timeout=2000)
            w.act_ptt.trigger()
            qtbot.waitUntil(lambda: not stack.ptt_mode, timeout=2000)
            qtbot.keyPress(w, Qt.Key.Key_Space)     # push-to-talk off: Space does nothing
            QApplication.processEvents()
            w.act_mute.trigger()                     # requests reach the worker in order: after the unmute ...
            qtbot.waitUntil(lambda: not stack.muted, timeout=2000)
            assert not stack.ptt_down                # ... a Space press would have been seen already
            qtbot.keyRelease(w, Qt.Key.Key_Space)
        finally:
            seen.close()

    def test_event_loop_stays_responsive_while_the_engine_computes(self, qtbot, lite_window, loop, tmp_path):
        """The engine's threads run Python between their torch/onnxruntime calls; that must not stall the GUI: a
        10 ms QTimer keeps ticking while the model listens to a spoken question, transcribes it,
        generates and speaks the answer, and its events stream in (levels every 50 ms, VAD per 160 ms chunk). The
        event loop keeps ticking meanwhile; how late it runs is printed as a figure (``parley bench gui`` measures
        it), not asserted: it depends on the machine's load."""
        w, _ = lite_window
        stack = w.worker.stack
        qtbot.waitUntil(lambda: w.state == "listening", timeout=60_000)
        wav = _say("Why is the sky blue?", tmp_path / "question.wav")
        seen = _Seen(w, stack)
        states0 = len(w.states_seen)
        probe = LatenessProbe()
        try:
            p = play(loop, wav)
            probe.start()
            qtbot.waitUntil(lambda: "speaking" in w.states_seen[states0:], timeout=90_000)
            qtbot.wait(1500)          # and while it speaks
            probe.stop()
            p.wait(15)
            w.stop_speaking()         # the rest of the answer is not needed
            qtbot.waitUntil(lambda: w.state == "listening", timeout=30_000)
        finally:
            probe.stop()
            seen.close()
        seq = w.states_seen[states0:]
        assert "user_speaking" in seq and "thinking" in seq, "the model must have worked during the measurement"
        assert seen.by_thread("parley-engine", "levels") > 20 and seen.types()["levels"] > 20
        assert len(probe.lateness_ms) > 10
        print(f"event loop lateness while the model worked: {probe.summary()}")   # a figure, not a bound

    def test_a_typed_message_is_a_turn_answered_by_voice(self, qtbot, lite_window):
        """The message box: a typed question becomes a user turn (shown as typed) that the engine answers by voice;
        a space typed there is text, not push-to-talk."""
        w, _ = lite_window
        stack = w.worker.stack
        qtbot.waitUntil(lambda: w.state == "listening", timeout=60_000)
        seen = _Seen(w, stack)
        try:
            was_ptt = w.act_ptt.isChecked()
            if not was_ptt:
                w.act_ptt.trigger()
            w.message.setFocus()
            qtbot.keyClicks(w.message, "What is two plus two?")
            assert w.message.text() == "What is two plus two?" and not stack.ptt_down
            qtbot.keyClick(w.message, Qt.Key.Key_Return)
            assert w.message.text() == ""
            qtbot.waitUntil(lambda: any(ev.type == "user_text" and ev.get("typed") for _, ev in seen.published),
                            timeout=10_000)
            typed = next(ev for _, ev in seen.published if ev.type == "user_text" and ev.get("typed"))
            qtbot.waitUntil(lambda: any(ev.type == "audio_out" and ev.turn == typed.turn
                                        for _, ev in seen.published), timeout=90_000)
            user = w.transcript.entry(typed.turn, "user", create=False)
            assert user is not None and user.data.text == "What is two plus two?"
            answer = w.transcript.entry(typed.turn, "assistant", create=False)
            qtbot.waitUntil(lambda: answer is not None and bool(answer.data.committed.strip()), timeout=30_000)
            w.stop_speaking()
            qtbot.waitUntil(lambda: w.state == "listening", timeout=30_000)
            if not was_ptt:
                w.act_ptt.trigger()
        finally:
            seen.close()
