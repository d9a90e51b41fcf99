"""Decision rules that a golden trace alone would not pin, checked one rule at a time.

Each test names the reference catalogue line (or spec section) it pins.
"""

from __future__ import annotations

import pytest

from lbcore import (
    AttemptTimedOut,
    Balancer,
    CancelAttempt,
    FailoverExhausted,
    HalfOpenBreaker,
    RequestFailed,
    SkipBackend,
    StartAttempt,
    Tick,
    TimeoutPhase,
    TripBreaker,
)

from .scenarios import MINUTE, chunk, config, fail, ok, served, start
from .test_balancer import feed

BREAKER = {
    "circuit_breaker_enabled": True,
    "circuit_breaker_failure_threshold": 1,
    "circuit_breaker_recovery_timeout_ms": 100,
    "failover_retry_count": 1,
}


def started_on(actions: list[object]) -> list[str]:
    return [a.backend for a in actions if isinstance(a, StartAttempt)]


# ------------------------------------------------------------------------ TPM


@pytest.mark.parametrize(
    ("threshold", "tokens", "skipped"),
    [
        (500, (400, 100), False),  # rate 500 equals the threshold: not below it
        (500, (900, 100), False),  # rate 1000 is above it
        (None, (10, 10), False),  # no threshold, no skip however slow
        (500, (10, 10), True),  # rate 20 is above zero and below 500
    ],
)
def test_tpm_skips_only_strictly_between_zero_and_threshold(
    threshold: int | None, tokens: tuple[int, int], skipped: bool
) -> None:
    lb = Balancer(config("failover", "ab", tpm_threshold=threshold))
    feed(lb, [start(0, "r1"), ok(1, "r1", 1, *tokens)])
    actions = lb.handle(start(10, "r2"))
    assert started_on(actions) == (["b"] if skipped else ["a"])
    assert any(isinstance(a, SkipBackend) for a in actions) is skipped


# --------------------------------------------------------- failures recorded


def test_failover_mid_stream_failure_is_recorded_in_metrics_and_breaker() -> None:
    lb = Balancer(config("failover", "ab", **BREAKER))
    feed(lb, [start(0, "r1"), chunk(1, "r1", 1)])
    actions = lb.handle(fail(2, "r1", 1, 429))
    assert [type(a) for a in actions] == [TripBreaker, RequestFailed]
    assert lb.stats().backend_metrics["a"].failures == 1


def test_round_robin_failure_is_recorded_in_metrics() -> None:
    lb = Balancer(config("round-robin", "a"))
    feed(lb, [start(0, "r1"), fail(5, "r1", 1, 503)])
    metrics = lb.stats().backend_metrics["a"]
    assert (metrics.requests, metrics.failures, metrics.total_latency_ms) == (1, 1, 5)


@pytest.mark.parametrize("strategy", ["round-robin", "failover"])
def test_transport_timeouts_count_as_timeouts(strategy: str) -> None:
    lb = Balancer(config(strategy, "ab", failover_retry_count=1))
    feed(lb, [start(0, "r1")])
    lb.handle(AttemptTimedOut(at=30, request_id="r1", attempt=1, phase=TimeoutPhase.CONNECT))
    metrics = lb.stats().backend_metrics["a"]
    assert (metrics.failures, metrics.timeouts) == (1, 1)


def test_setup_failure_on_every_backend_ends_in_a_clean_aggregate() -> None:
    lb = Balancer(config("failover", "ab"))
    feed(lb, [start(0, "r1"), fail(0, "r1", 1, kind="setup", message="no key for a")])
    (terminal,) = lb.handle(fail(0, "r1", 2, kind="setup", message="no key for b"))
    assert isinstance(terminal, RequestFailed)
    assert isinstance(terminal.error, FailoverExhausted)
    assert terminal.error.retryable is False
    assert [f.backend for f in terminal.error.failures] == ["a", "b"]
    assert lb.stats().backend_metrics == {}
    assert lb.current_failover_index() == 0


# ---------------------------------------------------------------- sticky index


def test_sticky_index_follows_a_success_after_a_tpm_skip() -> None:
    lb = Balancer(config("failover", "abc", tpm_threshold=500, failover_retry_count=1))
    feed(lb, [start(0, "r1"), fail(1, "r1", 1, 400), ok(2, "r1", 2, 40, 60)])
    actions = lb.handle(start(4 * MINUTE, "r2"))  # b's rate is 25: skipped, c serves
    assert started_on(actions) == ["c"]
    feed(lb, [ok(4 * MINUTE + 1, "r2", 1)])
    assert lb.current_failover_index() == 2
    assert started_on(lb.handle(start(4 * MINUTE + 10, "r3"))) == ["c"]


def test_a_context_rejection_moves_the_sticky_index_past_the_backend() -> None:
    lb = Balancer(config("failover", "abc", windows={"a": 1000}, context_limit=10_000))
    feed(lb, [start(0, "r1", prompt_tokens=5000), chunk(1, "r1", 1), fail(2, "r1", 1, 500)])
    # The mid-stream failure leaves the index where the rejection of a put it.
    assert lb.current_failover_index() == 1
    assert started_on(lb.handle(start(10, "r2"))) == ["b"]


# ---------------------------------------------------------------- context limit


def test_a_prompt_exactly_at_the_limit_fits() -> None:
    lb = Balancer(config("failover", "ab", windows={"a": 1000}, context_limit=10_000))
    assert started_on(lb.handle(start(0, "r1", prompt_tokens=1000))) == ["a"]


