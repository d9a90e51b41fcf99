"""Golden-trace scenarios for concurrency limits and the queue (spec §18).

Registered into ``scenarios.SCENARIOS`` when that module is imported; kept apart
so each mechanism's scenarios stay in one place.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lbcore import BalancerConfig, Event

from .scenarios import cancel, config, fail, ok, scenario, served, start, tick


def limited(strategy: str, names: str, limits: dict[str, int], **settings: Any) -> BalancerConfig:
    """``config(...)`` with per-backend ``max_concurrent`` limits."""
    base = config(strategy, names, **settings)
    backends = tuple(
        msgspec.structs.replace(b, max_concurrent=limits.get(b.name)) for b in base.backends
    )
    return msgspec.structs.replace(base, backends=backends)


@scenario("capacity", limited("failover", "ab", {"a": 1, "b": 1}))
def queue_dispatch_on_release() -> list[Event]:
    """a and b take one request each; r3 waits for both and gets a the moment r1 ends."""
    return [start(0, "r1"), start(1, "r2"), start(2, "r3"), ok(10, "r1", 1), *served(11, "r3", 1)]


@scenario("capacity", config("failover", "ab", max_concurrent=1, queue_timeout_ms=50))
def queue_timeout() -> list[Event]:
    """No slot frees within 50 ms: r3 fails with QueueTimedOut, nothing charged to a or b."""
    return [start(0, "r1"), start(1, "r2"), start(5, "r3"), tick(40), tick(55), ok(60, "r1", 1)]


@scenario("capacity", config("failover", "ab", max_concurrent=1, max_queued=1))
def queue_full() -> list[Event]:
    """One request may wait: r3 does, r4 finds the queue full and fails at once."""
    return [start(0, "r1"), start(1, "r2"), start(2, "r3"), start(3, "r4"), ok(10, "r1", 1)]


@scenario("capacity", config("failover", "ab", max_concurrent=1, max_queued=1))
def queue_cancelled_frees_its_place() -> list[Event]:
    """Cancelling the waiting r3 frees its place: r4 may wait, and gets a when r1 ends."""
    return [
        start(0, "r1"),
        start(1, "r2"),
        start(2, "r3"),
        cancel(3, "r3"),
        start(4, "r4"),
        ok(10, "r1", 1),
    ]


@scenario("capacity", limited("failover", "ab", {"a": 1, "b": 1}, failover_retry_count=1))
def queue_after_failover_to_a_full_backend() -> list[Event]:
    """r1 fails on a, finds b full and waits for b; its FailOver is announced when b frees."""
    return [start(0, "r1"), start(1, "r2"), fail(5, "r1", 1, 503), ok(9, "r2", 1)]


@scenario(
    "capacity",
    limited("failover", "ab", {"a": 1, "b": 1}, failover_retry_count=2, failover_retry_delay_ms=50),
)
def queue_retry_keeps_its_slot() -> list[Event]:
    """While r1 waits to retry a it keeps a's slot: r2 is sent to b, r3 waits."""
    return [start(0, "r1"), fail(1, "r1", 1, 503), start(2, "r2"), start(3, "r3"), tick(51)]


@scenario(
    "capacity",
    limited("failover", "ab", {"a": 1, "b": 1}, failover_retry_count=1, timeout_ms=100),
)
def queue_failover_does_not_jump_the_line() -> list[Event]:
    """On one tick r1 and r2 leave a and b: r3, waiting since t=10, goes first."""
    return [start(0, "r1"), start(0, "r2"), start(10, "r3"), tick(100)]


@scenario("capacity", config("round-robin", "ab", max_concurrent=1))
def rr_queue_waits_for_its_turn() -> list[Event]:
    """Round-robin's turn is fixed: r3's turn is a, so it waits for a even though b frees."""
    return [
        start(0, "r1"),
        start(1, "r2"),
        start(2, "r3"),
        ok(5, "r2", 1),
        ok(8, "r1", 1),
        ok(12, "r3", 1),
    ]
