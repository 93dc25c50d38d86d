"""Command-line handlers that belong to the desktop app (``core/cli.py`` names them as strings)."""

from __future__ import annotations

import argparse

from core.errors import UserError


def run_install(args: argparse.Namespace) -> int:
    """``parley --install-desktop-entry``: Parley in the desktop's application menu, with its icon."""
    from app.desktop import DesktopEntryError, install_desktop_entry

    try:
        written = install_desktop_entry()
    except DesktopEntryError as exc:
        raise UserError(str(exc)) from exc
    for path in written:
        print(f"installed {path}")
    return 0
