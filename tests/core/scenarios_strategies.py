"""Golden-trace scenarios for the strategies beyond the reference (spec §23-§25).

Registered into ``scenarios.SCENARIOS`` when that module is imported, like the
capacity scenarios.
"""

from __future__ import annotations

from typing import Any

import msgspec

from lbcore import AttemptSent, BalancerConfig, Event

from .scenarios import chunk, config, fail, ok, scenario, served, start, tick


def weighted(names: str, weights: dict[str, int], **settings: Any) -> BalancerConfig:
    """A weighted-round-robin ``config(...)``; backends left out of ``weights`` weigh 1."""
    base = config("weighted-round-robin", names, **settings)
    backends = tuple(
        msgspec.structs.replace(b, weight=weights.get(b.name, 1)) for b in base.backends
    )
    return msgspec.structs.replace(base, backends=backends)


def answered(at: int, rid: str, attempt: int, after: int) -> list[Event]:
    """A first chunk ``after`` ms past ``at``, then a clean end."""
    return [chunk(at + after, rid, attempt), ok(at + after + 1, rid, attempt)]


# ------------------------------------------------------- weighted round-robin


@scenario("weighted round-robin", weighted("abc", {"a": 5}))
def wrr_smooth_order() -> list[Event]:
    """Weights 5, 1, 1: seven requests go a a b a c a a, never five to a in a row."""
    events: list[Event] = []
    for n in range(7):
        rid = f"r{n + 1}"
        events += [start(n * 10, rid), *served(n * 10 + 1, rid, 1)]
    return events


@scenario("weighted round-robin", weighted("abc", {"b": 0}, failover_retry_count=1))
def wrr_drained_backend_is_never_visited() -> list[Event]:
    """b weighs 0: r1 fails on a and moves straight to c; r2's pick is c, r3's a again."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 503),
        *served(2, "r1", 2),
        start(10, "r2"),
        *served(11, "r2", 1),
        start(20, "r3"),
        *served(21, "r3", 1),
    ]


@scenario(
    "weighted round-robin",
    weighted(
        "ab",
        {"a": 2},
        failover_retry_count=1,
        circuit_breaker_enabled=True,
        circuit_breaker_failure_threshold=1,
    ),
)
def wrr_breaker_skip_keeps_the_order() -> list[Event]:
    """a's breaker opens in r1; the schedule still goes a b a, so r3 skips a for b."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 503),
        *served(2, "r1", 2),
        start(10, "r2"),
        *served(11, "r2", 1),
        start(20, "r3"),
        *served(21, "r3", 1),
    ]


# ----------------------------------------------------------------- least busy


@scenario("least busy", config("least-busy"))
def least_busy_picks_the_idlest() -> list[Event]:
    """r1, r2, r3 spread over a, b, c; once r2 ends, r4 goes to b, the only idle one."""
    return [
        start(0, "r1"),
        start(1, "r2"),
        start(2, "r3"),
        *served(3, "r2", 1),
        start(10, "r4"),
        *served(20, "r1", 1),
        *served(30, "r3", 1),
        *served(40, "r4", 1),
    ]


@scenario("least busy", config("least-busy", "ab", failover_retry_delay_ms=50))
def least_busy_retry_wait_still_counts() -> list[Event]:
    """r1 waits to retry a and keeps its slot there, so r2 goes to b; r3 ties and takes a."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 503),
        start(2, "r2"),
        start(3, "r3"),
        tick(51),
        *served(60, "r1", 2),
        *served(70, "r2", 1),
        *served(80, "r3", 1),
    ]


# -------------------------------------------------------------------- latency


@scenario("latency", config("latency", latency_explore_percent=0))
def latency_prefers_the_fastest() -> list[Event]:
    """Untried backends go first: a answers in 90 ms, b in 20, c in 50; then b gets r4."""
    return [
        start(0, "r1"),
        *answered(0, "r1", 1, 90),
        start(100, "r2"),
        *answered(100, "r2", 1, 20),
        start(200, "r3"),
        *answered(200, "r3", 1, 50),
        start(300, "r4"),
        *answered(300, "r4", 1, 25),
    ]


@scenario("latency", config("latency", "ab", latency_explore_percent=0, failover_retry_count=1))
def latency_failure_counts_as_slow() -> list[Event]:
    """a fails in 1 ms and counts as 10 s, b serves in 40: r2 starts at b."""
    return [
        start(0, "r1"),
        fail(1, "r1", 1, 503),
        *answered(1, "r1", 2, 40),
        start(100, "r2"),
        *answered(100, "r2", 1, 30),
    ]


@scenario("latency", config("latency", "ab", latency_explore_percent=0))
def latency_counts_from_the_send() -> list[Event]:
    """Sent 500 ms after its start, a answers 10 ms later: 10 ms beats b's 30, r3 goes to a."""
    return [
        start(0, "r1"),
        AttemptSent(at=500, request_id="r1", attempt=1),
        *answered(500, "r1", 1, 10),
        start(600, "r2"),
        *answered(600, "r2", 1, 30),
        start(700, "r3"),
        *answered(700, "r3", 1, 10),
    ]


@scenario("latency", config("latency", latency_explore_percent=20, seed=1))
def latency_explores_with_the_seed() -> list[Event]:
    """Share 20 %, seed 1: answers slow down by 1 ms each; a few drawn picks leave the fastest."""
    events: list[Event] = []
    for n in range(12):
        rid, at = f"r{n + 1}", n * 100
        events += [start(at, rid), *answered(at, rid, 1, 10 + n)]
    return events
