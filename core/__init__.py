"""Parley core: everything that is not UI (audio, frontend, model, engine, session, settings).

This package never imports Qt.
"""

__version__ = "0.1.0"
