"""Retry-After cooldowns (spec/behaviour.md §19), stepped one event at a time."""

from __future__ import annotations

from lbcore import (
    Balancer,
    CoolDown,
    FailOver,
    FailoverExhausted,
    FailoverReason,
    RequestFailed,
    RetryScheduled,
    SkipBackend,
    SkipReason,
    StartAttempt,
)

from .scenarios import config, fail, served, start, tick


def _of(kind: type, actions: list[object]) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


def test_a_retry_after_cools_the_backend_for_every_request_until_it_ends() -> None:
    lb = Balancer(config("failover", "ab"))
    lb.handle(start(0, "r1", attempt_budget=1))
    actions = lb.handle(fail(10, "r1", 1, 429, retry_after_ms=2000))
    assert _of(CoolDown, actions) == [CoolDown(backend="a", until=2010)]
    assert lb.stats().cooldown_until == {"a": 2010}
    for ms, rid in ((20, "r2"), (2009, "r3")):
        actions = lb.handle(start(ms, rid))
        (skip,) = _of(SkipBackend, actions)
        assert skip.reason is SkipReason.COOLING_DOWN and skip.backend == "a"
        assert [a.backend for a in _of(StartAttempt, actions)] == ["b"]
        lb.handle(fail(ms + 1, rid, 1, 400))  # the rotation ends: the next one starts at a
    # Usable again at exactly `until`, and gone from the stats.
    actions = lb.handle(start(2010, "r4"))
    assert not _of(SkipBackend, actions)
    assert [a.backend for a in _of(StartAttempt, actions)] == ["a"]
    assert lb.stats().cooldown_until == {}


def test_the_cooldown_is_capped_and_never_shortened() -> None:
    lb = Balancer(config("failover", "abc", max_retry_after_ms=5000))
    lb.handle(start(0, "r1"))
    (cool,) = _of(CoolDown, lb.handle(fail(1, "r1", 1, 429, retry_after_ms=86_400_000)))
    assert cool == CoolDown(backend="a", until=5001)
    lb.handle(start(2, "r2"))  # skips a, starts on b
    lb.handle(start(3, "r3"))  # the same
    assert _of(CoolDown, lb.handle(fail(4, "r2", 1, 429, retry_after_ms=10))) == [
        CoolDown(backend="b", until=14)
    ]
    # A shorter pause asked later leaves the longer one running.
    assert not _of(CoolDown, lb.handle(fail(5, "r3", 1, 429, retry_after_ms=5)))
    assert lb.stats().cooldown_until == {"a": 5001, "b": 14}


def test_a_same_backend_retry_waits_for_the_longer_of_delay_and_retry_after() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_delay_ms=500))
    lb.handle(start(0, "r1"))
    (retry,) = _of(RetryScheduled, lb.handle(fail(10, "r1", 1, 429, retry_after_ms=100)))
    assert retry.due == 510  # the delay is longer
    lb = Balancer(config("failover", "ab", failover_retry_delay_ms=50))
    lb.handle(start(0, "r1"))
    (retry,) = _of(RetryScheduled, lb.handle(fail(10, "r1", 1, 429, retry_after_ms=1000)))
    assert retry.due == 1010  # the Retry-After is longer
    assert lb.next_deadline() == 1010


def test_a_waiting_retry_waits_again_when_its_backend_starts_cooling() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_delay_ms=100))
    lb.handle(start(0, "r1"))
    lb.handle(fail(1, "r1", 1, 503))  # r1 waits until 101 to retry a
    lb.handle(start(2, "r2", attempt_budget=1))
    lb.handle(fail(3, "r2", 1, 429, retry_after_ms=500))  # a cools until 503
    actions = lb.handle(tick(101))
    assert not _of(StartAttempt, actions)
    assert _of(RetryScheduled, actions) == [RetryScheduled(request_id="r1", backend="a", due=503)]
    assert [a.backend for a in _of(StartAttempt, lb.handle(tick(503)))] == ["a"]


def test_a_retry_after_past_the_deadline_fails_over_at_once() -> None:
    lb = Balancer(config("failover", "ab", deadline_ms=1000))
    lb.handle(start(0, "r1"))
    actions = lb.handle(fail(10, "r1", 1, 429, retry_after_ms=990))
    (move,) = _of(FailOver, actions)
    assert move.reason is FailoverReason.PAST_DEADLINE
    assert [a.backend for a in _of(StartAttempt, actions)] == ["b"]
    assert lb.stats().backend_metrics["a"].failures == 1


def test_when_every_backend_cools_the_caller_learns_how_long_to_wait() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_count=1))
    lb.handle(start(0, "r1"))
    lb.handle(fail(1, "r1", 1, 429, retry_after_ms=3000))
    lb.handle(fail(2, "r1", 2, 429, retry_after_ms=1000))  # r1 fails: a and b both failed
    (ended,) = _of(RequestFailed, lb.handle(start(500, "r2")))
    error = ended.error
    assert isinstance(error, FailoverExhausted)
    assert error.retryable and error.status == 429
    assert [(f.backend, f.failure.retry_after_ms) for f in error.failures] == [
        ("a", 2501),
        ("b", 502),
    ]
    assert all(f.failure.code == "cooling_down" for f in error.failures)


def test_turned_off_it_keeps_the_reference_timing() -> None:
    lb = Balancer(config("failover", "ab", honour_retry_after=False))
    lb.handle(start(0, "r1"))
    actions = lb.handle(fail(1, "r1", 1, 429, retry_after_ms=3000))
    assert not _of(CoolDown, actions)
    assert [a.backend for a in _of(StartAttempt, actions)] == ["a"]  # retried at once
    assert not _of(SkipBackend, lb.handle(start(2, "r2")))


def test_round_robin_ignores_retry_after() -> None:
    lb = Balancer(config("round-robin", "ab"))
    lb.handle(start(0, "r1"))
    assert not _of(CoolDown, lb.handle(fail(1, "r1", 1, 429, retry_after_ms=3000)))
    lb.handle(start(2, "r2"))
    actions = lb.handle(start(3, "r3"))
    assert [a.backend for a in _of(StartAttempt, actions)] == ["a"]
    assert lb.stats().cooldown_until == {}


def test_a_retry_after_of_zero_changes_nothing() -> None:
    lb = Balancer(config("failover", "ab"))
    lb.handle(start(0, "r1"))
    actions = lb.handle(fail(1, "r1", 1, 429, retry_after_ms=0))
    assert not _of(CoolDown, actions)
    assert [a.backend for a in _of(StartAttempt, actions)] == ["a"]
    for event in served(2, "r1", 2):
        lb.handle(event)
