"""The Lite profile's own errors.

Lite's leaf modules (asr, cache, convert, llm, tts, weights, turn...) raise :class:`LiteError` (one line that says
what is wrong and what to do); only :class:`core.model.lite.backend.LiteBackend` translates it into the engine's
``BackendError``, so the model code does not depend on the engine.
"""

from __future__ import annotations


class LiteError(RuntimeError):
    """A Lite model or file cannot be used; the message is one line for the user, with the repair when known."""


class CacheError(LiteError):
    """A conversion-cache entry exists but cannot be used (truncated, overwritten, wrong format)."""


class ConversionError(LiteError):
    """A model cannot be converted for the Lite runtime (unsupported architecture, no chat template, disk full...)."""