# ------------------------------------------------------------------ probes


def test_a_probe_taken_then_skipped_for_tpm_is_handed_back() -> None:
    lb = Balancer(config("failover", "ab", tpm_threshold=500, **BREAKER))
    feed(lb, [start(0, "r1"), start(1, "r2")])  # both on a
    feed(lb, [fail(2, "r2", 1, 500), *served(3, "r2", 2, 0, 0)])  # a trips; b serves
    feed(lb, [ok(10, "r1", 1, 5, 5)])  # r1 finishes on the open a: a's rate is now 10
    # r3 starts on sticky b, fails there, and reaches a: half-open, probe taken,
    # then skipped because 10 tokens/min is below 500. The probe goes back.
    actions = lb.handle(start(200, "r3")) + lb.handle(fail(201, "r3", 1, 400))
    assert any(isinstance(a, HalfOpenBreaker) and a.backend == "a" for a in actions)
    assert any(isinstance(a, SkipBackend) and a.reason == "tpm_below_threshold" for a in actions)
    snapshot = lb.stats().circuit_breaker_states["a"]
    assert (snapshot.state, snapshot.probe_holder, snapshot.probe_taken_at) == (
        "half-open",
        None,
        None,
    )


def test_a_probe_taken_then_rejected_for_the_context_limit_is_handed_back() -> None:
    lb = Balancer(config("failover", "ab", windows={"a": 1000}, context_limit=10_000, **BREAKER))
    feed(lb, [start(0, "r0"), fail(1, "r0", 1, 500), fail(2, "r0", 2, 400)])  # both trip
    # "big" takes a's probe, is rejected there, hands it back, and probes b instead.
    actions = lb.handle(start(200, "big", prompt_tokens=5000))
    assert any(isinstance(a, SkipBackend) and a.reason == "context_limit" for a in actions)
    assert lb.stats().circuit_breaker_states["a"].probe_holder is None
    assert lb.stats().circuit_breaker_states["b"].probe_holder == "big"
    # "small" starts at b (the rejection moved the index), finds b's probe taken,
    # and gets a's probe.
    follow = lb.handle(start(300, "small"))
    assert [(a.backend, a.probe) for a in follow if isinstance(a, StartAttempt)] == [("a", True)]


# ------------------------------------------------------------------- timers


def test_due_timers_fire_in_order_of_due_time_then_arrival() -> None:
    lb = Balancer(config("failover", "ab", timeout_ms=100, failover_retry_delay_ms=20))
    feed(lb, [start(0, "r1"), start(1, "r2"), fail(5, "r2", 1, 503)])
    actions = lb.handle(Tick(at=200))
    # r2's retry (due 25) comes before r1's deadline (due 100).
    first_start = next(i for i, a in enumerate(actions) if isinstance(a, StartAttempt))
    first_cancel = next(i for i, a in enumerate(actions) if isinstance(a, CancelAttempt))
    assert actions[first_start].request_id == "r2"  # type: ignore[union-attr]
    assert first_start < first_cancel


def test_a_stale_failure_neither_delays_recovery_nor_voids_a_probe() -> None:
    settings = {
        "circuit_breaker_enabled": True,
        "circuit_breaker_failure_threshold": 2,
        "circuit_breaker_recovery_timeout_ms": 100,
        "failover_retry_delay_ms": 200,
    }
    lb = Balancer(config("failover", "ab", **settings))
    feed(lb, [start(0, "r1"), start(0, "r2"), start(0, "r3")])
    feed(lb, [fail(5, "r1", 1, 503)])  # r1 waits to retry a at 205
    feed(lb, [fail(10, "r2", 1, 400), fail(10, "r3", 1, 400)])  # a trips at 10
    feed(lb, [*served(11, "r2", 2), *served(20, "r3", 2)])
    feed(lb, [start(150, "r4"), fail(151, "r4", 1, 400)])  # a half-open: r4 probes it
    actions = lb.handle(Tick(at=205))  # r1 gives up on a: its failure is from t=5
    assert not any(isinstance(a, TripBreaker) for a in actions)
    breaker = lb.stats().circuit_breaker_states["a"]
    assert (breaker.state, breaker.opened_at, breaker.probe_holder) == ("half-open", 10, "r4")
    assert sorted(f.at for f in breaker.failures) == [5, 10, 10]
    # The latency of r1's failure ends when it failed (5), not at the tick.
    assert lb.stats().backend_metrics["a"].total_latency_ms == 5 + 10 + 10
    closing = lb.handle(ok(210, "r4", 2))
    assert [type(a).__name__ for a in closing] == ["CloseBreaker", "RequestCompleted"]


# -------------------------------------------------------------- round-robin


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_round_robin_cycles_through_every_size(count: int) -> None:
    names = "abcde"[:count]
    lb = Balancer(config("round-robin", names))
    order = []
    for n in range(2 * count):
        order += started_on(lb.handle(start(n, f"r{n}")))
    assert order == list(names) * 2


def test_round_robin_distribution_of_seven_requests_over_three() -> None:
    lb = Balancer(config("round-robin", "abc"))
    for n in range(7):
        feed(lb, [start(n * 10, f"r{n}"), ok(n * 10 + 1, f"r{n}", 1)])
    stats = lb.stats()
    assert stats.profile_counts == {"a": 3, "b": 2, "c": 2}
    assert stats.total_requests == 7
