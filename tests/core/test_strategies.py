"""weighted-round-robin, least-busy and latency, stepped one event at a time (spec §23-§25).

The tables feed one event per row and compare every action it returns, in
words (``describe_action``), so a row says exactly what that event decided.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbcore import (
    Action,
    AllBackendsUnhealthy,
    AttemptSent,
    BackendSpec,
    Balancer,
    BalancerConfig,
    ConfigError,
    Event,
    FailureKind,
    RequestFailed,
    Settings,
    StartAttempt,
    encode_line,
)
from lbcore._explain import describe_action
from lbcore._strategies import FAILED_SAMPLE_MS, FastestFirst, SmoothWeighted

from .scenarios import chunk, config, fail, ok, start, tick
from .scenarios_strategies import weighted

Row = tuple[Event, list[str]]


def step_through(lb: Balancer, rows: list[Row]) -> None:
    for number, (event, expected) in enumerate(rows, start=1):
        said = [describe_action(action) for action in lb.handle(event)]
        assert said == expected, f"row {number}: {event!r}"


def first_backends(lb: Balancer, count: int) -> str:
    """Start ``count`` requests one after another, each served at once; their backends."""
    picked = ""
    for n in range(count):
        at = lb.now + 1
        actions = lb.handle(start(at, f"q{n}-{at}"))
        attempt = next(a for a in actions if isinstance(a, StartAttempt))
        picked += attempt.backend
        lb.handle(ok(at, attempt.request_id, attempt.attempt))
    return picked


# ------------------------------------------------------- weighted round-robin


def nginx_order(weights: list[int], picks: int) -> list[int]:
    """nginx's smooth weighted round-robin, written out plainly as the oracle."""
    current = [0] * len(weights)
    total = sum(weights)
    order = []
    for _ in range(picks):
        best = -1
        for index, weight in enumerate(weights):
            if weight == 0:
                continue
            current[index] += weight
            if best < 0 or current[index] > current[best]:
                best = index
        current[best] -= total
        order.append(best)
    return order


def test_weights_five_one_one_give_nginx_order() -> None:
    lb = Balancer(weighted("abc", {"a": 5}))
    assert first_backends(lb, 14) == "aabacaa" * 2


@given(
    weights=st.lists(st.integers(0, 6), min_size=1, max_size=7).filter(any),
    picks=st.integers(1, 80),
)
def test_the_pick_is_exactly_nginx_smooth_weighted_round_robin(
    weights: list[int], picks: int
) -> None:
    pick = SmoothWeighted(tuple(weights))
    assert [pick.pick() for _ in range(picks)] == nginx_order(weights, picks)


def test_the_counters_restart_after_each_period() -> None:
    pick = SmoothWeighted((3, 2, 2, 0, 1))
    for _ in range(8 * 1000):
        pick.pick()
    assert pick._step == 0 and pick._picks == [0, 0, 0]


WRR_FAILOVER: list[Row] = [
    (start(0, "r1"), ["selected a", "start #1 on a"]),
    # b weighs 0: the rotation goes from a straight to c, with no skip for b.
    (
        fail(1, "r1", 1, 503),
        ["fail over a -> c (retries_exhausted: http 503)", "selected c", "start #2 on c"],
    ),
    (ok(2, "r1", 2), ["COMPLETED on c"]),
    (start(3, "r2"), ["start #1 on c"]),
    (ok(4, "r2", 1), ["COMPLETED on c"]),
    (start(5, "r3"), ["selected a", "start #1 on a"]),
]


def test_a_drained_backend_is_never_visited() -> None:
    step_through(Balancer(weighted("abc", {"b": 0}, failover_retry_count=1)), WRR_FAILOVER)


def test_the_all_unhealthy_check_looks_only_at_backends_in_the_rotation() -> None:
    settings = {"circuit_breaker_enabled": True, "circuit_breaker_failure_threshold": 1}
    lb = Balancer(weighted("abc", {"b": 0}, failover_retry_count=1, **settings))
    lb.handle(start(0, "r1"))
    lb.handle(fail(1, "r1", 1, 503))
    lb.handle(fail(2, "r1", 2, 503))
    actions = lb.handle(start(3, "r2"))
    assert [type(a) for a in actions] == [RequestFailed]
    assert isinstance(actions[0].error, AllBackendsUnhealthy)  # type: ignore[union-attr]


