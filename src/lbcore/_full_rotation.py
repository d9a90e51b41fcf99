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

from typing import Final, TypeAlias

from ._actions import SkipBackend, SkipReason
from ._capacity import Capacity
from ._tpm import TokenRate

__all__ = ("Rotation", "skips_when_all_full")

# A module constant: much faster to read than the enum class's attribute.
_AT_CAPACITY: Final = SkipReason.AT_CAPACITY

#: (first backend, indexes in visiting order, their names, (name, detail) pairs).
_Order: TypeAlias = tuple[int, tuple[int, ...], tuple[str, ...], tuple[tuple[str, str], ...]]


class Rotation:
    """The order a rotation from a given first backend visits them all, and their names.

    A burst's newcomers mostly start at the same backend (failover's sticky
    index), so the last order asked for is kept: one tuple of each, not one
    per start (that would be quadratic in the backends).
    """

    __slots__ = ("_details", "_last", "_names")

    def __init__(self, names: tuple[str, ...], details: tuple[str, ...]) -> None:
        self._names = names
        #: Per backend index: the detail of its at-capacity skip.
        self._details = details
        self._last: _Order = (-1, (), (), ())

    def starting_at(
        self, start: int
    ) -> tuple[tuple[int, ...], tuple[str, ...], tuple[tuple[str, str], ...]]:
        """The backend indexes in visiting order, their names, and (name, detail) pairs."""
        last = self._last
        if last[0] != start:
            count = len(self._names)
            order = (*range(start, count), *range(start))
            names = tuple([self._names[i] for i in order])
            visits = tuple([(self._names[i], self._details[i]) for i in order])
            last = self._last = (start, order, names, visits)
        return last[1], last[2], last[3]


def skips_when_all_full(
    request_id: str,
    visits: tuple[tuple[str, str], ...],
    capacity: Capacity,
    names: tuple[str, ...],
    *,
    tpm: TokenRate,
    threshold: int | None,
    now: int,
) -> list[SkipBackend] | None:
    """The at-capacity skips of a rotation over every backend, in the order of ``visits``.

    None when some backend has room for a request that is not waiting
    (``Capacity.open``), or some token rate is a reason to skip a backend:
    either way the visit-by-visit path decides. ``names``: every backend's, in
    config order (the token rates are asked by it, the same tuple every time).
    """
    waiting = capacity.waiting
    # A backend someone waits for is open to nobody new: when every one has a
    # waiter (a burst), one C-level pass says so.
    if not all(waiting):
        in_flight = capacity.in_flight
        for index, limit in enumerate(capacity.limits):
            if not waiting[index] and (limit is None or in_flight[index] < limit):
                return None
    if threshold is not None and tpm.any_below(names, now, threshold):
        return None
    return [
        SkipBackend(request_id=request_id, backend=name, reason=_AT_CAPACITY, detail=detail)
        for name, detail in visits
    ]
