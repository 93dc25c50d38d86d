#!/usr/bin/env python3
"""Render assets/icons/parley-<N>.png (16 to 512 px) from assets/parley.svg with Qt's SVG renderer.

Run after changing the SVG: ``.venv/bin/python scripts/render_icons.py``. tests/app/test_app_identity.py checks
that the committed PNGs are the SVG's rendering.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtGui import QGuiApplication  # noqa: E402

from app.desktop import render_icon_pngs  # noqa: E402

if __name__ == "__main__":
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    for path in render_icon_pngs():
        print(path)
