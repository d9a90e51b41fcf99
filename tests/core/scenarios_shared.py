"""Golden-trace scenarios for shared state (spec §26).

Registered into ``scenarios.SCENARIOS`` when that module is imported. Each
trace is one process's view: the peers' news arrives as events, what it
learnt itself leaves as ``Publish`` and ``ClaimProbe`` actions.
"""

from __future__ import annotations

from lbcore import (
    BreakerClosed,
    BreakerOpened,
    CooledDown,
    Event,
    Failure,
    FailureKind,
    FailureSeen,
    PeerFact,
    PeerReport,
    ProbeClaimed,
    ProbeRefused,
    TokensUsed,
)

from .scenarios import cancel, config, fail, ok, scenario, served, start

BREAKER = {"circuit_breaker_enabled": True, "peer_sharing": True}


def peer(at: int, seq: int, *facts: PeerFact, origin: str = "p2") -> PeerReport:
    return PeerReport(at=at, origin=origin, seq=seq, facts=facts)


@scenario(
    "shared state",
    config(
        "failover", "ab", **BREAKER, circuit_breaker_failure_threshold=2, failover_retry_count=1
    ),
)
def shared_local_failures_are_published() -> list[Event]:
    """Each call publishes what it recorded, once: the failure that trips a carries the opening."""
    return [
        start(0, "r1"),
        fail(5, "r1", 1, 503),
        fail(9, "r1", 2, 503),
        start(20, "r2"),
        fail(25, "r2", 1, 503),
        *served(30, "r2", 2, 10, 20),
    ]


@scenario("shared state", config("failover", "ab", **BREAKER))
def shared_peer_opens_the_breaker() -> list[Event]:
    """A peer's breaker opened on a 10 s ago: a is skipped here at once, for the 20 s left."""
    return [
        peer(100, 1, BreakerOpened(backend="a", recovery_left_ms=20_000)),
        start(101, "r1"),
        *served(102, "r1", 1),
    ]


@scenario("shared state", config("failover", "ab", **BREAKER))
def shared_peer_failures_add_up() -> list[Event]:
    """One failure here and two a peer saw reach the threshold of 3: the breaker trips here."""
    failure = FailureSeen(backend="a", kind=FailureKind.HTTP, status=503)
    return [
        start(0, "r1"),
        fail(5, "r1", 1, 503),
        fail(9, "r1", 2, 503),
        *served(12, "r1", 3),
        peer(20, 1, failure),
        peer(21, 2, failure),
        start(30, "r2"),
        *served(31, "r2", 1),
    ]


def _opened_by_peer() -> list[Event]:
    return [peer(0, 1, BreakerOpened(backend="a", recovery_left_ms=1_000))]


@scenario(
    "shared state", config("failover", "ab", **BREAKER, circuit_breaker_recovery_timeout_ms=1_000)
)
def shared_probe_claimed() -> list[Event]:
    """After recovery r1 claims a's probe and skips a; once granted, r2 probes it and r3 may not."""
    return [
        *_opened_by_peer(),
        start(1_000, "r1"),
        ProbeClaimed(at=1_003, backend="a"),
        cancel(1_005, "r1"),
        start(1_010, "r2"),
        start(1_011, "r3"),
        *served(1_012, "r2", 1),
        ok(1_020, "r3", 1),
    ]


@scenario(
    "shared state", config("failover", "ab", **BREAKER, circuit_breaker_recovery_timeout_ms=1_000)
)
def shared_probe_refused() -> list[Event]:
    """Another process holds a's probe: a stays open here until that peer's probe closes it."""
    return [
        *_opened_by_peer(),
        start(1_000, "r1"),
        ProbeRefused(at=1_003, backend="a"),
        cancel(1_005, "r1"),
        start(1_500, "r2"),
        cancel(1_505, "r2"),
        peer(1_600, 2, BreakerClosed(backend="a")),
        start(1_610, "r3"),
        ok(1_615, "r3", 1),
    ]


@scenario("shared state", config("failover", "ab", peer_sharing=True, tpm_threshold=500))
def shared_tpm_is_summed() -> list[Event]:
    """a used 100 tokens here (under 500/min: skipped); a peer's 900 more make 1000: tried again."""
    return [
        start(0, "r1"),
        *served(1, "r1", 1, 40, 60),
        start(10, "r2"),
        cancel(11, "r2"),
        peer(20, 1, TokensUsed(backend="a", tokens=900)),
        start(30, "r3"),
        ok(35, "r3", 1),
    ]


@scenario("shared state", config("failover", "ab", peer_sharing=True))
def shared_retry_after_from_a_peer() -> list[Event]:
    """A peer got a 429 asking for 1 s: a cools down here too, is skipped, and is used at 1 s."""
    asked = Failure(kind=FailureKind.HTTP, message="HTTP 429", status=429, retry_after_ms=1_000)
    return [
        peer(0, 1, CooledDown(backend="a", left_ms=1_000, failure=asked)),
        start(10, "r1"),
        cancel(11, "r1"),
        start(1_000, "r2"),
        ok(1_005, "r2", 1),
    ]
