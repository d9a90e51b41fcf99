"""The balancer stepped one event at a time, with the state checked after each step."""

from __future__ import annotations

import msgspec
import pytest

from lbcore import (
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    BackendSpec,
    Balancer,
    BalancerConfig,
    ChunkReceived,
    Event,
    FailoverExhausted,
    InvalidEvent,
    RequestCancelled,
    RequestCompleted,
    RequestFailed,
    RequestStarted,
    StartAttempt,
    Tick,
    UnsupportedServerTool,
)

from .scenarios import MINUTE, cancel, chunk, config, fail, ok, served, start, tick


def feed(balancer: Balancer, events: list[Event]) -> None:
    for event in events:
        balancer.handle(event)


def fingerprint(balancer: Balancer) -> bytes:
    """Everything observable about a balancer, to prove a refused event changed nothing."""
    return msgspec.json.encode(
        [
            balancer.stats(),
            balancer.next_deadline(),
            repr(balancer),
            balancer.current_failover_index(),
            balancer.now,
            balancer.current_model(),
        ]
    )


# ------------------------------------------------------------------ stepping


def test_failover_steps_one_event_at_a_time() -> None:
    lb = Balancer(config("failover", "ab"))
    actions = lb.handle(start(0, "r1"))
    assert [type(a).__name__ for a in actions] == ["SelectionChanged", "StartAttempt"]
    assert lb.stats().in_flight == 1
    assert lb.current_model() == "model-a"

    actions = lb.handle(fail(5, "r1", 1, 503))
    assert actions == [
        StartAttempt(
            request_id="r1",
            attempt=2,
            backend="a",
            model="model-a",
            first_chunk_deadline=None,
            probe=False,
        )
    ]
    assert lb.stats().backend_metrics["a"].requests == 2
    assert lb.stats().backend_metrics["a"].failures == 0  # a retried attempt records nothing

    actions = lb.handle(fail(6, "r1", 2, 503))
    assert [type(a).__name__ for a in actions] == ["FailOver", "SelectionChanged", "StartAttempt"]
    assert lb.current_failover_index() == 1
    assert lb.current_model() == "model-b"

    assert lb.handle(chunk(7, "r1", 3)) == []
    actions = lb.handle(ok(9, "r1", 3, 3, 4))
    assert actions == [
        RequestCompleted(request_id="r1", backend="b", attempt=3, input_tokens=3, output_tokens=4)
    ]
    stats = lb.stats()
    assert stats.in_flight == 0
    assert stats.total_requests == 1
    assert stats.profile_counts == {"b": 1}
    assert stats.last_selected == "b"
    assert stats.last_selected_model == "model-b"


def test_round_robin_counts_dispatches_and_failover_counts_successes() -> None:
    rr = Balancer(config("round-robin", "ab"))
    feed(rr, [start(0, "r1"), fail(1, "r1", 1, 503)])
    assert rr.stats().total_requests == 1
    fo = Balancer(config("failover", "ab", failover_retry_count=1))
    feed(fo, [start(0, "r1"), fail(1, "r1", 1, 503), fail(2, "r1", 2, 503)])
    assert fo.stats().total_requests == 0


# ------------------------------------------------------------------- metrics


def test_metrics_of_a_fail_then_failover() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_count=1))
    feed(lb, [start(0, "r1"), fail(50, "r1", 1, 500), *served(60, "r1", 2, 100, 100)])
    metrics = lb.stats().backend_metrics
    assert (metrics["a"].requests, metrics["a"].failures, metrics["a"].successes) == (1, 1, 0)
    assert (metrics["b"].requests, metrics["b"].successes, metrics["b"].tokens) == (1, 1, 200)


def test_average_latency_ignores_retried_attempts() -> None:
    lb = Balancer(config("failover", "ab"))
    feed(lb, [start(0, "r1"), fail(10, "r1", 1, 503), ok(60, "r1", 2)])
    feed(lb, [start(100, "r2"), ok(200, "r2", 1)])
    metrics = lb.stats().backend_metrics["a"]
    # Latencies 50 (from the retry's start) and 100: the average is 75, not 150 / 3.
    assert metrics.requests == 3
    assert metrics.total_latency_ms == 150
    assert metrics.avg_latency_ms == 75.0


