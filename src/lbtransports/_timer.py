"""When one attempt's wait must end, without I/O: events and the clock in, a deadline out.

Both clients ask an :class:`AttemptTimer` how long they may wait, before
every read and every piece of a request they send, and re-aim their socket
timeout (sync) or cancel scope (async) at the answer. So the rules live
here once (spec/transports.md section 4):

- the first-chunk deadline is the core's; it holds until the first decoded
  chunk, stops while the attempt is held, and moves when the core says so;
- the idle timer counts from the last progress: the send, each piece of the
  request the backend took, each decoded chunk, the caller asking for more;
- nothing else is progress: bytes that complete no chunk (a status line, a
  header, chunk framing, a partial SSE line, keep-alive comments) leave
  both timers where they were, so a trickle cannot hold a wait open.

Time is the caller's millisecond clock; nothing here reads one.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ("UPLOAD_PIECE", "AttemptTimer", "Expired")

#: Both clients send a request in pieces this size; each one the backend takes is progress.
UPLOAD_PIECE: Final = 64 * 1024


class Expired(enum.Enum):
    """Which timer ended the wait."""

    FIRST_CHUNK = "first_chunk"
    IDLE = "idle"


class AttemptTimer:
    """The first-chunk deadline and the idle timeout of one attempt.

    Step it with the attempt's events (:meth:`held`, :meth:`first_chunk_due`,
    :meth:`progressed`, :meth:`answered`); ask it :meth:`due`,
    :meth:`expired` and :meth:`seconds_left` with the time now.
    """

    __slots__ = ("_answered", "_first_chunk_due", "_idle_ms", "_since", "answered_at")

    def __init__(self, idle_ms: int, now: int, first_chunk_due: int | None) -> None:
        self._idle_ms = idle_ms
        self._since = now  # the last progress, where the idle timer counts from
        self._first_chunk_due = first_chunk_due
        self._answered = False  # a chunk arrived: the first-chunk deadline is met
        #: When decoded chunks last arrived (the core's idle timeout counts from it).
        self.answered_at: int | None = None

    # -- events -----------------------------------------------------------------

    def held(self) -> None:
        """The attempt waits for a local connection slot: the core stopped its deadline."""
        self._first_chunk_due = None

    def first_chunk_due(self, due: int) -> None:
        """The core moved the first-chunk deadline (its ``FirstChunkDue``)."""
        self._first_chunk_due = due

    def progressed(self, now: int) -> None:
        """The request was sent, the backend took a piece of it, or the caller asks
        for more after taking a chunk: the idle timer restarts."""
        self._since = max(self._since, now)

    def answered(self, now: int) -> None:
        """Decoded chunks arrived: the first-chunk deadline is met and the idle timer restarts."""
        self._answered = True
        self.answered_at = now
        self.progressed(now)

    # -- questions --------------------------------------------------------------

    @property
    def first_chunk_pending(self) -> bool:
        """Whether the first-chunk deadline still bounds the wait."""
        return not self._answered and self._first_chunk_due is not None

    def due(self) -> int:
        """When the wait must end: the earlier of the two timers."""
        idle_due = self._since + self._idle_ms
        if self._answered or self._first_chunk_due is None:
            return idle_due
        return min(idle_due, self._first_chunk_due)

    def expired(self, now: int) -> Expired | None:
        """Which timer has run out at ``now``, if any (the first-chunk one if both)."""
        due = self._first_chunk_due
        if not self._answered and due is not None and now >= due:
            return Expired.FIRST_CHUNK
        if now >= self._since + self._idle_ms:
            return Expired.IDLE
        return None

    def seconds_left(self, now: int) -> float:
        """How long a wait starting at ``now`` may last, in seconds, never negative.

        One millisecond more than the difference: on waking, the deadline has
        surely passed on the millisecond clock.
        """
        return max(0.0, (self.due() - now + 1) / 1000)
