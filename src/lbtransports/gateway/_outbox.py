"""A streamed answer's bytes on their way to the caller, sent by a task of their own.

The answering task renders each upstream event as the client yields it, and
a backend's burst of events arrives in one upstream read (each event its own
HTTP chunk). Sending each at once costs a send and a trip through the event
loop per event, which is most of what a gateway adds to a stream. Instead the
answer puts its bytes here, and the writer sends everything pending whenever
it gets to run, which is when the answering task waits for the upstream: one
send per upstream read, whatever the number of events in it. A caller slower
than the backend holds the answer back once :data:`MAX_PENDING` bytes wait.
"""

from __future__ import annotations

from typing import Final

import anyio

from ._http import CallerGone, Connection

__all__ = ("MAX_PENDING", "Outbox")

#: Bytes that may wait for a slow caller before the answer waits for it.
MAX_PENDING: Final = 65536


class Outbox:
    """Collects framed bytes for one connection; :meth:`run` is the writer task."""

    __slots__ = ("_conn", "_done", "_failed", "_last", "_pending", "_ready", "_room")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._pending = bytearray()
        self._ready = anyio.Event()
        self._room: anyio.Event | None = None
        self._last = False
        self._failed = False
        self._done = anyio.Event()

    def put(self, data: bytes) -> None:
        """Queue ``data`` (framed) behind what is pending; the writer sends it soon."""
        if data:
            self._pending += data
            self._ready.set()

    async def room(self) -> None:
        """Wait while more than :data:`MAX_PENDING` bytes wait for the caller."""
        while len(self._pending) > MAX_PENDING and not self._done.is_set():
            self._room = anyio.Event()
            await self._room.wait()
        if self._failed:
            raise CallerGone

    async def close(self) -> None:
        """Wait until everything put has been sent; :class:`CallerGone` if it could not be."""
        self._last = True
        self._ready.set()
        await self._done.wait()
        if self._failed:
            raise CallerGone

    async def run(self) -> None:
        """Send what is pending each time there is some, until :meth:`close`.

        Raises :class:`CallerGone` when a send fails."""
        try:
            while True:
                await self._ready.wait()
                self._ready = anyio.Event()
                while self._pending:
                    data, self._pending = bytes(self._pending), bytearray()
                    await self._conn.send(data)
                    if self._room is not None:
                        self._room.set()
                if self._last:
                    return
        except CallerGone:
            self._failed = True
            raise
        finally:
            self._done.set()
            if self._room is not None:
                self._room.set()
