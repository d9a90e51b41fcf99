"""Serving on the test's own event loop (``async with``), on asyncio and on trio."""

from __future__ import annotations

import time

import anyio
import httpcore
import pytest

from lbcore import FailureKind
from lbtransports.testing import (
    Fail,
    Hang,
    KeepAlive,
    LocalBackends,
    Malformed,
    NoTerminator,
    Reset,
    Stall,
    Stream,
)
from lbtransports.wire import Chunk, Usage, stream_decoder

from .client import PROVIDERS, afetch, ending_chunks, text_chunks, wire_request

pytestmark = pytest.mark.anyio


def every_provider(*script: object, default: object = None) -> LocalBackends:
    backends = LocalBackends()
    for provider in PROVIDERS:
        backends.add(provider, provider, *script, default=default)  # type: ignore[arg-type]
    return backends


async def test_streams_and_json_answers_decode() -> None:
    backends = every_provider(Stream(3), default=Stream(2, input_tokens=4))
    async with backends, httpcore.AsyncConnectionPool() as pool:
        for backend in backends:
            streamed = await afetch(pool, backend)
            name = backend.name
            usage = Usage(input_tokens=11, output_tokens=3)
            assert streamed.chunks == text_chunks(Stream().texts(name)) + ending_chunks(name, usage)
            whole = await afetch(pool, backend, stream=False)
            assert whole.response is not None
            assert whole.response.text == f"{name}-0 {name}-1 "
            assert whole.response.usage == Usage(input_tokens=4, output_tokens=2)
        assert [b.connections_total for b in backends] == [1, 1, 1]  # keep-alive
    assert [b.errors for b in backends] == [(), (), ()]


async def test_faults_decode_into_their_failure_kinds() -> None:
    backends = every_provider(
        Fail(429, retry_after="2"), Reset(1), NoTerminator(1), Malformed(1, kind="sse")
    )
    async with backends, httpcore.AsyncConnectionPool() as pool:
        for backend in backends:
            limited = await afetch(pool, backend)
            assert limited.failure is not None
            assert (limited.failure.status, limited.failure.retry_after_ms) == (429, 2000)
            kinds = []
            for _ in range(3):
                out = await afetch(pool, backend)
                assert out.chunks == text_chunks(Stream().texts(backend.name)[:1])
                assert out.failure is not None
                kinds.append(out.failure.kind)
            assert kinds == [FailureKind.NETWORK, FailureKind.NETWORK, FailureKind.PROTOCOL]
    assert [b.errors for b in backends] == [(), (), ()]


@pytest.mark.parametrize("behaviour", [Hang(), Stall(2), KeepAlive(15)])
async def test_waiting_behaviours_stall_the_client_until_it_leaves(
    behaviour: Hang | Stall | KeepAlive,
) -> None:
    backends = every_provider(default=behaviour)
    async with backends:
        async with httpcore.AsyncConnectionPool() as pool:
            for backend in backends:
                # Keep-alive comments defeat a read timeout: stop reading after a while instead.
                stop_after = 0.2 if isinstance(behaviour, KeepAlive) else None
                out = await afetch(pool, backend, read_timeout=0.15, stop_after=stop_after)
                assert out.failure is None
                texts = Stream().texts(backend.name)
                if isinstance(behaviour, KeepAlive):
                    assert out.error is None and out.cut_short
                    assert b": keep-alive" in out.body
                    assert out.chunks == []
                else:
                    assert isinstance(out.error, httpcore.ReadTimeout)
                    expected = 2 if isinstance(behaviour, Stall) else 0
                    assert out.chunks == text_chunks(texts[:expected])
        await backends.wait_idle_async(timeout=2.0)
    assert [b.errors for b in backends] == [(), (), ()]


async def test_three_hundred_concurrent_connections() -> None:
    backends = LocalBackends()
    # The first 300 requests stall after one chunk, so all 300 connections are
    # open at once however slowly the clients start; later requests stream.
    backend = backends.add("many", "openai", *[Stall(1)] * 300, default=Stream())
    first_chunks = 0
    outcomes = []

    async def stalled_client() -> None:
        nonlocal first_chunks
        # A pool per client: one shared httpcore pool spends seconds on its
        # own bookkeeping at 300 connections, which is not what is tested here.
        async with httpcore.AsyncConnectionPool() as pool:
            http = wire_request(backend)
            async with pool.stream(
                http.method, http.url, headers=list(http.headers), content=http.body
            ) as response:
                decoder = stream_decoder("openai")
                # Reads on until cancelled: the cancellation then lands inside
                # httpcore's read and finishes its generators cleanly.
                async for piece in response.aiter_stream():
                    if decoder.feed(piece) == [Chunk(text="many-0 ")]:
                        first_chunks += 1

    async def full_client() -> None:
        async with httpcore.AsyncConnectionPool() as pool:
            outcomes.append(await afetch(pool, backend, read_timeout=5.0))

    async with backends:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as clients:
                for _ in range(300):
                    clients.start_soon(stalled_client)
                while first_chunks < 300 or backend.open_connections < 300:
                    await anyio.sleep(0.01)
                assert backend.open_connections == 300
                clients.cancel_scope.cancel()  # all 300 clients leave at once
            await backends.wait_idle_async(timeout=5.0)
            async with anyio.create_task_group() as clients:
                for _ in range(300):
                    clients.start_soon(full_client)
        await backends.wait_idle_async(timeout=5.0)
    assert len(outcomes) == 300
    assert all(o.failure is None and len(o.chunks) == 5 for o in outcomes)
    assert backend.connections_total == 600
    assert backend.errors == ()


async def test_stopping_mid_hang_is_prompt() -> None:
    backends = LocalBackends()
    backend = backends.add("slow", "anthropic", default=Hang())
    outcome = []
    async with httpcore.AsyncConnectionPool() as pool:
        async with anyio.create_task_group() as clients:
            async with backends:

                async def client() -> None:
                    outcome.append(await afetch(pool, backend, read_timeout=5.0))

                for _ in range(3):
                    clients.start_soon(client)
                with anyio.fail_after(2):
                    while len(backend.received) < 3:
                        await anyio.sleep(0.005)
                started = time.monotonic()
            stopped = time.monotonic() - started
        # The clients saw the connection close long before their 5 s read timeout.
        assert time.monotonic() - started < 1.0
    assert stopped < 1.0
    assert len(outcome) == 3
    assert all(isinstance(o.error, httpcore.RemoteProtocolError) for o in outcome)
    assert backend.open_connections == 0


async def test_an_error_inside_the_block_comes_out_as_itself() -> None:
    backends = every_provider(default=Hang())
    with pytest.raises(KeyError, match="boom"):
        async with backends:
            raise KeyError("boom")
    assert not backends.serving
