"""The async client's own HTTP/1.1 exchanges for plain-http backends: h11 on anyio sockets.

httpcore's pool and connection layers cost a 20-chunk streamed answer about
0.3 ms of CPU beyond h11's own parsing (a lock, a request and a response
object, a trace call and a few cancel scopes per step, three generators per
body read): more than everything else the gateway does for it. With
``AsyncClient(..., plain_http="h11")`` (the gateway's choice) an http://
backend is served here instead: one idle list per backend, h11 driving each
connection directly, every buffered HTTP chunk taken in one step.

The rules are httpcore's, so that nothing a backend can send is read
differently (spec/transports.md sections 3 and 5): h11 judges every head
and framing byte, with httpcore's limit on an incomplete event (100 KiB);
failures are raised as httpcore's own exception types, which
:mod:`._troubles` classifies; a failed write is set aside to read the answer
the backend may have sent anyway, as httpcore does; an idle connection that
has become readable (closed, or bytes nobody asked for) is never reused.
"""

from __future__ import annotations

import contextlib
import select
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Final

import anyio
import anyio.abc
import h11
import httpcore

from ._direct_connect import connect_ip_stream, direct_address
from ._h1_chunks import ChunkedBody, FramingBroken
from ._timer import UPLOAD_PIECE

__all__ = ("H1Exchange", "H1Pool", "Origin", "origin_of")

#: httpcore's bound on a head (or a chunk-size line, or a trailer) still incomplete.
MAX_INCOMPLETE: Final = 100 * 1024
_READ_SIZE: Final = 65536
_READ_ERRORS: Final = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Origin:
    """Where an http:// URL's requests go, and the target to ask for there."""

    __slots__ = ("host", "host_header", "port", "target")

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"not a plain-http URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        # As httpcore writes it: the port only when it is not the scheme's.
        netloc = parts.netloc.rpartition("@")[2]
        self.host_header = netloc[:-3] if netloc.endswith(":80") else netloc
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


_ORIGINS: dict[str, Origin] = {}


def origin_of(url: str) -> Origin:
    """``url``'s :class:`Origin`, parsed once per URL."""
    origin = _ORIGINS.get(url)
    if origin is None:
        if len(_ORIGINS) > 4096:
            _ORIGINS.clear()  # bounded: URLs are a config's, but who knows
        origin = _ORIGINS[url] = Origin(url)
    return origin


class _Connection:
    __slots__ = ("fileno", "state", "stream")

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.state = _new_state()
        # asyncio gives a wrapper without recv(); its descriptor is what is polled.
        self.fileno: int = stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()

    def stale(self) -> bool:
        """Whether the idle connection has something to read: the server closed it,
        or sent bytes no request asked for. Either way it is not to be reused.

        Asked of the socket, as httpcore does: an idle stream's transport does
        not read (anyio pauses reading between receives)."""
        if self.fileno < 0:
            return True
        poller = select.poll()
        poller.register(self.fileno, select.POLLIN)
        return bool(poller.poll(0))

    async def aclose(self) -> None:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(1.0),
            contextlib.suppress(*_READ_ERRORS),
        ):
            await self.stream.aclose()


def _new_state() -> h11.Connection:
    return h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_INCOMPLETE)


def _keeps_alive(head: h11.Response) -> bool:
    """Whether the server lets the connection serve another request (h11's rule)."""
    if head.http_version < b"1.1":
        return False
    for name, value in head.headers:
        if name == b"connection" and b"close" in (v.strip() for v in value.lower().split(b",")):
            return False
    return True


class H1Pool:
    """One backend's idle connections, the last one used first.

    It never holds more than the backend's connection slots allow: every
    connection in it was given back by an attempt that held one.
    """

    __slots__ = ("_idle", "closed")

    def __init__(self) -> None:
        self._idle: list[_Connection] = []
        self.closed = False

    async def exchange(self, origin: Origin, connect_timeout: float) -> tuple[H1Exchange, bool]:
        """An exchange on an idle connection, else on a new one; and whether it is new.

        Raises httpcore's ConnectError or ConnectTimeout, as its pool does.
        """
        while self._idle:
            conn = self._idle.pop()
            if not conn.stale():
                return H1Exchange(self, conn), False
            await conn.aclose()
        return H1Exchange(self, await _connect(origin, connect_timeout)), True

    def give_back(self, conn: _Connection, *, fresh: bool) -> bool:
        if self.closed:
            return False
        if fresh:
            conn.state = _new_state()
        else:
            conn.state.start_next_cycle()
        self._idle.append(conn)
        return True

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


async def _connect(origin: Origin, timeout: float) -> _Connection:
    family = direct_address(origin.host, None)
    if family is not None:
        return _Connection(await connect_ip_stream(family, origin.host, origin.port, timeout))
    try:
        with anyio.fail_after(timeout):
            stream = await anyio.connect_tcp(origin.host, origin.port)
    except TimeoutError as error:
        raise httpcore.ConnectTimeout(error) from error
    except (OSError, anyio.BrokenResourceError) as error:
        raise httpcore.ConnectError(error) from error
    return _Connection(stream)


