"""Parley desktop app: Qt widgets, the worker thread that owns the engine, dialogs.

Importing ``app`` first protects the process from a PySide6 6.12 reference-count bug on Python 3.11 (see
:mod:`app._pyside_fix`).
"""

from app._pyside_fix import pin_singletons

pin_singletons()
