"""Whether the sync client's connection may go back to urllib3's pool after a response.

urllib3 pools a connection as soon as http.client has read the body's last
byte, inside that very read. http.client reads through a buffer of its own
and throws it away with the response, so bytes a server sent past the end of
the body are lost with it, and the connection goes back to the pool out of
step with the server. A pooled connection must carry nothing from the
exchange before it.

So the client takes the connection out of urllib3's hands for the whole
read (:class:`PoolReturn`), looks at http.client's buffer before every read
without waiting for the network, and hands the connection back only after an
answer (an error status's too) whose body ended exactly where its framing
said. Otherwise closing the response closes the connection.
"""

from __future__ import annotations

import select
import socket
import ssl
from typing import Any

__all__ = ("ChunkedEndScanner", "PoolReturn", "chunked_end")


class PoolReturn:
    """Holds one response's connection out of the pool until its end is known clean."""

    def __init__(self, raw: Any, sock: socket.socket | None) -> None:
        self._raw = raw  # urllib3's HTTPResponse
        self._sock = sock
        # urllib3 returns the connection from inside the body's last read;
        # without a pool to return it to, it keeps it for us to decide.
        self._pool = getattr(raw, "_pool", None)
        raw._pool = None
        # Any status: a server that closes after an error without saying so
        # costs the next request the stale connection's uncharged retry.
        self._clean = self._pool is not None and sock is not None
        #: The last look at the buffer saw the body's end, with nothing after it.
        self._end_seen = False
        self._chunked_end = ChunkedEndScanner()

    def before_read(self) -> None:
        """Look at what http.client holds, past what the body still needs.

        Call it right before each read, with the read's own error handling:
        when nothing is buffered it makes one non-blocking read of the socket.
        """
        if not self._clean:
            return
        message = getattr(self._raw, "_fp", None)  # http.client's HTTPResponse
        buffer = getattr(message, "fp", None)
        if buffer is None and message is not None:
            return  # http.client read the body to its end and let its buffer go
        buffered = _peek(buffer, self._sock)
        if buffered is None:
            self._clean = False
            return
        if getattr(message, "chunked", False):
            end = self._chunked_end.find(buffered, getattr(message, "chunk_left", None))
        else:
            remaining = getattr(self._raw, "length_remaining", None)
            # Without a Content-Length the body ends when the server closes.
            end = remaining if isinstance(remaining, int) else None
        if end is not None and end < len(buffered):
            self._clean = False  # bytes past the end: the server is out of step
        self._end_seen = end is not None and end == len(buffered)

    def wait_for_more(self, timeout: float) -> bool:
        """Whether more of the body is at hand within ``timeout`` seconds.

        True when http.client holds bytes already (or let its buffer go, the
        body being done), or when the socket becomes readable in that time.
        """
        if self._sock is None:
            return False
        message = getattr(self._raw, "_fp", None)
        buffer = getattr(message, "fp", None)
        if buffer is None:
            return message is not None
        if _peek(buffer, self._sock):
            return True
        readable, _, _ = select.select([self._sock], [], [], timeout)
        return bool(readable)

    def finish(self, ended: bool) -> None:
        """Give the connection back to the pool if the body ``ended`` cleanly.

        A Content-Length body is read up to its length and no further, so any
        byte past its end is either seen in the buffer or left in the socket
        (where urllib3's check before reuse finds it). A chunked body's last
        read may fill the buffer past the terminator, so its end must have
        been seen beforehand. A server that said ``Connection: close`` keeps
        its connection.
        """
        message = getattr(self._raw, "_fp", None)
        chunked = getattr(message, "chunked", False)
        closing = getattr(message, "will_close", True)
        if ended and self._clean and not closing and (self._end_seen or not chunked):
            self._raw._pool = self._pool
            self._raw.release_conn()


def _peek(buffer: Any, sock: socket.socket | None) -> bytes | None:
    """What ``buffer`` holds, reading the socket only if nothing is there and never waiting.

    None when it cannot be told (no buffer, or it is closed).
    """
    if sock is None or not hasattr(buffer, "peek"):
        return None
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return bytes(buffer.peek())
    except ssl.SSLWantReadError:
        return b""  # a TLS record not yet complete: nothing buffered yet
    except ValueError:
        return None  # closed
    finally:
        sock.settimeout(timeout)


def chunked_end(buffered: bytes, chunk_left: int | None) -> int | None:
    """Where a chunked body ends in ``buffered``; None if its end is not in it (or is malformed).

    ``chunk_left`` is http.client's position: None before a chunk-size
    line, 0 after a chunk's data (its CRLF still unread), n inside a chunk.
    """
    return _walk(buffered, _first_size_line(chunk_left))[0]


class ChunkedEndScanner:
    """:func:`chunked_end` over the successive looks at one response's buffer.

    Each read takes a chunk off the front of http.client's buffer, so a look
    usually sees the tail of the last one. Walking the same chunks again
    before every read was quadratic in the chunks buffered; when the walk
    would start at a size line the last walk already passed, in the same
    bytes, it would find what the last walk found: no end.
    """

    __slots__ = ("_last", "_passed")

    def __init__(self) -> None:
        self._last = b""
        #: Distances from the end of ``_last`` of the size lines its walk passed
        #: without finding the body's end.
        self._passed: frozenset[int] = frozenset()

    def find(self, buffered: bytes, chunk_left: int | None) -> int | None:
        start = _first_size_line(chunk_left)
        if (
            len(buffered) - start in self._passed
            and len(buffered) <= len(self._last)
            and self._last.endswith(buffered)
        ):
            return None
        end, passed = _walk(buffered, start)
        self._last = buffered
        self._passed = (
            frozenset(len(buffered) - line for line in passed) if end is None else frozenset()
        )
        return end


def _first_size_line(chunk_left: int | None) -> int:
    return 0 if chunk_left is None else chunk_left + 2


def _walk(buffered: bytes, position: int) -> tuple[int | None, list[int]]:
    """The body's end from the size line at ``position``, and the size lines passed."""
    passed: list[int] = []
    while True:
        passed.append(position)
        line_end = buffered.find(b"\n", position)
        if line_end < 0:
            return None, passed
        try:
            size = int(buffered[position:line_end].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return None, passed  # http.client will refuse it, and the connection is closed
        position = line_end + 1
        if size == 0:
            break
        position += size + 2
    while True:  # trailer fields, up to an empty line
        line_end = buffered.find(b"\n", position)
        if line_end < 0:
            return None, passed
        line, position = buffered[position : line_end + 1], line_end + 1
        if line in (b"\r\n", b"\n"):
            return position, passed
