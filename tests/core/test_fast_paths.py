"""The shortcuts the hot paths take decide exactly what the long way would.

* A chunk of a stream under way skips ``check_event``: any misuse must still
  fall through to it, raise, and change nothing.
* The TPM window sums are kept up to date instead of rebuilt per decision:
  they must equal the sums over the buckets, float for float.
* The timers' heap and lines are rebuilt at an amortised O(1) per armed
  deadline, also while every live request holds two deadlines (queued), and a
  long-lived request at the front of a line does not let spent entries pile up.
* A new request meeting a full pool is queued in one loop: the same steps as
  visit by visit, from whatever backend its rotation starts at; and the
  capacity lines of backends that never free stay O(waiting), rebuilt when
  their waiters fall rather than when entries join.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lbcore import (
    AttemptFailed,
    AttemptSucceeded,
    Balancer,
    BalancerConfig,
    ChunkReceived,
    Event,
    Failure,
    FailureKind,
    InvalidEvent,
    RequestStarted,
    SkipBackend,
    SkipReason,
    Step,
    encode_line,
)
from lbcore._timers import Entry, Timers
from lbcore._tpm import MINUTE_MS, WINDOW_MINUTES, TokenRate

from .long_way import CountingShortPaths, VisitByVisit
from .scenarios import config

STREAMING = config("failover", "ab", timeout_ms=1_000, idle_timeout_ms=500)


def _streaming(record: bool = False) -> Balancer:
    """r1 streams on its first attempt (one chunk in), r0 has finished."""
    balancer = Balancer(STREAMING, record=record)
    for event in (
        RequestStarted(at=0, request_id="r0"),
        AttemptSucceeded(at=1, request_id="r0", attempt=1),
        RequestStarted(at=10, request_id="r1"),
        ChunkReceived(at=20, request_id="r1", attempt=1),
    ):
        balancer.handle(event)
    return balancer


def _fingerprint(balancer: Balancer) -> tuple[object, ...]:
    return (msgspec.json.encode(balancer.stats()), balancer.next_deadline(), repr(balancer))


class _Text(str):
    """A str subclass: not the exact type the fast path takes."""


MISUSE: list[Event] = [
    ChunkReceived(at=30, request_id="r1", attempt=True),  # type: ignore[arg-type]
    ChunkReceived(at=30, request_id="r1", attempt=2),
    ChunkReceived(at=30, request_id="r1", attempt=0),
    ChunkReceived(at=19, request_id="r1", attempt=1),
    ChunkReceived(at=-1, request_id="r1", attempt=1),
    ChunkReceived(at=30.0, request_id="r1", attempt=1),  # type: ignore[arg-type]
    ChunkReceived(at=30, request_id="r0", attempt=1),
    ChunkReceived(at=30, request_id="nobody", attempt=1),
    ChunkReceived(at=30, request_id=5, attempt=1),  # type: ignore[arg-type]
    ChunkReceived(at=30, request_id="", attempt=1),
]


@pytest.mark.parametrize("event", MISUSE, ids=repr)
def test_a_misused_chunk_mid_stream_is_refused_and_changes_nothing(event: Event) -> None:
    balancer = _streaming(record=True)
    balancer.take_steps()
    before = _fingerprint(balancer)
    with pytest.raises(InvalidEvent):
        balancer.handle(event)
    assert _fingerprint(balancer) == before
    assert balancer.take_steps() == []


def test_a_chunk_mid_stream_counts_moves_the_idle_deadline_and_is_recorded() -> None:
    balancer = _streaming(record=True)
    balancer.take_steps()
    assert balancer.next_deadline() == 520
    event = ChunkReceived(at=30, request_id="r1", attempt=1)
    assert balancer.handle(event) == []
    assert balancer.next_deadline() == 530
    assert balancer.now == 30
    assert balancer.take_steps() == [Step(seq=5, event=event, actions=())]
    # A str subclass takes the general path, with the same outcome.
    assert balancer.handle(ChunkReceived(at=40, request_id=_Text("r1"), attempt=1)) == []
    assert balancer.next_deadline() == 540
    assert balancer._live["r1"].chunks == 3


def _rate_by_hand(adds: list[tuple[str, int, int]], backend: str, now: int) -> float:
    """By definition: the window's tokens over the minutes since its oldest busy one."""
    minute = now // MINUTE_MS
    buckets: dict[int, int] = {}
    for name, tokens, at in adds:
        if name == backend:
            buckets[at // MINUTE_MS] = buckets.get(at // MINUTE_MS, 0) + tokens
    busy = [m for m in range(minute - WINDOW_MINUTES + 1, minute + 1) if buckets.get(m, 0) > 0]
    if not busy:
        return 0.0
    return sum(buckets[m] for m in busy) / (minute - busy[0] + 1)


BOTH = ("a", "b")
steps = st.lists(
    st.tuples(
        st.sampled_from(["add", "rate", "below", "any", "any", "any5"]),
        st.sampled_from(["a", "b"]),
        st.sampled_from([0, 0, 1, 1_000]) | st.integers(0, 3 * MINUTE_MS),
        st.integers(0, 50),
    ),
    max_size=60,
)


@given(steps)
def test_token_rate_keeps_the_window_sums_of_the_buckets(
    script: list[tuple[str, str, int, int]],
) -> None:
    rate = TokenRate()
    adds: list[tuple[str, int, int]] = []
    now = 0
    for action, backend, gap, tokens in script:
        now += gap  # the balancer's clock never goes back
        if action == "add":
            rate.add(backend, tokens, now)
            adds.append((backend, tokens, now))
            continue
        expected = _rate_by_hand(adds, backend, now)
        if action == "rate":
            assert rate.rate(backend, now) == expected
        elif action.startswith("any"):
            # Asked twice: the answer may come from an earlier one (the calm
            # cache, kept across adds within a minute), and must not differ.
            threshold = 5 if action == "any5" else 30
            by_hand = [_rate_by_hand(adds, name, now) for name in BOTH]
            for _ in range(2):
                assert rate.any_below(BOTH, now, threshold) == any(
                    0 < r < threshold for r in by_hand
                )
        else:
            slow = expected if 0 < expected < 30 else None
            assert rate.below_threshold(backend, now, 30) == slow
            assert rate.below_threshold(backend, now, None) is None


def _counting_rebuilds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch Timers._standing to note the size of every heap or line rebuilt."""
    sizes: list[int] = []
    original = Timers._standing

    def counting(self: Timers, entries: Sequence[Entry]) -> list[Entry]:
        sizes.append(len(entries))
        return original(self, entries)  # type: ignore[arg-type]

    monkeypatch.setattr(Timers, "_standing", counting)
    return sizes


def test_the_timers_are_rebuilt_at_amortised_constant_cost_with_a_full_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two slots, 2,000 requests waiting, each holding its queue timeout and its
    # total deadline (one line each); then 500 requests pass through the slot.
    queued, cycles = 2_000, 500
    balancer = Balancer(
        config(
            "failover",
            "ab",
            max_concurrent=1,
            max_queued=10_000,
            queue_timeout_ms=10**9,
            deadline_ms=10**9,
            idle_timeout_ms=10**9,
        )
    )
    for n in range(queued + 2):
        balancer.handle(RequestStarted(at=0, request_id=f"r{n}"))
    sizes = _counting_rebuilds(monkeypatch)
    for n in range(cycles):
        # r{n} holds a slot; its end hands the slot to the oldest waiter.
        balancer.handle(RequestStarted(at=n, request_id=f"new{n}"))
        balancer.handle(ChunkReceived(at=n, request_id=f"r{n}", attempt=1))
        balancer.handle(AttemptSucceeded(at=n, request_id=f"r{n}", attempt=1))
    assert balancer.stats().queued == queued
    # About four deadlines are armed per cycle; a rebuild on every few arms
    # would scan some 2,000 entries each time.
    assert sum(sizes) <= 4 * 4 * cycles + 4 * queued
    live = queued + 2
    # Three lines of at most 2 * live + 64 entries, and the heap of idle deadlines.
    assert len(balancer._timers) <= 3 * (2 * live + 64) + 2 * 2 + 64


def test_a_long_lived_request_at_the_front_of_a_line_does_not_let_it_grow() -> None:
    # r0 streams for the whole test and holds the front of the expiry line;
    # 5,000 short requests pass behind it, and nobody asks for next_deadline().
    balancer = Balancer(config("failover", "ab", deadline_ms=10**9))
    balancer.handle(RequestStarted(at=0, request_id="r0"))
    balancer.handle(ChunkReceived(at=0, request_id="r0", attempt=1))
    for n in range(1, 5_001):
        balancer.handle(RequestStarted(at=n, request_id=f"r{n}"))
        balancer.handle(AttemptSucceeded(at=n, request_id=f"r{n}", attempt=1))
    assert len(balancer._timers) <= 2 * (2 * 2 + 64)
    assert balancer.next_deadline() == 10**9


# ----------------------------------------------- a new request in a full pool


def _both_ways(cfg: BalancerConfig, script: list[Event]) -> tuple[int, list[Step]]:
    """Run ``script`` with and without the full-pool short path; equal steps, byte for byte.

    Returns how many requests the short path queued, and the steps.
    """
    short, long = CountingShortPaths(cfg, record=True), VisitByVisit(cfg, record=True)
    for event in script:
        assert short.handle(event) == long.handle(event)
        assert _fingerprint(short) == _fingerprint(long)
    steps = short.take_steps()
    assert [encode_line(s) for s in steps] == [encode_line(s) for s in long.take_steps()]
    return short.short_paths, steps


def _burst(at: int, first: int, count: int, **fields: object) -> list[Event]:
    return [
        RequestStarted(at=at, request_id=f"r{n}", **fields)  # type: ignore[arg-type]
        for n in range(first, first + count)
    ]


FULL_POOL = {"max_concurrent": 1, "max_queued": 100, "deadline_ms": 10_000}


def test_a_burst_into_a_full_pool_queues_by_the_short_path() -> None:
    cfg = config("failover", "abc", tpm_threshold=5, **FULL_POOL)
    script = [
        *_burst(0, 1, 10),
        AttemptSucceeded(at=5, request_id="r1", attempt=1, output_tokens=100),
        *_burst(6, 11, 2),
    ]
    taken, steps = _both_ways(cfg, script)
    assert taken == 7 + 2
    # Each queued newcomer was skipped by all three, in rotation order, then queued.
    assert [type(a).__name__ for a in steps[3].actions] == [
        "SkipBackend",
        "SkipBackend",
        "SkipBackend",
        "RequestQueued",
    ]
    skips = [a for a in steps[3].actions if isinstance(a, SkipBackend)]
    assert [s.backend for s in skips] == ["a", "b", "c"]
    assert {s.reason for s in skips} == {SkipReason.AT_CAPACITY}


@pytest.mark.parametrize(
    ("why", "cfg", "before", "fields"),
    [
        (
            "a cooldown runs",
            config("failover", "abc", honour_retry_after=True, **FULL_POOL),
            [
                RequestStarted(at=0, request_id="x"),
                AttemptFailed(
                    at=1,
                    request_id="x",
                    attempt=1,
                    failure=Failure(
                        kind=FailureKind.HTTP,
                        message="slow",
                        status=429,
                        retry_after_ms=5_000,
                    ),
                ),
            ],
            {},
        ),
        (
            "a breaker is open",
            config(
                "failover",
                "abc",
                circuit_breaker_enabled=True,
                circuit_breaker_failure_threshold=1,
                failover_retry_count=1,
                **FULL_POOL,
            ),
            [
                RequestStarted(at=0, request_id="x"),
                AttemptFailed(
                    at=1,
                    request_id="x",
                    attempt=1,
                    failure=Failure(kind=FailureKind.HTTP, message="down", status=500),
                ),
            ],
            {},
        ),
        (
            "the prompt exceeds a window",
            config("failover", "abc", windows={"b": 100}, **FULL_POOL),
            [],
            {"prompt_tokens": 150},
        ),
        (
            "a token rate is below the threshold",
            config("failover", "abc", tpm_threshold=10**6, **FULL_POOL),
            [
                RequestStarted(at=0, request_id="x"),
                AttemptSucceeded(at=1, request_id="x", attempt=1, output_tokens=10),
            ],
            {},
        ),
        (
            "the attempt budget is 0",
            config("failover", "abc", **FULL_POOL),
            [],
            {"attempt_budget": 0},
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_the_short_path_steps_aside_when_more_than_capacity_decides(
    why: str, cfg: BalancerConfig, before: list[Event], fields: dict[str, object]
) -> None:
    script = before + _burst(2, 1, 8, **fields)
    taken, steps = _both_ways(cfg, script)
    if why not in ("the attempt budget is 0", "the prompt exceeds a window"):
        # Some newcomers met a full pool, but something else was in the way too.
        assert any(
            isinstance(a, SkipBackend) and a.reason == SkipReason.AT_CAPACITY
            for step in steps
            for a in step.actions
        )
    assert taken == 0


def test_the_short_path_steps_aside_for_a_drained_backend() -> None:
    cfg = config("weighted-round-robin", "abc", **FULL_POOL)
    cfg = msgspec.structs.replace(
        cfg,
        backends=tuple(
            msgspec.structs.replace(b, weight=0 if b.name == "b" else 1) for b in cfg.backends
        ),
    )
    taken, _ = _both_ways(cfg, _burst(0, 1, 6))
    assert taken == 0


def test_the_short_path_is_taken_again_once_the_cooldown_ends() -> None:
    cfg = config("failover", "abc", honour_retry_after=True, **FULL_POOL)
    failure = Failure(kind=FailureKind.HTTP, message="slow", status=429, retry_after_ms=50)
    script = [
        RequestStarted(at=0, request_id="x"),
        AttemptFailed(at=1, request_id="x", attempt=1, failure=failure),
        *_burst(2, 1, 6),
        *_burst(60, 7, 3),
    ]
    taken, _ = _both_ways(cfg, script)
    assert taken == 3


def test_the_lines_of_backends_that_never_free_stay_bounded() -> None:
    # b and c stay full for good; every request waits for all three and is
    # served by a, which leaves its entries in b's and c's lines spent. Those
    # lines are rebuilt when their waiters fall (Capacity.leave), not when
    # entries join them, and must stay O(waiting) all the same.
    balancer = Balancer(config("failover", "abc", max_concurrent=1, max_queued=1_000))
    for name in ("a", "b", "c"):
        balancer.handle(RequestStarted(at=0, request_id=f"holds-{name}"))
    waiters = 100
    for n in range(waiters):
        balancer.handle(RequestStarted(at=0, request_id=f"w{n}"))
    on_a = "holds-a"
    for n in range(3_000):
        balancer.handle(RequestStarted(at=n, request_id=f"late{n}"))
        actions = balancer.handle(AttemptSucceeded(at=n, request_id=on_a, attempt=1))
        (started,) = [a for a in actions if type(a).__name__ == "StartAttempt"]
        on_a = started.request_id  # type: ignore[union-attr]
        capacity = balancer._capacity
        assert capacity.queued == waiters
        for length, waiting in zip(capacity.line_lengths(), capacity.waiting, strict=True):
            assert length <= 2 * waiting + 64 + 1, (n, capacity.line_lengths(), capacity.waiting)


@pytest.mark.parametrize("strategy", ["weighted-round-robin", "least-busy", "latency"])
def test_the_short_path_follows_rotations_from_every_first_backend(strategy: str) -> None:
    # These strategies start each rotation where their pick says, so newcomers
    # in a full pool start at different backends: the order kept for the last
    # start (_full_rotation.Rotation) must be rebuilt whenever the start moves.
    cfg = config(strategy, "abcd", **FULL_POOL)
    script = [
        *_burst(0, 1, 12),
        AttemptSucceeded(at=3, request_id="r2", attempt=1, output_tokens=5),
        *_burst(4, 13, 6),
        AttemptSucceeded(at=5, request_id="r1", attempt=1, output_tokens=5),
        *_burst(6, 19, 6),
    ]
    taken, steps = _both_ways(cfg, script)
    assert taken > 0
    firsts = {
        next(a.backend for a in step.actions if isinstance(a, SkipBackend))
        for step in steps
        if any(isinstance(a, SkipBackend) for a in step.actions)
    }
    if strategy == "weighted-round-robin":
        assert len(firsts) > 1, firsts
