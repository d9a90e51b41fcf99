"""Events: facts the outside world observed, fed to :meth:`Balancer.handle`.

Every event carries ``at``, the caller's monotonic clock in integer
milliseconds. Time never goes backwards. Names are in the past tense because
an event reports something that already happened.
"""

from __future__ import annotations

import enum
from typing import final

from ._failure import Failure
from ._peer_records import PeerReport, ProbeClaimed, ProbeRefused
from ._records import Record

# Everything in __all__ is re-exported by lbcore.
__all__ = (
    "AttemptFailed",
    "AttemptHeld",
    "AttemptSent",
    "AttemptSucceeded",
    "AttemptTimedOut",
    "ChunkReceived",
    "Event",
    "FailoverIndexReset",
    "PromptCompressed",
    "RequestCancelled",
    "RequestStarted",
    "SlotTimedOut",
    "StatsReset",
    "Tick",
    "TimeoutPhase",
)


class TimeoutPhase(enum.StrEnum):
    """Where the transport's own timer fired."""

    CONNECT = "connect"
    READ = "read"


@final
class RequestStarted(Record, frozen=True, kw_only=True):
    at: int
    request_id: str
    #: The transport's estimate of the prompt's tokens, for the context-limit guard.
    prompt_tokens: int | None = None
    #: A cap on the total number of attempts this request may make.
    attempt_budget: int | None = None


@final
class ChunkReceived(Record, frozen=True, kw_only=True):
    """A piece of the answer arrived. The first one commits the attempt."""

    at: int
    request_id: str
    attempt: int


@final
class AttemptSucceeded(Record, frozen=True, kw_only=True):
    """The attempt's answer ended cleanly, with the usage the backend reported."""

    at: int
    request_id: str
    attempt: int
    input_tokens: int = 0
    output_tokens: int = 0


@final
class AttemptFailed(Record, frozen=True, kw_only=True):
    at: int
    request_id: str
    attempt: int
    failure: Failure


@final
class AttemptTimedOut(Record, frozen=True, kw_only=True):
    """The transport's own timer fired (not the core's first-chunk deadline)."""

    at: int
    request_id: str
    attempt: int
    phase: TimeoutPhase


@final
class AttemptHeld(Record, frozen=True, kw_only=True):
    """The transport holds the attempt: it waits for a local connection slot.

    Nothing has been sent, so the backend is not keeping anyone waiting: the
    first-chunk deadline stops until :class:`AttemptSent`.
    """

    at: int
    request_id: str
    attempt: int


@final
class AttemptSent(Record, frozen=True, kw_only=True):
    """The request has been written to the backend's connection.

    The first-chunk deadline counts from here, so time spent in the
    transport's own queues is never charged to the backend.
    """

    at: int
    request_id: str
    attempt: int


@final
class SlotTimedOut(Record, frozen=True, kw_only=True):
    """A held attempt got no local connection slot in time; nothing was sent.

    ``limit`` is how many connections the transport allows to that backend.
    """

    at: int
    request_id: str
    attempt: int
    limit: int


@final
class RequestCancelled(Record, frozen=True, kw_only=True):
    """The caller gave up on the request (closed the stream, cancelled the task)."""

    at: int
    request_id: str


@final
class Tick(Record, frozen=True, kw_only=True):
    """The clock reached a deadline the core asked for, or just moved on."""

    at: int


@final
class StatsReset(Record, frozen=True, kw_only=True):
    """Clear the request counters, as the reference's ``resetStats``.

    It is an event, not a method on the side, so a recorded trace that
    contains a reset still replays exactly.
    """

    at: int


@final
class PromptCompressed(Record, frozen=True, kw_only=True):
    """The transport shrank the prompt for the backend a ``CompressPrompt`` named.

    ``prompt_tokens`` is the re-estimate of the shrunk request; ``error`` the
    compression hook's failure instead (already cleaned and free of secrets).
    Exactly one of them is set. The core never sees the prompt itself.
    """

    at: int
    request_id: str
    prompt_tokens: int | None = None
    error: str | None = None


@final
class FailoverIndexReset(Record, frozen=True, kw_only=True):
    """An operator moved the failover sticky index back to the first backend."""

    at: int


Event = (
    RequestStarted
    | ChunkReceived
    | AttemptSucceeded
    | AttemptFailed
    | AttemptTimedOut
    | AttemptHeld
    | AttemptSent
    | SlotTimedOut
    | RequestCancelled
    | Tick
    | StatsReset
    | PromptCompressed
    | FailoverIndexReset
    | PeerReport
    | ProbeClaimed
    | ProbeRefused
)