def test_first_chunk_timeout_counts_as_timeout_and_failure() -> None:
    lb = Balancer(config("failover", "ab", timeout_ms=100, failover_retry_count=1))
    feed(lb, [start(0, "r1")])
    assert lb.next_deadline() == 100
    actions = lb.handle(Tick(at=100))
    assert [type(a).__name__ for a in actions] == [
        "CancelAttempt",
        "FailOver",
        "SelectionChanged",
        "StartAttempt",
    ]
    metrics = lb.stats().backend_metrics["a"]
    assert (metrics.timeouts, metrics.failures) == (1, 1)
    assert lb.next_deadline() == 200


def test_setup_failure_is_not_counted_as_an_attempt() -> None:
    lb = Balancer(config("failover", "ab"))
    feed(lb, [start(0, "r1", attempt_budget=2)])
    feed(lb, [fail(0, "r1", 1, kind="setup", message="no key"), ok(3, "r1", 2)])
    # Nothing was sent to a: no metrics entry, and the budget still allowed b's attempt.
    assert "a" not in lb.stats().backend_metrics
    assert lb.stats().backend_metrics["b"].successes == 1


def test_setup_failure_budget_is_refunded() -> None:
    lb = Balancer(config("failover", "ab"))
    feed(lb, [start(0, "r1", attempt_budget=1)])
    (*_, started) = lb.handle(fail(0, "r1", 1, kind="setup", message="no key"))
    assert isinstance(started, StartAttempt)
    assert started.backend == "b"


def test_round_robin_setup_failure_is_not_a_dispatch() -> None:
    lb = Balancer(config("round-robin", "ab"))
    feed(lb, [start(0, "r1")])
    (terminal,) = lb.handle(fail(0, "r1", 1, kind="setup", message="no key"))
    assert isinstance(terminal, RequestFailed)
    stats = lb.stats()
    assert (stats.total_requests, stats.profile_counts, stats.backend_metrics) == (0, {}, {})
    feed(lb, [start(1, "r2")])
    assert lb.stats().profile_counts == {"b": 1}


# ----------------------------------------------------------------------- TPM


def test_tpm_decays_with_elapsed_minutes() -> None:
    lb = Balancer(config("failover", "ab"))
    feed(lb, [start(0, "r1"), ok(1, "r1", 1, 400, 600)])
    assert lb.stats().current_tpm["a"] == 1000
    lb.handle(Tick(at=4 * MINUTE))
    assert lb.stats().current_tpm["a"] == 200
    lb.handle(Tick(at=6 * MINUTE))
    assert lb.stats().current_tpm == {"a": 0.0, "b": 0.0}


def test_tpm_divides_by_minutes_since_the_oldest_bucket() -> None:
    lb = Balancer(config("failover", "ab"))
    feed(lb, [start(0, "r1"), ok(1, "r1", 1, 1000, 0)])
    feed(lb, [start(2 * MINUTE, "r2"), ok(2 * MINUTE + 1, "r2", 1, 1000, 0)])
    assert lb.stats().current_tpm["a"] == pytest.approx(2000 / 3)


def test_tpm_sums_requests_within_a_minute() -> None:
    lb = Balancer(config("failover", "ab"))
    for n in range(3):
        feed(lb, [start(n * 10, f"r{n}"), ok(n * 10 + 1, f"r{n}", 1, 100, 100)])
    assert lb.stats().current_tpm["a"] == 600


# --------------------------------------------------------------------- stats


def test_reset_stats_clears_counts_but_nothing_else() -> None:
    lb = Balancer(config("round-robin"))
    feed(lb, [start(0, "r1"), ok(1, "r1", 1, 5, 5), start(2, "r2"), ok(3, "r2", 1)])
    lb.reset_stats()
    stats = lb.stats()
    assert (stats.total_requests, stats.profile_counts, stats.last_selected) == (0, {}, None)
    assert stats.last_selected_model is None
    assert stats.backend_metrics["a"].successes == 1
    assert stats.current_tpm["a"] == 10
    feed(lb, [start(4, "r3")])
    assert lb.stats().profile_counts == {"c": 1}


def test_stats_snapshot_is_a_copy() -> None:
    lb = Balancer(config("round-robin"))
    feed(lb, [start(0, "r1"), ok(1, "r1", 1)])
    snapshot = lb.stats()
    snapshot.profile_counts["a"] = 99
    assert lb.stats().profile_counts == {"a": 1}


