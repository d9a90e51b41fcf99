"""Retry-After, total deadline and stream idle timeout as a caller meets them (real sockets).

The core decides (spec/behaviour.md §19, §22); these tests check that both
clients act on its decisions on time: a backend that answered 429 with
``Retry-After: 2`` gets no request for 2 s and is used again afterwards; a
request past its total deadline, or a stream gone quiet, ends with its own
typed exception well before any other timer would have ended it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio

from lbcore import Stats
from lbtransports import (
    AsyncClient,
    Client,
    ClientConfig,
    Completion,
    DeadlineExceededError,
    FailoverError,
    LoadBalancerError,
    StreamIdleError,
)
from lbtransports.testing import Fail, Hang, Stall, Stream

from .harness import REQUEST, BackendPlan, client_config, start_backends

#: How long the loop below keeps sending before it gives up on seeing a used again.
USED_AGAIN_BY_S = 4.0


def _sent_until_a_serves(
    ask: Callable[[], str], pause: Callable[[float], None]
) -> list[tuple[float, str]]:
    """Send at +0, +0.5, then every 0.25 s until a request lands on a (bounded)."""
    began = time.monotonic()
    sent: list[tuple[float, str]] = []
    while True:
        elapsed = time.monotonic() - began
        sent.append((elapsed, ask()))
        if sent[-1][1] == "a" or elapsed > USED_AGAIN_BY_S:
            return sent
        pause(0.5 if len(sent) == 1 else 0.25)


def _run(mode: str, config: ClientConfig, body: Callable[[Any], Any]) -> Any:
    """``body(client)`` with ``mode``'s client (a coroutine function for the async ones)."""
    if mode == "sync":
        with Client(config) as client:
            return body(client)

    async def main() -> Any:
        async with AsyncClient(config) as client:
            with anyio.fail_after(30):
                return await body(client)

    return anyio.run(main, backend=mode)


def test_retry_after_keeps_every_request_off_the_backend_for_that_long(mode: str) -> None:
    # b refuses every request (400), so each rotation ends and the next one starts at a
    # again: only the cooldown keeps requests off a.
    plans = [
        BackendPlan("a", script=(Fail(429, retry_after="2"),), default=Stream(2)),
        BackendPlan("b", default=Fail(400)),
    ]
    errors: list[FailoverError] = []
    cooling: list[dict[str, int]] = []

    def outcome(result: Completion | FailoverError, stats: Stats) -> str:
        cooling.append(stats.cooldown_until)
        if isinstance(result, FailoverError):
            errors.append(result)
            return "failed"
        return result.backend

    with start_backends(plans) as backends:
        config = client_config(backends, plans, settings={"failover_retry_count": 1})
        if mode == "sync":

            def body(client: Client) -> list[tuple[float, str]]:
                def ask() -> str:
                    try:
                        result: Completion | FailoverError = client.complete(REQUEST)
                    except FailoverError as error:
                        result = error
                    return outcome(result, client.stats())

                return _sent_until_a_serves(ask, time.sleep)

            sent = _run(mode, config, body)
        else:

            async def abody(client: AsyncClient) -> list[tuple[float, str]]:
                began = time.monotonic()
                result: list[tuple[float, str]] = []
                while True:
                    elapsed = time.monotonic() - began
                    try:
                        answer: Completion | FailoverError = await client.complete(REQUEST)
                    except FailoverError as error:
                        answer = error
                    result.append((elapsed, outcome(answer, client.stats())))
                    if result[-1][1] == "a" or elapsed > USED_AGAIN_BY_S:
                        return result
                    await anyio.sleep(0.5 if len(result) == 1 else 0.25)

            sent = _run(mode, config, abody)
        received_by_a = len(backends["a"].received)
        backends.wait_idle(timeout=3.0)
    # The first request met the 429; the next ones skipped a while it cooled...
    assert set(cooling[0]) == {"a"}
    early = [backend for elapsed, backend in sent if elapsed < 1.5]
    assert len(early) >= 2 and set(early) == {"failed"}, sent
    skipped = errors[1].failures[0]
    assert (skipped.backend, skipped.failure.code, skipped.failure.status) == (
        "a",
        "cooling_down",
        429,
    )
    assert skipped.failure.retry_after_ms is not None and skipped.failure.retry_after_ms <= 2000
    # ...and no longer: a serves again within the bound, having seen only the 429 before.
    assert sent[-1][1] == "a", sent
    assert 1.5 <= sent[-1][0] <= USED_AGAIN_BY_S, sent
    assert received_by_a == 2
    assert cooling[-1] == {}


def _failure_of(mode: str, config: ClientConfig) -> tuple[LoadBalancerError | None, float]:
    def body(client: Client) -> LoadBalancerError | None:
        try:
            client.complete(REQUEST)
        except LoadBalancerError as error:
            return error
        return None

    async def abody(client: AsyncClient) -> LoadBalancerError | None:
        try:
            await client.complete(REQUEST)
        except LoadBalancerError as error:
            return error
        return None

    began = time.monotonic()
    error = _run(mode, config, body if mode == "sync" else abody)
    return error, time.monotonic() - began


def test_the_total_deadline_ends_a_request_across_a_failover(mode: str) -> None:
    # a fails at once, b never answers: only the core's 800 ms total deadline can end it
    # (the client's own idle timer is 10 s).
    plans = [BackendPlan("a", default=Fail(503)), BackendPlan("b", default=Hang())]
    with start_backends(plans) as backends:
        config = client_config(
            backends,
            plans,
            settings={"failover_retry_count": 1, "deadline_ms": 800},
            idle_timeout_ms=10_000,
        )
        error, took = _failure_of(mode, config)
        backends.wait_idle(timeout=3.0)
    assert isinstance(error, DeadlineExceededError), repr(error)
    assert [f.backend for f in error.failures] == ["a"]
    assert error.retryable
    assert took < 5.0  # ends near 0.8 s, not after the client's 10 s idle timer


def test_a_stream_gone_quiet_ends_with_the_core_idle_timeout(mode: str) -> None:
    plans = [BackendPlan("a", default=Stall(after_chunks=2)), BackendPlan("b")]
    with start_backends(plans) as backends:
        config = client_config(
            backends, plans, settings={"idle_timeout_ms": 500}, idle_timeout_ms=10_000
        )
        error, took = _failure_of(mode, config)
        backends.wait_idle(timeout=3.0)
    assert isinstance(error, StreamIdleError), repr(error)
    assert error.backend == "a" and error.chunks_delivered == 2
    assert error.failure.code == "idle_timeout"
    assert took < 5.0  # not the client's 10 s
