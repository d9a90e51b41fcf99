"""Text cleaning shared by the core's messages and the transports' failures."""

from __future__ import annotations

import re

# Everything in __all__ is re-exported by lbcore.
__all__ = ("clean_text", "truncate")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")
ELLIPSIS = "\u2026"


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a C0 or C1 control character (or DEL)."""
    return _CONTROL.search(text) is not None


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` code points, marking a cut with an ellipsis."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS


def clean_text(text: str, limit: int = 512) -> str:
    """Make ``text`` safe for one-line messages.

    Control characters become spaces, runs of whitespace collapse to one space,
    the ends are trimmed, and the result is cut to ``limit`` code points. Backend
    error bodies reach users through this, so it must never raise on odd input.
    """
    text = _CONTROL.sub(" ", text)
    text = _SPACES.sub(" ", text).strip()
    return truncate(text, limit)
