"""The exceptions a client raises when a request fails.

The core reports a failed request as data (:class:`lbcore.RequestFailed`
carrying one of the :data:`lbcore.RequestError` values); the clients turn that
value into one of these exceptions. Each keeps the value in ``.error``, so a
caller can read every detail the trace shows, and copies the fields callers
branch on (``retryable``, ``status``, ``category``) onto itself.
"""

from __future__ import annotations

from lbcore import (
    AllBackendsUnhealthy,
    AllContextLimitsExceeded,
    BackendFailed,
    BackendFailure,
    BudgetExhausted,
    Category,
    CompressionFailed,
    ContextLimitExceeded,
    DeadlineExceeded,
    FailoverExhausted,
    Failure,
    LocalSaturation,
    QueueFull,
    QueueTimedOut,
    RequestError,
    RetryBudgetExhausted,
    truncate,
)

# Everything in __all__ is re-exported by lbtransports.
__all__ = (
    "AllBackendsUnhealthyError",
    "BackendError",
    "BudgetExhaustedError",
    "ClientClosedError",
    "CompressionError",
    "ContextLimitError",
    "DeadlineExceededError",
    "FailoverError",
    "LoadBalancerError",
    "LocalSaturationError",
    "QueueFullError",
    "QueueTimeoutError",
    "RequestInterruptedError",
    "RetryBudgetError",
    "StreamIdleError",
)

#: A backend's name is cut at this many code points in a message, as the core cuts its labels.
_NAME_LIMIT = 64


class LoadBalancerError(Exception):
    """A request the load balancer could not complete.

    ``error`` is the core's value for it, exactly as the trace records it.
    Messages come from the core and the wire layer, which redact credentials.
    """

    def __init__(self, request_id: str, error: RequestError) -> None:
        self.request_id = request_id
        self.error: RequestError = error
        super().__init__(self._describe())

    def _describe(self) -> str:
        """What ``str()`` of the exception says; the core's message unless a subclass adds to it."""
        return self.error.message

    @property
    def message(self) -> str:
        return self.error.message

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again later may succeed."""
        return self.error.retryable


class FailoverError(LoadBalancerError):
    """Every backend the rotation visited failed or was skipped (or none fits the prompt)."""

    error: FailoverExhausted | AllContextLimitsExceeded

    @property
    def failures(self) -> tuple[BackendFailure, ...]:
        """Each backend's last failure, in the order the rotation met them."""
        return self.error.failures

    @property
    def status(self) -> int | None:
        """The HTTP status, when every backend failed with the same one."""
        return self.error.status if isinstance(self.error, FailoverExhausted) else None

    @property
    def category(self) -> Category | None:
        return self.error.category if isinstance(self.error, FailoverExhausted) else None


class BackendError(LoadBalancerError):
    """The one backend serving the request failed, unwrapped.

    Round-robin reports every failure this way; failover does once part of the
    answer reached the caller, because trying another backend then would mix
    two answers. ``chunks_delivered`` says how much the caller already has.
    """

    error: BackendFailed

    def _describe(self) -> str:
        # The core's message is the provider's own text ("No connected db."), which
        # alone does not say who failed; FailoverError's message names each backend.
        error = self.error
        progress = f" after {error.chunks_delivered} chunks" if error.chunks_delivered else ""
        text = f'backend "{truncate(error.backend, _NAME_LIMIT)}" failed{progress}: {error.message}'
        if error.failure.status is not None:
            text += f" (status: {error.failure.status})"
        return text

    @property
    def backend(self) -> str:
        return self.error.backend

    @property
    def failure(self) -> Failure:
        return self.error.failure

    @property
    def status(self) -> int | None:
        return self.error.failure.status

    @property
    def chunks_delivered(self) -> int:
        return self.error.chunks_delivered


class AllBackendsUnhealthyError(LoadBalancerError):
    """Every backend's circuit breaker was open; nothing was sent."""

    error: AllBackendsUnhealthy


class ContextLimitError(LoadBalancerError):
    """Round-robin picked a backend whose context limit the prompt exceeds."""

    error: ContextLimitExceeded


