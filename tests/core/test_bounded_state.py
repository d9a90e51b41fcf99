"""The core's state is bounded by the requests in flight, not by the requests served.

Each driving style a transport may use is run for 100,000 requests: polling
``next_deadline()`` after every event, ticking on a schedule of its own without
ever asking, and feeding events blind as ``run()`` and ``replay()`` do. After
each, the armed-deadline heap and every other container the balancer holds
must be no larger than a constant that does not depend on the request count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized

import pytest

from lbcore import (
    AttemptSucceeded,
    Balancer,
    ChunkReceived,
    Event,
    RequestStarted,
    Tick,
)
from lbcore._balancer import FINISHED_MEMORY

from .scenarios import config

REQUESTS = 100_000
#: In flight at once: each request starts before the one CONCURRENT earlier ends.
CONCURRENT = 8
#: No container may hold more than this, whatever the request count.
BOUND = FINISHED_MEMORY + 2 * CONCURRENT + 128

CONFIG = config("failover", "ab", timeout_ms=1_000, circuit_breaker_enabled=True)


def traffic(requests: int) -> Iterator[Event]:
    """Overlapping requests that each stream two chunks and succeed, 1 ms apart."""
    for n in range(requests + CONCURRENT):
        if n < requests:
            yield RequestStarted(at=n, request_id=f"r{n}")
        done = n - CONCURRENT
        if done >= 0:
            rid = f"r{done}"
            yield ChunkReceived(at=n, request_id=rid, attempt=1)
            yield ChunkReceived(at=n, request_id=rid, attempt=1)
            yield AttemptSucceeded(at=n, request_id=rid, attempt=1, output_tokens=2)


def sizes(balancer: Balancer) -> dict[str, int]:
    """The size of every container the balancer and its parts hold."""
    found: dict[str, int] = {}
    for owner, value in vars(balancer).items():
        if isinstance(value, Sized) and not isinstance(value, str | bytes):
            found[owner] = len(value)
        for name, inner in getattr(value, "__dict__", {}).items():
            if isinstance(inner, Sized) and not isinstance(inner, str | bytes):
                found[f"{owner}.{name}"] = len(inner)
    # The journal is handed out by take_steps(), which the blind driver drains.
    return {key: size for key, size in found.items() if not key.startswith("_journal")}


def assert_bounded(balancer: Balancer) -> None:
    too_big = {name: size for name, size in sizes(balancer).items() if size > BOUND}
    assert too_big == {}
    assert balancer.stats().in_flight == 0
    assert len(balancer._timers) <= 2 * CONCURRENT + 64 + 1


def drive_polling(balancer: Balancer) -> None:
    for event in traffic(REQUESTS):
        balancer.handle(event)
        balancer.next_deadline()


def drive_ticking(balancer: Balancer) -> None:
    for event in traffic(REQUESTS):
        balancer.handle(event)
        if isinstance(event, RequestStarted) and event.at % 10 == 0:
            balancer.handle(Tick(at=event.at))


def drive_blind(balancer: Balancer) -> None:
    for count, event in enumerate(traffic(REQUESTS)):
        balancer.handle(event)
        if count % 10_000 == 0:
            balancer.take_steps()


@pytest.mark.parametrize(
    ("record", "drive"),
    [(False, drive_polling), (False, drive_ticking), (True, drive_blind)],
    ids=["poll", "tick", "run"],
)
def test_state_stays_bounded(record: bool, drive: Callable[[Balancer], None]) -> None:
    balancer = Balancer(CONFIG, record=record)
    drive(balancer)
    assert_bounded(balancer)
