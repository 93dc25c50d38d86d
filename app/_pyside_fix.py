"""Work around a reference-count bug of PySide6 6.12 on Python < 3.12.

PySide6 6.12 drops one reference to ``None`` for every call of a Qt method that returns nothing (``update()``,
``setText()``, ``processEvents()``...). From Python 3.12 on, ``None`` is immortal (PEP 683) and this is harmless;
on Python 3.11 the count of ``None`` falls by one per call, reaches zero after a few thousand calls and CPython aborts
with "Fatal Python error: none_dealloc: deallocating None". Measured here: -1000 after 1000 ``QWidget.update()``.

The fix does what Python 3.12 does: it gives ``None`` (and ``True``/``False``, whose counts a few signal paths
also disturb) such a large reference count that it can never reach zero. It runs once, when ``app`` is imported,
before any Qt object exists. Nothing happens on Python >= 3.12 or on other interpreters.
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)

_PIN = 1 << 40   # ~10^12 references: a loss of one per Qt call would take years to use it up
_done = False


def pin_singletons() -> bool:
    """Make None/True/False effectively immortal on CPython < 3.12. Returns True when it changed something."""
    global _done
    if _done or sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return False
    import ctypes

    for obj in (None, True, False):
        refcnt = ctypes.c_ssize_t.from_address(id(obj))   # ob_refcnt is the first field of every PyObject
        if refcnt.value < _PIN:
            refcnt.value += _PIN
    _done = True
    log.debug("pinned the reference counts of None/True/False (PySide6 refcount bug on Python < 3.12)")
    return True
