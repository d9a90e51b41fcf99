"""Actions: what the core tells the transport to do, or wants it to know.

``performs_io`` marks the actions a transport must act on (start or cancel an
attempt); the others are decisions made visible, for traces and observers.
Each request ends with exactly one terminal action: :class:`RequestCompleted`,
:class:`RequestFailed` or :class:`RequestAborted`.
"""

from __future__ import annotations

import enum
from typing import ClassVar, final

from ._failure import FailureKind
from ._outcomes import RequestError
from ._peer_records import ClaimProbe, Publish
from ._records import Record

# Everything in __all__ is re-exported by lbcore.
__all__ = (
    "Action",
    "CancelAttempt",
    "CancelReason",
    "CloseBreaker",
    "CoolDown",
    "FailOver",
    "FailoverReason",
    "FirstChunkDue",
    "HalfOpenBreaker",
    "RequestAborted",
    "RequestCompleted",
    "RequestDequeued",
    "RequestFailed",
    "RequestQueued",
    "RetryScheduled",
    "SelectionChanged",
    "SkipBackend",
    "SkipReason",
    "StartAttempt",
    "TripBreaker",
)


class FailoverReason(enum.StrEnum):
    """Why the request left a backend for the next one."""

    #: 401, 402 or 403: retrying the same backend cannot help.
    IMMEDIATE = "immediate"
    #: The failure allowed a same-backend retry, but no attempt was left.
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: The failure does not allow a same-backend retry (a 400, say).
    NOT_RETRYABLE = "not_retryable"
    #: The breaker opened while the request waited to retry here.
    BREAKER_OPENED = "breaker_opened"
    #: The attempt could not be prepared (credential, provider).
    SETUP = "setup"
    #: A same-backend retry would have to wait (its delay or the backend's
    #: Retry-After) until at or past the request's total deadline.
    PAST_DEADLINE = "past_deadline"


class SkipReason(enum.StrEnum):
    BREAKER_OPEN = "breaker_open"
    TPM_BELOW_THRESHOLD = "tpm_below_threshold"
    CONTEXT_LIMIT = "context_limit"
    #: Every slot of the backend's concurrency limit is taken.
    AT_CAPACITY = "at_capacity"
    #: The backend asked for a pause (Retry-After) that has not ended yet.
    COOLING_DOWN = "cooling_down"


class CancelReason(enum.StrEnum):
    FIRST_CHUNK_TIMEOUT = "first_chunk_timeout"
    CANCELLED = "cancelled"
    #: The request's total deadline (``deadline_ms``) passed.
    DEADLINE = "deadline"
    #: No chunk for ``idle_timeout_ms`` after the first one.
    IDLE_TIMEOUT = "idle_timeout"


@final
class StartAttempt(Record, frozen=True, kw_only=True):
    """Send the request to ``backend`` now."""

    performs_io: ClassVar[bool] = True
    request_id: str
    attempt: int
    backend: str
    model: str
    #: Cancel the attempt if no chunk arrived by then (the core will, on a tick).
    first_chunk_deadline: int | None
    #: This attempt is the one trial a half-open breaker allows.
    probe: bool


@final
class RetryScheduled(Record, frozen=True, kw_only=True):
    """The same backend will be retried once the clock reaches ``due``."""

    performs_io: ClassVar[bool] = False
    request_id: str
    backend: str
    due: int


@final
class FirstChunkDue(Record, frozen=True, kw_only=True):
    """The attempt was sent: its first-chunk deadline now counts from then.

    It replaces the deadline its :class:`StartAttempt` announced.
    """

    performs_io: ClassVar[bool] = False
    request_id: str
    attempt: int
    due: int


@final
class FailOver(Record, frozen=True, kw_only=True):
    performs_io: ClassVar[bool] = False
    request_id: str
    from_backend: str
    to_backend: str
    reason: FailoverReason
    failure_kind: FailureKind
    status: int | None


@final
class SkipBackend(Record, frozen=True, kw_only=True):
    performs_io: ClassVar[bool] = False
    request_id: str
    backend: str
    reason: SkipReason
    detail: str


@final
class RequestQueued(Record, frozen=True, kw_only=True):
    """Every backend the request could use is full: it waits for a slot."""

    performs_io: ClassVar[bool] = False
    request_id: str
    #: The backends it waits for, in rotation order.
    waiting_for: tuple[str, ...]
    #: Requests in the queue, this one included.
    queued: int
    #: When it gives up waiting (queue timeout or total deadline), if ever.
    due: int | None


@final
class RequestDequeued(Record, frozen=True, kw_only=True):
    """A slot freed on ``backend`` and the queued request takes it (its attempt follows)."""

    performs_io: ClassVar[bool] = False
    request_id: str
    backend: str
    waited_ms: int


@final
class CoolDown(Record, frozen=True, kw_only=True):
    """The backend asked for a pause: every request skips it until ``until``."""

    performs_io: ClassVar[bool] = False
    backend: str
    until: int


@final
class CancelAttempt(Record, frozen=True, kw_only=True):
    """Stop the attempt and close its connection; later news of it is unwanted."""

    performs_io: ClassVar[bool] = True
    request_id: str
    attempt: int
    backend: str
    reason: CancelReason


@final
class TripBreaker(Record, frozen=True, kw_only=True):
    performs_io: ClassVar[bool] = False
    backend: str
    failures_in_window: int
    #: From then on, the next request may probe the backend.
    half_open_after: int


@final
class HalfOpenBreaker(Record, frozen=True, kw_only=True):
    performs_io: ClassVar[bool] = False
    backend: str


@final
class CloseBreaker(Record, frozen=True, kw_only=True):
    performs_io: ClassVar[bool] = False
    backend: str


@final
class CompressPrompt(Record, frozen=True, kw_only=True):
    """The prompt does not fit ``backend``: shrink it for ``limit``, then report
    :class:`PromptCompressed`. Only with ``settings.context_compression``."""

    performs_io: ClassVar[bool] = True
    request_id: str
    backend: str
    #: The estimate of the original request (every backend starts from it).
    tokens: int
    limit: int


@final
class SelectionChanged(Record, frozen=True, kw_only=True):
    """The backend in use changed (the reference's LoadBalancerSelectionChanged)."""

    performs_io: ClassVar[bool] = False
    profile_name: str
    backend: str
    model: str | None


@final
class RequestCompleted(Record, frozen=True, kw_only=True):
    performs_io: ClassVar[bool] = False
    request_id: str
    backend: str
    attempt: int
    input_tokens: int
    output_tokens: int


@final
class RequestFailed(Record, frozen=True, kw_only=True):
    performs_io: ClassVar[bool] = False
    request_id: str
    error: RequestError


@final
class RequestAborted(Record, frozen=True, kw_only=True):
    """The caller cancelled; nothing was recorded against any backend."""

    performs_io: ClassVar[bool] = False
    request_id: str


Action = (
    StartAttempt
    | FirstChunkDue
    | RetryScheduled
    | FailOver
    | SkipBackend
    | RequestQueued
    | RequestDequeued
    | CoolDown
    | CancelAttempt
    | TripBreaker
    | HalfOpenBreaker
    | CloseBreaker
    | SelectionChanged
    | CompressPrompt
    | RequestCompleted
    | RequestFailed
    | RequestAborted
    | Publish
    | ClaimProbe
)
