"""A balancer that takes none of the core's shortcuts, to check them against."""

from __future__ import annotations

from lbcore import Action, Balancer
from lbcore._state import LiveRequest


class VisitByVisit(Balancer):
    """Visits every backend one by one, even when the whole pool is full."""

    def _skip_a_full_pool(self, request: LiveRequest, actions: list[Action]) -> bool:
        return False


class CountingShortPaths(Balancer):
    """Counts the new requests queued by the short path through a full pool."""

    short_paths = 0

    def _skip_a_full_pool(self, request: LiveRequest, actions: list[Action]) -> bool:
        taken = super()._skip_a_full_pool(request, actions)
        self.short_paths += taken
        return taken