class CompressionError(LoadBalancerError):
    """Round-robin's backend did not fit the prompt and the ``compress`` hook raised.

    Its message has the reference's shape: ``Load balancer profile "<lb>"
    sub-profile "<backend>" compression callback failed: <cause>``. (Failover
    moves on instead; the hook's failure is then one of the aggregate's.)
    """

    error: CompressionFailed

    @property
    def backend(self) -> str:
        return self.error.backend


class BudgetExhaustedError(LoadBalancerError):
    """The request's attempt budget ran out before it could be sent."""

    error: BudgetExhausted


class LocalSaturationError(LoadBalancerError):
    """Every connection this client allows to the chosen backend stayed busy.

    Nothing was sent and nothing is charged to the backend: the client's own
    limit (``max_connections``) was the bottleneck. Raise the limit, or send
    fewer requests at once; sending again later may succeed.
    """

    error: LocalSaturation

    @property
    def backend(self) -> str:
        return self.error.backend

    @property
    def limit(self) -> int:
        return self.error.limit


class QueueFullError(LoadBalancerError):
    """Every usable backend was at its ``max_concurrent`` and ``max_queued`` requests waited.

    Nothing was sent and nothing is charged to a backend; sending again later may succeed.
    """

    error: QueueFull


class QueueTimeoutError(LoadBalancerError):
    """The request waited ``queue_timeout_ms`` in the balancer's queue and no slot freed.

    Nothing was sent for this wait and nothing is charged to a backend.
    """

    error: QueueTimedOut

    @property
    def waited_ms(self) -> int:
        return self.error.waited_ms


class StreamIdleError(BackendError):
    """The stream went quiet for the core's ``idle_timeout_ms`` after its first chunk.

    A :class:`BackendError` like any failure after output reached the caller;
    ``chunks_delivered`` says how much arrived before the silence.
    """


class DeadlineExceededError(LoadBalancerError):
    """The request's total deadline (``deadline_ms``) passed, failovers included.

    Nothing is charged to the backend that was cut off: the time was the
    caller's. ``failures`` are the backends' failures met before.
    """

    error: DeadlineExceeded

    @property
    def failures(self) -> tuple[BackendFailure, ...]:
        return self.error.failures

    @property
    def chunks_delivered(self) -> int:
        return self.error.chunks_delivered


class RetryBudgetError(LoadBalancerError):
    """A retry or failover was refused: too many are in flight across all requests.

    The retry budget (``retry_budget_percent``) keeps sick backends from a
    retry storm; sending again once the load eases may succeed.
    """

    error: RetryBudgetExhausted

    @property
    def failures(self) -> tuple[BackendFailure, ...]:
        return self.error.failures


class ClientClosedError(RuntimeError):
    """The client was closed; it takes no new requests."""


class RequestInterruptedError(RuntimeError):
    """An interrupt reached the client while this request was open.

    A ``KeyboardInterrupt`` (or another exception raised asynchronously into a
    thread) landed inside the client's decision bookkeeping, in this request
    or in another on the same client. The client rebuilt its core and takes new
    requests; the requests open at that moment end with this error, because
    news meant for them may have been lost. Sending the request again is safe.
    """

    def __init__(self, request_id: str) -> None:
        super().__init__(
            f"request {request_id} was ended: an interrupt reached this client's "
            "decision core while the request was open; the client recovered"
        )
        self.request_id = request_id


_EXCEPTIONS: dict[type, type[LoadBalancerError]] = {
    FailoverExhausted: FailoverError,
    AllContextLimitsExceeded: FailoverError,
    BackendFailed: BackendError,
    AllBackendsUnhealthy: AllBackendsUnhealthyError,
    ContextLimitExceeded: ContextLimitError,
    BudgetExhausted: BudgetExhaustedError,
    LocalSaturation: LocalSaturationError,
    QueueFull: QueueFullError,
    QueueTimedOut: QueueTimeoutError,
    DeadlineExceeded: DeadlineExceededError,
    RetryBudgetExhausted: RetryBudgetError,
    CompressionFailed: CompressionError,
}


def error_for(request_id: str, error: RequestError) -> LoadBalancerError:
    """The exception a caller gets for the core's ``error``."""
    if isinstance(error, BackendFailed) and error.failure.code == "idle_timeout":
        return StreamIdleError(request_id, error)
    return _EXCEPTIONS[type(error)](request_id, error)
