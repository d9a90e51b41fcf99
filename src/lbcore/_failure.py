"""How a transport describes a failed attempt to the core.

A failure is data, not an exception: the transport classifies what it saw
(refused connection, 503, malformed stream...) into a :class:`Failure` and the
core decides what to do with it.
"""

from __future__ import annotations

import enum

import msgspec

from ._errors import InvalidEvent

# Everything in __all__ is re-exported by lbcore.
__all__ = ("Failure", "FailureKind")


class FailureKind(enum.StrEnum):
    """What went wrong, as far as routing decisions care."""

    #: The connection could not be made, was reset, or closed before the answer ended.
    NETWORK = "network"
    #: A timeout observed by the transport, or the core's own first-chunk deadline.
    TIMEOUT = "timeout"
    #: The backend answered with a non-2xx status.
    HTTP = "http"
    #: The response could not be understood (malformed SSE, invalid JSON, wrong shape).
    PROTOCOL = "protocol"
    #: The backend reported an error inside a successful response (a stream ``error`` event).
    PROVIDER = "provider"
    #: The attempt could not be prepared (missing credential, unknown provider).
    SETUP = "setup"
    #: The prompt does not fit the backend's context limit. Only the core produces this kind.
    CONTEXT_LIMIT = "context_limit"
    #: The backend is itself a load balancer whose own failover ran out, retryably:
    #: transient, so the outer balancer may retry it and then fails over.
    NESTED = "nested"
    #: A failure that ends the request before any output, with nothing recorded: a
    #: nested load balancer's non-retryable aggregate. Failover never moves on from it.
    TERMINAL = "terminal"


class Failure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One attempt's failure, already sanitised by whoever built it.

    ``message`` must never contain a credential: transports redact before they
    build a failure, and the core copies messages into traces verbatim.
    """

    kind: FailureKind
    message: str
    #: HTTP status, when the backend answered with one.
    status: int | None = None
    #: A machine-readable code: the provider's error code (``insufficient_quota``)
    #: or the transport's (``ECONNREFUSED``).
    code: str | None = None
    #: The provider's error type: ``rate_limit_error``, ``overloaded_error``,
    #: ``RESOURCE_EXHAUSTED``...
    provider_type: str | None = None
    #: How long the backend asked us to wait, from ``Retry-After`` or ``retry-after-ms``.
    retry_after_ms: int | None = None

    def __post_init__(self) -> None:
        # msgspec checks types only when decoding; events built in code get the
        # same guarantees here, so the core can trust every failure it holds.
        try:
            kind = FailureKind(self.kind)
        except ValueError:
            raise InvalidEvent(
                f"Failure.kind must be one of {[k.value for k in FailureKind]}"
            ) from None
        msgspec.structs.force_setattr(self, "kind", kind)
        if not isinstance(self.message, str):
            raise InvalidEvent("Failure.message must be a string")
        for name in ("code", "provider_type"):
            if not isinstance(getattr(self, name), str | None):
                raise InvalidEvent(f"Failure.{name} must be a string or None")
        for name in ("status", "retry_after_ms"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidEvent(f"Failure.{name} must be an integer or None")
        if self.status is not None and not 100 <= self.status <= 599:
            raise InvalidEvent(f"Failure.status must be between 100 and 599, got {self.status}")
        if self.retry_after_ms is not None and self.retry_after_ms < 0:
            raise InvalidEvent("Failure.retry_after_ms must not be negative")
