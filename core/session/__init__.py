"""Session recording, repair, export and replay (see ``core.session.recorder`` for the folder layout).

No Qt here. Public API::

    SessionRecorder                      record one conversation (attach to the EventBus, push audio with write_*)
    check_record_folder                  refuse a folder a session cannot be recorded into (before a model loads)
    sessions_root / list_sessions / session_info / delete_session / apply_retention (-> RetentionResult)
    repair_session / export_session
    replay_session (core.session.replay)
"""

from core.session.recorder import SessionRecorder, check_record_folder
from core.session.repair import RepairReport, export_session, repair_session
from core.session.store import (
    RetentionResult, SessionInfo, apply_retention, delete_session, list_sessions, new_session_dir, session_info,
    sessions_root,
)

__all__ = [
    "SessionRecorder", "check_record_folder", "RepairReport", "export_session", "repair_session", "RetentionResult",
    "SessionInfo", "apply_retention", "delete_session", "list_sessions", "new_session_dir", "session_info",
    "sessions_root",
]
