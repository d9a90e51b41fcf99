"""Many requests at once against backends that misbehave: every request ends,
nothing is mixed up, the stats add up, and the interleaved trace still replays.
"""

from __future__ import annotations

import io
import threading
from collections import Counter

import anyio
import pytest

from lbcore import Stats, decode_trace, verify_trace
from lbtransports import AsyncClient, Client, ClientConfig, LoadBalancerError
from lbtransports.testing import Behaviour, Fail, Reset, Stall, Stream

from .harness import ASYNC_MODES, REQUEST, BackendPlan, client_config, start_backends

#: A mix that exercises retries, failovers, mid-stream failures and stalls.
FLAKY: tuple[Behaviour, ...] = (
    Stream(4, delay_ms=2),
    Fail(503),
    Stream(3),
    Reset(after_chunks=1),
    Fail(429),
    Stall(after_chunks=0),
    Stream(2, delay_ms=5),
)


def _plans(requests: int) -> list[BackendPlan]:
    # a cycles through the mix; b is slow but sound; c refuses every connection.
    return [
        BackendPlan("a", script=FLAKY * (requests // len(FLAKY) + 1), default=Stream(2)),
        BackendPlan("b", "anthropic", default=Stream(3, delay_ms=3)),
        BackendPlan("c", refused=True),
    ]


def _config(backends: object, plans: list[BackendPlan]) -> ClientConfig:
    return client_config(
        backends,  # type: ignore[arg-type]
        plans,
        # Generous timers: hundreds of requests share two cores with the backends,
        # and a healthy backend must never look slow just because the machine is busy.
        settings={"failover_retry_count": 1, "timeout_ms": 2_000},
        idle_timeout_ms=3_000,
    )


def _check(outcomes: list[tuple[str, str | None, str]], stats: Stats, trace: bytes, n: int) -> None:
    assert len(outcomes) == n
    for kind, backend, text in outcomes:
        if kind == "ok":
            # Every chunk of an answer comes from the backend that answered.
            assert backend is not None
            assert text and all(piece.startswith(f"{backend}-") for piece in text.split())
    assert stats.in_flight == 0
    completed = sum(1 for kind, _, _ in outcomes if kind == "ok")
    successes = sum(m.successes for m in stats.backend_metrics.values())
    assert successes == completed
    # Failover counts successful requests (spec/behaviour.md section 10.2).
    assert stats.total_requests == sum(stats.profile_counts.values()) == completed
    assert verify_trace(trace) is None
    _, steps = decode_trace(trace)
    started = [s for s in steps if type(s.event).__name__ == "RequestStarted"]
    assert len(started) == n
    terminals = Counter(
        type(action).__name__
        for step in steps
        for action in step.actions
        if type(action).__name__ in {"RequestCompleted", "RequestFailed", "RequestAborted"}
    )
    assert sum(terminals.values()) == n
    assert terminals["RequestCompleted"] == completed
    # Every attempt the core started was counted against its backend, and no other.
    starts = Counter(
        action.backend  # type: ignore[attr-defined]
        for step in steps
        for action in step.actions
        if type(action).__name__ == "StartAttempt"
    )
    assert {name: m.requests for name, m in stats.backend_metrics.items()} == dict(starts)


@pytest.mark.parametrize("mode", ASYNC_MODES)
def test_200_concurrent_async_requests_all_end(mode: str) -> None:
    n = 200
    plans = _plans(n)
    trace = io.BytesIO()
    outcomes: list[tuple[str, str | None, str]] = []

    async def one(client: AsyncClient) -> None:
        texts: list[str] = []
        try:
            async with client.chat(REQUEST) as stream:
                async for chunk in stream:
                    texts.append(chunk.text)
                outcomes.append(("ok", stream.backend, "".join(texts)))
        except LoadBalancerError as error:
            outcomes.append((type(error).__name__, None, "".join(texts)))

    async def main(config: ClientConfig) -> Stats:
        async with AsyncClient(config, trace=trace, max_connections=n) as client:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as group:
                    for _ in range(n):
                        group.start_soon(one, client)
            return client.stats()

    with start_backends(plans) as backends:
        stats = anyio.run(main, _config(backends, plans), backend=mode)
        backends.wait_idle(timeout=5.0)
    _check(outcomes, stats, trace.getvalue(), n)
    assert sum(1 for kind, _, _ in outcomes if kind == "ok") >= n // 2


def test_16_threads_share_one_sync_client() -> None:
    threads, per_thread = 16, 8
    n = threads * per_thread
    plans = _plans(n)
    trace = io.BytesIO()
    outcomes: list[tuple[str, str | None, str]] = []
    lock = threading.Lock()

    def work(client: Client) -> None:
        for _ in range(per_thread):
            texts: list[str] = []
            try:
                with client.chat(REQUEST) as stream:
                    texts.extend(chunk.text for chunk in stream)
                    result = ("ok", stream.backend, "".join(texts))
            except LoadBalancerError as error:
                result = (type(error).__name__, None, "".join(texts))
            with lock:
                outcomes.append(result)

    with start_backends(plans) as backends:
        with Client(_config(backends, plans), trace=trace, pool_size=threads) as client:
            workers = [threading.Thread(target=work, args=(client,)) for _ in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=60)
            assert not any(worker.is_alive() for worker in workers), "a request hung"
            stats = client.stats()
        backends.wait_idle(timeout=5.0)
    _check(outcomes, stats, trace.getvalue(), n)
    assert sum(1 for kind, _, _ in outcomes if kind == "ok") >= n // 2
