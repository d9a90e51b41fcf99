"""Per-backend concurrency limits and the queue of requests waiting for a slot.

A visit holds one slot of its backend from its first attempt until it leaves
the backend (same-backend retries and their waits included), so a retry never
loses its place to a newcomer. A request that finds every backend it could use
full waits in one FIFO queue per backend it waits for; when a slot frees, the
oldest request waiting for that backend gets it. Entries are left behind when a
request stops waiting (dispatched elsewhere, timed out, cancelled) and skipped
when they reach the front, so every operation is O(1) amortised, whatever the
queue length. Nothing here is charged to a backend: waiting is not failing.
"""

from __future__ import annotations

from collections import deque
from typing import Final

from ._config import BackendSpec, Settings
from ._state import LiveRequest, Phase

__all__ = ("Capacity",)

#: Spent entries a backend's queue may hold before it is rebuilt (see _compact).
_QUEUE_SLACK: Final = 64
# A module constant: much faster to read than the enum class's attribute.
_QUEUED: Final = Phase.QUEUED


class Capacity:
    __slots__ = ("_lines", "_tickets", "in_flight", "limits", "queued", "waiting")

    def __init__(self, backends: tuple[BackendSpec, ...], settings: Settings) -> None:
        default = settings.max_concurrent
        #: Per backend index: its limit, None for unlimited.
        self.limits: tuple[int | None, ...] = tuple(
            b.max_concurrent if b.max_concurrent is not None else default for b in backends
        )
        #: Per backend index: visits holding a slot.
        self.in_flight = [0] * len(backends)
        #: Per backend index: requests waiting for it.
        self.waiting = [0] * len(backends)
        #: Requests in the queue (each counted once, whatever it waits for).
        self.queued = 0
        self._lines: list[deque[tuple[int, LiveRequest]]] = [deque() for _ in backends]
        self._tickets = 0

    @property
    def limited(self) -> bool:
        return any(limit is not None for limit in self.limits)

    def has_room(self, index: int) -> bool:
        limit = self.limits[index]
        return limit is None or self.in_flight[index] < limit

    def open(self, index: int) -> bool:
        """Room for a request that is not waiting: only once nobody waits (FIFO)."""
        if self.waiting[index]:
            return False
        limit = self.limits[index]
        return limit is None or self.in_flight[index] < limit

    def acquire(self, request: LiveRequest, index: int) -> None:
        if request.slot != index:
            self.in_flight[index] += 1
            request.slot = index

    def release(self, request: LiveRequest) -> int:
        """Give back the request's slot; returns the backend index freed, or -1."""
        index = request.slot
        if index >= 0:
            self.in_flight[index] -= 1
            request.slot = -1
        return index

    # ---------------------------------------------------------------- queue

    def enqueue(self, request: LiveRequest) -> None:
        """Queue ``request`` for every backend in ``request.full``."""
        ticket = self._tickets = self._tickets + 1
        request.ticket = ticket
        request.phase = _QUEUED
        self.queued += 1
        entry = (ticket, request)
        waiting, lines = self.waiting, self._lines
        # A line is never crowded by an entry that holds (see _compact), so
        # nothing is checked here: this runs for each backend of each request queued.
        for index in request.full:
            lines[index].append(entry)
            waiting[index] += 1

    def leave(self, request: LiveRequest) -> None:
        """The request stops waiting: its entries become spent."""
        self.queued -= 1
        request.ticket = 0
        waiting, lines = self.waiting, self._lines
        for index in request.full:
            waiting[index] -= 1
            if len(lines[index]) > 2 * waiting[index] + _QUEUE_SLACK:
                self._compact(index)

    def next_waiter(self, index: int) -> LiveRequest | None:
        """Take the oldest request still waiting for ``index`` out of its line.

        It no longer waits for ``index`` (it may still wait for others).
        """
        line = self._lines[index]
        while line:
            ticket, request = line.popleft()
            if _holds(ticket, request):
                request.full.remove(index)  # type: ignore[union-attr]  # queued: a list
                self.waiting[index] -= 1
                if len(line) > 2 * self.waiting[index] + _QUEUE_SLACK:
                    self._compact(index)
                return request
        return None

    def _compact(self, index: int) -> None:
        # Entries of requests dispatched through another backend stay behind in
        # this line until they reach its front; a backend that stays full would
        # gather them without end. Rebuilding once spent entries outnumber the
        # live ones keeps each line O(waiting) at an amortised O(1) per entry.
        # Only a fall in the line's waiters can make it crowded (an entry that
        # holds adds one to both sides of the rule), so leave() and
        # next_waiter() check, inline, and enqueue() need not.
        self._lines[index] = deque(entry for entry in self._lines[index] if _holds(*entry))

    def line_lengths(self) -> list[int]:
        """Entries held per backend, spent ones included (for the bounded-state checks)."""
        return [len(line) for line in self._lines]


def _holds(ticket: int, request: LiveRequest) -> bool:
    return request.ticket == ticket and request.phase is _QUEUED
