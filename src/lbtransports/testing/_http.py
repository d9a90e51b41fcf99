"""One HTTP/1.1 server connection: h11's state machine driven over an anyio socket stream.

Everything that can go wrong on the network while sending becomes
:class:`ClientGone`, so the code that plays a behaviour has one thing to
stop on. Closing comes in three flavours (:class:`Ending`), because a fault
injector needs the abortive one on purpose.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import anyio
import anyio.abc
import h11
import msgspec

from ._formats import status_phrase

__all__ = ("ClientGone", "Ending", "IncomingRequest", "ServerConnection")

#: What receiving or sending raises once the peer has closed, reset or vanished.
_NETWORK_ERRORS: Final = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,
)
#: How long a graceful close waits for the client to read the rest and close its side.
_LINGER_SECONDS: Final = 2.0
#: SO_LINGER on, timeout 0: close() then discards unsent data and sends a RST.
_ABORTIVE_LINGER: Final = struct.pack("ii", 1, 0)


class ClientGone(Exception):
    """The client closed or broke the connection; nothing more can be sent."""


class Ending(enum.Enum):
    """How the connection carries on after an answer."""

    #: The answer is complete: the connection may serve the next request.
    KEEP = "keep"
    #: Close cleanly (a FIN) once the client has read what was sent.
    CLOSE = "close"
    #: Close abortively: a TCP RST.
    ABORT = "abort"


class IncomingRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A whole request as read off the connection."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ServerConnection:
    """Reads requests and writes responses on one accepted connection."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self._stream = stream
        self._h11 = h11.Connection(h11.SERVER)
        self._gone = False

    # ------------------------------------------------------------ reading

    async def read_request(self) -> IncomingRequest | None:
        """The next whole request, or None once the client has closed between requests.

        Raises ``h11.RemoteProtocolError`` for a request that is not HTTP/1.1,
        and :class:`ClientGone` when the connection breaks.
        """
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                if self._h11.they_are_waiting_for_100_continue:
                    await self._send(h11.InformationalResponse(status_code=100, headers=[]))
                self._h11.receive_data(await self._receive())
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None  # h11 sends Request before EndOfMessage
                return _incoming(request, bytes(body))
            else:  # ConnectionClosed, or PAUSED, which a server never sees here
                self._gone = True
                return None

    async def _receive(self) -> bytes:
        try:
            return await self._stream.receive()
        except anyio.EndOfStream:
            return b""  # h11's spelling of end of file
        except _NETWORK_ERRORS:
            self._gone = True
            raise ClientGone from None

    async def until_client_leaves(self) -> None:
        """Return once the client closes or breaks the connection.

        Whatever it sends meanwhile (a pipelined request) is kept for h11.
        """
        while True:
            try:
                data = await self._stream.receive()
            except _NETWORK_ERRORS:
                self._gone = True
                return
            self._h11.receive_data(data)

    async def while_connected(self, answer: Callable[[], Awaitable[Ending]]) -> Ending | None:
        """Run ``answer``, cut short if the client leaves; its ending, or None if it left.

        Without the watch a behaviour that waits (hangs, stalls) would notice a
        departed client only at its next send, or never.
        """
        ending: Ending | None = None
        async with anyio.create_task_group() as watch:

            async def watch_client() -> None:
                await self.until_client_leaves()
                watch.cancel_scope.cancel()

            watch.start_soon(watch_client)
            with contextlib.suppress(ClientGone):
                ending = await answer()
            watch.cancel_scope.cancel()
        return None if self._gone else ending

    # ------------------------------------------------------------ writing

    async def _send(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if not data:
            return
        try:
            await self._stream.send(data)
        except _NETWORK_ERRORS:
            self._gone = True
            raise ClientGone from None

    async def start_response(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        """Send the status line and headers.

        Without a content-length h11 frames the body with chunked encoding
        (close-delimited for an HTTP/1.0 client).
        """
        await self._send(
            h11.Response(
                status_code=status,
                headers=[(name.encode(), value.encode()) for name, value in headers],
                reason=status_phrase(status),
            )
        )

    async def send_body(self, data: bytes) -> None:
        """Send a piece of the body (one HTTP chunk when the body is chunked)."""
        if data:
            await self._send(h11.Data(data=data))

    async def end_body(self) -> None:
        """End the body properly (the ``0`` chunk when chunked)."""
        await self._send(h11.EndOfMessage())

    async def send_whole(
        self, status: int, headers: Sequence[tuple[str, str]], body: bytes
    ) -> None:
        """A complete response with a content-length."""
        await self.start_response(status, [*headers, ("content-length", str(len(body)))])
        await self.send_body(body)
        await self.end_body()

    async def refuse(self, status: int) -> None:
        """Answer a request h11 could not parse, when a response can still be sent."""
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = status_phrase(status) + b"\n"
            headers = [("content-type", "text/plain"), ("connection", "close")]
            await self.send_whole(status, headers, body)

    # ------------------------------------------------------------ the next cycle and closing

    def next_cycle(self) -> bool:
        """Get ready for the next request on this connection; False when it must close."""
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    @property
    def gone(self) -> bool:
        """Whether the client has left."""
        return self._gone

    async def close(self, ending: Ending) -> None:
        """Close the connection the way ``ending`` says (promptly when the client left)."""
        try:
            if ending is Ending.ABORT and not self._gone:
                raw: socket.socket = self._stream.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORTIVE_LINGER)
            elif ending is Ending.CLOSE and not self._gone:
                await self._close_gracefully()
        except (*_NETWORK_ERRORS, ClientGone):
            pass
        finally:
            await anyio.aclose_forcefully(self._stream)

    async def _close_gracefully(self) -> None:
        # Closing at once may discard bytes still buffered for sending (asyncio's
        # transport aborts), so half-close and let the client read and close first.
        await self._stream.send_eof()
        with anyio.move_on_after(_LINGER_SECONDS):
            await self.until_client_leaves()


def _incoming(request: h11.Request, body: bytes) -> IncomingRequest:
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    return IncomingRequest(
        method=request.method.decode("latin-1"),
        path=path,
        query=query,
        headers=tuple(
            (name.decode("latin-1").lower(), value.decode("latin-1"))
            for name, value in request.headers
        ),
        body=body,
    )
