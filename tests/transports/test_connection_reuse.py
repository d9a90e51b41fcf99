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
from lbtransports import (
    AsyncClient,
    Client,
    ClientConfig,
    FailoverError,
    LoadBalancerError,
    PlainHttp,
)
from lbtransports._sync_body import ChunkedFraming, FramingError

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


def run_requests(
    mode: str, cfg: ClientConfig, count: int, plain_http: PlainHttp | None = None
) -> list[str | LoadBalancerError]:
    """Send ``count`` requests one after another on one client: each answer's text, or its error.

    ``plain_http`` chooses the async client's HTTP/1.1 layer (default: the suite's).
    """
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
        layer = {} if plain_http is None else {"plain_http": plain_http}
        async with AsyncClient(cfg, **layer) as client:
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
    ("body", "data", "extra"),
    [
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello", 0),
        (b"5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK", b"hello", 15),
        (b"2;ext=1\r\nlo\r\n0\r\nTrailer: x\r\n\r\n", b"lo", 0),  # extension, trailer
        (b"2\nlo\r\n0\n\n", b"lo", 0),  # bare LF line ends
    ],
)
def test_the_sync_client_finds_a_chunked_bodys_end_and_what_follows_it(
    body: bytes, data: bytes, extra: int
) -> None:
    framing = ChunkedFraming()
    assert framing.feed(body) == data
    assert (framing.done, framing.extra) == (True, extra)


@pytest.mark.parametrize("body", [b"5\r\nhel", b"5\r\nhello\r\n0\r\n"])
def test_a_chunked_body_cut_before_its_end_has_not_ended(body: bytes) -> None:
    framing = ChunkedFraming()
    framing.feed(body)
    assert not framing.done


@pytest.mark.parametrize("body", [b"zz\r\n", b"-5\r\nhello\r\n", b"1" * 70_000])
def test_malformed_chunked_framing_is_refused(body: bytes) -> None:
    with pytest.raises(FramingError):
        ChunkedFraming().feed(body)


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
    st.lists(st.binary(min_size=1, max_size=40), max_size=8),  # a 0 size would end it
    st.binary(max_size=20),
    st.lists(st.integers(1, 30), max_size=12),
)
def test_chunked_framing_split_anywhere_reads_what_it_reads_whole(
    datas: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    # Pieces as the network splits them, down to a byte: the same body, the
    # same end, the same count of bytes past it, as from the body in one piece.
    body = b"".join(b"%x\r\n%s\r\n" % (len(data), data) for data in datas)
    body += b"0\r\n\r\n" + tail
    pieces, position = [], 0
    for cut in cuts:
        pieces.append(body[position : position + cut])
        position += cut
    pieces.append(body[position:])
    framing = ChunkedFraming()
    assert b"".join(framing.feed(piece) for piece in pieces) == b"".join(datas)
    assert (framing.done, framing.extra) == (True, len(tail))
