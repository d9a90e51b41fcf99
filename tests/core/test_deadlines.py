"""Total and idle deadlines in the core (spec/behaviour.md §22), stepped one event at a time."""

from __future__ import annotations

from lbcore import (
    BackendFailed,
    Balancer,
    BreakerState,
    CancelAttempt,
    CancelReason,
    DeadlineExceeded,
    FailOver,
    FailoverReason,
    RequestFailed,
    RetryScheduled,
    StartAttempt,
    tell,
)

from .scenarios import chunk, config, fail, ok, start, tick


def _of(kind: type, actions: list[object]) -> list[object]:
    return [a for a in actions if isinstance(a, kind)]


def _error(actions: list[object]) -> object:
    (ended,) = _of(RequestFailed, actions)
    assert isinstance(ended, RequestFailed)
    return ended.error


def test_the_total_deadline_is_armed_at_the_start_and_fires_on_the_tick() -> None:
    lb = Balancer(config("failover", "ab", deadline_ms=250))
    lb.handle(start(0, "r1"))
    assert lb.next_deadline() == 250
    assert lb.handle(tick(249)) == []
    actions = lb.handle(tick(250))
    assert _of(CancelAttempt, actions) == [
        CancelAttempt(request_id="r1", attempt=1, backend="a", reason=CancelReason.DEADLINE)
    ]
    error = _error(actions)
    assert isinstance(error, DeadlineExceeded)
    assert error.deadline_ms == 250 and error.retryable and error.failures == ()
    assert lb.next_deadline() is None and lb.stats().in_flight == 0
    # The caller's time ran out: nothing is charged to the backend.
    assert lb.stats().backend_metrics["a"].failures == 0


def test_mid_stream_the_deadline_reports_the_chunks_delivered() -> None:
    lb = Balancer(config("round-robin", "a", deadline_ms=100))
    lb.handle(start(0, "r1"))
    lb.handle(chunk(10, "r1", 1))
    lb.handle(chunk(20, "r1", 1))
    error = _error(lb.handle(tick(100)))
    assert isinstance(error, DeadlineExceeded) and error.chunks_delivered == 2


def test_a_fixed_retry_delay_past_the_deadline_fails_over_instead_of_waiting() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_delay_ms=1000, deadline_ms=800))
    lb.handle(start(0, "r1"))
    actions = lb.handle(fail(10, "r1", 1, 503))
    (move,) = _of(FailOver, actions)
    assert move.reason is FailoverReason.PAST_DEADLINE
    assert [a.backend for a in _of(StartAttempt, actions)] == ["b"]


def test_a_queued_request_leaves_the_queue_on_its_deadline() -> None:
    lb = Balancer(config("failover", "ab", max_concurrent=1, deadline_ms=300))
    lb.handle(start(0, "r1"))
    lb.handle(start(1, "r2"))
    lb.handle(start(250, "r3"))  # a and b are full: r3 waits, until 550 at most
    actions = lb.handle(tick(301))  # r1 and r2 expire; r3 takes a's slot
    assert len(_of(RequestFailed, actions)) == 2
    assert [a.backend for a in _of(StartAttempt, actions)] == ["a"]
    # Expired in the queue: it leaves it, and the slots freed on the same tick go to nobody.
    lb = Balancer(config("failover", "ab", max_concurrent=1, deadline_ms=300))
    lb.handle(start(0, "r1"))
    lb.handle(start(1, "r2"))
    lb.handle(start(2, "r3"))
    actions = lb.handle(tick(302))
    errors = [a.error for a in _of(RequestFailed, actions)]
    assert len(errors) == 3 and all(isinstance(e, DeadlineExceeded) for e in errors)
    assert not _of(StartAttempt, actions)
    assert lb.stats().in_flight == 0


def test_a_deadline_hands_back_the_probe_of_a_waiting_retry() -> None:
    lb = Balancer(
        config(
            "failover",
            "ab",
            circuit_breaker_enabled=True,
            circuit_breaker_failure_threshold=1,
            circuit_breaker_recovery_timeout_ms=10,
            failover_retry_delay_ms=50,
            deadline_ms=60,
        )
    )
    lb.handle(start(0, "r0", attempt_budget=1))
    lb.handle(fail(1, "r0", 1, 503))  # a opens
    actions = lb.handle(start(20, "r1"))  # the probe of a, half-open
    assert _of(StartAttempt, actions)[0].probe
    (retry,) = _of(RetryScheduled, lb.handle(fail(21, "r1", 1, 503)))
    assert retry.due == 71  # before the deadline at 80: r1 waits, holding the probe
    # A late tick reaches both: the deadline acts first and hands the probe back.
    assert isinstance(_error(lb.handle(tick(80))), DeadlineExceeded)
    assert lb.stats().circuit_breaker_states["a"].state is BreakerState.HALF_OPEN
    actions = lb.handle(start(81, "r2"))
    assert [a.probe for a in _of(StartAttempt, actions)] == [True]


def test_the_idle_deadline_starts_at_the_first_chunk_and_moves_with_each() -> None:
    lb = Balancer(config("failover", "ab", idle_timeout_ms=100))
    lb.handle(start(0, "r1"))
    assert lb.next_deadline() is None  # waiting for the first chunk is timeout_ms's business
    lb.handle(chunk(500, "r1", 1))
    assert lb.next_deadline() == 600
    lb.handle(chunk(590, "r1", 1))
    assert lb.next_deadline() == 690
    assert lb.handle(tick(600)) == []
    actions = lb.handle(tick(690))
    assert _of(CancelAttempt, actions)[0].reason is CancelReason.IDLE_TIMEOUT
    error = _error(actions)
    assert isinstance(error, BackendFailed)
    assert error.failure.code == "idle_timeout" and error.chunks_delivered == 2
    metrics = lb.stats().backend_metrics["a"]
    assert (metrics.failures, metrics.timeouts) == (1, 1)


def test_a_stream_that_keeps_flowing_is_never_cut() -> None:
    lb = Balancer(config("round-robin", "a", idle_timeout_ms=100))
    lb.handle(start(0, "r1"))
    for at in range(10, 1000, 90):
        lb.handle(chunk(at, "r1", 1))
        assert lb.handle(tick(at + 89)) == []
    assert _of(type(None), []) == []
    assert lb.handle(ok(1000, "r1", 1))[-1].__class__.__name__ == "RequestCompleted"


def test_the_story_says_which_deadline_cut_the_attempt() -> None:
    for settings, events, words in (
        ({"deadline_ms": 50}, [start(0, "r1"), tick(50)], "total deadline passed"),
        (
            {"idle_timeout_ms": 50},
            [start(0, "r1"), chunk(1, "r1", 1), tick(51)],
            "quiet for too long",
        ),
    ):
        lb = Balancer(config("failover", "ab", **settings), record=True)
        for event in events:
            lb.handle(event)
        assert words in tell(lb.trace_header(), lb.take_steps(), "r1")