def test_stats_before_any_request() -> None:
    stats = Balancer(config("failover")).stats()
    assert stats.members == ("a", "b", "c")
    assert stats.backend_metrics == {}
    assert stats.circuit_breaker_states == {}
    assert stats.current_tpm == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert stats.last_selected is None


# ------------------------------------------------------------- introspection


def test_model_introspection() -> None:
    lb = Balancer(config("round-robin", "ab", windows={"a": 8000, "b": 4000}))
    assert lb.default_model() == "model-a"
    assert lb.current_model() == "model-a"
    assert lb.context_limit() == 4000
    (model,) = lb.models()
    assert (model.id, model.provider, model.context_window) == ("lb", "load-balancer", 4000)
    assert lb.server_tools() == ()
    with pytest.raises(UnsupportedServerTool, match="Server tool 'search' not supported"):
        lb.invoke_server_tool("search")
    feed(lb, [start(0, "r1"), start(1, "r2")])
    assert lb.current_model() == "model-b"


def test_current_model_is_empty_when_no_model_is_configured() -> None:
    lb = Balancer(
        BalancerConfig(strategy="round-robin", backends=(BackendSpec(name="x", provider="openai"),))
    )
    assert lb.current_model() == ""
    feed(lb, [start(0, "r1")])
    assert lb.stats().last_selected_model is None


def test_explicit_context_limit_wins_over_windows() -> None:
    lb = Balancer(config("failover", "ab", windows={"a": 8000}, context_limit=2000))
    assert lb.context_limit() == 2000


def test_stats_count_attempts_under_way_per_backend() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_delay_ms=50))
    assert lb.stats().backend_in_flight == {"a": 0, "b": 0}
    feed(lb, [start(0, "r1"), start(1, "r2"), chunk(2, "r2", 1)])
    assert lb.stats().backend_in_flight == {"a": 2, "b": 0}  # connecting and streaming
    lb.handle(AttemptHeld(at=3, request_id="r1", attempt=1))
    assert lb.stats().backend_in_flight == {"a": 1, "b": 0}  # held locally: not at a
    lb.handle(AttemptSent(at=4, request_id="r1", attempt=1))
    lb.handle(fail(5, "r1", 1, 503))
    assert lb.stats().backend_in_flight == {"a": 1, "b": 0}  # r1 waits to retry
    lb.handle(tick(55))
    lb.handle(fail(56, "r1", 2, 503))
    assert lb.stats().backend_in_flight == {"a": 1, "b": 1}  # r1 failed over to b
    feed(lb, [ok(57, "r2", 1), cancel(58, "r1")])
    assert lb.stats().backend_in_flight == {"a": 0, "b": 0}


# ------------------------------------------------------------------- misuse

