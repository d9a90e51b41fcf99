"""A network backend for httpcore that sends a request's head with its body.

httpcore writes an HTTP/1.1 request in separate writes: the head, then each
piece of the body. On a TCP_NODELAY socket each write is a packet and a
system call of its own, and the backend wakes for a head it cannot answer
yet. The streams here hold the first write of each request (its head) and
send it together with the next write (the body's first piece, or the empty
write of its end), so a request small enough for one piece leaves in one
write. Nothing waits on a held head: it goes out before any read, close or
TLS start, so a request whose body never comes still reaches the backend. A
backend given by IP address is connected without resolving (:mod:`._direct_connect`).
"""

from __future__ import annotations

from typing import Any

import httpcore
from httpcore._backends.auto import AutoBackend

from ._direct_connect import connect_ip, direct_address

__all__ = ("CoalescingBackend",)


class CoalescingBackend(httpcore.AsyncNetworkBackend):
    """``inner``'s streams (by default httpcore's own choice, anyio or trio), coalescing."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = AutoBackend() if inner is None else inner
        #: httpcore's own backend may be bypassed to connect to an IP address.
        self._direct = inner is None

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        family = direct_address(host, local_address) if self._direct else None
        if family is not None:
            direct = await connect_ip(family, host, port, timeout, socket_options)
            return _CoalescingStream(direct)
        stream = await self._inner.connect_tcp(
            host,
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )
        return _CoalescingStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(
            path, timeout=timeout, socket_options=socket_options
        )
        return _CoalescingStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _CoalescingStream(httpcore.AsyncNetworkStream):
    """A stream that holds a request's first write until its second.

    A request's first write is the first since the last read (or since the
    connection opened): httpcore reads each answer before it writes the next
    request on the same connection.
    """

    __slots__ = ("_held", "_inner", "_reading")

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._held = b""
        self._reading = True  # as if after a read: the first write is a head

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._reading:
            self._reading = False
            if buffer:
                self._held = buffer
                return
        if self._held:
            buffer, self._held = self._held + buffer, b""
        await self._inner.write(buffer, timeout=timeout)

    async def _flush(self, timeout: float | None = None) -> None:
        if self._held:
            held, self._held = self._held, b""
            await self._inner.write(held, timeout=timeout)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush(timeout)
        self._reading = True
        return await self._inner.read(max_bytes, timeout=timeout)

    async def aclose(self) -> None:
        # A head held for a request that is being given up is dropped with it.
        self._held = b""
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        await self._flush()
        stream = await self._inner.start_tls(
            ssl_context, server_hostname=server_hostname, timeout=timeout
        )
        self._reading = True
        return _CoalescingStream(stream)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
