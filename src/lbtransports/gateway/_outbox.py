"""A streamed answer's bytes on their way to the caller, sent by a task of their own.

The answering task renders each upstream event as the client yields it, and
a backend's burst of events arrives in one upstream read (each event its own
HTTP chunk). Sending each at once costs a send and a trip through the event
loop per event, which is most of what a gateway adds to a stream. Instead the
answer puts its bytes here, and the writer frames and sends everything
pending whenever it gets to run, which is when the answering task waits for
the upstream: one HTTP chunk in one send per upstream read, whatever the
number of events in it. A caller slower than the backend holds the answer
back once :data:`MAX_PENDING` bytes wait; one that takes nothing of it for
the gateway's ``body_timeout_s`` is taken as gone.
"""

from __future__ import annotations

from typing import Final

import anyio

from ._http import CallerGone, Connection

__all__ = ("MAX_PENDING", "Outbox")

#: Bytes that may wait for a slow caller before the answer waits for it.
MAX_PENDING: Final = 65536


class Outbox:
    """Collects one response's head and body for its connection; :meth:`run` is the writer."""

    __slots__ = (
        "_conn",
        "_done",
        "_end",
        "_ended",
        "_failed",
        "_head",
        "_last",
        "_pending",
        "_ready",
        "_room",
    )

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._head = b""
        self._pending = bytearray()
        self._end = False  # the response's end is to go with the next send
        self._ended = False  # ... or went already: nothing more is put
        self._ready = anyio.Event()
        self._room: anyio.Event | None = None
        self._last = False  # nothing more will be put: return once it is sent
        self._failed = False
        self._done = anyio.Event()

    def start(self, head: bytes) -> None:
        """Queue the response's head (framed, from :meth:`Connection.head`): it goes first."""
        self._head = head
        self._ready.set()

    def put(self, data: bytes) -> None:
        """Queue ``data``, a piece of the body; the writer sends it soon."""
        if data and not self._ended:
            self._pending += data
            self._ready.set()

    def end(self) -> None:
        """The body is complete: the response ends after what is pending (once)."""
        if not self._ended:
            self._end = self._ended = True
            self._ready.set()

    async def room(self) -> None:
        """Wait while more than :data:`MAX_PENDING` bytes wait for the caller."""
        while len(self._pending) > MAX_PENDING and not self._done.is_set():
            await self._sent_more()
        if self._failed:
            raise CallerGone

    async def close(self) -> None:
        """Wait until everything queued has been sent; :class:`CallerGone` if it could not be."""
        self._last = True
        self._ready.set()
        while not self._done.is_set():
            await self._sent_more()
        if self._failed:
            raise CallerGone

    async def _sent_more(self) -> None:
        """Wait for the writer's next send to complete (or its end); a caller that takes
        nothing for ``body_timeout_s`` is gone: the connection is given up (its writer,
        blocked in a send, is cancelled with the answer)."""
        self._room = anyio.Event()
        with anyio.move_on_after(self._conn.limits.body_timeout_s) as waiting:
            await self._room.wait()
        if waiting.cancelled_caught:
            self._conn.gone = True
            self._failed = True
            raise CallerGone

    async def run(self) -> None:
        """Send what is queued each time there is some, until :meth:`close`.

        Raises :class:`CallerGone` when a send fails."""
        conn = self._conn
        try:
            while not self._last:
                await self._ready.wait()
                self._ready = anyio.Event()
                while self._head or self._pending or self._end:
                    # Framed here, once per send: one HTTP chunk for all that is pending.
                    data = self._head + conn.body(bytes(self._pending))
                    self._head, self._pending = b"", bytearray()
                    if self._end:
                        data += conn.end()
                        self._end = False
                    await conn.send(data)
                    if self._room is not None:
                        self._room.set()
        except CallerGone:
            self._failed = True
            raise
        finally:
            self._done.set()
            if self._room is not None:
                self._room.set()
