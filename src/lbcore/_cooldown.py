"""Retry-After cooldowns: a backend that asked for a pause is left alone until it ends.

A failure carrying ``retry_after_ms`` starts (or lengthens) its backend's
cooldown, cut to ``max_retry_after_ms``: a server that says "come back in a
day" should not take a backend out of rotation for a day. A shorter
Retry-After never shortens a cooldown already running. Times are the core's
millisecond clock; a cooldown ends at ``until`` (the backend is usable again
at exactly that time).
"""

from __future__ import annotations

from ._failure import Failure

__all__ = ("Cooldowns",)


class Cooldowns:
    __slots__ = ("_cause", "ends", "latest")

    def __init__(self, count: int) -> None:
        #: Per backend index: when its cooldown ends (0 when it never had one);
        #: it runs while this is later than now. Read directly on every routing
        #: decision; only note() writes it.
        self.ends = [0] * count
        #: Per backend index: the failure that asked for the pause.
        self._cause: list[Failure | None] = [None] * count
        #: The latest end of any cooldown: none runs once now reaches it, so a
        #: routing decision can know that without looking at every backend.
        self.latest = 0

    def note(self, index: int, failure: Failure, now: int, cap_ms: int) -> int | None:
        """Start or lengthen ``index``'s cooldown for ``failure``; the new end, or None."""
        wait = failure.retry_after_ms
        if wait is None:
            return None
        until = now + min(wait, cap_ms)
        if until <= now or until <= self.ends[index]:
            return None
        self.ends[index] = until
        self._cause[index] = failure
        self.latest = max(self.latest, until)
        return until

    def until(self, index: int, now: int) -> int | None:
        """When ``index``'s cooldown ends, while it is still running at ``now``."""
        until = self.ends[index]
        return until if until > now else None

    def cause(self, index: int) -> Failure | None:
        return self._cause[index]

    def extend(self, index: int, until: int, cause: Failure, now: int) -> bool:
        """A peer's pause (spec §26.2): lengthen the cooldown to ``until``; True if it did."""
        if until <= now or until <= self.ends[index]:
            return False
        self.ends[index] = until
        self._cause[index] = cause
        self.latest = max(self.latest, until)
        return True
