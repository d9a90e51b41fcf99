"""The per-request state machine: phases and which events each phase accepts.

Theory of operation
-------------------
A request lives in one of three phases while it is in flight:

* ``CONNECTING``: an attempt was started and nothing has come back yet. The
  first-chunk deadline, when set, runs in this phase only. Within it the
  transport may say how far the attempt got in leaving the process
  (:class:`Sending`): held in a local queue (the deadline stops), then sent
  (the deadline counts again, from the send).
* ``STREAMING``: the first chunk arrived. The attempt is committed: whatever
  happens next, the request stays on this backend (failing over now would
  splice two different answers together).
* ``WAITING``: the last attempt failed and a same-backend retry waits for its
  delay to pass. No attempt is in flight.
* ``COMPRESSING``: the prompt does not fit the backend being visited and the
  transport was asked to shrink it (``CompressPrompt``); the visit resumes on
  ``PromptCompressed``. No attempt is in flight.
* ``QUEUED``: every backend the request could use is at its concurrency
  limit; it waits for a slot (see :mod:`lbcore._capacity`). No attempt is in
  flight.

A request that ends leaves the table of live requests; any later event that
names it is misuse. The transitions triggered by events are below, as data;
the ones triggered by the clock (retry due, first-chunk deadline passed) run on
:class:`Tick` in :mod:`lbcore._balancer`. The balancer checks an event against
this table before it changes anything, so a refused event leaves no trace.
"""

from __future__ import annotations

import enum
from typing import Final

from ._actions import FailoverReason
from ._events import (
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    AttemptTimedOut,
    ChunkReceived,
    PromptCompressed,
    RequestCancelled,
    SlotTimedOut,
)
from ._failure import Failure

__all__ = (
    "ACCEPTED_EVENTS",
    "ANSWER_EVENTS",
    "ATTEMPT_EVENTS",
    "SENDING_EVENTS",
    "SENDING_RULES",
    "LiveRequest",
    "Phase",
    "Sending",
)


