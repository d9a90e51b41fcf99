"""The core's queue over real sockets: a burst beyond ``max_concurrent`` waits and is
served, a queue timeout is a typed error, a cancelled waiter frees its place
(spec/transports.md, "Queueing"; spec/behaviour.md §18)."""

from __future__ import annotations

import io
import signal
import threading
import time
from typing import Any

import anyio
import pytest

from lbcore import Balancer, decode_trace, verify_trace
from lbtransports import (
    AsyncClient,
    Client,
    ClientConfig,
    LoadBalancerError,
    QueueFullError,
    QueueTimeoutError,
)
from lbtransports.testing import LocalBackends, Stream

from .harness import ASYNC_MODES, REQUEST, BackendPlan, client_config, start_backends

Result = tuple[str, str]  # ("ok", backend) or (error class name, "")


def _config(backends: LocalBackends, plans: list[BackendPlan], **settings: Any) -> ClientConfig:
    config = client_config(backends, plans, settings=settings, idle_timeout_ms=5_000)
    mapping: dict[str, Any] = {
        "strategy": "failover",
        "profile_name": "lb",
        "settings": settings,
        "connect_timeout_ms": 2_000,
        "idle_timeout_ms": 5_000,
        "backends": [
            {
                "name": t.name,
                "provider": t.provider,
                "model": t.model,
                "base_url": backends[t.name].base_url,
                "credential": {"key": f"sk-{t.name}-do-not-leak-0123456789"},
                "max_concurrent": 2,
            }
            for t in config.targets
        ],
    }
    return ClientConfig.from_mapping(mapping)


def _burst(mode: str, config: ClientConfig, n: int, trace: io.BytesIO) -> list[Result]:
    results: list[Result] = []
    lock = threading.Lock()
    if mode == "sync":
        with Client(config, trace=trace) as client:

            def one() -> None:
                try:
                    with client.chat(REQUEST) as stream:
                        for _ in stream:
                            pass
                        result: Result = ("ok", stream.backend or "")
                except LoadBalancerError as error:
                    result = (type(error).__name__, "")
                with lock:
                    results.append(result)

            threads = [threading.Thread(target=one) for _ in range(n)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=30)
            assert not any(t.is_alive() for t in threads), "a request hung"
        return results

    async def main() -> None:
        async with AsyncClient(config, trace=trace) as client:

            async def one() -> None:
                try:
                    async with client.chat(REQUEST) as stream:
                        async for _ in stream:
                            pass
                        results.append(("ok", stream.backend or ""))
                except LoadBalancerError as error:
                    results.append((type(error).__name__, ""))

            with anyio.fail_after(30):
                async with anyio.create_task_group() as group:
                    for _ in range(n):
                        group.start_soon(one)

    anyio.run(main, backend=mode)
    return results


def _most_in_flight(trace: bytes) -> dict[str, int]:
    """Replay the trace's events and note the most slots each backend ever had taken."""
    header, steps = decode_trace(trace)
    balancer = Balancer(header.config)
    most: dict[str, int] = {}
    for step in steps:
        balancer.handle(step.event)
        for name, count in balancer.stats().backend_slots_used.items():
            most[name] = max(most.get(name, 0), count)
    return most


def _actions(trace: bytes, name: str) -> int:
    _, steps = decode_trace(trace)
    return sum(type(a).__name__ == name for s in steps for a in s.actions)


PLANS = [
    BackendPlan("a", default=Stream(3, delay_ms=40)),
    BackendPlan("b", "anthropic", default=Stream(3, delay_ms=40)),
]


def test_a_burst_beyond_the_limits_waits_in_the_queue_and_is_served(mode: str) -> None:
    trace = io.BytesIO()
    with start_backends(PLANS) as backends:
        results = _burst(mode, _config(backends, PLANS), 12, trace)
        backends.wait_idle(timeout=5.0)
    data = trace.getvalue()
    assert sorted(kind for kind, _ in results) == ["ok"] * 12
    assert verify_trace(data) is None
    assert _actions(data, "RequestQueued") >= 8  # 4 slots, 12 requests
    assert _actions(data, "RequestDequeued") == _actions(data, "RequestQueued")
    assert _most_in_flight(data) == {"a": 2, "b": 2}
    # The pools are sized from the limits: no attempt ever waited for a connection.
    assert _actions(data, "SkipBackend") >= 8
    _, steps = decode_trace(data)
    assert not [s for s in steps if type(s.event).__name__ == "AttemptHeld"]


