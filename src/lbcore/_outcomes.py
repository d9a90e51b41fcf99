"""Why a request failed: the error values carried by :class:`RequestFailed`.

These are data. The transports turn them into exceptions for their users; the
core only reports them, so a trace line shows the exact error a caller got.
"""

from __future__ import annotations

import enum
from typing import final

import msgspec

from ._failure import Failure
from ._records import Record

# Everything in __all__ is re-exported by lbcore.
__all__ = (
    "AllBackendsUnhealthy",
    "AllContextLimitsExceeded",
    "BackendFailed",
    "BackendFailure",
    "BudgetExhausted",
    "Category",
    "CompressionFailed",
    "ContextLimitExceeded",
    "DeadlineExceeded",
    "FailoverExhausted",
    "LocalSaturation",
    "QueueFull",
    "QueueTimedOut",
    "RequestError",
    "RetryBudgetExhausted",
)


class Category(enum.StrEnum):
    """A coarse class of failure, for callers deciding whether to retry or alert."""

    RATE_LIMIT = "rate_limit"
    QUOTA = "quota"
    AUTHENTICATION = "authentication"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    NETWORK = "network"


class BackendFailure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One backend's final failure within a request."""

    backend: str
    failure: Failure


@final
class FailoverExhausted(Record, frozen=True, kw_only=True):
    """Every backend the rotation visited failed or was skipped."""

    profile_name: str
    message: str
    #: Every backend's final failure, ordinary ones first, never truncated.
    failures: tuple[BackendFailure, ...]
    #: True when at least one failure is transient: retrying the whole rotation may help.
    retryable: bool
    #: Set only when every failure agrees on it.
    status: int | None
    category: Category | None
    reason: str = "retries_exhausted"


@final
class AllContextLimitsExceeded(Record, frozen=True, kw_only=True):
    """No backend could take a prompt this large. Retrying cannot help."""

    profile_name: str
    message: str
    failures: tuple[BackendFailure, ...]
    retryable: bool = False


@final
class AllBackendsUnhealthy(Record, frozen=True, kw_only=True):
    """Every breaker was open before anything was tried."""

    message: str
    retryable: bool = False


@final
class ContextLimitExceeded(Record, frozen=True, kw_only=True):
    """Round-robin picked a backend that cannot fit the prompt."""

    profile_name: str
    backend: str
    tokens: int
    limit: int
    message: str
    retryable: bool = False


@final
class CompressionFailed(Record, frozen=True, kw_only=True):
    """Round-robin's backend did not fit the prompt and the compression hook failed."""

    profile_name: str
    backend: str
    message: str
    retryable: bool = False


@final
class BudgetExhausted(Record, frozen=True, kw_only=True):
    """The request's attempt budget was spent before it could be dispatched."""

    message: str
    category: Category = Category.SERVER_ERROR
    retryable: bool = False


@final
class BackendFailed(Record, frozen=True, kw_only=True):
    """The raw failure of the one backend that served the request.

    Round-robin reports failures this way, and so does failover once output
    has reached the caller: failing over then would mix two answers.
    """

    backend: str
    #: The backend's own message, so every request error has one.
    message: str
    failure: Failure
    #: How many chunks the caller had already received.
    chunks_delivered: int
    retryable: bool


@final
class LocalSaturation(Record, frozen=True, kw_only=True):
    """No local connection to the chosen backend came free in time; nothing was sent.

    The transport's own limit was the bottleneck, not the backend, so nothing
    is charged to it. Sending again later may well succeed.
    """

    backend: str
    #: The transport's connection limit for that backend.
    limit: int
    #: How long the attempt waited for a slot.
    waited_ms: int
    message: str
    retryable: bool = True


@final
class QueueFull(Record, frozen=True, kw_only=True):
    """Every usable backend was full and the queue already held ``max_queued`` requests."""

    message: str
    max_queued: int
    #: The ordinary failures met before (empty for a fresh request).
    failures: tuple[BackendFailure, ...]
    category: Category = Category.SERVER_ERROR
    retryable: bool = True


@final
class QueueTimedOut(Record, frozen=True, kw_only=True):
    """The request waited ``queue_timeout_ms`` for a slot and none freed."""

    message: str
    waited_ms: int
    failures: tuple[BackendFailure, ...]
    category: Category = Category.SERVER_ERROR
    retryable: bool = True


@final
class DeadlineExceeded(Record, frozen=True, kw_only=True):
    """The request's total deadline (``deadline_ms``) passed, failovers included."""

    message: str
    deadline_ms: int
    #: Chunks the caller had received from the attempt that was cut off.
    chunks_delivered: int
    failures: tuple[BackendFailure, ...]
    category: Category = Category.SERVER_ERROR
    retryable: bool = True


@final
class RetryBudgetExhausted(Record, frozen=True, kw_only=True):
    """A retry or failover was refused: too many are in flight across all requests."""

    message: str
    failures: tuple[BackendFailure, ...]
    category: Category = Category.SERVER_ERROR
    retryable: bool = True


RequestError = (
    FailoverExhausted
    | AllContextLimitsExceeded
    | AllBackendsUnhealthy
    | ContextLimitExceeded
    | BudgetExhausted
    | BackendFailed
    | LocalSaturation
    | QueueFull
    | QueueTimedOut
    | DeadlineExceeded
    | RetryBudgetExhausted
    | CompressionFailed
)
