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


if __name__ == "__main__":
    main()
