"""What a routing decision costs in the core, in microseconds, by backends and by queue length.

Run with ``make bench`` (or alone: ``python bench/core_decisions.py``). Every
mechanism is on: failover with a first-chunk deadline, circuit breakers, a TPM
threshold, context limits, per-backend concurrency limits with the queue and
its timeout, Retry-After, jittered backoff, the retry budget and the total and
idle deadlines. Each case drives a fresh balancer through the same prepared
events, so the figures include validation and the actions; the core does no
I/O, so this is the whole price of balancing. The cases run interleaved, round
by round, and are also shown as a ratio to the smallest one: how the price
grows with the number of backends, and with the number of requests queued.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

import msgspec
from _harness import Section, Table, publish, quick, ratio, rounds, spread

from lbcore import (
    Action,
    AttemptSucceeded,
    BackendSpec,
    Balancer,
    BalancerConfig,
    ChunkReceived,
    Event,
    RequestStarted,
    Settings,
    StartAttempt,
)
from lbcore._strategies import picker_for

#: The strategies whose pick is timed; failover (the sticky index) is the baseline.
STRATEGIES = ("failover", "weighted-round-robin", "least-busy", "latency")
PICKS = 200 if quick() else 20_000

CHUNKS = 20
BACKENDS = (3, 30, 300) if quick() else (3, 30, 300, 3_000)
QUEUED = (10, 100) if quick() else (10, 1_000, 10_000)
REQUESTS = 40 if quick() else 2_000
ROUNDS = 3 if quick() else 9
PROMPT_TOKENS = 1_000


def make_config(backends: int, limit: int) -> BalancerConfig:
    specs = tuple(
        BackendSpec(
            name=f"b{n}",
            provider="openai",
            model=f"m-{n}",
            context_window=200_000 + n,
            max_concurrent=limit,
        )
        for n in range(backends)
    )
    settings = Settings(
        timeout_ms=30_000,
        circuit_breaker_enabled=True,
        tpm_threshold=10,
        max_queued=100_000,
        queue_timeout_ms=600_000,
        honour_retry_after=True,
        retry_backoff="exponential",
        retry_budget_percent=20,
        deadline_ms=3_600_000,
        idle_timeout_ms=3_600_000,
    )
    return BalancerConfig(
        strategy="failover", backends=specs, settings=settings, context_limit=150_000
    )


def with_strategy(config: BalancerConfig, strategy: str) -> BalancerConfig:
    """``config`` under ``strategy``; weighted-round-robin gets weights 1, 2, 3, 1, ...
    (three distinct weights: its pick costs one step per distinct weight)."""
    backends = config.backends
    if strategy == "weighted-round-robin":
        backends = tuple(
            msgspec.structs.replace(b, weight=1 + n % 3) for n, b in enumerate(backends)
        )
    return msgspec.structs.replace(config, strategy=strategy, backends=backends)


def pick_alone(config: BalancerConfig) -> Callable[[], float]:
    """One round: ns per pick, the strategy's choice of first backend and nothing else.

    The picker reads a balancer's own state: the latency one has a sample on every
    backend (so its scan is over real estimates), least-busy reads live slot counts.
    """

    def measure() -> float:
        balancer = Balancer(config)
        picker = picker_for(config, balancer._capacity)
        assert picker is not None
        if config.strategy == "latency":
            for index in range(len(config.backends)):
                picker.observe(index, 500 + (index * 7919) % 1000)  # type: ignore[union-attr]
        pick = picker.pick
        began = time.perf_counter_ns()
        for _ in range(PICKS):
            pick()
        return (time.perf_counter_ns() - began) / PICKS

    return measure


def streamed(rid: str, at: int, attempt: int) -> list[Event]:
    """The rest of a request once it is dispatched: 20 chunks and a success with usage."""
    events: list[Event] = [ChunkReceived(at=at, request_id=rid, attempt=attempt)] * CHUNKS
    events.append(
        AttemptSucceeded(at=at, request_id=rid, attempt=attempt, input_tokens=10, output_tokens=20)
    )
    return events


def by_backends(config: BalancerConfig, *, whole: bool) -> Callable[[], float]:
    """One round: ns per routing decision (``whole=False``) or per whole request.

    Each request is the first backend's (it never fills), so the decision is one
    visit; what grows with the backends would show up here.
    """

    def measure() -> float:
        balancer = Balancer(config)
        handle = balancer.handle
        spent = 0
        for n in range(REQUESTS):
            rid = f"r{n}"
            start = RequestStarted(at=n, request_id=rid, prompt_tokens=PROMPT_TOKENS)
            rest = streamed(rid, n, 1)
            began = time.perf_counter_ns()
            handle(start)
            picked = time.perf_counter_ns()
            for event in rest:
                handle(event)
            spent += (time.perf_counter_ns() if whole else picked) - began
        return spent / REQUESTS

    return measure


def by_queue(queued: int, *, whole: bool) -> Callable[[], float]:
    """One round with ``queued`` requests waiting the whole time.

    3 backends of 4 slots each stay full: each cycle a new request arrives and
    queues (the decision timed), and the oldest attempt streams 20 chunks and
    ends, which hands its slot to the oldest waiter.
    """
    config = make_config(3, limit=4)

    def measure() -> float:
        balancer = Balancer(config)
        handle = balancer.handle
        in_flight: deque[tuple[str, int]] = deque()
        serial = 0

        def note(actions: list[Action]) -> None:
            for action in actions:
                if type(action) is StartAttempt:
                    in_flight.append((action.request_id, action.attempt))

        def arrival(at: int) -> RequestStarted:
            nonlocal serial
            serial += 1
            return RequestStarted(at=at, request_id=f"r{serial}", prompt_tokens=PROMPT_TOKENS)

        for _ in range(12 + queued):
            note(handle(arrival(0)))
        assert balancer.stats().queued == queued
        spent = 0
        for n in range(1, REQUESTS + 1):
            rid, attempt = in_flight.popleft()
            rest = streamed(rid, n, attempt)
            start = arrival(n)
            # Only handle() is timed, as in by_backends: not building the
            # events, nor following the actions (note) as a transport would.
            began = time.perf_counter_ns()
            actions = handle(start)
            picked = time.perf_counter_ns()
            note(actions)
            for event in rest:
                note(handle(event))
            spent += (time.perf_counter_ns() if whole else picked) - began
        assert balancer.stats().queued == queued
        return spent / REQUESTS

    return measure


def main() -> None:
    began = time.monotonic()
    section = Section(
        key="core",
        order=10,
        title="1. The core alone",
        method=(
            f"A fresh `Balancer` per round is driven through {REQUESTS:,} requests with every "
            "mechanism on (failover, first-chunk deadline, circuit breakers, a TPM threshold, "
            "context limits, per-backend concurrency limits and the queue, Retry-After, "
            "jittered backoff, the retry budget, total and idle deadlines); median (min-max) "
            f"over {ROUNDS} interleaved rounds. *Per routing decision*: the `RequestStarted` "
            f"alone. *Per whole request*: the start, {CHUNKS} chunk events and a success; "
            f"*per event* is the same divided by its {CHUNKS + 2} events. The queue cases keep "
            "3 backends of 4 slots full and the queue at its length: each decision queues a "
            "newcomer and each request's end hands its slot to the oldest waiter."
        ),
    )
    measures: dict[str, Callable[[], float]] = {}
    for n in BACKENDS:
        config = make_config(n, limit=REQUESTS)
        measures[f"pick {n}"] = by_backends(config, whole=False)
        measures[f"whole {n}"] = by_backends(config, whole=True)
    for q in QUEUED:
        measures[f"queued pick {q}"] = by_queue(q, whole=False)
        measures[f"queued whole {q}"] = by_queue(q, whole=True)
    for strategy in STRATEGIES:
        for n in BACKENDS:
            config = with_strategy(make_config(n, limit=REQUESTS), strategy)
            measures[f"{strategy} decision {n}"] = by_backends(config, whole=False)
            if strategy != "failover":
                measures[f"{strategy} pick {n}"] = pick_alone(config)
    results = rounds(measures, ROUNDS)
    events_per_request = CHUNKS + 2

    backends_table = Table(
        "µs per routing decision, per event and per whole 20-chunk request, by backends",
        ["backends", "per routing decision", "per event", "per whole request", "whole vs 3"],
    )
    for n in BACKENDS:
        pick = spread([v / 1000 for v in results[f"pick {n}"]])
        per_request = spread([v / 1000 for v in results[f"whole {n}"]])
        per_event = spread([v / 1000 / events_per_request for v in results[f"whole {n}"]])
        growth = ratio(results[f"whole {n}"], results[f"whole {BACKENDS[0]}"])
        backends_table.rows.append(
            [str(n), pick.show(1), per_event.show(2), per_request.show(1), growth.show(2, "x")]
        )
        section.figure(f"core.pick_us.{n}", pick)
        section.figure(f"core.request_us.{n}", per_request)
    section.tables.append(backends_table)

    queue_table = Table(
        "µs per routing decision and per whole 20-chunk request, by requests queued",
        ["queued", "per routing decision", "per whole request", f"whole vs {QUEUED[0]}"],
    )
    for q in QUEUED:
        pick = spread([v / 1000 for v in results[f"queued pick {q}"]])
        per_request = spread([v / 1000 for v in results[f"queued whole {q}"]])
        growth = ratio(results[f"queued whole {q}"], results[f"queued whole {QUEUED[0]}"])
        queue_table.rows.append([f"{q:,}", pick.show(1), per_request.show(1), growth.show(2, "x")])
        section.figure(f"core.queued_pick_us.{q}", pick)
        section.figure(f"core.queued_request_us.{q}", per_request)
    section.tables.append(queue_table)
    section.tables.append(strategies_table(results, section))
    publish(section, began)


def strategies_table(results: dict[str, list[float]], section: Section) -> Table:
    """The pick of each strategy (spec §23-§25), alone and as part of the decision."""
    table = Table(
        f"µs per pick (the strategy's choice alone, {PICKS:,} picks a round) and per routing "
        "decision (the whole `RequestStarted`), by strategy and backends",
        ["strategy", "backends", "pick alone", "per routing decision", "decision vs failover"],
        note="Failover's pick is its sticky index (nothing to time). Weighted-round-robin runs "
        "with three distinct weights, latency with a sample on every backend and the default "
        "5 % exploration.",
    )
    for strategy in STRATEGIES:
        for n in BACKENDS:
            decision = results[f"{strategy} decision {n}"]
            alone = "-"
            if strategy != "failover":
                pick = spread([v / 1000 for v in results[f"{strategy} pick {n}"]])
                alone = pick.show(2)
                section.figure(f"core.strategy_pick_us.{strategy.replace('-', '_')}.{n}", pick)
            growth = ratio(decision, results[f"failover decision {n}"])
            table.rows.append(
                [
                    strategy,
                    str(n),
                    alone,
                    spread([v / 1000 for v in decision]).show(1),
                    growth.show(2, "x"),
                ]
            )
    return table


if __name__ == "__main__":
    main()