def test_stats_reset_and_failures_do_not_move_the_schedule() -> None:
    lb = Balancer(weighted("ab", {"a": 2}, failover_retry_count=1))
    assert first_backends(lb, 2) == "ab"
    lb.reset_stats()
    lb.handle(start(lb.now + 1, "x"))
    lb.handle(fail(lb.now, "x", 1, 400))  # a's turn, failed over to b
    lb.handle(ok(lb.now, "x", 2))
    assert first_backends(lb, 3) == "aba"
    assert lb.current_failover_index() == 0


# ----------------------------------------------------------------- least busy

LEAST_BUSY: list[Row] = [
    (start(0, "r1"), ["selected a", "start #1 on a"]),
    (start(1, "r2"), ["selected b", "start #1 on b"]),
    # a and b hold one slot each; c none.
    (start(2, "r3"), ["selected c", "start #1 on c"]),
    (ok(3, "r2", 1), ["COMPLETED on b"]),
    (start(4, "r4"), ["selected b", "start #1 on b"]),
    # Every backend holds one: the tie goes to the first.
    (start(5, "r5"), ["selected a", "start #1 on a"]),
    # r1 fails over from a to b (the rotation goes on in configured order).
    (
        fail(6, "r1", 1, 401),
        ["fail over a -> b (immediate: http 401)", "selected b", "start #2 on b"],
    ),
    # a holds r5's slot, b holds r4 and r1, c holds r3: a and c tie, a is first.
    (start(7, "r6"), ["selected a", "start #1 on a"]),
    (start(8, "r7"), ["selected c", "start #1 on c"]),
]


def test_least_busy_table() -> None:
    step_through(Balancer(config("least-busy")), LEAST_BUSY)


def test_least_busy_respects_capacity_and_queues_like_failover() -> None:
    lb = Balancer(config("least-busy", "ab", max_concurrent=1))
    step_through(
        lb,
        [
            (start(0, "r1"), ["selected a", "start #1 on a"]),
            (start(1, "r2"), ["selected b", "start #1 on b"]),
            (
                start(2, "r3"),
                [
                    "skip a (at_capacity: all 1 slots are taken)",
                    "skip b (at_capacity: all 1 slots are taken)",
                    "queued for a, b (1 waiting)",
                ],
            ),
            (
                ok(3, "r2", 1),
                ["COMPLETED on b", "dequeued to b after 1 ms", "start #1 on b"],
            ),
        ],
    )


# -------------------------------------------------------------------- latency

LATENCY: list[Row] = [
    (start(0, "r1"), ["selected a", "start #1 on a"]),
    (chunk(80, "r1", 1), []),
    (ok(81, "r1", 1), ["COMPLETED on a"]),
    # b has no sample yet: an estimate of 0 sends r2 there.
    (start(100, "r2"), ["selected b", "start #1 on b"]),
    (AttemptSent(at=150, request_id="r2", attempt=1), []),
    (chunk(170, "r2", 1), []),  # 20 ms from the send
    (ok(171, "r2", 1), ["COMPLETED on b"]),
    (start(200, "r3"), ["start #1 on b"]),
    # A success with no chunk is a sample too: b answers in 300 ms.
    (ok(500, "r3", 1), ["COMPLETED on b"]),
    # b: 20 + (300 - 20) / 8 = 55 ms, a: 80 ms.
    (start(600, "r4"), ["start #1 on b"]),
    (
        fail(601, "r4", 1, 400),
        ["fail over b -> a (not_retryable: http 400)", "selected a", "start #2 on a"],
    ),
    (ok(700, "r4", 2), ["COMPLETED on a"]),
    # b's failure counted as 10 s: 55 + (10000 - 55) / 8 = 1298 ms; a: 80 + (99 - 80) / 8.
    (start(800, "r5"), ["start #1 on a"]),
]


