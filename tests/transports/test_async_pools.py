"""The async client spreads a backend's connections over several httpcore pools.

httpcore's pool costs more per request the more connections it holds, so
``AsyncClient`` gives each backend pools of ``POOL_SHARD`` connections. Seen
from the backend nothing changes: as many connections at once as requests in
flight, and each one reused by the next request.
"""

from __future__ import annotations

import threading

import anyio
import pytest

from lbtransports import AsyncClient
from lbtransports._async import POOL_SHARD

from .harness import REQUEST
from .test_connection_reuse import WAIT_S, RawConnection, answer, config, raw_backend

#: More requests at once than one pool holds: they need three pools.
AT_ONCE = 2 * POOL_SHARD + 2


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_requests_beyond_one_pool_run_at_once_and_keep_their_connections(backend: str) -> None:
    # Each connection's first answer waits until every request is in: only
    # AT_ONCE connections open together can pass the barrier.
    together = threading.Barrier(AT_ONCE, timeout=WAIT_S)

    def serve(connection: RawConnection) -> None:
        first = True
        while connection.read_request():
            if first:
                together.wait()
                first = False
            connection.send(answer("ok"))

    texts: list[str] = []

    async def wave(client: AsyncClient) -> None:
        async def one() -> None:
            texts.append((await client.complete(REQUEST)).text)

        async with anyio.create_task_group() as group:
            for _ in range(AT_ONCE):
                group.start_soon(one)

    async def main(url: str) -> None:
        async with AsyncClient(config(url)) as client:
            await wave(client)
            await wave(client)
            for _ in range(3):
                texts.append((await client.complete(REQUEST)).text)

    with raw_backend(serve) as served:
        anyio.run(main, served.url, backend=backend)
    assert texts == ["ok"] * (2 * AT_ONCE + 3)
    # No connection beyond the first wave's: each later request took an idle one.
    assert len(served.requests) == AT_ONCE
    assert sum(served.requests) == 2 * AT_ONCE + 3
