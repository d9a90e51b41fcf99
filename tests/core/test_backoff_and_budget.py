"""Exponential backoff from the core's seeded PRNG (§20) and the retry budget (§21)."""

from __future__ import annotations

import pytest

from lbcore import (
    AttemptFailed,
    Balancer,
    FailOver,
    Failure,
    FailureKind,
    RequestFailed,
    RetryBudgetExhausted,
    RetryScheduled,
    Settings,
    StartAttempt,
)
from lbcore._backoff import RetryDelays, SplitMix64

from .scenarios import config, fail, served, start, tick


def _of(kind: type, actions: list[object]) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


# ------------------------------------------------------------------ the PRNG


def test_splitmix64_gives_the_published_vectors() -> None:
    generator = SplitMix64(1234567)
    assert [generator.next() for _ in range(3)] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
    ]


def test_draws_stay_within_zero_and_the_bound_inclusive() -> None:
    generator = SplitMix64(7)
    draws = [generator.up_to(3) for _ in range(2000)]
    assert set(draws) == {0, 1, 2, 3}
    assert {generator.up_to(0) for _ in range(50)} == {0}


# ------------------------------------------------------------------ backoff


def test_exponential_ceilings_double_up_to_the_cap() -> None:
    delays = RetryDelays(
        Settings(retry_backoff="exponential", retry_backoff_base_ms=100, retry_backoff_cap_ms=700)
    )
    assert [delays.ceiling(n) for n in (1, 2, 3, 4, 100)] == [100, 200, 400, 700, 700]
    for retry in range(1, 10):
        assert 0 <= delays.delay(retry) <= delays.ceiling(retry)


def test_fixed_backoff_is_the_reference_delay() -> None:
    delays = RetryDelays(Settings(failover_retry_delay_ms=40))
    assert [delays.delay(n) for n in (1, 2, 50)] == [40, 40, 40]


def _retry_dues(seed: int) -> list[int]:
    lb = Balancer(
        config(
            "failover",
            "ab",
            failover_retry_count=5,
            retry_backoff="exponential",
            retry_backoff_base_ms=1000,
            retry_backoff_cap_ms=8000,
            seed=seed,
        )
    )
    lb.handle(start(0, "r1"))
    dues = []
    at = 0
    for attempt in range(1, 5):
        (retry,) = _of(RetryScheduled, lb.handle(fail(at, "r1", attempt, 503)))
        assert isinstance(retry, RetryScheduled)
        dues.append(retry.due - at)
        at = max(retry.due, at + 1)
        lb.handle(tick(at))
    return dues


def test_the_same_seed_draws_the_same_waits_and_another_seed_others() -> None:
    assert _retry_dues(3) == _retry_dues(3)
    assert _retry_dues(3) != _retry_dues(4)
    for retry, wait in enumerate(_retry_dues(3), start=1):
        assert 0 <= wait <= min(8000, 1000 * 2 ** (retry - 1))


# ------------------------------------------------------------------ retry budget


def test_the_budget_limit_is_a_share_of_the_requests_in_flight() -> None:
    lb = Balancer(config("failover", "abc", retry_budget_percent=50, retry_budget_min=1))
    for n in range(4):
        lb.handle(start(n, f"r{n}"))
    # Four live requests: 50% allows two retries in flight, a third is refused.
    lb.handle(fail(10, "r0", 1, 503))
    lb.handle(fail(11, "r1", 1, 503))
    assert lb.stats().retry_budget_used == 2
    (ended,) = _of(RequestFailed, lb.handle(fail(12, "r2", 1, 503)))
    assert isinstance(ended.error, RetryBudgetExhausted)
    assert [f.backend for f in ended.error.failures] == ["a"]
    assert lb.stats().backend_metrics["a"].failures == 1  # the refused visit's failure counts
    # A request that already retried needs no second unit to fail over.
    assert _of(FailOver, lb.handle(fail(13, "r0", 2, 503)))
    # Units come back as requests end.
    for event in served(20, "r0", 3):
        lb.handle(event)
    assert lb.stats().retry_budget_used == 1


def test_a_failover_needs_a_unit_too() -> None:
    lb = Balancer(config("failover", "ab", retry_budget_percent=0, retry_budget_min=0))
    lb.handle(start(0, "r1"))
    (ended,) = _of(RequestFailed, lb.handle(fail(1, "r1", 1, 401)))  # 401 moves on at once
    assert isinstance(ended.error, RetryBudgetExhausted)
    assert not _of(FailOver, [ended])


def test_moving_on_after_a_setup_failure_is_not_a_retry() -> None:
    lb = Balancer(config("failover", "ab", retry_budget_percent=0, retry_budget_min=0))
    lb.handle(start(0, "r1"))
    setup = Failure(kind=FailureKind.SETUP, message="no credential for a")
    actions = lb.handle(AttemptFailed(at=1, request_id="r1", attempt=1, failure=setup))
    assert [a.backend for a in _of(StartAttempt, actions)] == ["b"]
    assert lb.stats().retry_budget_used == 0


@pytest.mark.parametrize("percent", [None, 100])
def test_off_or_generous_the_budget_changes_nothing(percent: int | None) -> None:
    lb = Balancer(config("failover", "ab", retry_budget_percent=percent))
    lb.handle(start(0, "r1"))
    actions = lb.handle(fail(1, "r1", 1, 503))
    assert [a.backend for a in _of(StartAttempt, actions)] == ["a"]
    assert lb.stats().retry_budget_used == (0 if percent is None else 1)
