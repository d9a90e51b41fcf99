"""Memory the core holds after 10^4, 10^5 and 10^6 requests, in each driving style.

A transport may poll ``next_deadline()`` after every event, tick on a schedule
of its own, or feed events blind as ``run()`` and ``replay()`` do. Whatever
the style, the core's state must track the requests in flight, not the
requests served. Run: ``python bench/core_memory.py`` (about a minute).
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable, Iterator

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


def measure(record: bool, drive: Callable[[Balancer, int], None], requests: int) -> tuple[int, int]:
    """The bytes the balancer still holds after ``requests``, and its heap's length."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    balancer = Balancer(CONFIG, record=record)
    drive(balancer, requests)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held, len(balancer._timers)


def main() -> int:
    counts = [10**4, 10**5, 10**6] if "--quick" not in sys.argv else [10**3, 10**4]
    print(f"core state after N requests, {CONCURRENT} in flight at a time (tracemalloc)")
    print(f"{'driving style':<24} {'requests':>10} {'held':>10} {'heap entries':>13}")
    for name, (record, drive) in STYLES.items():
        for requests in counts:
            held, heap = measure(record, drive, requests)
            print(f"{name:<24} {requests:>10,} {held / 1024:>8.0f} KiB {heap:>13,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