SLOW = [
    BackendPlan("a", default=Stream(2, delay_ms=1_500)),
    BackendPlan("b", "anthropic", default=Stream(2, delay_ms=1_500)),
]


def test_a_queue_timeout_ends_the_request_with_its_typed_error(mode: str) -> None:
    trace = io.BytesIO()
    with start_backends(SLOW) as backends:
        config = _config(backends, SLOW, queue_timeout_ms=200)
        began = time.monotonic()
        results = _burst(mode, config, 6, trace)
        elapsed = time.monotonic() - began
        backends.wait_idle(timeout=10.0)
    kinds = sorted(kind for kind, _ in results)
    assert kinds == ["QueueTimeoutError"] * 2 + ["ok"] * 4
    assert _actions(trace.getvalue(), "RequestQueued") == 2
    assert elapsed < 10  # ends once the slow answers end, not later
    assert QueueTimeoutError.__mro__[1] is LoadBalancerError


@pytest.mark.parametrize("mode", ASYNC_MODES)
def test_a_cancelled_waiter_frees_its_place(mode: str) -> None:
    # Async: the waiting task is cancelled. The sync client is below, interrupted.
    trace = io.BytesIO()
    outcome: dict[str, str] = {}

    async def main(config: ClientConfig) -> None:
        async with AsyncClient(config, trace=trace) as client:

            async def served(name: str) -> None:
                try:
                    async with client.chat(REQUEST, request_id=name) as stream:
                        async for _ in stream:
                            pass
                    outcome[name] = "ok"
                except QueueFullError:
                    outcome[name] = "QueueFullError"

            async def given_up() -> None:
                with anyio.move_on_after(0.3):
                    async with client.chat(REQUEST, request_id="gives-up") as stream:
                        async for _ in stream:
                            pass
                outcome["gives-up"] = "cancelled"

            with anyio.fail_after(30):
                async with anyio.create_task_group() as group:
                    for name in ("r1", "r2", "r3", "r4"):
                        group.start_soon(served, name)
                    await anyio.sleep(0.1)
                    group.start_soon(given_up)
                    await anyio.sleep(0.5)
                    # Had the cancelled request kept its place, this one would find
                    # the queue (max_queued=1) full.
                    group.start_soon(served, "late")

    with start_backends(SLOW) as backends:
        anyio.run(main, _config(backends, SLOW, max_queued=1), backend=mode)
        backends.wait_idle(timeout=10.0)
    assert outcome == dict.fromkeys(("r1", "r2", "r3", "r4", "late"), "ok") | {
        "gives-up": "cancelled"
    }
    data = trace.getvalue()
    assert verify_trace(data) is None
    assert _actions(data, "RequestAborted") == 1


class _GiveUp(Exception):
    """Raised by a timer signal in the main thread, where the waiting request blocks."""


def test_a_sync_waiter_interrupted_frees_its_place() -> None:
    # The sync client's waiting thread is the caller's own: an interrupt there
    # (here a timer signal, in the main thread) ends the wait and cancels the request.
    trace = io.BytesIO()
    outcome: dict[str, str] = {}
    lock = threading.Lock()

    def served(client: Client, name: str) -> None:
        try:
            with client.chat(REQUEST, request_id=name) as stream:
                for _ in stream:
                    pass
            result = "ok"
        except LoadBalancerError as error:
            result = type(error).__name__
        with lock:
            outcome[name] = result

    def give_up(signum: int, frame: object) -> None:
        raise _GiveUp

    with start_backends(SLOW) as backends:
        with Client(_config(backends, SLOW, max_queued=1), trace=trace) as client:
            threads = [
                threading.Thread(target=served, args=(client, n)) for n in ("r1", "r2", "r3", "r4")
            ]
            for thread in threads:
                thread.start()
            time.sleep(0.2)
            previous = signal.signal(signal.SIGALRM, give_up)
            try:
                signal.setitimer(signal.ITIMER_REAL, 0.3)
                with pytest.raises(_GiveUp), client.chat(REQUEST, request_id="gives-up") as stream:
                    for _ in stream:
                        pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            late = threading.Thread(target=served, args=(client, "late"))
            late.start()
            for thread in [*threads, late]:
                thread.join(timeout=30)
            assert not any(t.is_alive() for t in [*threads, late]), "a request hung"
        backends.wait_idle(timeout=10.0)
    assert outcome == dict.fromkeys(("r1", "r2", "r3", "r4", "late"), "ok")
    data = trace.getvalue()
    assert verify_trace(data) is None
    assert _actions(data, "RequestAborted") == 1
    assert _actions(data, "RequestQueued") == 2
