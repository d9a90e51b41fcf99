"""Closing a client and collecting its streams: connections end, nothing deadlocks.

Closing a client closes its connections whatever else still holds their pools,
and a stream the garbage collector finalizes, even inside the client's guarded
section on the thread holding the guard, never waits for that guard.
"""

from __future__ import annotations

import gc
import io
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from lbcore import Stats, verify_trace
from lbtransports import AsyncClient, Client, ClientConfig
from lbtransports.testing import Reset, Stream
from lbtransports.wire import Chunk

from .harness import (
    ASYNC_MODES,
    MODES,
    REQUEST,
    BackendPlan,
    client_config,
    decision_lines,
    start_backends,
)


def test_sync_close_closes_a_pooled_connection_even_if_a_failure_still_holds_its_pool() -> None:
    # urllib3's exception for the reset keeps the pool alive in a reference
    # cycle; the retry's connection goes back to that same pool. Dropping the
    # pool (all that Session.close does in urllib3 2) would leave that
    # connection open until the next garbage collection.
    plans = [
        BackendPlan("a", script=[Reset(before_headers=True)], default=Stream(1)),
        BackendPlan("b"),
    ]
    settings = {"failover_retry_count": 2}
    with start_backends(plans) as backends:
        gc.collect()
        gc.disable()  # what is left in cycles stays there until the test ends
        try:
            with Client(client_config(backends, plans, settings=settings)) as client:
                answer = client.complete(REQUEST)
            backends.wait_idle(timeout=2.0)
        finally:
            gc.enable()
    assert (answer.backend, answer.text) == ("a", "a-0 ")


# A collection finalizes everything in the cycle in no set order: the socket's own
# finalizer may run before the generator's closes it, and warn that it is unclosed.
@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_a_started_stream_collected_under_the_guard_does_not_deadlock() -> None:
    plans = [BackendPlan("a", default=Stream(20, delay_ms=20))]
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin")
        with Client(config, trace=trace) as client:
            stream = client.chat(REQUEST)
            assert next(stream).text == "a-0 "
            # Only the collector can free it now: it sits in a reference cycle.
            cycle: list[object] = [stream]
            cycle.append(cycle)
            del stream, cycle

            def collect_while_guarded() -> None:
                with client._link._locked():  # how every guarded section is entered
                    gc.collect()

            gc.disable()  # the collection must happen under the guard, not before
            try:
                worker = threading.Thread(target=collect_while_guarded, daemon=True)
                worker.start()
                worker.join(timeout=5)
            finally:
                gc.enable()
            assert not worker.is_alive(), "the stream's finalizer deadlocked on the guard"
            assert client.stats().in_flight == 0
        backends.wait_idle(timeout=3.0)
    assert decision_lines(trace.getvalue())[-1] == (
        "RequestCancelled -> CancelAttempt#1(cancelled), RequestAborted"
    )


# -- closing under running streams ---------------------------------------------------

_STREAMS = 40
_CLOSE_PLANS = [
    BackendPlan("a", default=Stream(12, delay_ms=15)),
    BackendPlan("b", default=Stream(12, delay_ms=15)),
]
_CLOSE_SETTINGS = {"failover_retry_count": 2, "circuit_breaker_enabled": True}


def _outcome_name(error: BaseException | None) -> str:
    return "answered" if error is None else type(error).__name__


def _close_race_sync(config: ClientConfig, trace: Path) -> tuple[Counter[str], Stats]:
    client = Client(config, trace=trace)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    streaming = threading.Barrier(_STREAMS + 1, timeout=10)

    def one() -> None:
        error: BaseException | None = None
        try:
            with client.chat(REQUEST) as stream:
                for index, _ in enumerate(stream):
                    if index == 0:
                        streaming.wait()
        except BaseException as raised:
            error = raised
        with lock:
            outcomes[_outcome_name(error)] += 1

    workers = [threading.Thread(target=one, daemon=True) for _ in range(_STREAMS)]
    for worker in workers:
        worker.start()
    streaming.wait()  # every stream has its first chunk and is reading on
    closer = threading.Thread(target=client.close, daemon=True)
    closer.start()
    for worker in [*workers, closer]:
        worker.join(timeout=10)
        assert not worker.is_alive(), "a stream or the close hung"
    return outcomes, client.stats()


async def _close_race_async(
    config: ClientConfig, trace: Path, connections: int
) -> tuple[Counter[str], Stats]:
    client = AsyncClient(config, trace=trace, max_connections=connections)
    outcomes: Counter[str] = Counter()
    first_chunks = 0
    streaming = anyio.Event()

    async def one() -> None:
        nonlocal first_chunks
        error: BaseException | None = None
        try:
            async with client.chat(REQUEST) as stream:
                async for index, _ in _enumerated(stream):
                    if index == 0:
                        first_chunks += 1
                        if first_chunks == min(connections, _STREAMS):
                            streaming.set()
        except Exception as raised:
            error = raised
        outcomes[_outcome_name(error)] += 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(_STREAMS):
                group.start_soon(one)
            await streaming.wait()
            group.start_soon(client.aclose)
    # The last attempt out closed the pools.
    assert not client._pools
    return outcomes, client.stats()


async def _enumerated(stream: AsyncIterator[Chunk]) -> AsyncIterator[tuple[int, Chunk]]:
    index = 0
    async for chunk in stream:
        yield index, chunk
        index += 1


#: Every stream reading when the client closes; or (the async client alone has
#: connection slots to wait for) most of them waiting for one.
_RACES = [
    *((mode, _STREAMS) for mode in MODES),
    *((mode, 8) for mode in ASYNC_MODES),
]


@pytest.mark.parametrize(("mode", "connections"), _RACES)
def test_closing_under_running_streams_lets_them_end_and_charges_no_backend(
    mode: str, connections: int, tmp_path: Path
) -> None:
    trace = tmp_path / "trace.jsonl"
    with start_backends(_CLOSE_PLANS) as backends:
        config = client_config(backends, _CLOSE_PLANS, settings=_CLOSE_SETTINGS)
        if mode == "sync":
            outcomes, stats = _close_race_sync(config, trace)
        else:
            outcomes, stats = anyio.run(_close_race_async, config, trace, connections, backend=mode)
        backends.wait_idle(timeout=3.0)
    # Streams that were reading when the client closed end as the spec says:
    # answered, or ClientClosedError, never a backend's failure or a closed file.
    assert set(outcomes) <= {"answered", "ClientClosedError"}, outcomes
    assert sum(outcomes.values()) == _STREAMS
    assert outcomes["answered"] >= min(connections, _STREAMS)
    if connections < _STREAMS:
        # Those that got a slot only after the close could not open a connection.
        assert outcomes["ClientClosedError"] > 0
    assert stats.in_flight == 0
    for name, metrics in stats.backend_metrics.items():
        assert (name, metrics.failures, metrics.timeouts) == (name, 0, 0)
    assert all(breaker.state == "closed" for breaker in stats.circuit_breaker_states.values())
    # What was recorded before the close replays.
    assert verify_trace(trace.read_bytes()) is None
