"""The async client's request leaves in as few writes as it can.

httpcore writes a request's head and each piece of its body separately; the
coalescing backend under each of the async client's pools sends the head
with the body's first piece. Seen from the wire nothing else changes: the
same bytes, in order, and a held head always goes out before the answer is
awaited (a request without a body too). The writes are counted on real
loopback sockets, by a backend wrapped around httpcore's own.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpcore
import pytest
from httpcore._backends.auto import AutoBackend

from lbtransports import AsyncClient
from lbtransports._async import _BodyIterator
from lbtransports._coalesce import CoalescingBackend
from lbtransports._timer import UPLOAD_PIECE

from .harness import REQUEST
from .test_connection_reuse import RawConnection, answer, config, raw_backend


class _Counted(httpcore.AsyncNetworkStream):
    """A real stream that records each non-empty write it is given."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, writes: list[bytes]) -> None:
        self._inner = inner
        self._writes = writes

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._writes.append(buffer)
        await self._inner.write(buffer, timeout=timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout=timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Counting(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._inner = AutoBackend()

    async def connect_tcp(self, host: str, port: int, **options: Any) -> _Counted:
        return _Counted(await self._inner.connect_tcp(host, port, **options), self.writes)


def _serve(connection: RawConnection) -> None:
    while connection.read_request():
        connection.send(answer("ok"))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("size", [0, 100, UPLOAD_PIECE * 2 + 5])
def test_a_requests_head_leaves_with_its_bodys_first_piece(backend: str, size: int) -> None:
    body = b"x" * size
    counting = _Counting()

    async def main(url: str) -> list[bytes]:
        async with httpcore.AsyncConnectionPool(
            retries=0, network_backend=CoalescingBackend(counting)
        ) as pool:
            statuses = []
            for _ in range(2):  # the second on the kept connection: its head is held too
                counting.writes.clear()
                response = await pool.request(
                    "POST",
                    url,
                    # Content-Length 0: the head alone, sent by the end's empty write.
                    headers=[(b"Content-Length", str(size).encode())],
                    content=_BodyIterator(body, lambda: None),
                )
                statuses.append(response.status)
            assert statuses == [200, 200]
            return counting.writes

    with raw_backend(_serve) as served:
        writes = anyio.run(main, served.url + "/chat/completions", backend=backend)
    assert writes[0].startswith(b"POST ") and b"\r\n\r\n" in writes[0]
    _, _, first = writes[0].partition(b"\r\n\r\n")
    assert first == body[:UPLOAD_PIECE]
    # The rest of a long body goes piece by piece, as httpcore hands it over.
    assert writes[1:] == [
        body[i : i + UPLOAD_PIECE] for i in range(UPLOAD_PIECE, size, UPLOAD_PIECE)
    ]
    assert served.requests == [2]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_client_sends_each_request_in_one_write(backend: str) -> None:
    # Read from the backend's side: each request's bytes come in one segment
    # on loopback, so the first recv after a request holds all of it.
    firsts: list[bytes] = []

    def serve(connection: RawConnection) -> None:
        connection.sock.settimeout(3.0)
        for _ in range(3):
            try:
                data = connection.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            firsts.append(data)
            connection.send(answer("ok"))

    async def main(url: str) -> list[str]:
        async with AsyncClient(config(url)) as client:
            return [(await client.complete(REQUEST)).text for _ in range(3)]

    with raw_backend(serve) as served:
        texts = anyio.run(main, served.url, backend=backend)
    assert texts == ["ok"] * 3
    for data in firsts:
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.partition(b":")[2])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        assert len(body) == length > 0
