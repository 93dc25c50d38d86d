"""Conversation acceptance harness: scripted users speaking JSON conversation scripts (espeak-ng voices) that react
to the assistant, and scoring of the engine's events against what each utterance expects.

No Qt and no engine imports: the engine's events are read as the dicts of ``events.jsonl``.
See docs/conversations.md.
"""

from core.harness.score import combine, read_events, score, unmet
from core.harness.script import ConversationScript, ScriptError, Timing, Utterance, load_script, parse_script
from core.harness.text import normalize, wer
from core.harness.user import ScriptedInput, ScriptedUser

__all__ = ["ConversationScript", "ScriptError", "ScriptedInput", "ScriptedUser", "Timing", "Utterance", "combine", "load_script",
           "normalize", "parse_script", "read_events", "score", "unmet", "wer"]
