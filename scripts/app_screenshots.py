"""Screenshots of the real app as a newcomer meets it, for docs/screenshots.

Runs ``parley``'s own window (``app.main.build_app``: the real settings, startup checks, engine and audio) in a fresh,
empty home folder, so it is a first start: the welcome shows and the Lite models are converted once, with the loading
steps and progress bar. Then it types a question into the message box and waits for the spoken answer.

    eval "$(scripts/testenv.sh start)"           # Xvfb + the PulseAudio null sink
    .venv/bin/python scripts/app_screenshots.py [OUT_DIR]   # default: docs/screenshots

Writes first_run_loading.png (welcome + loading progress), first_run_ready.png (loaded, the welcome still there),
typed_question_answered.png. Prints one JSON line with what it saw (the loading steps, the progress values).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTION = "What is the capital of France?"
LIMIT_S = 600


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="parley-first-run-"))
    for var, sub in (("HOME", ""), ("XDG_CONFIG_HOME", ".config"), ("XDG_CACHE_HOME", ".cache"),
                     ("XDG_DATA_HOME", ".local/share"), ("XDG_STATE_HOME", ".local/state")):
        os.environ[var] = str(home / sub)
    sys.path.insert(0, str(REPO))

    from PySide6.QtCore import QTimer

    from app.main import build_app

    qt_app, w = build_app()
    w.resize(1100, 700)
    seen: dict = {"steps": [], "progress": [], "shots": []}
    phase = {"name": "loading", "t0": time.monotonic(), "asked": 0.0}

    def shot(name: str) -> None:
        path = out / f"{name}.png"
        w.grab().save(str(path))
        seen["shots"].append(str(path))

    def tick() -> None:
        card = w.loading_card
        if card.isVisible():
            step = card.step.text()
            if step and (not seen["steps"] or seen["steps"][-1] != step):
                seen["steps"].append(step)
            seen["progress"].append(card.bar.value())
        elapsed = time.monotonic() - phase["t0"]
        if elapsed > LIMIT_S:
            seen["error"] = f"gave up in phase {phase['name']}"
            w.close()
            return
        if phase["name"] == "loading":
            determinate = card.bar.maximum() > 0 and card.bar.value() >= 300
            if card.isVisible() and determinate and "first_run_loading.png" not in str(seen["shots"]):
                shot("first_run_loading")
            if w.profile_loaded and w.listening and not card.isVisible() and w.panel.badge.state == "listening":
                qt_app.processEvents()
                shot("first_run_ready")
                w.welcome.ok.click()
                w.message.setText(QUESTION)
                w.send_message()
                phase.update(name="answering", asked=time.monotonic())
        elif phase["name"] == "answering":
            answered = w.state == "listening" and time.monotonic() - phase["asked"] > 3.0 and any(
                e.data.role == "assistant" and e.data.text.strip() for e in w.transcript.order)
            if answered:
                shot("typed_question_answered")
                phase["name"] = "done"
                w.close()

    timer = QTimer()
    timer.timeout.connect(tick)
    timer.start(100)
    code = qt_app.exec()
    w.shutdown_worker(10_000)
    print(json.dumps(seen))
    return 0 if phase["name"] == "done" and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
