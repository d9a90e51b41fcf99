"""The deadlines of live requests, found soonest first without scanning the requests.

A request's deadlines live on its :class:`LiveRequest` (``expires_at``,
``deadline``, ``queue_due``, ``retry_due``, the idle deadline); this index only
says when to look. The heap's entries are ``(due, armed, request)``: ``armed``
counts arms, so two entries never compare their requests; a line's are ``(due,
request)``, never compared (its order is its arming order). An entry is *spent* when its
request ended or no longer holds that due time; spent entries are never looked
at for a decision, only dropped, so which ones exist changes nothing.

Two shapes, by how the due time is set:

* **Lines.** The total deadline, the first-chunk deadline and the queue
  timeout are each armed a fixed time after the event that arms them, and
  events never go back in time, so each comes due in the order it was armed:
  a FIFO line each, O(1) to arm and to take, however many requests wait.
* **The heap** holds the rest: same-backend retries (their delay varies) and
  the idle deadline, whose one entry per stream is moved on lazily (chunks
  only move ``idle_due``; the entry catches up when it reaches the top).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Mapping
from operator import attrgetter
from typing import Final, TypeAlias

from ._state import LiveRequest

__all__ = ("Timers",)

#: Spent entries tolerated before the heap or a line is rebuilt (see _crowded).
_SLACK: Final = 64

Entry: TypeAlias = tuple[int, int, LiveRequest]
#: A line's entry: no arm count, since a line is never sorted.
LineEntry: TypeAlias = tuple[int, LiveRequest]


class Line:
    """One FIFO line: the entries of one kind of deadline, in the order they come due."""

    __slots__ = ("due_of", "entries")

    def __init__(self, field: str) -> None:
        self.entries: deque[LineEntry] = deque()
        #: Reads the deadline this line stands for off a request. The balancer
        #: clears a finished request's deadlines, so an entry holds exactly
        #: while its request's field still equals its due time.
        self.due_of: Callable[[LiveRequest], int | None] = attrgetter(field)

    def __len__(self) -> int:
        return len(self.entries)

    def forget_front(self, request: LiveRequest) -> None:
        """``request`` stops holding this line's deadline: take its entry now if it is first.

        Requests mostly stop holding a deadline in the order they armed it, so
        the entry just spent is most often the line's first: taken here, it
        does not wait for next_due() or a rebuild, and arm_in() need not look
        at the front at all. Any other spent entry waits for those.
        """
        entries = self.entries
        if entries and entries[0][1] is request:
            entries.popleft()

    def drop_spent_front(self) -> None:
        entries, due_of = self.entries, self.due_of
        while entries and due_of(entries[0][1]) != entries[0][0]:
            entries.popleft()


class Timers:
    __slots__ = ("_armed", "_heap", "_kept", "_lines", "_live", "expiry", "first_chunk", "queue")

    def __init__(self, live: Mapping[str, LiveRequest]) -> None:
        self._live = live
        self._heap: list[Entry] = []
        #: Entries the heap kept at its last rebuild (see arm).
        self._kept = 0
        self._armed = 0
        #: The FIFO lines, one per fixed offset: pass one of them to arm_in().
        self.expiry = Line("expires_at")
        self.first_chunk = Line("deadline")
        self.queue = Line("queue_due")
        self._lines = (self.expiry, self.first_chunk, self.queue)

    def __len__(self) -> int:
        """Entries held, spent ones included (for the bounded-state checks)."""
        return len(self._heap) + sum(len(line.entries) for line in self._lines)

    # ---------------------------------------------------------------- arming

    def arm(self, request: LiveRequest, due: int) -> None:
        """Index a deadline whose due time varies from one arm to the next."""
        heap = self._heap
        # A transport that drives the core by Tick, or run()/replay(), never
        # asks for the next deadline, so spent entries would pile up without
        # end. The heap is rebuilt once it is twice what live requests can
        # hold and twice what the last rebuild kept: the second rule keeps a
        # heap of mostly live entries from being rebuilt every few arms.
        # Together they keep it O(requests in flight) at an amortised O(1)
        # per arm, whatever the driving style.
        size = len(heap)
        if size >= 2 * len(self._live) + _SLACK and size >= 2 * self._kept + _SLACK:
            heap[:] = self._standing(heap)
            heapq.heapify(heap)
            self._kept = len(heap)
        self._armed += 1
        heapq.heappush(heap, (due, self._armed, request))

    def arm_in(self, line: Line, request: LiveRequest, due: int) -> None:
        """Index a deadline set a fixed time from now in its line (one of the attributes)."""
        # Requests mostly stop holding a deadline in the order they armed it,
        # and then take their entry off the front (Line.forget_front), so a line
        # stays about as long as the requests that hold it without looking at
        # its front here: that would read the oldest waiting request, long
        # out of the cache once thousands wait. Entries spent out of order
        # stay until next_due() drops them at the front, or until the line is
        # twice the live requests (each holds at most one entry of it) and is
        # rebuilt, at O(1) per arm amortised.
        entries, due_of = line.entries, line.due_of
        if len(entries) >= 2 * len(self._live) + _SLACK:
            kept = [entry for entry in entries if due_of(entry[1]) == entry[0]]
            entries.clear()
            entries.extend(kept)
        entries.append((due, request))

    # --------------------------------------------------------------- reading

    def next_due(self) -> int | None:
        """The soonest due time a live request holds, or None; drops spent entries on the way."""
        heap, holds = self._heap, self._holds
        soonest: int | None = None
        while heap:
            due, _, request = heap[0]
            if holds(due, request):
                if not _idle_lags(due, request):
                    soonest = due
                    break
                heapq.heappop(heap)
                self._rearm_idle(request)
                continue
            heapq.heappop(heap)
        for line in self._lines:
            line.drop_spent_front()
            if line.entries:
                due = line.entries[0][0]
                if soonest is None or due < soonest:
                    soonest = due
        return soonest

    def take_due(self, now: int) -> list[LiveRequest]:
        """The requests with a deadline due at ``now``, by due time then arrival.

        Only due entries are looked at, so a tick costs O(due log n), not a
        scan of every live (or queued) request.
        """
        heap, holds = self._heap, self._holds
        earliest: dict[str, tuple[int, int, LiveRequest]] = {}
        while heap and heap[0][0] <= now:
            due, _, request = heapq.heappop(heap)
            if not holds(due, request):
                continue
            if _idle_lags(due, request):
                # Chunks moved the idle deadline on since this entry was armed.
                due = self._rearm_idle(request)
                if due > now:
                    continue
            _note_earliest(earliest, due, request)
        for line in self._lines:
            entries, due_of = line.entries, line.due_of
            while entries and entries[0][0] <= now:
                due, request = entries.popleft()
                if due_of(request) == due:
                    _note_earliest(earliest, due, request)
        return [entry[2] for entry in sorted(earliest.values(), key=lambda e: (e[0], e[1]))]

    # -------------------------------------------------------------- internal

    def _holds(self, due: int, request: LiveRequest) -> bool:
        """Whether an entry still stands for a deadline its live request holds."""
        return self._live.get(request.request_id) is request and due in (
            request.deadline,
            request.retry_due,
            request.queue_due,
            request.expires_at,
            request.idle_mark,
        )

    def _standing(self, entries: list[Entry]) -> list[Entry]:
        # Most spent entries belong to requests that ended: the live check
        # drops them without a call.
        live, holds = self._live, self._holds
        return [
            entry
            for entry in entries
            if live.get(entry[2].request_id) is entry[2] and holds(entry[0], entry[2])
        ]

    def _rearm_idle(self, request: LiveRequest) -> int:
        """Move the idle deadline's entry (already taken off) to where chunks moved it."""
        due = request.idle_due
        assert due is not None
        request.idle_mark = due
        self._armed += 1
        heapq.heappush(self._heap, (due, self._armed, request))
        return due


def _idle_lags(due: int, request: LiveRequest) -> bool:
    """Whether the entry is the idle deadline's, left behind by chunks that moved it on."""
    idle = request.idle_due
    return due == request.idle_mark and idle is not None and idle > due


def _note_earliest(
    earliest: dict[str, tuple[int, int, LiveRequest]], due: int, request: LiveRequest
) -> None:
    known = earliest.get(request.request_id)
    if known is None or due < known[0]:
        earliest[request.request_id] = (due, request.order, request)