MISUSE: list[tuple[str, Event, str]] = [
    ("unknown request", chunk(10, "nope", 1), "is unknown"),
    ("finished request", ok(10, "done", 1), "has already finished"),
    ("duplicate id", start(10, "live"), "duplicate request id"),
    ("duplicate finished id", start(10, "done"), "duplicate request id"),
    ("stale attempt", chunk(10, "live", 7), "stale attempt 7"),
    ("time backwards", Tick(at=1), "time went backwards"),
    ("negative time", Tick(at=-1), "non-negative"),
    (
        "context limit reported",
        fail(10, "live", 1, kind="context_limit", message="too big"),
        "decided by the core",
    ),
    ("bad tokens", AttemptSucceeded(at=10, request_id="live", attempt=1, input_tokens=-1), "token"),
    (
        "huge tokens",
        AttemptSucceeded(at=10, request_id="live", attempt=1, input_tokens=10**400),
        r"at most 2\*\*53 - 1",
    ),
    (
        "tokens past 2**53 - 1",
        AttemptSucceeded(at=10, request_id="live", attempt=1, output_tokens=2**53),
        r"token counts must be non-negative integers of at most 2\*\*53 - 1",
    ),
    (
        "huge prompt",
        RequestStarted(at=10, request_id="x", prompt_tokens=2**53),
        r"prompt_tokens must be a non-negative integer of at most 2\*\*53 - 1",
    ),
    (
        "huge budget",
        RequestStarted(at=10, request_id="x", attempt_budget=10**400),
        "attempt_budget must be a non-negative integer of at most",
    ),
    ("bad budget", RequestStarted(at=10, request_id="x", attempt_budget=-2), "attempt_budget"),
    ("empty id", RequestStarted(at=10, request_id=""), "non-empty"),
    ("bool attempt", ChunkReceived(at=10, request_id="live", attempt=True), "wrong type: bool"),
    ("str attempt", chunk(10, "live", "1"), r"attempt has the wrong type: str '1'"),  # type: ignore[arg-type]
    ("float attempt", ok(10, "live", 1.0), r"attempt has the wrong type: float 1\.0"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("label", "event", "message"), MISUSE, ids=[m[0] for m in MISUSE])
def test_misuse_raises_and_changes_nothing(label: str, event: Event, message: str) -> None:
    lb = Balancer(config("failover", "ab", timeout_ms=100), record=True)
    twin = Balancer(config("failover", "ab", timeout_ms=100))
    setup = [start(0, "done"), ok(2, "done", 1), start(5, "live")]
    feed(lb, setup)
    feed(twin, setup)
    before = fingerprint(lb)
    with pytest.raises(InvalidEvent, match=message):
        lb.handle(event)
    assert fingerprint(lb) == before
    assert len(lb.take_steps()) == len(setup)  # the refused event left no step behind
    follow_up = fail(20, "live", 1, 503)
    assert lb.handle(follow_up) == twin.handle(follow_up)


def test_token_counts_up_to_2_53_minus_1_are_taken_and_stats_stay_readable() -> None:
    lb = Balancer(config("failover", "ab"))
    most = 2**53 - 1
    feed(
        lb,
        [
            start(0, "r1", prompt_tokens=most),
            AttemptSucceeded(at=1, request_id="r1", attempt=1, input_tokens=most, output_tokens=1),
        ],
    )
    stats = lb.stats()
    assert stats.backend_metrics["a"].tokens == most + 1
    assert msgspec.json.decode(msgspec.json.encode(stats))["total_requests"] == 1


def test_an_event_for_a_request_waiting_to_retry_is_refused() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_delay_ms=50))
    feed(lb, [start(0, "r1"), fail(1, "r1", 1, 503)])
    with pytest.raises(InvalidEvent, match="phase waiting"):
        lb.handle(chunk(2, "r1", 1))


def test_cancel_leaves_the_sticky_index_and_records_nothing() -> None:
    lb = Balancer(config("failover", "ab"))
    feed(lb, [start(0, "r1"), fail(1, "r1", 1, 400), start(2, "r2")])
    index = lb.current_failover_index()
    actions = lb.handle(RequestCancelled(at=4, request_id="r2"))
    assert [type(a).__name__ for a in actions] == ["CancelAttempt", "RequestAborted"]
    assert lb.current_failover_index() == index
    assert lb.stats().backend_metrics["b"].failures == 0


def test_next_deadline_is_the_soonest_timer() -> None:
    lb = Balancer(config("failover", "ab", timeout_ms=100, failover_retry_delay_ms=30))
    assert lb.next_deadline() is None
    feed(lb, [start(0, "r1"), start(10, "r2")])
    assert lb.next_deadline() == 100
    feed(lb, [fail(20, "r2", 1, 503)])
    assert lb.next_deadline() == 50
    assert [type(a).__name__ for a in lb.handle(tick(50))] == ["StartAttempt"]
    assert lb.next_deadline() == 100


def test_aggregate_for_all_429_reports_rate_limit() -> None:
    lb = Balancer(config("failover", "ab", failover_retry_count=1))
    feed(lb, [start(0, "r1"), fail(1, "r1", 1, 429)])
    (terminal,) = lb.handle(fail(2, "r1", 2, 429))
    assert isinstance(terminal, RequestFailed)
    error = terminal.error
    assert isinstance(error, FailoverExhausted)
    assert (error.status, error.category, error.retryable) == (429, "rate_limit", True)
    assert [f.backend for f in error.failures] == ["a", "b"]


def test_attempt_failed_requires_a_failure_struct() -> None:
    lb = Balancer(config("failover", "ab"))
    feed(lb, [start(0, "r1")])
    bad = AttemptFailed(at=1, request_id="r1", attempt=1, failure="boom")  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match="must be a Failure"):
        lb.handle(bad)
