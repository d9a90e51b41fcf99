"""Connecting straight to a backend given by IP address, on asyncio.

anyio's ``connect_tcp`` resolves every host through ``getaddrinfo``, which
asyncio runs in a worker thread, and races the addresses (happy eyeballs) in
a task group of its own: a thread round trip and a few tasks per connection,
for an address that needs no resolving and has nothing to race. A backend
given as an IP literal is connected here with one non-blocking ``connect``
instead, failing and timing out as httpcore's own backend reports it.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.abc
import httpcore
import sniffio
from httpcore._backends.anyio import AnyIOStream

__all__ = ("connect_ip", "connect_ip_stream", "direct_address")


def direct_address(host: str, local_address: str | None) -> socket.AddressFamily | None:
    """The address family to connect ``host`` with directly, or None to resolve as usual."""
    if local_address is not None or "%" in host:
        return None
    try:
        address = ipaddress.ip_address(host)
        if sniffio.current_async_library() != "asyncio":
            return None
    except (ValueError, sniffio.AsyncLibraryNotFoundError):
        return None
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


async def connect_ip(
    family: socket.AddressFamily,
    host: str,
    port: int,
    timeout: float | None,
    socket_options: Iterable[Any] | None,
) -> httpcore.AsyncNetworkStream:
    """A connection to ``host:port``; ConnectError or ConnectTimeout as httpcore raises them."""
    return AnyIOStream(await connect_ip_stream(family, host, port, timeout, socket_options))


async def connect_ip_stream(
    family: socket.AddressFamily,
    host: str,
    port: int,
    timeout: float | None,
    socket_options: Iterable[Any] | None = None,
) -> anyio.abc.SocketStream:
    """:func:`connect_ip`'s connection as anyio's own stream (for :mod:`._h1`)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        try:
            with anyio.fail_after(timeout):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for option in socket_options or ():
                    sock.setsockopt(*option)
                code = sock.connect_ex((host, port))
                if code in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                    await anyio.wait_writable(sock)
                    code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, os.strerror(code))
                stream = await anyio.abc.SocketStream.from_socket(sock)
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(error) from error
        except (OSError, anyio.BrokenResourceError) as error:
            raise httpcore.ConnectError(error) from error
    except BaseException:
        sock.close()
        raise
    return stream
