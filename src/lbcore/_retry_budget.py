"""The retry budget: how many retries and failovers may be in flight across all requests.

Envoy's retry budget, in the core. While the budget is on
(``retry_budget_percent`` set), a request needs one unit of it before its
first same-backend retry or failover, and keeps that unit until it ends
(it has at most one attempt in flight, so one unit covers all its later
retries). At most ``max(retry_budget_min, retry_budget_percent% of the
requests in flight)`` units are out at once. Past that, retrying would only
multiply the load on backends that are already failing: the request ends
instead.
"""

from __future__ import annotations

from ._config import Settings
from ._state import LiveRequest

__all__ = ("RetryBudget",)


class RetryBudget:
    __slots__ = ("_minimum", "_percent", "used")

    def __init__(self, settings: Settings) -> None:
        self._percent = settings.retry_budget_percent
        self._minimum = settings.retry_budget_min
        #: Units out: requests in flight that retried or failed over.
        self.used = 0

    def limit(self, in_flight: int) -> int | None:
        """Units allowed with ``in_flight`` live requests; None while the budget is off."""
        if self._percent is None:
            return None
        return max(self._minimum, in_flight * self._percent // 100)

    def take(self, request: LiveRequest, in_flight: int) -> bool:
        """Give ``request`` its unit, unless it holds one; False when none is left."""
        limit = self.limit(in_flight)
        if limit is None or request.retrying:
            return True
        if self.used >= limit:
            return False
        self.used += 1
        request.retrying = True
        return True

    def give_back(self, request: LiveRequest) -> None:
        if request.retrying:
            request.retrying = False
            self.used -= 1
