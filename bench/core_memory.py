"""Memory the core holds after 10^4, 10^5 and 10^6 requests, in each driving style.

A transport may poll ``next_deadline()`` after every event, tick on a schedule
of its own, or feed events blind as ``run()`` and ``replay()`` do. Whatever
the style, the core's state must track the requests in flight, not the
requests served. Run: ``python bench/core_memory.py`` (about a minute).
"""

from __future__ import annotations

import gc
import sys
import time
import types
from collections.abc import Callable, Iterator

from _harness import Section, Table, publish, quick

from lbcore import (
    AttemptSucceeded,
    BackendSpec,
    Balancer,
    BalancerConfig,
    ChunkReceived,
    Event,
    RequestStarted,
    Settings,
    Tick,
)

CONCURRENT = 8
CONFIG = BalancerConfig(
    profile_name="bench",
    strategy="failover",
    backends=(
        BackendSpec(name="a", provider="openai", model="m"),
        BackendSpec(name="b", provider="openai", model="m"),
    ),
    settings=Settings(timeout_ms=1_000, circuit_breaker_enabled=True),
)


def traffic(requests: int) -> Iterator[Event]:
    for n in range(requests + CONCURRENT):
        if n < requests:
            yield RequestStarted(at=n, request_id=f"r{n}")
        done = n - CONCURRENT
        if done >= 0:
            rid = f"r{done}"
            yield ChunkReceived(at=n, request_id=rid, attempt=1)
            yield AttemptSucceeded(at=n, request_id=rid, attempt=1, output_tokens=1)


def poll(balancer: Balancer, requests: int) -> None:
    for event in traffic(requests):
        balancer.handle(event)
        balancer.next_deadline()


def tick(balancer: Balancer, requests: int) -> None:
    for event in traffic(requests):
        balancer.handle(event)
        if isinstance(event, RequestStarted) and event.at % 10 == 0:
            balancer.handle(Tick(at=event.at))


def blind(balancer: Balancer, requests: int) -> None:
    """What run() and replay() do, with the journal drained as a reader would."""
    for count, event in enumerate(traffic(requests)):
        balancer.handle(event)
        if count % 10_000 == 0:
            balancer.take_steps()
    balancer.take_steps()


STYLES: dict[str, tuple[bool, Callable[[Balancer, int], None]]] = {
    "poll next_deadline()": (False, poll),
    "Tick every 10 ms": (False, tick),
    "run()/replay() (blind)": (True, blind),
}


#: What the walk below does not count: code and classes are shared, not held.
SHARED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)


def held_bytes(root: object) -> int:
    """The bytes of every object reachable from ``root`` (each counted once).

    A walk rather than tracemalloc: tracing every allocation slows the core
    tenfold, too slow for 10^6 requests in each style within the bench budget.
    """
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, SHARED):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def measure(record: bool, drive: Callable[[Balancer, int], None], requests: int) -> tuple[int, int]:
    """The bytes the balancer still holds after ``requests``, and its heap's length."""
    balancer = Balancer(CONFIG, record=record)
    drive(balancer, requests)
    gc.collect()
    return held_bytes(balancer), len(balancer._timers)


def main() -> None:
    began = time.monotonic()
    counts = [10**3, 10**4] if quick() else [10**4, 10**5, 10**6]
    section = Section(
        key="core_memory",
        order=11,
        title="1b. The core's memory after many requests",
        method=(
            f"`bench/core_memory.py`: a fresh `Balancer` (failover, first-chunk deadline, "
            f"breakers) serves N requests with {CONCURRENT} in flight at a time; then the "
            "bytes of every object it still holds are counted (a walk of its object graph "
            "after a `gc.collect()`). Memory is deterministic here, so each cell is one run. "
            "It must track the requests in flight, not the requests served, whatever the "
            "driving style."
        ),
    )
    table = Table(
        "bytes held, and deadline-heap entries", ["driving style", *map("{:,}".format, counts)]
    )
    worst = 0
    for name, (record, drive) in STYLES.items():
        cells = []
        for requests in counts:
            held, heap = measure(record, drive, requests)
            worst = max(worst, held)
            cells.append(f"{held / 1024:,.0f} KiB, {heap} entries")
        table.rows.append([name, *cells])
    section.tables.append(table)
    section.figures["core.memory_max_kib"] = {
        "median": worst / 1024,
        "low": worst / 1024,
        "high": worst / 1024,
    }
    publish(section, began)


if __name__ == "__main__":
    main()
