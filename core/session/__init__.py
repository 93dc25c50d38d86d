"""Session recording, repair, export and replay (see ``core.session.recorder`` for the folder layout).

No Qt here. Public API::

    SessionRecorder                      record one conversation (attach to the EventBus, push audio with write_*)
    sessions_root / list_sessions / session_info / delete_session / apply_retention
    repair_session / export_session
    replay_session (core.session.replay)
"""

from core.session.recorder import SessionRecorder
from core.session.repair import RepairReport, export_session, repair_session
from core.session.store import (
    SessionInfo, apply_retention, delete_session, list_sessions, new_session_dir, session_info, sessions_root,
)

__all__ = [
    "SessionRecorder", "RepairReport", "export_session", "repair_session", "SessionInfo", "apply_retention",
    "delete_session", "list_sessions", "new_session_dir", "session_info", "sessions_root",
]
