"""Per-backend counters, and the stats snapshot the balancer reports."""

from __future__ import annotations

import msgspec

from ._breaker import BreakerSnapshot

# Everything in __all__ is re-exported by lbcore.
__all__ = ("BackendMetrics", "ModelInfo", "Stats")


class BackendMetrics(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    #: Attempts started (retries included).
    requests: int
    successes: int
    failures: int
    timeouts: int
    tokens: int
    total_latency_ms: int
    #: Total latency over the attempts that recorded one (successes and failures).
    avg_latency_ms: float


class MetricsCounter:
    __slots__ = ("failures", "requests", "successes", "timeouts", "tokens", "total_latency_ms")

    def __init__(self) -> None:
        self.requests = 0
        self.successes = 0
        self.failures = 0
        self.timeouts = 0
        self.tokens = 0
        self.total_latency_ms = 0

    def snapshot(self) -> BackendMetrics:
        timed = self.successes + self.failures
        return BackendMetrics(
            requests=self.requests,
            successes=self.successes,
            failures=self.failures,
            timeouts=self.timeouts,
            tokens=self.tokens,
            total_latency_ms=self.total_latency_ms,
            avg_latency_ms=self.total_latency_ms / timed if timed else 0.0,
        )


class Stats(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A copy of the balancer's counters; mutating it changes nothing inside."""

    profile_name: str
    strategy: str
    members: tuple[str, ...]
    #: Round-robin counts dispatched requests; failover counts successful ones.
    total_requests: int
    last_selected: str | None
    last_selected_model: str | None
    profile_counts: dict[str, int]
    backend_metrics: dict[str, BackendMetrics]
    circuit_breaker_states: dict[str, BreakerSnapshot]
    current_tpm: dict[str, float]
    #: Live requests: attempting, waiting to retry, or queued.
    in_flight: int
    #: Requests waiting in the queue for a free slot (each counted once).
    queued: int = 0
    #: Every member: the slots its visits hold (attempts in flight and retry waits).
    backend_slots_used: dict[str, int] = msgspec.field(default_factory=dict)
    #: Every member: the requests waiting for one of its slots (a request waiting
    #: for two backends counts for both).
    backend_queued: dict[str, int] = msgspec.field(default_factory=dict)
    #: Attempts under way at each member (sent or being sent; not one held for a
    #: local connection slot, nor a request waiting to retry).
    backend_in_flight: dict[str, int] = msgspec.field(default_factory=dict)
    #: Backends cooling down after a Retry-After: when each pause ends.
    cooldown_until: dict[str, int] = msgspec.field(default_factory=dict)
    #: Retries and failovers in flight, counted against the retry budget (§21).
    retry_budget_used: int = 0


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The one synthetic model a balancer advertises."""

    id: str
    name: str
    provider: str
    supported_tool_formats: tuple[str, ...]
    context_window: int | None
