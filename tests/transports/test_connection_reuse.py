"""When a connection may go back to the pool, against a raw-socket backend.

A pooled connection must carry nothing from the exchange before: bytes a
server sent past the end of an answer would be read as the next request's
answer (response desync), and a connection the server is about to close after
an error status would turn the retry's answer into a reset, unless the retry
is sent again on a new connection. Both clients reuse a connection only after
an answer (an error status's too) read to exactly its end.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import FailureKind
from lbtransports import AsyncClient, Client, ClientConfig, FailoverError, LoadBalancerError
from lbtransports._sync_reuse import ChunkedEndScanner, chunked_end

from .harness import REQUEST

#: What the backend does with one connection; it gets the connection's index.
Handler = Callable[["RawConnection"], None]

#: Every wait in the server is bounded by this, so a test cannot hang.
WAIT_S = 3.0


@dataclass
class RawConnection:
    """One accepted connection, with the bytes read from it but not yet parsed."""

    sock: socket.socket
    index: int
    stop: threading.Event
    pending: bytes = b""
    requests: int = 0

    def read_request(self) -> bool:
        """Read one whole request; False if the client closed first or stayed quiet."""
        if not self._receive_until(lambda: b"\r\n\r\n" in self.pending):
            return False
        head = self.pending.partition(b"\r\n\r\n")[0]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        end = len(head) + 4 + length
        if not self._receive_until(lambda: len(self.pending) >= end):
            return False
        self.pending = self.pending[end:]
        self.requests += 1
        return True

    def _receive_until(self, done: Callable[[], bool]) -> bool:
        self.sock.settimeout(0.05)
        deadline = time.monotonic() + WAIT_S
        while not done():
            if self.stop.is_set() or time.monotonic() > deadline:
                return False
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return False
            if not data:
                return False
            self.pending += data
        return True

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reset(self) -> None:
        # SO_LINGER with a zero timeout: close() sends RST, as a crashed server would.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


@dataclass
class RawBackend:
    url: str
    connections: list[RawConnection] = field(default_factory=list)

    @property
    def requests(self) -> list[int]:
        """How many requests each connection carried, in the order they were accepted."""
        return [connection.requests for connection in self.connections]


@contextmanager
def raw_backend(handler: Handler) -> Iterator[RawBackend]:
    """A listener on 127.0.0.1 that runs ``handler`` on each connection, in its own thread."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    backend = RawBackend(f"http://127.0.0.1:{listener.getsockname()[1]}/v1")
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set() and len(backend.connections) < 20:
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection = RawConnection(sock, len(backend.connections), stop)
            backend.connections.append(connection)
            thread = threading.Thread(target=handler, args=(connection,), daemon=True)
            threads.append(thread)
            thread.start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield backend
    finally:
        stop.set()
        acceptor.join(timeout=5)
        for thread in threads:
            thread.join(timeout=5)
        for connection in backend.connections:
            connection.sock.close()
        listener.close()


def answer(text: str) -> bytes:
    """A whole, kept-alive OpenAI answer whose body ends at its Content-Length."""
    body = json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }
    ).encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def chunked_answer(text: str) -> bytes:
    """The same answer, chunked: its body ends at the zero-size chunk."""
    whole = answer(text)
    body = whole.partition(b"\r\n\r\n")[2]
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"


ERROR_BODY = b'{"error":{"message":"No connected db."}}'
SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n%s" % (len(ERROR_BODY), ERROR_BODY)
)


def config(url: str, **settings: int) -> ClientConfig:
    """One backend on ``url``; with settings, a failover pair both on that server."""
    backends = [("raw", url), ("spare", url)] if settings else [("raw", url)]
    return ClientConfig.from_mapping(
        {
            "strategy": "failover" if settings else "round-robin",
            "settings": settings,
            "connect_timeout_ms": 2_000,
            "idle_timeout_ms": 1_000,
            "backends": [
                {
                    "name": name,
                    "provider": "openai",
                    "model": "m",
                    "base_url": base_url,
                    "credential": {"key": "sk-raw-0123456789"},
                }
                for name, base_url in backends
            ],
        }
    )


