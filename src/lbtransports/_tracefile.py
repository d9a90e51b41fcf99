"""Where a client writes its decision trace: a path it opens, or a file it is given."""

from __future__ import annotations

import os
from typing import IO

__all__ = ("TraceTarget", "open_trace")

TraceTarget = str | os.PathLike[str] | IO[bytes]


def open_trace(target: TraceTarget | None) -> tuple[IO[bytes] | None, bool]:
    """The binary file to write to, and whether the client owns (and closes) it."""
    if target is None:
        return None, False
    if isinstance(target, str | os.PathLike):
        return open(target, "wb"), True
    if not hasattr(target, "write"):
        raise TypeError("trace must be a path or a binary file open for writing")
    return target, False
