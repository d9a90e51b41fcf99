"""One breaker stepped through its states, with time passed in."""

from __future__ import annotations

from lbcore import BreakerState, Failure, FailureKind, Settings
from lbcore._breaker import Breaker

FAILURE = Failure(kind=FailureKind.HTTP, status=503, message="down")


def settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "circuit_breaker_enabled": True,
        "circuit_breaker_failure_threshold": 2,
        "circuit_breaker_failure_window_ms": 100,
        "circuit_breaker_recovery_timeout_ms": 50,
    }
    return Settings.from_mapping({**base, **overrides})


def test_opens_at_the_threshold_within_the_window() -> None:
    breaker, rules = Breaker(), settings()
    assert breaker.record_failure(0, FAILURE, rules, "r1", failed_at=0) is False
    assert breaker.state is BreakerState.CLOSED
    assert breaker.record_failure(99, FAILURE, rules, "r2", failed_at=99) is True
    assert (breaker.state, breaker.opened_at) == (BreakerState.OPEN, 99)


def test_failures_outside_the_window_are_pruned() -> None:
    breaker, rules = Breaker(), settings()
    breaker.record_failure(0, FAILURE, rules, "r1", failed_at=0)
    assert (
        breaker.record_failure(100, FAILURE, rules, "r2", failed_at=100) is False
    )  # 100 - 0 is not < 100
    assert len(breaker.failures) == 1


def test_open_until_recovery_then_one_probe() -> None:
    breaker, rules = Breaker(), settings(circuit_breaker_failure_threshold=1)
    breaker.record_failure(10, FAILURE, rules, "r1", failed_at=10)
    assert breaker.take(59, rules, "r2") == (False, False)
    assert breaker.can_attempt(60, rules) is True
    assert breaker.take(60, rules, "r2") == (True, True)
    assert breaker.holds_probe("r2")
    assert breaker.take(61, rules, "r3") == (False, False)
    assert breaker.can_attempt(61, rules) is False


def test_recovery_timeout_zero_gives_exactly_one_probe() -> None:
    rules = settings(circuit_breaker_failure_threshold=1, circuit_breaker_recovery_timeout_ms=0)
    breaker = Breaker()
    breaker.record_failure(0, FAILURE, rules, "r1", failed_at=0)
    assert breaker.take(0, rules, "r2")[0] is True
    assert breaker.take(0, rules, "r3")[0] is False


def test_successful_probe_closes_and_clears_failures() -> None:
    breaker, rules = Breaker(), settings(circuit_breaker_failure_threshold=1)
    breaker.record_failure(0, FAILURE, rules, "r1", failed_at=0)
    breaker.take(50, rules, "r2")
    assert breaker.record_success() is True
    assert (breaker.state, breaker.failures, breaker.probe_holder) == (
        BreakerState.CLOSED,
        [],
        None,
    )


def test_success_while_closed_keeps_old_failures() -> None:
    breaker, rules = Breaker(), settings()
    breaker.record_failure(0, FAILURE, rules, "r1", failed_at=0)
    assert breaker.record_success() is False
    assert len(breaker.failures) == 1


def test_failed_probe_reopens_even_below_the_threshold() -> None:
    # Threshold 3, window 100: by the time the probe fails, older failures were
    # pruned. The reference would stay half-open with the probe spent, forever.
    rules = settings(circuit_breaker_failure_threshold=3, circuit_breaker_recovery_timeout_ms=500)
    breaker = Breaker()
    for at in (0, 1, 2):
        breaker.record_failure(at, FAILURE, rules, f"r{at}", failed_at=at)
    breaker.take(600, rules, "probe")
    assert breaker.record_failure(601, FAILURE, rules, "probe", failed_at=601) is True
    assert (breaker.state, breaker.opened_at) == (BreakerState.OPEN, 601)


def test_a_probe_is_handed_back_only_by_its_holder() -> None:
    rules = settings(circuit_breaker_failure_threshold=1, circuit_breaker_recovery_timeout_ms=0)
    breaker = Breaker()
    breaker.record_failure(0, FAILURE, rules, "r0", failed_at=0)
    breaker.take(1, rules, "A")  # A probes the first half-open period
    breaker.record_failure(2, FAILURE, rules, "C", failed_at=2)  # someone else's failure re-opens
    breaker.take(3, rules, "B")  # B probes the second half-open period
    breaker.hand_back_probe("A")  # A's late cancellation must not free B's probe
    assert breaker.holds_probe("B")
    assert breaker.take(4, rules, "D") == (False, False)
    breaker.hand_back_probe("B")
    assert breaker.take(5, rules, "D") == (True, False)


def test_a_failure_older_than_the_opening_does_not_push_recovery_back() -> None:
    # r1 failed at 5 and waited to retry; meanwhile r2's failure tripped the
    # breaker at 10. When r1 gives up at 40 its failure counts, but the breaker
    # keeps its recovery time.
    breaker, rules = Breaker(), settings(circuit_breaker_failure_threshold=1)
    breaker.record_failure(10, FAILURE, rules, "r2", failed_at=10)
    assert breaker.record_failure(40, FAILURE, rules, "r1", failed_at=5) is False
    assert (breaker.state, breaker.opened_at, len(breaker.failures)) == (BreakerState.OPEN, 10, 2)