def run_requests(mode: str, cfg: ClientConfig, count: int) -> list[str | LoadBalancerError]:
    """Send ``count`` requests one after another on one client: each answer's text, or its error."""
    outcomes: list[str | LoadBalancerError] = []
    if mode == "sync":
        with Client(cfg) as client:
            for _ in range(count):
                try:
                    outcomes.append(client.complete(REQUEST).text)
                except LoadBalancerError as error:
                    outcomes.append(error)
        return outcomes

    async def main() -> None:
        async with AsyncClient(cfg) as client:
            for _ in range(count):
                try:
                    outcomes.append((await client.complete(REQUEST)).text)
                except LoadBalancerError as error:
                    outcomes.append(error)

    anyio.run(main, backend=mode)
    return outcomes


def serve_each_request(connection: RawConnection, reply: bytes) -> None:
    while connection.read_request():
        connection.send(reply)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_bytes_past_the_end_of_an_answer_are_never_read_as_the_next_answer(
    mode: str, framing: str
) -> None:
    frame = answer if framing == "content-length" else chunked_answer

    def smuggle_then_serve(connection: RawConnection) -> None:
        if connection.index == 0:
            # A complete answer, then a second, different one nobody asked for yet.
            if connection.read_request():
                connection.send(frame("first") + frame("smuggled"))
            connection.read_request()  # a request sent on this connection is left unanswered
        else:
            serve_each_request(connection, frame("fresh"))

    with raw_backend(smuggle_then_serve) as backend:
        outcomes = run_requests(mode, config(backend.url), 2)
    assert outcomes == ["first", "fresh"]
    # The second request went out on a new connection, never on the desynced one.
    assert backend.requests == [1, 1]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_clean_answer_keeps_its_connection_for_the_next_request(mode: str, framing: str) -> None:
    frame = answer if framing == "content-length" else chunked_answer

    def serve(connection: RawConnection) -> None:
        serve_each_request(connection, frame("again"))

    with raw_backend(serve) as backend:
        outcomes = run_requests(mode, config(backend.url), 3)
    assert outcomes == ["again"] * 3
    assert backend.requests == [3]


def test_a_retry_after_an_error_status_sees_the_status_when_the_server_then_closes(
    mode: str,
) -> None:
    def fail_then_drop(connection: RawConnection) -> None:
        # As uvicorn after a 500: the answer says keep-alive, the server closes.
        # Whatever arrives on the connection afterwards is answered with a reset.
        if connection.read_request():
            connection.send(SERVER_ERROR)
            if connection.read_request():
                connection.reset()

    with raw_backend(fail_then_drop) as backend:
        (outcome,) = run_requests(mode, config(backend.url, failover_retry_count=2), 1)
    # Every attempt (two per backend) saw the 500 the backend answered, never
    # the reset of a stale connection: each retry went out on the 500's
    # connection, met the reset, and was sent once more, uncharged, on a new one.
    assert isinstance(outcome, FailoverError), outcome
    assert [(f.backend, f.failure.kind, f.failure.status) for f in outcome.failures] == [
        ("raw", FailureKind.HTTP, 500),
        ("spare", FailureKind.HTTP, 500),
    ]
    assert outcome.status == 500
    assert backend.requests == [2, 1, 2, 1]


def test_an_error_status_read_to_its_end_keeps_its_connection(mode: str) -> None:
    def fail_then_serve(connection: RawConnection) -> None:
        if connection.read_request():
            connection.send(SERVER_ERROR)
        serve_each_request(connection, answer("after"))

    with raw_backend(fail_then_serve) as backend:
        outcomes = run_requests(mode, config(backend.url, failover_retry_count=2), 1)
    # The same-backend retry after the 500 went out on the 500's connection:
    # a failover hop costs no new connection.
    assert outcomes == ["after"]
    assert backend.requests == [2]