def test_latency_table() -> None:
    lb = Balancer(config("latency", "ab", latency_explore_percent=0))
    step_through(lb, LATENCY)
    picker = lb._latency
    assert picker is not None
    assert picker.estimate_ms(0) == 82
    assert picker.estimate_ms(1) == 1298


def test_the_estimate_is_an_eighth_of_the_way_in_fixed_point() -> None:
    picker = FastestFirst(2, 0, 0)
    assert picker.estimate_ms(0) is None
    picker.observe(0, 100)
    assert picker.estimate_ms(0) == 100
    picker.observe(0, 20)
    assert picker.estimates[0] == 100 * 256 - (80 * 256) // 8
    picker.observe(0, 21)  # downwards, the floor shift rounds away from the old value
    assert picker.estimates[0] == 90 * 256 + ((21 * 256 - 90 * 256) >> 3)
    picker.observe_failure(1, 3)
    assert picker.estimate_ms(1) == FAILED_SAMPLE_MS


def test_half_life_is_about_five_samples() -> None:
    # After a jump from 0 to 1000, the estimate passes halfway on the sixth sample.
    picker = FastestFirst(1, 0, 0)
    picker.observe(0, 0)
    crossed = []
    for n in range(1, 9):
        picker.observe(0, 1000)
        crossed.append((n, (picker.estimate_ms(0) or 0) >= 500))
    assert next(n for n, over in crossed if over) == 6


@pytest.mark.parametrize("percent", [1, 5, 20, 50])
def test_the_explore_share_is_close_to_its_setting(percent: int) -> None:
    picker = FastestFirst(4, percent, seed=99)
    for index, ms in enumerate([10, 20, 30, 40]):
        picker.observe(index, ms)
    picks = [picker.pick() for _ in range(20_000)]
    explored = sum(p != 0 for p in picks) / len(picks)
    assert abs(explored - percent / 100) < 0.01
    # Each other backend gets its share of the exploring.
    assert all(abs(picks.count(i) / len(picks) - percent / 300) < 0.01 for i in (1, 2, 3))


def test_no_exploring_draws_nothing() -> None:
    picker = FastestFirst(3, 0, seed=5)
    state = picker._random.state
    assert [picker.pick() for _ in range(10)] == [0] * 10
    assert picker._random.state == state


def test_exploring_does_not_shift_the_backoff_draws() -> None:
    settings = {"retry_backoff": "exponential", "failover_retry_count": 3, "seed": 3}
    draws = []
    for strategy, extra in (("failover", {}), ("latency", {"latency_explore_percent": 50})):
        lb = Balancer(config(strategy, "ab", **settings, **extra))
        for n in range(5):  # five explore decisions before the first retry
            lb.handle(start(n, f"w{n}"))
        actions = lb.handle(fail(10, "w0", 1, 503))
        draws.append([a for a in actions if type(a).__name__ == "RetryScheduled"])
    assert draws[0] == draws[1]


# ------------------------------------------------------------------- config


