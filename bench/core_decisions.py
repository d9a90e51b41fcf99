"""What a routing decision costs in the core, in microseconds, with 3, 30 and 300 backends.

Run with ``make bench`` (or alone: ``python bench/core_decisions.py``). Every
mechanism is on (failover with a first-chunk deadline, circuit breakers, a TPM
threshold). Each case drives a fresh balancer through the same prepared events,
so the figures include validation and the actions; the core does no I/O, so
this is the whole price of balancing. The cases for 30 and 300 backends run
interleaved with the 3-backend case, round by round, and are also shown as a
ratio to it: how the price grows with the number of backends.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from _harness import Section, Table, publish, quick, ratio, rounds, spread

from lbcore import (
    AttemptSucceeded,
    BackendSpec,
    Balancer,
    BalancerConfig,
    ChunkReceived,
    Event,
    RequestStarted,
    Settings,
)

CHUNKS = 20
BACKENDS = (3, 30, 300)
REQUESTS = 40 if quick() else 2_000
ROUNDS = 3 if quick() else 9


def make_config(backends: int) -> BalancerConfig:
    specs = tuple(
        BackendSpec(name=f"b{n}", provider="openai", model=f"m-{n}") for n in range(backends)
    )
    settings = Settings(timeout_ms=30_000, circuit_breaker_enabled=True, tpm_threshold=10)
    return BalancerConfig(strategy="failover", backends=specs, settings=settings)


def streamed_requests() -> list[Event]:
    """Whole requests: a start, 20 chunk events, a success with usage."""
    events: list[Event] = []
    for n in range(REQUESTS):
        rid = f"r{n}"
        events.append(RequestStarted(at=n, request_id=rid))
        events += [ChunkReceived(at=n, request_id=rid, attempt=1)] * CHUNKS
        events.append(
            AttemptSucceeded(at=n, request_id=rid, attempt=1, input_tokens=10, output_tokens=20)
        )
    return events


def picks_only() -> list[Event]:
    """The routing decision alone: a start and a chunkless success per request."""
    events: list[Event] = []
    for n in range(REQUESTS):
        rid = f"r{n}"
        events.append(RequestStarted(at=n, request_id=rid))
        events.append(AttemptSucceeded(at=n, request_id=rid, attempt=1))
    return events


def drive(config: BalancerConfig, events: list[Event]) -> Callable[[], float]:
    """One round: a fresh balancer through every event; returns ns per request."""

    def measure() -> float:
        balancer = Balancer(config)
        handle = balancer.handle
        began = time.perf_counter_ns()
        for event in events:
            handle(event)
        return (time.perf_counter_ns() - began) / REQUESTS

    return measure


def main() -> None:
    began = time.monotonic()
    section = Section(
        key="core",
        order=10,
        title="1. The core alone",
        method=(
            f"A fresh `Balancer` per round is driven through {REQUESTS:,} prepared requests "
            f"(failover, first-chunk deadline, circuit breakers and a TPM threshold all on); "
            f"median (min-max) over {ROUNDS} interleaved rounds. *Per routing decision*: a "
            f"start and a chunkless success. *Per whole request*: a start, {CHUNKS} chunk "
            f"events and a success; *per event* is the same divided by its {CHUNKS + 2} events."
        ),
    )
    whole, picks = streamed_requests(), picks_only()
    configs = {n: make_config(n) for n in BACKENDS}
    measures = {f"whole {n}": drive(configs[n], whole) for n in BACKENDS}
    measures |= {f"pick {n}": drive(configs[n], picks) for n in BACKENDS}
    results = rounds(measures, ROUNDS)
    table = Table(
        "µs per routing decision, per event and per whole 20-chunk request",
        ["backends", "per routing decision", "per event", "per whole request", "whole vs 3"],
    )
    events_per_request = CHUNKS + 2
    for n in BACKENDS:
        pick = spread([v / 1000 for v in results[f"pick {n}"]])
        per_request = spread([v / 1000 for v in results[f"whole {n}"]])
        per_event = spread([v / 1000 / events_per_request for v in results[f"whole {n}"]])
        growth = ratio(results[f"whole {n}"], results["whole 3"])
        table.rows.append(
            [str(n), pick.show(1), per_event.show(2), per_request.show(1), growth.show(2, "x")]
        )
        section.figure(f"core.pick_us.{n}", pick)
        section.figure(f"core.request_us.{n}", per_request)
    section.tables.append(table)
    publish(section, began)


if __name__ == "__main__":
    main()
