"""A burst larger than the client's connections must not look like sick backends.

Waiting for one of the client's own connections is the client's queue: it must
never count as a backend timeout, feed a breaker or show in a backend's
failures (spec/behaviour.md section 8.3, spec/transports.md section 7). Before
the fix, every request beyond ``max_connections`` timed out against the
healthy backend it waited for, and every healthy breaker opened.
"""

from __future__ import annotations

import io
import threading
from collections import Counter

import anyio
import pytest

from lbcore import BreakerState, Stats, decode_trace, verify_trace
from lbtransports import (
    AsyncClient,
    Client,
    ClientConfig,
    FailoverError,
    LoadBalancerError,
    LocalSaturationError,
)
from lbtransports.testing import Fail, Reset, Stream

from .harness import ASYNC_MODES, REQUEST, BackendPlan, client_config, start_backends

#: Three faulty backends first, then healthy ones, as the failover order.
FAULTY = ("refused", "unavailable", "reset")
HEALTHY = ("h1", "h2", "h3", "h4")
#: 20 chunks 4 ms apart: about 80 ms a stream, so waves of ``CONNECTIONS``
#: streams queue well past the first-chunk timeout.
ANSWER = Stream(20, delay_ms=4)
CONNECTIONS = 8
REQUESTS = 240
FIRST_CHUNK_MS = 1_000


def _plans() -> list[BackendPlan]:
    return [
        BackendPlan("refused", refused=True),
        BackendPlan("unavailable", default=Fail(503)),
        BackendPlan("reset", default=Reset(after_chunks=0, before_headers=True)),
        *(BackendPlan(name, default=ANSWER) for name in HEALTHY),
    ]


def _config(backends: object, plans: list[BackendPlan]) -> ClientConfig:
    return client_config(
        backends,  # type: ignore[arg-type]
        plans,
        settings={
            "timeout_ms": FIRST_CHUNK_MS,
            "circuit_breaker_enabled": True,
            "circuit_breaker_failure_threshold": 3,
        },
        idle_timeout_ms=5_000,
    )


def _check(outcomes: list[tuple[str, str | None]], stats: Stats, trace: bytes) -> None:
    assert len(outcomes) == REQUESTS
    kinds = Counter(kind for kind, _ in outcomes)
    # A healthy backend can serve every request: none may fail.
    assert kinds == {"ok": REQUESTS}, kinds
    for name in HEALTHY:
        metrics = stats.backend_metrics.get(name)
        if metrics is not None:
            assert metrics.failures == 0 and metrics.timeouts == 0, (name, metrics)
        breaker = stats.circuit_breaker_states.get(name)
        assert breaker is None or breaker.state is BreakerState.CLOSED, (name, breaker)
    assert stats.in_flight == 0
    assert verify_trace(trace) is None
    _, steps = decode_trace(trace)
    # No first-chunk timeout was charged to a healthy backend.
    cancelled = [
        action
        for step in steps
        for action in step.actions
        if type(action).__name__ == "CancelAttempt" and action.backend in HEALTHY  # type: ignore[union-attr]
    ]
    assert cancelled == []


@pytest.mark.parametrize("mode", ASYNC_MODES)
def test_a_burst_beyond_the_connections_waits_instead_of_failing(mode: str) -> None:
    plans = _plans()
    trace = io.BytesIO()
    outcomes: list[tuple[str, str | None]] = []

    async def one(client: AsyncClient) -> None:
        try:
            async with client.chat(REQUEST) as stream:
                async for _ in stream:
                    pass
            outcomes.append(("ok", stream.backend))
        except LoadBalancerError as error:
            outcomes.append((type(error).__name__, None))

    async def main(config: ClientConfig) -> Stats:
        async with AsyncClient(config, trace=trace, max_connections=CONNECTIONS) as client:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    for _ in range(REQUESTS):
                        group.start_soon(one, client)
            return client.stats()

    with start_backends(plans) as backends:
        stats = anyio.run(main, _config(backends, plans), backend=mode)
        backends.wait_idle(timeout=5.0)
    _check(outcomes, stats, trace.getvalue())
    _, steps = decode_trace(trace.getvalue())
    held = sum(1 for step in steps if type(step.event).__name__ == "AttemptHeld")
    assert held > 0, "the burst never had to wait: it tests nothing"


