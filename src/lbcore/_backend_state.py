"""A per-backend read-out for operators: health, pause and rate in one typed value.

``stats()`` spreads the same facts over several mappings (breakers only for
backends that failed, cooldowns only while they run); this puts them side by
side per backend, so a dashboard or a health check need not join them.
"""

from __future__ import annotations

import msgspec

from ._breaker import Breaker, BreakerState

# Everything in __all__ is re-exported by lbcore.
__all__ = ("BackendState",)


class BackendState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One backend as the core sees it at ``Balancer.now``."""

    name: str
    #: ``closed`` also for a backend that never failed (it has no breaker yet).
    breaker: BreakerState
    #: Recorded failures still inside the breaker's window.
    failures_in_window: int
    #: When an open breaker lets a probe through; None unless open.
    half_open_after: int | None
    #: The end of a Retry-After pause still running, else None.
    cooldown_until: int | None
    #: Tokens per minute over the last five minutes (section 9).
    tpm: float
    #: Concurrency slots its attempts hold, and its limit (None: unlimited).
    slots_used: int
    max_concurrent: int | None


def breaker_fields(
    breaker: Breaker | None, now: int, window_ms: int, recovery_ms: int
) -> tuple[BreakerState, int, int | None]:
    """The breaker part of a :class:`BackendState`: state, failures in window, reopening."""
    if breaker is None:
        return BreakerState.CLOSED, 0, None
    in_window = sum(1 for failure in breaker.failures if now - failure.at < window_ms)
    opened_at = breaker.opened_at
    reopens = (
        opened_at + recovery_ms
        if breaker.state is BreakerState.OPEN and opened_at is not None
        else None
    )
    return breaker.state, in_window, reopens