class Phase(enum.StrEnum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    WAITING = "waiting"
    QUEUED = "queued"
    COMPRESSING = "compressing"


#: News of the sending side, before any answer: see ``SENDING_RULES``.
SENDING_EVENTS: Final = frozenset({AttemptHeld, AttemptSent, SlotTimedOut})

#: Events that name an attempt and must name the current one.
ATTEMPT_EVENTS: Final = (
    frozenset({ChunkReceived, AttemptSucceeded, AttemptFailed, AttemptTimedOut}) | SENDING_EVENTS
)

#: phase -> event types a live request accepts in that phase.
ACCEPTED_EVENTS: Final[dict[Phase, frozenset[type]]] = {
    Phase.CONNECTING: ATTEMPT_EVENTS | {RequestCancelled},
    Phase.STREAMING: ATTEMPT_EVENTS - SENDING_EVENTS | {RequestCancelled},
    Phase.WAITING: frozenset({RequestCancelled}),
    Phase.QUEUED: frozenset({RequestCancelled}),
    Phase.COMPRESSING: frozenset({PromptCompressed, RequestCancelled}),
}


class Sending(enum.StrEnum):
    """How far a connecting attempt got in leaving the process."""

    #: Dispatched; the transport has said nothing more yet.
    STARTED = "started"
    #: Waiting for a local connection slot (``AttemptHeld``).
    HELD = "held"
    #: Written to the connection (``AttemptSent``).
    SENT = "sent"


#: sending stage -> the sending events accepted in it. Anything else is misuse:
#: an attempt is held at most once, sent at most once, and a slot can time out
#: only while the attempt is held. An answer cannot arrive while it is held.
SENDING_RULES: Final[dict[Sending, frozenset[type]]] = {
    Sending.STARTED: frozenset({AttemptHeld, AttemptSent}),
    Sending.HELD: frozenset({AttemptSent, SlotTimedOut}),
    Sending.SENT: frozenset(),
}
#: Events that only an attempt that left the process can produce.
ANSWER_EVENTS: Final = frozenset({ChunkReceived, AttemptSucceeded})


# Read on every event: a module constant is several times faster to read than
# the class attribute (EnumType defines __getattr__, which slows every attribute
# read on an enum class).
_CONNECTING: Final = Phase.CONNECTING
_STARTED: Final = Sending.STARTED


class LiveRequest:
    """Everything the balancer tracks about one request in flight."""

    __slots__ = (
        "attempt",
        "attempt_started_at",
        "attempts_here",
        "backend_index",
        "budget",
        "chunks",
        "compressed",
        "context_failures",
        "counted_epoch",
        "deadline",
        "expires_at",
        "failed_at",
        "failures",
        "full",
        "idle_due",
        "idle_mark",
        "next_index",
        "order",
        "owner",
        "pending_failover",
        "phase",
        "prompt_tokens",
        "queue_due",
        "queued_at",
        "request_id",
        "retry_due",
        "retry_failure",
        "retrying",
        "sending",
        "sending_since",
        "slot",
        "ticket",
        "used",
        "visited",
    )

    def __init__(
        self,
        request_id: str,
        order: int,
        prompt_tokens: int | None,
        budget: int | None,
        expires_at: int | None,
    ) -> None:
        self.request_id = request_id
        #: Arrival order, used to break ties between timers deterministically.
        self.order = order
        self.prompt_tokens = prompt_tokens
        self.budget = budget
        #: Attempts started so far (the attempt budget counts these).
        self.used = 0
        #: Number of the current attempt; 0 before the first.
        self.attempt = 0
        #: Attempts made on the current backend.
        self.attempts_here = 0
        self.backend_index = -1
        self.attempt_started_at = 0
        self.phase = _CONNECTING
        self.chunks = 0
        #: How far the current attempt got in leaving the process, and since when.
        self.sending = _STARTED
        self.sending_since = 0
        #: The stats epoch in which round-robin counted this request's dispatch.
        self.counted_epoch = -1
        #: First-chunk deadline of the attempt in flight.
        self.deadline: int | None = None
        #: When a delayed same-backend retry is due, and the failure that caused it.
        self.retry_due: int | None = None
        self.retry_failure: Failure | None = None
        #: When the attempt whose retry is waiting failed.
        self.failed_at = 0
        #: The failover rotation: the claim that owns the sticky index, how far it got.
        self.owner = 0
        self.visited = 0
        self.next_index = 0
        #: Final failures per backend: ordinary ones, then context-limit rejections.
        #: Most requests have none: an empty tuple until the first (note_failure).
        self.failures: list[tuple[str, Failure]] | tuple[()] = ()
        self.context_failures: list[tuple[str, Failure]] | tuple[()] = ()
        #: The last backend left after a failure, announced when the next attempt starts.
        self.pending_failover: tuple[str, FailoverReason, Failure] | None = None
        #: The total deadline (``deadline_ms``), and the idle deadline while streaming.
        self.expires_at = expires_at
        self.idle_due: int | None = None
        #: The due time of the one timer-heap entry standing for the idle deadline:
        #: chunks move ``idle_due`` on, and the entry catches up only when it
        #: reaches the top, so a chunk costs no heap push (see Balancer._chunk).
        self.idle_mark: int | None = None
        #: The backend index whose concurrency slot this request holds, or -1.
        self.slot = -1
        #: Backends skipped only because they were full: the request may wait for
        #: them. Most requests never meet a full backend: an empty tuple until the
        #: first (note_full), as the failures are; a queued request's is a list.
        self.full: list[int] | tuple[()] = ()
        #: Identifies the request's current stay in the queue (0 while not queued).
        self.ticket = 0
        self.queued_at = 0
        self.queue_due: int | None = None
        #: This request holds one unit of the shared retry budget (a retry or failover).
        self.retrying = False
        #: Backend index -> the re-estimate of the prompt shrunk for it; while
        #: COMPRESSING, the backend waited for is under the key -1 (its index as value).
        self.compressed: dict[int, int] | None = None

    def note_full(self, index: int) -> None:
        full = self.full
        if isinstance(full, tuple):
            full = self.full = []
        full.append(index)

    def note_failure(self, backend: str, failure: Failure) -> None:
        failures = self.failures
        if isinstance(failures, tuple):
            failures = self.failures = []
        failures.append((backend, failure))

    def note_context_failure(self, backend: str, failure: Failure) -> None:
        failures = self.context_failures
        if isinstance(failures, tuple):
            failures = self.context_failures = []
        failures.append((backend, failure))