def test_an_error_status_that_says_connection_close_gives_up_its_connection(mode: str) -> None:
    closing = SERVER_ERROR.replace(b"Connection: keep-alive", b"Connection: close")

    def fail_then_serve(connection: RawConnection) -> None:
        # The server said close but leaves the socket open: the client must not reuse it.
        if connection.index == 0 and connection.read_request():
            connection.send(closing)
        serve_each_request(connection, answer("after"))

    with raw_backend(fail_then_serve) as backend:
        outcomes = run_requests(mode, config(backend.url, failover_retry_count=2), 1)
    assert outcomes == ["after"]
    assert backend.requests == [1, 1]


@pytest.mark.parametrize(
    ("buffered", "chunk_left", "end"),
    [
        (b"5\r\nhello\r\n0\r\n\r\n", None, 15),
        (b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK", None, 15),
        (b"lo\r\n0;ext=1\r\nTrailer: x\r\n\r\n", 2, 27),  # inside a chunk, with a trailer
        (b"\r\n0\r\n\n", 0, 6),  # after a chunk's data, bare LF line ends
        (b"5\r\nhel", None, None),  # the end has not arrived
        (b"\r\n0\r\n", 0, None),  # the last chunk, but not the empty line after it
        (b"zz\r\n", None, None),  # not a chunk size: http.client refuses it
    ],
)
def test_the_sync_client_finds_a_chunked_bodys_end_in_http_clients_buffer(
    buffered: bytes, chunk_left: int | None, end: int | None
) -> None:
    assert chunked_end(buffered, chunk_left) == end


# ------------------------------------------------------------ stale pooled connections


def _drop_after_first(connection: RawConnection) -> None:
    """The first connection answers once, then drops the next request without a byte
    (as a server closing an idle keep-alive connection just then); later ones answer."""
    if connection.index == 0:
        if connection.read_request():
            connection.send(answer("one"))
        if connection.read_request():
            connection.reset()
        return
    serve_each_request(connection, answer("two"))


@pytest.mark.parametrize("drop", ["reset", "close"])
def test_a_pooled_connection_that_breaks_before_answering_is_sent_again_uncharged(
    mode: str, drop: str
) -> None:
    def handler(connection: RawConnection) -> None:
        if connection.index == 0 and drop == "close":
            if connection.read_request():
                connection.send(answer("one"))
            if connection.read_request():
                connection.sock.close()
            return
        _drop_after_first(connection)

    with raw_backend(handler) as backend:
        # Round-robin reports a failure raw: before the fix the second request
        # failed with the reset (or "server disconnected").
        outcomes = run_requests(mode, config(backend.url), 2)
    assert outcomes == ["one", "two"]
    assert backend.requests == [2, 1]


def test_a_new_connection_that_breaks_before_answering_is_the_backends_failure(
    mode: str,
) -> None:
    def handler(connection: RawConnection) -> None:
        if connection.read_request():
            connection.reset()

    with raw_backend(handler) as backend:
        [outcome] = run_requests(mode, config(backend.url), 1)
    assert isinstance(outcome, LoadBalancerError)
    assert backend.requests == [1]  # not sent again
    failure = outcome.error.failure  # type: ignore[union-attr]
    assert failure.kind is FailureKind.NETWORK and failure.code != "stale_connection"


# ------------------------------------------------------------ streamed answers


def sse_events(text: str) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}}
    return b"data: %s\n\ndata: %s\n\ndata: [DONE]\n\n" % (
        json.dumps(chunk).encode(),
        json.dumps(usage).encode(),
    )


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
)


def sse_body(text: str) -> bytes:
    """A streamed answer's one data chunk, up to [DONE], without the body's end."""
    events = sse_events(text)
    return f"{len(events):x}\r\n".encode() + events + b"\r\n"