class H1Exchange:
    """One request and its answer on one connection of an :class:`H1Pool`."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_ended",
        "_eof",
        "_error",
        "_keep_alive",
        "_pool",
        "_write_failed",
        "headers",
        "keep",
        "status",
    )

    def __init__(self, pool: H1Pool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self.status = 0
        self.headers: tuple[tuple[str, str], ...] = ()
        #: The body's end was read (h11's EndOfMessage).
        self._ended = False
        #: A framing error found after data taken in the same step, raised at the next.
        self._error: httpcore.RemoteProtocolError | None = None
        #: Set by the client once the answer ended cleanly and may be pooled.
        self.keep = False
        #: A chunked body, undone in bulk once h11 has read the head.
        self._chunks: ChunkedBody | None = None
        self._eof = False
        self._keep_alive = True
        self._write_failed = False

    # -- sending

    async def send(
        self,
        method: bytes,
        origin: Origin,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        taken: Callable[[], None],
    ) -> None:
        """Write the request: its head with the body's first piece, then a write per
        piece, ``taken`` told after each. A write the backend refuses is set aside,
        as httpcore does: its answer (an early 413) may be waiting to be read."""
        state = self._conn.state
        try:
            head = state.send(
                h11.Request(
                    method=method,
                    target=origin.target,
                    headers=[(b"Host", origin.host_header.encode("ascii")), *headers],
                )
            )
            pieces = [body[at : at + UPLOAD_PIECE] for at in range(0, len(body), UPLOAD_PIECE)]
            framed = [state.send(h11.Data(data=piece)) or b"" for piece in pieces]
            end = state.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as error:
            raise httpcore.LocalProtocolError(error) from error
        if not framed:
            framed = [b""]
        framed[0] = (head or b"") + framed[0]
        framed[-1] += end
        stream = self._conn.stream
        try:
            for data in framed:
                await stream.send(data)
                if pieces:
                    taken()
        except _READ_ERRORS:
            # Read the answer anyway; reading fails if there is none. The
            # connection is not reused whatever the answer says.
            self._write_failed = True

    # -- reading

    async def read_head(self) -> None:
        """Read up to the final answer's head (interim 1xx answers skipped)."""
        state = self._conn.state
        while True:
            event = self._next_event()
            if event is h11.NEED_DATA:
                state.receive_data(await self._receive())
                continue
            kind = type(event)
            if kind is h11.Response:
                assert isinstance(event, h11.Response)
                self.status = event.status_code
                self.headers = tuple(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in event.headers
                )
                if event.status_code not in (204, 304) and any(
                    name == b"transfer-encoding" for name, _ in event.headers
                ):
                    # h11 has checked the coding is exactly "chunked": the body
                    # is undone in bulk from here, h11 only having read the head.
                    rest, self._eof = state.trailing_data
                    self._chunks = ChunkedBody(rest, MAX_INCOMPLETE)
                    self._keep_alive = _keeps_alive(event)
                return
            if kind is h11.InformationalResponse:
                continue
            raise httpcore.RemoteProtocolError("Server disconnected without sending a response.")

    async def read(self) -> bytes:
        """The body bytes one network read brings (all of its HTTP chunks); b"" at the end."""
        if self._error is not None:
            raise self._error
        if self._chunks is not None:
            return await self._read_chunks(self._chunks)
        state = self._conn.state
        while not self._ended:
            pieces: list[bytes | bytearray] = []
            while True:
                try:
                    event = self._next_event()
                except httpcore.RemoteProtocolError as error:
                    if not pieces:
                        raise
                    self._error = error  # the data before it is delivered first
                    break
                kind = type(event)
                if kind is h11.Data:
                    assert isinstance(event, h11.Data)
                    pieces.append(event.data)
                elif kind is h11.EndOfMessage:
                    self._ended = True
                    break
                elif event is h11.NEED_DATA:
                    break
                else:  # h11.ConnectionClosed: its state already failed the body
                    raise httpcore.RemoteProtocolError("the server closed the connection")
            if pieces:
                return b"".join(pieces)
            if not self._ended:
                state.receive_data(await self._receive())
        return b""

    async def _read_chunks(self, chunks: ChunkedBody) -> bytes:
        while True:
            try:
                data = chunks.take()
                if data or chunks.ended:
                    return data
                if self._eof:
                    chunks.closed()
            except FramingBroken as error:
                raise httpcore.RemoteProtocolError(str(error)) from None
            data = await self._receive()
            if data:
                chunks.feed(data)
            else:
                self._eof = True

    def reusable(self) -> bool:
        """Both sides done, no byte after the answer, no close announced or seen."""
        if self._write_failed:
            return False
        chunks = self._chunks
        if chunks is not None:
            return chunks.ended and not chunks.left_over and not self._eof and self._keep_alive
        state = self._conn.state
        left_over, closed = state.trailing_data
        return (
            state.our_state is h11.DONE
            and state.their_state is h11.DONE
            and not left_over
            and not closed
        )

    async def settle(self, finished: bool, ended: bool) -> None:
        """The read loop's verdict: pooled at :meth:`release` only if the body was read
        to its end without error (and :meth:`reusable` still agrees)."""
        self.keep = finished and ended

    async def release(self) -> None:
        """Pool the connection if :attr:`keep` says so and it may be; else close it."""
        # h11 saw only the head of a chunked answer: the next request gets a new
        # state machine; otherwise h11's own is made ready for it.
        fresh = self._chunks is not None
        if self.keep and self.reusable() and self._pool.give_back(self._conn, fresh=fresh):
            return
        await self._conn.aclose()

    def _next_event(self) -> object:
        try:
            return self._conn.state.next_event()
        except h11.RemoteProtocolError as error:
            raise httpcore.RemoteProtocolError(error) from error

    async def _receive(self) -> bytes:
        try:
            return await self._conn.stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            return b""
        except _READ_ERRORS as error:
            raise httpcore.ReadError(error) from error
