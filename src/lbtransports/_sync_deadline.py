"""Socket timeouts re-aimed at the attempt's deadline before every ``recv`` and send.

A socket timeout bounds one call. http.client reads a status line, a header
or a chunk-size line through many ``recv`` calls, and ``sendall`` is bounded
as a whole, so neither a timeout set once per read nor the connect timeout
urllib3 sends under is the attempt's deadline. Here every ``recv`` of a
response, and every piece of a request, first asks the attempt how long it
may still wait (:class:`AttemptTimer`, through the link) and sets the
socket's timeout to that: a trickle of bytes that completes nothing can no
longer hold a timer off, and an upload is bounded by its progress.
"""

from __future__ import annotations

import http.client
import io
import socket
from collections.abc import Callable
from typing import Any

from ._sync_head import StrictResponse
from ._timer import UPLOAD_PIECE

__all__ = ("WaitLeft", "deadline_response", "send_in_pieces")

#: Seconds the attempt may still wait; zero or less once a timer ran out.
WaitLeft = Callable[[], float]


def _aim(sock: socket.socket, wait_left: WaitLeft) -> None:
    if sock.gettimeout() == 0.0:
        return  # a look that must not wait (the pool's check of the buffer): left as it is
    left = wait_left()
    if left <= 0:
        raise TimeoutError("timed out")
    sock.settimeout(left)


class _DeadlineReader(io.RawIOBase):
    """The socket's raw reader, with the timeout re-aimed before every ``recv``."""

    def __init__(self, sock: socket.socket, wait_left: WaitLeft) -> None:
        super().__init__()
        self._sock = sock
        # The socket's own reader keeps its count of open files right.
        self._raw = sock.makefile("rb", buffering=0)
        self._wait_left = wait_left

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        _aim(self._sock, self._wait_left)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What http.client's response is given instead of the socket: it only calls makefile."""

    def __init__(self, sock: socket.socket, wait_left: WaitLeft) -> None:
        self._sock = sock
        self._wait_left = wait_left

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._wait_left))


def deadline_response(wait_left: WaitLeft) -> Callable[..., http.client.HTTPResponse]:
    """An http.client ``response_class`` whose every ``recv`` is bounded by ``wait_left``."""

    def response(sock: socket.socket, *args: Any, **kwargs: Any) -> http.client.HTTPResponse:
        return StrictResponse(_DeadlineSocket(sock, wait_left), *args, **kwargs)  # type: ignore[arg-type]

    return response


def send_in_pieces(
    sock: socket.socket,
    data: bytes | bytearray | memoryview,
    wait_left: WaitLeft,
    progressed: Callable[[], None],
) -> None:
    """Send ``data`` piece by piece, each bounded by the time left, each taken as progress."""
    view = memoryview(data)
    for start in range(0, len(view), UPLOAD_PIECE):
        _aim(sock, wait_left)
        sock.sendall(view[start : start + UPLOAD_PIECE])
        progressed()
