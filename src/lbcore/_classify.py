"""Reading a :class:`Failure`: retry here, move on, count as timeout, which category.

Each predicate mirrors one rule of the reference (sections 3.4 to 3.6). They
are pure functions of the failure and the settings, so they are tested as
tables without a balancer.
"""

from __future__ import annotations

from typing import Final

from ._config import Settings
from ._failure import Failure, FailureKind
from ._outcomes import Category

__all__ = (
    "allows_same_backend_retry",
    "category_of",
    "effective_status",
    "is_immediate_failover",
    "is_network_transient",
    "is_transient",
)

#: Statuses that say "this backend will not serve you": skip its remaining retries.
IMMEDIATE_FAILOVER_STATUSES: Final = frozenset({401, 402, 403})
_TRANSIENT_PROVIDER_TYPES: Final = frozenset({"overloaded_error", "rate_limit_error", "api_error"})
_SERVER_PROVIDER_TYPES: Final = frozenset({"overloaded_error", "api_error"})


def _is_5xx(status: int | None) -> bool:
    return status is not None and 500 <= status <= 599


def is_network_transient(failure: Failure) -> bool:
    """Refused, reset, cut short or timed out: the network, not the backend's answer."""
    return failure.kind in (FailureKind.NETWORK, FailureKind.TIMEOUT)


def is_immediate_failover(failure: Failure) -> bool:
    return failure.status in IMMEDIATE_FAILOVER_STATUSES


def allows_same_backend_retry(failure: Failure, settings: Settings) -> bool:
    """The reference's ``shouldFailover``: may the same backend be tried again?

    Despite the reference's name it never decides whether to move on (every
    failure moves on once retries are done); it only gates same-backend retries.
    """
    if settings.failover_on_network_errors and is_network_transient(failure):
        return True
    if failure.status is not None:
        codes = settings.failover_status_codes
        if codes is not None:
            return failure.status in codes
        return failure.status == 429 or _is_5xx(failure.status)
    # A status-less failure that is not (or may not be treated as) network is
    # still retried: the reference's rule 4, kept on purpose (spec deviation table).
    return True


def is_transient(failure: Failure) -> bool:
    """Could the same request succeed later? Drives the aggregate's ``retryable``."""
    if failure.status in (401, 403) or failure.kind == FailureKind.TERMINAL:
        return False
    if is_network_transient(failure) or failure.kind == FailureKind.NESTED:
        return True
    if failure.provider_type in _TRANSIENT_PROVIDER_TYPES:
        return True
    return failure.status == 429 or _is_5xx(failure.status)


def category_of(failure: Failure) -> Category | None:
    status = failure.status
    if status == 429 or failure.provider_type == "rate_limit_error":
        return Category.RATE_LIMIT
    if status == 402:
        return Category.QUOTA
    if status in (401, 403):
        return Category.AUTHENTICATION
    if failure.provider_type in _SERVER_PROVIDER_TYPES or _is_5xx(status):
        return Category.SERVER_ERROR
    if status is not None and 400 <= status <= 499:
        return Category.CLIENT_ERROR
    if is_network_transient(failure):
        return Category.NETWORK
    if "Stream timeout" in failure.message:
        return Category.SERVER_ERROR
    return None


def effective_status(failure: Failure) -> int | None:
    """The status a failure stands for: its own, or the one its category implies."""
    if failure.status is not None:
        return failure.status
    category = category_of(failure)
    if category is Category.RATE_LIMIT:
        return 429
    if category is Category.QUOTA:
        return 402
    return None
