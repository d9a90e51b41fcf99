"""How much a routing decision costs in the core, in microseconds.

Run with ``make bench``. Each case drives a fresh balancer through many
requests and reports the median over several runs of the cost per request and
per event, so the numbers include event construction, validation and actions.
The core does no I/O, so this is the whole price of balancing; the network
adapters add only their own bookkeeping on top.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

from lbcore import (
    AttemptFailed,
    AttemptSucceeded,
    BackendSpec,
    Balancer,
    BalancerConfig,
    ChunkReceived,
    Event,
    Failure,
    FailureKind,
    RequestStarted,
    Settings,
    StartAttempt,
)

REQUESTS = 2_000
RUNS = 7
CHUNKS = 20


def make_config(strategy: str, **settings: object) -> BalancerConfig:
    backends = tuple(BackendSpec(name=n, provider="openai", model=f"m-{n}") for n in "abc")
    return BalancerConfig(
        strategy=strategy, backends=backends, settings=Settings.from_mapping(settings)
    )


def streamed(rid: str, at: int, attempt: int) -> list[Event]:
    events: list[Event] = [ChunkReceived(at=at, request_id=rid, attempt=attempt)] * CHUNKS
    events.append(
        AttemptSucceeded(at=at, request_id=rid, attempt=attempt, input_tokens=10, output_tokens=20)
    )
    return events


def clean_requests() -> list[Event]:
    events: list[Event] = []
    for n in range(REQUESTS):
        rid = f"r{n}"
        events += [RequestStarted(at=n, request_id=rid), *streamed(rid, n, 1)]
    return events


def pick_only() -> list[Event]:
    """The routing pick alone: a start and a chunkless success per request."""
    events: list[Event] = []
    for n in range(REQUESTS):
        rid = f"r{n}"
        events += [
            RequestStarted(at=n, request_id=rid),
            AttemptSucceeded(at=n, request_id=rid, attempt=1),
        ]
    return events


def one_failover_each() -> list[Event]:
    failure = Failure(kind=FailureKind.HTTP, status=400, message="bad request")
    events: list[Event] = []
    for n in range(REQUESTS):
        rid = f"r{n}"
        events += [
            RequestStarted(at=n, request_id=rid),
            AttemptFailed(at=n, request_id=rid, attempt=1, failure=failure),
            *streamed(rid, n, 2),
        ]
    return events


#: Breaker, first-chunk timeout, concurrency limit, Retry-After, jittered backoff,
#: retry budget, total and idle deadlines: every timer and check on the hot path.
EVERYTHING_ON = make_config(
    "failover",
    circuit_breaker_enabled=True,
    timeout_ms=30_000,
    max_concurrent=64,
    honour_retry_after=True,
    retry_backoff="exponential",
    retry_budget_percent=20,
    deadline_ms=60_000,
    idle_timeout_ms=30_000,
)


def measure(config: BalancerConfig, build: Callable[[], list[Event]]) -> tuple[float, float]:
    events = build()
    per_run = []
    for _ in range(RUNS):
        balancer = Balancer(config)
        began = time.perf_counter_ns()
        for event in events:
            balancer.handle(event)
        per_run.append(time.perf_counter_ns() - began)
    median = statistics.median(per_run)
    return median / REQUESTS / 1000, median / len(events) / 1000


#: Every mechanism the core has on: breakers, first-chunk timeout, context limits,
#: concurrency limits and the queue with its timeout.
EVERYTHING: dict[str, object] = {
    "circuit_breaker_enabled": True,
    "timeout_ms": 30_000,
    "max_queued": 100_000,
    "queue_timeout_ms": 600_000,
}


def many_backends(count: int, limit: int) -> BalancerConfig:
    backends = tuple(
        BackendSpec(
            name=f"b{n}",
            provider="openai",
            model="m",
            context_window=200_000 + n,
            max_concurrent=limit,
        )
        for n in range(count)
    )
    return BalancerConfig(
        strategy="failover",
        backends=backends,
        settings=Settings.from_mapping(EVERYTHING),
        context_limit=150_000,
    )


def by_backends(count: int) -> tuple[float, float]:
    """(us per routing decision, us per 20-chunk request) with ``count`` backends.

    Each request is the first backend's (it never fills), so the decision is one
    visit; what grows with the backends would show up here.
    """
    config = many_backends(count, limit=REQUESTS)
    picks, wholes = [], []
    for _ in range(RUNS):
        balancer = Balancer(config)
        handle = balancer.handle
        pick_ns = whole_ns = 0
        for n in range(REQUESTS):
            rid = f"r{n}"
            start = RequestStarted(at=n, request_id=rid, prompt_tokens=1000)
            rest = streamed(rid, n, 1)
            began = time.perf_counter_ns()
            handle(start)
            picked = time.perf_counter_ns()
            for event in rest:
                handle(event)
            ended = time.perf_counter_ns()
            pick_ns += picked - began
            whole_ns += ended - began
        picks.append(pick_ns)
        wholes.append(whole_ns)
    return statistics.median(picks) / REQUESTS / 1000, statistics.median(wholes) / REQUESTS / 1000


def by_queue(queued: int) -> tuple[float, float]:
    """(us per routing decision, us per 20-chunk request) with ``queued`` requests waiting.

    3 backends of 4 slots each stay full and the queue stays at ``queued``: each
    cycle a new request arrives (and queues: the decision timed), and the oldest
    attempt streams 20 chunks and ends, which hands its slot to the oldest waiter.
    """
    config = many_backends(3, limit=4)
    runs = [_queue_run(config, queued) for _ in range(RUNS)]
    picks, wholes = [r[0] for r in runs], [r[1] for r in runs]
    return statistics.median(picks) / REQUESTS / 1000, statistics.median(wholes) / REQUESTS / 1000


def _queue_run(config: BalancerConfig, queued: int) -> tuple[int, int]:
    balancer = Balancer(config)
    handle = balancer.handle
    in_flight: deque[tuple[str, int]] = deque()
    serial = 0

    def arrive(at: int) -> None:
        nonlocal serial
        serial += 1
        note(handle(RequestStarted(at=at, request_id=f"r{serial}", prompt_tokens=1000)))

    def note(actions: list[object]) -> None:
        for action in actions:
            if type(action) is StartAttempt:
                in_flight.append((action.request_id, action.attempt))

    for _ in range(12 + queued):
        arrive(0)
    assert balancer.stats().queued == queued
    pick_ns = whole_ns = 0
    for n in range(1, REQUESTS + 1):
        rid, attempt = in_flight.popleft()
        rest = streamed(rid, n, attempt)
        began = time.perf_counter_ns()
        arrive(n)
        picked = time.perf_counter_ns()
        for event in rest:
            note(handle(event))  # type: ignore[arg-type]
        ended = time.perf_counter_ns()
        pick_ns += picked - began
        whole_ns += ended - began
    assert balancer.stats().queued == queued
    return pick_ns, whole_ns


def main() -> None:
    cases = [
        ("failover, pick + completion only", make_config("failover"), pick_only),
        ("round-robin, 20-chunk stream", make_config("round-robin"), clean_requests),
        ("failover, 20-chunk stream", make_config("failover"), clean_requests),
        (
            "failover + breaker + timeout, 20-chunk stream",
            make_config("failover", circuit_breaker_enabled=True, timeout_ms=30_000),
            clean_requests,
        ),
        ("failover, one failover then 20 chunks", make_config("failover"), one_failover_each),
        ("every mechanism on, 20-chunk stream", EVERYTHING_ON, clean_requests),
    ]
    print(f"median of {RUNS} runs, {REQUESTS} requests each")
    print(f"{'case':<48} {'us/request':>11} {'us/event':>9}")
    for name, config, build in cases:
        per_request, per_event = measure(config, build)
        print(f"{name:<48} {per_request:>11.1f} {per_event:>9.2f}")
    print()
    print("every mechanism on (breakers, timeout, context limits, max_concurrent, queue)")
    print(f"{'case':<48} {'us/decision':>11} {'us/request':>11}")
    for count in (3, 30, 300, 3_000):
        pick, whole = by_backends(count)
        print(f"{f'{count} backends, 20-chunk stream':<48} {pick:>11.1f} {whole:>11.1f}")
    for queued in (10, 1_000, 10_000):
        pick, whole = by_queue(queued)
        print(f"{f'{queued} queued, arrival + 20-chunk stream':<48} {pick:>11.1f} {whole:>11.1f}")


if __name__ == "__main__":
    main()
