"""The outbox a streamed answer is written through, over a real loopback connection.

What the answer puts leaves in order, framed as one HTTP chunk per send; a
caller who does not read holds the answer back once MAX_PENDING bytes wait,
instead of the gateway buffering the whole answer.
"""

from __future__ import annotations

import socket

import anyio
import anyio.abc
import h11

from lbtransports.gateway._config import Limits
from lbtransports.gateway._http import Connection
from lbtransports.gateway._outbox import MAX_PENDING, Outbox

PIECE = b"x" * 1000 + b"\n"
PIECES = 2000  # about 2 MB: far more than the socket buffers below hold
REQUEST = b"GET /stream HTTP/1.1\r\nHost: gateway\r\n\r\n"


def _small_buffers(stream: anyio.abc.SocketStream) -> None:
    raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)


def _body_of(received: bytes) -> tuple[int, bytes, int]:
    """The status, the body and the number of data chunks of a chunked response."""
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/stream", headers=[("Host", "gateway")]))
    client.send(h11.EndOfMessage())
    client.receive_data(received)
    status, body, chunks = 0, b"", 0
    while True:
        event = client.next_event()
        if isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            chunks += 1
        elif isinstance(event, h11.EndOfMessage):
            return status, body, chunks
        else:
            raise AssertionError(f"unexpected {event!r}")


async def _serve_through_outbox(
    stream: anyio.abc.SocketStream,
    log: list[str],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    conn = Connection(stream, Limits())
    assert await conn.read_request() is not None
    outbox = Outbox(conn)
    async with anyio.create_task_group() as group:
        group.start_soon(outbox.run)
        outbox.start(conn.head(200, [("content-type", "text/event-stream")]))
        task_status.started()
        for _ in range(PIECES):
            outbox.put(PIECE)
            await outbox.room()
        log.append("all put")
        outbox.end()
        await outbox.close()
    log.append("all sent")


async def _slow_caller() -> tuple[list[str], bytes]:
    log: list[str] = []
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with await anyio.connect_tcp("127.0.0.1", port) as caller:
            _small_buffers(caller)
            with anyio.fail_after(10):
                accepted = await listener.listeners[0].accept()
            _small_buffers(accepted)
            await caller.send(REQUEST)
            async with accepted, anyio.create_task_group() as group:
                await group.start(_serve_through_outbox, accepted, log)
                await anyio.sleep(0.3)  # the caller reads nothing for a while
                log.append("caller reads")
                received = bytearray()
                with anyio.fail_after(10):
                    while not received.endswith(b"0\r\n\r\n"):
                        received += await caller.receive(65536)
    return log, bytes(received)


def test_a_caller_who_does_not_read_holds_the_answer_back_and_then_gets_all_of_it() -> None:
    log, received = anyio.run(_slow_caller)
    # The answer could not run ahead of its caller by more than the outbox's bound.
    assert log == ["caller reads", "all put", "all sent"]
    status, body, chunks = _body_of(received)
    assert status == 200
    assert body == PIECE * PIECES
    # Pieces were put one by one but sent many at a time, each send one HTTP chunk.
    assert chunks < PIECES / 10
    assert len(body) > MAX_PENDING