BODY_END = b"0\r\n\r\n"


@pytest.mark.parametrize("together", [True, False], ids=["same-write", "next-write"])
def test_a_streamed_answer_whose_body_ends_after_its_terminator_keeps_its_connection(
    mode: str, together: bool
) -> None:
    # The terminator ends the answer, but the body's own end follows at once
    # (in the same write, or the next): the client reads on to it and pools
    # the connection, as a client reading every stream to its end would.
    def serve(connection: RawConnection) -> None:
        while connection.read_request():
            if together:
                connection.send(SSE_HEAD + sse_body("again") + BODY_END)
            else:
                connection.send(SSE_HEAD + sse_body("again"))
                connection.send(BODY_END)

    with raw_backend(serve) as backend:
        outcomes = run_requests(mode, config(backend.url), 3)
    assert outcomes == ["again"] * 3
    if mode == "sync" and not together:
        # The sync client pools a chunked connection only if it saw the body's
        # end buffered before its last read (see _sync_reuse): an end that
        # arrives in a later write is a lost reuse, never a desync.
        assert sum(backend.requests) == 3
    else:
        assert backend.requests == [3]


def test_a_streamed_answer_whose_body_does_not_end_is_not_waited_for(mode: str) -> None:
    # A server that keeps the body open after the terminator: the answer is
    # complete, the caller is not kept waiting, and the connection is closed.
    def serve(connection: RawConnection) -> None:
        while connection.read_request():
            connection.send(SSE_HEAD + sse_body("open"))
            connection.stop.wait(WAIT_S)

    with raw_backend(serve) as backend:
        started = time.monotonic()
        outcomes = run_requests(mode, config(backend.url), 2)
        elapsed = time.monotonic() - started
    assert outcomes == ["open"] * 2
    assert backend.requests == [1, 1]
    assert elapsed < 1.5  # not the 3 s the server holds each body open


def test_bytes_past_the_end_of_a_streamed_answer_are_never_read_as_the_next_answer(
    mode: str,
) -> None:
    def smuggle_then_serve(connection: RawConnection) -> None:
        if connection.index == 0:
            if connection.read_request():
                smuggled = chunked_answer("smuggled")
                connection.send(SSE_HEAD + sse_body("first") + BODY_END + smuggled)
            connection.read_request()
        else:
            while connection.read_request():
                connection.send(SSE_HEAD + sse_body("fresh") + BODY_END)

    with raw_backend(smuggle_then_serve) as backend:
        outcomes = run_requests(mode, config(backend.url), 2)
    assert outcomes == ["first", "fresh"]
    assert backend.requests == [1, 1]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.binary(max_size=12), max_size=6),
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from([None, 0, 1, 3])), max_size=8),
    st.binary(max_size=20),
)
def test_the_chunked_end_scanner_finds_what_a_fresh_walk_finds(
    datas: list[bytes], looks: list[tuple[int, int | None]], tail: bytes
) -> None:
    # Successive looks at one buffer, each having lost some bytes off its front
    # (a read) and sometimes gained some at its end: the remembered walk never
    # changes the answer.
    buffered = b"".join(b"%x\r\n%s\r\n" % (len(data), data) for data in datas) + tail
    scanner = ChunkedEndScanner()
    for consumed, left in looks:
        chunk_left = left
        if consumed % 2 and datas:
            # As http.client's read1 does: the next chunk's size line and data
            # go, its CRLF stays (chunk_left 0).
            data = datas.pop(0)
            buffered, chunk_left = buffered[len(b"%x\r\n%s" % (len(data), data)) :], 0
        else:
            buffered = buffered[consumed:]
        assert scanner.find(buffered, chunk_left) == chunked_end(buffered, chunk_left)
        if consumed % 5 == 0:
            buffered += b"0\r\n\r\n"