def backends(**weights: int) -> tuple[BackendSpec, ...]:
    return tuple(BackendSpec(name=n, provider="openai", weight=w) for n, w in weights.items())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: BackendSpec(name="a", provider="p", weight=-1),
            'Backend "a": weight must be an integer >= 0, got -1',
        ),
        (
            lambda: BackendSpec(name="a", provider="p", weight=True),
            'Backend "a": weight must be an integer >= 0, got True',
        ),
        (
            lambda: BalancerConfig(strategy="weighted-round-robin", backends=backends(a=0, b=0)),
            "backends[].weight: weighted-round-robin needs a backend with weight >= 1, "
            "every weight is 0",
        ),
        (
            lambda: BalancerConfig(strategy="failover", backends=backends(a=1, b=3)),
            'Backend "b": weight is read only by "weighted-round-robin", not by "failover"; '
            "leave it at 1",
        ),
        (
            lambda: Settings(latency_explore_percent=51),
            "settings.latency_explore_percent: must be an integer between 0 and 50, got 51",
        ),
        (
            lambda: Settings(latency_explore_percent=2.5),
            "settings.latency_explore_percent: must be an integer between 0 and 50, got 2.5",
        ),
        (
            lambda: Settings.from_mapping({"latency_explore": 3}),
            "settings.latency_explore: unknown routing setting; "
            "did you mean 'latency_explore_percent'?",
        ),
    ],
)
def test_config_rules(build: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build()
    assert str(caught.value) == message


@pytest.mark.parametrize("strategy", ["weighted-round-robin", "least-busy", "latency"])
def test_one_backend_is_enough_and_retries_stay_there(strategy: str) -> None:
    lb = Balancer(BalancerConfig(strategy=strategy, backends=backends(a=1)))
    lb.handle(start(0, "r1"))
    actions = lb.handle(fail(1, "r1", 1, 503))
    assert [describe_action(a) for a in actions] == ["start #2 on a"]


def test_default_weights_leave_every_header_unchanged() -> None:
    spec = msgspec.to_builtins(BackendSpec(name="a", provider="p"))
    assert spec["weight"] == 1
    lb = Balancer(weighted("ab", {}))
    assert b'"weight"' not in encode_line(lb.trace_header())
    assert b'"weight":0' in encode_line(Balancer(weighted("ab", {"a": 0})).trace_header())


def test_a_tick_changes_no_pick() -> None:
    lb = Balancer(weighted("ab", {"a": 2}))
    lb.handle(tick(5))
    assert first_backends(lb, 3) == "aba"


# ------------------------------------------- latency against a plain model

OUTCOMES = st.sampled_from(["chunk", "empty", "503", "400", "setup"])


def model_sample(estimates: dict[int, int], index: int, ms: int) -> None:
    """Spec §25 restated: the first sample sets it, later ones move it an eighth of the way."""
    sample = ms * 256
    old = estimates.get(index)
    estimates[index] = sample if old is None else old + ((sample - old) >> 3)


def answer(lb: Balancer, attempt: StartAttempt, outcome: str, delay: int) -> list[Action]:
    """Play one scripted outcome of ``attempt``, ``delay`` ms from now."""
    rid, number, at = attempt.request_id, attempt.attempt, lb.now + delay
    if outcome == "chunk":
        lb.handle(chunk(at, rid, number))
        return lb.handle(ok(at + 1, rid, number))
    if outcome == "empty":
        return lb.handle(ok(at, rid, number))
    if outcome == "setup":
        return lb.handle(fail(at, rid, number, kind=FailureKind.SETUP, message="no key"))
    return lb.handle(fail(at, rid, number, int(outcome)))


@given(
    count=st.integers(1, 4),
    script=st.lists(st.tuples(OUTCOMES, st.integers(0, 400)), min_size=1, max_size=40),
)
def test_latency_picks_the_lowest_modelled_estimate(
    count: int, script: list[tuple[str, int]]
) -> None:
    names = "abcd"[:count]
    lb = Balancer(config("latency", names, latency_explore_percent=0, failover_retry_count=1))
    estimates: dict[int, int] = {}
    outcomes = deque(script)
    while outcomes:
        actions = lb.handle(start(lb.now, f"r{len(outcomes)}"))
        expected = min(range(count), key=lambda i: (estimates.get(i, 0), i))
        attempt = next(a for a in actions if isinstance(a, StartAttempt))
        assert attempt.backend == names[expected]
        while attempt is not None:
            outcome, delay = outcomes.popleft() if outcomes else ("chunk", 1)
            actions = answer(lb, attempt, outcome, delay)
            index = names.index(attempt.backend)
            if outcome in ("chunk", "empty"):
                model_sample(estimates, index, delay)
            elif outcome != "setup":  # a setup failure records nothing (§5.5)
                model_sample(estimates, index, max(delay, FAILED_SAMPLE_MS))
            attempt = next((a for a in actions if isinstance(a, StartAttempt)), None)
        picker = lb._latency
        assert picker is not None
        sampled = {
            i: e for i, e in enumerate(picker.estimates) if picker.estimate_ms(i) is not None
        }
        assert sampled == estimates
