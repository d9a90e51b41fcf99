"""A new request's whole rotation at once, when capacity is the only thing in its way.

Under a burst every backend is full and each newcomer visits them all, is
skipped by each for capacity and queues. The visit-by-visit path
(``Balancer._admit``) asks every backend about its breaker, its token rate, the
context limit and its cooldown before its capacity. When the balancer already
knows that no breaker is other than closed, no cooldown runs and the prompt
fits every backend, only the token rate and the capacity are left to ask, and
this module asks them in one loop. Its answer must be exactly the long way's
(``tests/core/test_fast_paths.py`` runs both side by side): the same skips, in
the same order, or None to take the long way.
"""

from __future__ import annotations

from typing import Final

from ._actions import SkipBackend, SkipReason
from ._capacity import Capacity
from ._tpm import TokenRate

__all__ = ("skips_when_all_full",)

# A module constant: much faster to read than the enum class's attribute.
_AT_CAPACITY: Final = SkipReason.AT_CAPACITY


def skips_when_all_full(
    request_id: str,
    start: int,
    capacity: Capacity,
    names: tuple[str, ...],
    details: tuple[str, ...],
    *,
    tpm: TokenRate,
    threshold: int | None,
    now: int,
) -> list[SkipBackend] | None:
    """The at-capacity skips of a rotation from ``start`` over every backend, in order.

    None when some backend has room for a request that is not waiting
    (``Capacity.open``), or some token rate is a reason to skip a backend:
    either way the visit-by-visit path decides.
    """
    waiting, in_flight, limits = capacity.waiting, capacity.in_flight, capacity.limits
    for index, limit in enumerate(limits):
        if not waiting[index] and (limit is None or in_flight[index] < limit):
            return None
    if threshold is not None and tpm.any_below(names, now, threshold):
        return None
    count = len(names)
    return [
        SkipBackend(
            request_id=request_id,
            backend=names[index],
            reason=_AT_CAPACITY,
            detail=details[index],
        )
        for index in (*range(start, count), *range(start))
    ]
