"""One caller's HTTP/1.1 connection: h11's state machine over an anyio socket stream.

Reading enforces the limits (header size, body size, header and body read
timeouts); what breaks them becomes :class:`BadRequest` carrying the status
to answer with, after which the connection is closed. Writing turns every
network failure into :class:`CallerGone`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Final

import anyio
import anyio.abc
import h11
import msgspec

from ._config import Limits

__all__ = ("BadRequest", "CallerGone", "Connection", "Request")

_NETWORK_ERRORS: Final = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
)
_READ_SIZE: Final = 65536


class CallerGone(Exception):
    """The caller closed or broke the connection."""


class BadRequest(Exception):
    """A request that breaks HTTP or a limit; answered with ``status``, then closed."""

    def __init__(self, status: int, message: str, path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.path = path


class Request(msgspec.Struct, frozen=True, kw_only=True):
    method: str
    path: str
    #: Names lower-cased, order and repeats kept.
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Connection:
    """Reads requests and writes responses on one accepted connection."""

    def __init__(self, stream: anyio.abc.ByteStream, limits: Limits) -> None:
        self._stream = stream
        self._limits = limits
        # h11 refuses a head larger than this with a 431 hint.
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.gone = False
        #: The request being answered is a HEAD: its answers carry no body.
        self._head_only = False

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def reusable(self) -> bool:
        return self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE

    # ------------------------------------------------------------ reading

    async def read_request(self) -> Request | None:
        """The next whole request, or None when the caller closed (or idled out) between
        requests. Raises :class:`BadRequest` and :class:`CallerGone`."""
        head: h11.Request | None = None
        started = False
        # What h11 holds and is given until the head is parsed, less what it
        # holds after: the head's own size. h11 alone refuses only a head still
        # incomplete past the limit, not a whole one that came in one read.
        head_bytes = len(self._h11.trailing_data[0])
        with anyio.move_on_after(self._limits.header_timeout_s) as waiting:
            while head is None:
                event = self._next_event()
                if event is h11.NEED_DATA:
                    data = await self._receive()
                    started = started or bool(data)
                    head_bytes += len(data)
                    self._h11.receive_data(data)
                elif isinstance(event, h11.Request):
                    head = event
                else:
                    self.gone = True
                    return None
        if head is None:
            assert waiting.cancelled_caught
            if not started:
                return None  # an idle keep-alive connection: just close it
            raise BadRequest(408, "the request's headers took too long to arrive")
        if head_bytes - len(self._h11.trailing_data[0]) > self._limits.max_header_bytes:
            raise BadRequest(431, _protocol_message(431))
        self._head_only = head.method == b"HEAD"
        headers = tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in head.headers
        )
        path = origin_form(head.target.decode("latin-1"))
        if _has(headers, "transfer-encoding") and _has(headers, "content-length"):
            # Two framings: which one a proxy in front used is unknowable (request
            # smuggling). RFC 9112 6.1 allows refusing it; the connection is closed.
            raise BadRequest(400, "the request has both Transfer-Encoding and Content-Length", path)
        declared = _content_length(headers)
        if declared is not None and declared > self._limits.max_body_bytes:
            raise BadRequest(413, f"the body exceeds {self._limits.max_body_bytes} bytes", path)
        body = bytearray()
        with anyio.move_on_after(self._limits.body_timeout_s):
            while True:
                event = self._next_event()
                if event is h11.NEED_DATA:
                    if self._h11.they_are_waiting_for_100_continue:
                        await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                    self._h11.receive_data(await self._receive())
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self._limits.max_body_bytes:
                        raise BadRequest(
                            413, f"the body exceeds {self._limits.max_body_bytes} bytes", path
                        )
                elif isinstance(event, h11.EndOfMessage):
                    return Request(
                        method=head.method.decode("latin-1"),
                        path=path,
                        headers=headers,
                        body=bytes(body),
                    )
                else:
                    self.gone = True
                    raise CallerGone
        raise BadRequest(408, "the request's body took too long to arrive", path)

    def _next_event(self) -> object:
        try:
            return self._h11.next_event()
        except h11.RemoteProtocolError as error:
            status = error.error_status_hint
            raise BadRequest(status, _protocol_message(status)) from None

    async def _receive(self) -> bytes:
        try:
            return await self._stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            return b""
        except _NETWORK_ERRORS:
            self.gone = True
            raise CallerGone from None

    async def watch_for_leaving(self) -> None:
        """Return once the caller closes or breaks the connection (used while answering)."""
        # Pipelined requests are kept for later, but no more of them than one
        # whole request: beyond that the caller is left unread (TCP holds it
        # back), and a write failing tells whether it left.
        room = self._limits.max_header_bytes + self._limits.max_body_bytes
        while room > 0:
            try:
                data = await self._stream.receive(_READ_SIZE)
            except _NETWORK_ERRORS:
                self.gone = True
                return
            if not data:
                self.gone = True
                return
            room -= len(data)
            self._h11.receive_data(data)
        await anyio.sleep_forever()

    # ------------------------------------------------------------ writing
    #
    # The framing is rendered apart from the sending, so that a response's head,
    # its events and its end can leave in as few sends as they arrive in: each
    # send on loopback costs about as much as rendering a dozen events.

    def head(
        self, status: int, headers: Sequence[tuple[str, str]], *, close: bool = False
    ) -> bytes:
        """A response's head, framed (raises :class:`CallerGone` once the caller left)."""
        fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        if close:
            fields.append((b"connection", b"close"))
        return self._frame(h11.Response(status_code=status, headers=fields))

    def body(self, data: bytes) -> bytes:
        """A piece of the response's body, framed (chunked, or as is under a length)."""
        return self._frame(h11.Data(data=data)) if data else b""

    def end(self) -> bytes:
        """The end of the response's body, framed."""
        return self._frame(h11.EndOfMessage())

    async def respond(
        self,
        status: int,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        *,
        close: bool = False,
    ) -> None:
        """A whole response with a ``Content-Length``, in one send."""
        head = self.head(status, [*headers, ("content-length", str(len(body)))], close=close)
        if self._head_only:
            body = b""  # the length says what a GET would get (RFC 9110 9.3.2)
        # A caller that takes nothing of it for body_timeout_s is gone (the
        # socket buffers hold a few MiB; an answer up to 32 MiB may not fit).
        with anyio.move_on_after(self._limits.body_timeout_s) as sending:
            await self.send(head + self.body(body) + self.end())
        if sending.cancelled_caught:
            self.gone = True
            raise CallerGone

    def start_next(self) -> None:
        self._h11.start_next_cycle()

    def _frame(self, event: h11.Event) -> bytes:
        if self.gone:
            raise CallerGone
        try:
            return self._h11.send(event) or b""
        except h11.LocalProtocolError:
            raise CallerGone from None

    async def send(self, data: bytes) -> None:
        """Send framed bytes (from :meth:`head`, :meth:`body`, :meth:`end`) as they are."""
        if self.gone:
            raise CallerGone
        if data:
            try:
                await self._stream.send(data)
            except _NETWORK_ERRORS:
                self.gone = True
                raise CallerGone from None

    async def _send(self, event: h11.Event) -> None:
        await self.send(self._frame(event))

    async def aclose(self) -> None:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(1.0),
            contextlib.suppress(*_NETWORK_ERRORS),
        ):
            await self._stream.aclose()


def origin_form(target: str) -> str:
    """The path and query of a request target; an absolute-form target
    (``http://host/v1/models``, as sent to a proxy) loses its scheme and host,
    which a server must accept (RFC 9112 3.2.2)."""
    scheme, separator, rest = target.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        return target
    ends = [at for at in (rest.find("/"), rest.find("?")) if at >= 0]
    remainder = rest[min(ends) :] if ends else ""
    return remainder if remainder.startswith("/") else "/" + remainder


def _has(headers: tuple[tuple[str, str], ...], name: str) -> bool:
    return any(key == name for key, _ in headers)


def _content_length(headers: tuple[tuple[str, str], ...]) -> int | None:
    for name, value in headers:
        if name == "content-length":
            return int(value) if value.isdigit() else None  # h11 has checked it already
    return None


def _protocol_message(status: int) -> str:
    if status == 431:
        return "the request's headers are too large"
    if status == 501:
        return "the request's transfer coding is not supported (only chunked is)"
    return "the request is not valid HTTP/1.1"
