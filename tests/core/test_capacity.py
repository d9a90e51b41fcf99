"""Concurrency limits and the queue, stepped one event at a time (spec §18)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from lbcore import (
    Action,
    AttemptFailed,
    BackendSpec,
    Balancer,
    BalancerConfig,
    Event,
    Failure,
    FailureKind,
    RequestDequeued,
    RequestQueued,
    RequestStarted,
    StartAttempt,
    decode_trace,
    explain,
    request_ids,
    tell,
)
from lbcore._explain import describe_action

from .scenarios import config, fail, ok, start, tick
from .trace_snapshot import GOLDEN_DIR


def limited(strategy: str, names: str, limits: dict[str, int], **settings: Any) -> BalancerConfig:
    """``config(...)`` with per-backend ``max_concurrent`` limits."""
    base = config(strategy, names, **settings)
    backends = tuple(
        msgspec.structs.replace(b, max_concurrent=limits.get(b.name)) for b in base.backends
    )
    return msgspec.structs.replace(base, backends=backends)


def feed(lb: Balancer, events: list[Event]) -> list[Action]:
    actions: list[Action] = []
    for event in events:
        actions += lb.handle(event)
    return actions


def starts(actions: list[Action]) -> list[tuple[str, str, int]]:
    return [(a.request_id, a.backend, a.attempt) for a in actions if isinstance(a, StartAttempt)]


def test_a_request_dispatched_from_the_queue_gets_its_full_retries_there() -> None:
    # r2 spends both attempts on b, finds a full and waits; when a frees, its
    # visit to a is a fresh visit with two attempts, not the leftovers of b's.
    lb = Balancer(limited("failover", "ab", {"a": 1, "b": 1}, failover_retry_count=2))
    feed(lb, [start(0, "r1"), start(1, "r2"), fail(2, "r2", 1, 503), fail(3, "r2", 2, 503)])
    actions = lb.handle(ok(4, "r1", 1))
    assert starts(actions) == [("r2", "a", 3)]
    actions = lb.handle(fail(5, "r2", 3, 503))
    assert starts(actions) == [("r2", "a", 4)]


def test_a_request_failing_over_does_not_jump_the_queue() -> None:
    # r3 waits for a (too big for b) since t=10. On the tick at 100, r2 leaves b
    # for a, which r1 freed a moment before: r3 was first in line for a.
    settings = {"failover_retry_count": 1, "timeout_ms": 100}
    base = limited("failover", "ab", {"a": 1, "b": 1}, context_limit=1000, **settings)
    backends = (base.backends[0], msgspec.structs.replace(base.backends[1], context_window=10))
    lb = Balancer(msgspec.structs.replace(base, backends=backends))
    feed(lb, [start(0, "r1"), start(0, "r2"), start(10, "r3", prompt_tokens=50)])
    actions = lb.handle(tick(100))
    assert ("r3", "a", 1) in starts(actions)
    assert not [a for a in starts(actions) if a[0] == "r2" and a[1] == "a"]
    assert next(a.request_id for a in actions if isinstance(a, RequestDequeued)) == "r3"
    assert {a.request_id for a in actions if isinstance(a, RequestQueued)} >= {"r2"}


def test_stats_show_slots_in_use_and_requests_waiting_per_backend() -> None:
    lb = Balancer(limited("failover", "abc", {"a": 1, "b": 1}))
    feed(lb, [start(0, "r1"), start(1, "r2"), start(2, "r3")])
    stats = lb.stats()
    # c is unlimited: r3 goes there; nobody waits.
    assert stats.backend_slots_used == {"a": 1, "b": 1, "c": 1}
    assert (stats.queued, stats.backend_queued) == (0, {"a": 0, "b": 0, "c": 0})

    lb = Balancer(limited("failover", "ab", {"a": 1, "b": 2}))
    feed(lb, [start(0, "r1"), start(1, "r2"), start(2, "r3"), start(3, "r4")])
    stats = lb.stats()
    assert stats.backend_slots_used == {"a": 1, "b": 2}
    assert (stats.queued, stats.backend_queued) == (1, {"a": 1, "b": 1})
    assert stats.in_flight == 4  # live requests, the queued one included
    lb.handle(ok(4, "r2", 1))
    stats = lb.stats()
    assert (stats.queued, stats.backend_queued) == (0, {"a": 0, "b": 0})
    assert stats.backend_slots_used == {"a": 1, "b": 2}


@pytest.mark.parametrize("path", sorted(GOLDEN_DIR.glob("*.jsonl")), ids=lambda p: p.stem)
def test_every_golden_trace_can_be_explained_and_told(path: Path) -> None:
    header, steps = decode_trace(path.read_bytes())
    assert explain(header, steps)
    for rid in request_ids(steps):
        assert rid in tell(header, steps, rid)


def test_queue_actions_are_described() -> None:
    queued = RequestQueued(request_id="r1", waiting_for=("a", "b"), queued=3, due=55)
    assert describe_action(queued) == "queued for a, b (3 waiting, gives up at 55)"
    forever = RequestQueued(request_id="r1", waiting_for=("a",), queued=1, due=None)
    assert describe_action(forever) == "queued for a (1 waiting)"
    dequeued = RequestDequeued(request_id="r1", backend="a", waited_ms=8)
    assert describe_action(dequeued) == "dequeued to a after 8 ms"


def test_a_request_queued_after_leaving_a_backend_has_no_attempt_under_way_there() -> None:
    config = BalancerConfig(
        strategy="failover",
        backends=(
            BackendSpec(name="a", provider="openai", max_concurrent=1),
            BackendSpec(name="b", provider="openai", max_concurrent=1),
        ),
    )
    lb = Balancer(config)
    lb.handle(RequestStarted(at=0, request_id="r1"))
    lb.handle(RequestStarted(at=1, request_id="r2"))  # on b
    refused = Failure(kind=FailureKind.HTTP, message="bad key", status=401)
    actions = lb.handle(AttemptFailed(at=2, request_id="r1", attempt=1, failure=refused))
    assert any(isinstance(action, RequestQueued) for action in actions)  # b is full
    stats = lb.stats()
    assert stats.backend_slots_used == {"a": 0, "b": 1}
    assert stats.backend_in_flight == {"a": 0, "b": 1}