def test_a_burst_of_threads_on_the_sync_client() -> None:
    plans = _plans()
    trace = io.BytesIO()
    outcomes: list[tuple[str, str | None]] = []
    lock = threading.Lock()
    threads, per_thread = 48, REQUESTS // 48

    def work(client: Client) -> None:
        for _ in range(per_thread):
            try:
                with client.chat(REQUEST) as stream:
                    for _ in stream:
                        pass
                result: tuple[str, str | None] = ("ok", stream.backend)
            except LoadBalancerError as error:
                result = (type(error).__name__, None)
            with lock:
                outcomes.append(result)

    with start_backends(plans) as backends:
        with Client(_config(backends, plans), trace=trace, pool_size=CONNECTIONS) as client:
            workers = [threading.Thread(target=work, args=(client,)) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=60)
            assert not any(worker.is_alive() for worker in workers)
            stats = client.stats()
        backends.wait_idle(timeout=5.0)
    _check(outcomes, stats, trace.getvalue())


@pytest.mark.parametrize("mode", ASYNC_MODES)
def test_no_free_connection_in_time_is_local_saturation(mode: str) -> None:
    """One connection, held by a slow stream: the next request gives up locally."""
    plans = [BackendPlan("slow", default=Stream(3, delay_ms=400)), BackendPlan("spare")]
    trace = io.BytesIO()
    errors: list[BaseException] = []

    async def second(client: AsyncClient) -> None:
        await anyio.sleep(0.1)  # the first request holds the one connection by now
        try:
            await client.complete(REQUEST)
        except LoadBalancerError as error:
            errors.append(error)

    async def main(config: ClientConfig) -> Stats:
        async with AsyncClient(
            config, trace=trace, max_connections=1, pool_timeout_ms=200
        ) as client:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as group:
                    group.start_soon(client.complete, REQUEST)
                    group.start_soon(second, client)
            return client.stats()

    with start_backends(plans) as backends:
        config = client_config(
            backends, plans, settings={"timeout_ms": 1_000, "circuit_breaker_enabled": True}
        )
        stats = anyio.run(main, config, backend=mode)
        backends.wait_idle(timeout=5.0)
        received = len(backends["slow"].received)
    [error] = errors
    assert isinstance(error, LocalSaturationError)
    assert not isinstance(error, FailoverError)
    assert (error.backend, error.limit, error.retryable) == ("slow", 1, True)
    assert "backend 'slow'" in str(error) and "all 1 in use" in str(error)
    # Nothing reached the backend, and nothing was charged to it.
    assert received == 1
    slow = stats.backend_metrics["slow"]
    assert (slow.requests, slow.successes, slow.failures, slow.timeouts) == (1, 1, 0, 0)
    assert "slow" not in stats.circuit_breaker_states
    assert verify_trace(trace.getvalue()) is None


def test_a_wait_for_a_slot_longer_than_the_idle_timeout_is_not_a_timeout() -> None:
    """The idle timer, like the first-chunk one, starts once the attempt can go out."""
    plans = [BackendPlan("busy", default=Stream(3, delay_ms=250)), BackendPlan("spare")]
    trace = io.BytesIO()

    async def main(config: ClientConfig) -> Stats:
        async with AsyncClient(config, trace=trace, max_connections=1) as client:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as group:
                    group.start_soon(client.complete, REQUEST)
                    await anyio.sleep(0.05)
                    group.start_soon(client.complete, REQUEST)
            return client.stats()

    with start_backends(plans) as backends:
        config = client_config(
            backends,
            plans,
            settings={"timeout_ms": 2_000, "circuit_breaker_enabled": True},
            idle_timeout_ms=400,  # the second request waits about 750 ms for the slot
        )
        stats = anyio.run(main, config)
        backends.wait_idle(timeout=5.0)
    busy = stats.backend_metrics["busy"]
    assert (busy.successes, busy.failures, busy.timeouts) == (2, 0, 0)
    _, steps = decode_trace(trace.getvalue())
    events = [type(step.event).__name__ for step in steps]
    assert "AttemptHeld" in events and "AttemptTimedOut" not in events
