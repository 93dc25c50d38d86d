"""Widgets of the main window: transcript, duplex-state panel, notifications."""
