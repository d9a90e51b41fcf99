"""What a nested balancer's failure means to the balancer around it (reference section 3.4).

The inner balancer is a client of its own; its exception is turned into one
:class:`lbcore.Failure` for the outer core. A retryable aggregate may be retried
and failed over (kind ``nested``); a non-retryable one ends the request as it is
(kind ``terminal``, and the client raises the inner exception itself); a raw
backend failure the inner balancer passed on stays that backend's failure.
"""

from __future__ import annotations

from typing import Final

from lbcore import (
    AllContextLimitsExceeded,
    BackendFailed,
    FailoverExhausted,
    Failure,
    FailureKind,
    clean_text,
)

from ._errors import LoadBalancerError

__all__ = ("NESTED_CODE", "nested_failure")

#: ``Failure.code`` of a failure that a nested balancer reported.
NESTED_CODE: Final = "nested_balancer"


def nested_failure(error: LoadBalancerError) -> Failure:
    """The outer core's view of the inner balancer's ``error``."""
    value = error.error
    if isinstance(value, BackendFailed):
        # The inner balancer passed one backend's failure on raw: so does this one.
        return value.failure
    aggregate = isinstance(value, FailoverExhausted | AllContextLimitsExceeded)
    if error.retryable:
        kind = FailureKind.NESTED
    elif aggregate:
        kind = FailureKind.TERMINAL
    else:
        # Anything else (every breaker open, a saturated pool...) is an ordinary
        # status-less failure: retried per the settings, then left behind.
        kind = FailureKind.PROVIDER
    status = value.status if isinstance(value, FailoverExhausted) else None
    return Failure(
        kind=kind, message=clean_text(error.message, 512), status=status, code=NESTED_CODE
    )
