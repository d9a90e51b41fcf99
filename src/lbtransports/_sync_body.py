"""The sync client reads each response body itself, from http.client's buffer.

http.client undoes chunked framing one chunk per read, through urllib3's
layers, and throws its read buffer away with the response once the body
ended: bytes a server sent past the end are lost with it, and the connection
would go back to urllib3's pool out of step with the server. A pooled
connection must carry nothing from the exchange before it.

So once http.client has read the status line and headers, :class:`BodyReader`
takes the body's bytes straight from its buffer (every recv there is still
bounded by the attempt's timers, :mod:`._sync_deadline`), undoes the framing
here (:class:`ChunkedFraming`, a ``Content-Length``, or none), and knows
exactly where the body ends. Each read hands over every chunk that arrived
together, so the reader decodes them and the core hears of them once per
network read, not once per chunk. The connection goes back to the pool only
after a body that ended exactly where its framing said, with no byte after
it, from a server that did not say ``Connection: close``; otherwise closing
the response closes the connection (spec/transports.md section 5).
"""

from __future__ import annotations

import re
import select
import socket
import ssl
from typing import Any, Final

import requests
import urllib3.exceptions

__all__ = ("BodyReader", "ChunkedFraming", "LengthFraming")

#: How much to ask for per read; SSE events are far smaller.
PIECE: Final = 64 * 1024
#: The longest chunk-size or trailer line accepted (http.client's own limit).
MAX_LINE: Final = 64 * 1024

_SIZE, _DATA, _DATA_END, _TRAILER = range(4)
#: A chunk-size line as h11 reads it (under AsyncClient): hex digits only, then an
#: optional extension. Python's int() would also take "+5", "0x5", "5_0" and " 5",
#: which h11 refuses: the two clients must agree on where a body ends.
_CRLF: Final = b"\r\n"
_SIZE_LINE: Final = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;[^\r\n]*)?[ \t]*\r?\n")


class FramingError(urllib3.exceptions.ProtocolError):
    """The body's framing is malformed: the connection is lost for this answer."""


class ChunkedFraming:
    """Undoes chunked transfer coding over pieces split anywhere, as http.client reads it.

    A size line (hex, optional ``;extensions``) ends at LF; a chunk's data is
    followed by CRLF, exactly (h11 refuses anything else there, and a body that
    says where its chunks end must end there); the zero-size chunk is followed
    by trailer lines up to an empty one. Data decoded before a malformed byte in
    the same piece is handed over first; the error is raised by the next feed.
    """

    __slots__ = ("_left", "_line", "_state", "broken", "done", "extra")

    def __init__(self) -> None:
        self._state = _SIZE
        self._left = 0  # bytes left of the chunk's data, or of its CRLF
        self._line = b""  # a size or trailer line not yet ended
        #: The body's end (the empty line after the last chunk) was read.
        self.done = False
        #: Bytes fed after that end: a server out of step.
        self.extra = 0
        #: The framing error found after data already handed over, raised next.
        self.broken: FramingError | None = None

    def feed(self, data: bytes) -> bytes:
        """The body bytes in ``data``; raises :class:`FramingError` if it is malformed."""
        if self.broken is not None:
            raise self.broken
        if self.done:
            self.extra += len(data)
            return b""
        if self._line:
            data, self._line = self._line + data, b""
        out: list[bytes] = []
        try:
            self._undo(data, out)
        except FramingError as error:
            if not out:
                raise
            self.broken = error
        return out[0] if len(out) == 1 else b"".join(out)

    def _undo(self, data: bytes, out: list[bytes]) -> None:
        position, size, state = 0, len(data), self._state
        while position < size:
            if state == _DATA:
                end = min(position + self._left, size)
                out.append(data[position:end])
                self._left -= end - position
                position = end
                if not self._left:
                    state, self._left = _DATA_END, 2
            elif state == _DATA_END:
                end = min(position + self._left, size)
                expected = _CRLF[2 - self._left : 2 - self._left + end - position]
                if data[position:end] != expected:
                    raise FramingError("a chunk's data is not followed by CRLF")
                self._left -= end - position
                position = end
                if not self._left:
                    state = _SIZE
            else:
                line_end = data.find(b"\n", position)
                if line_end < 0:
                    self._line = data[position:]
                    if len(self._line) > MAX_LINE:
                        raise FramingError("a chunk-size or trailer line is too long")
                    break
                line = data[position : line_end + 1]
                position = line_end + 1
                if state == _SIZE:
                    self._left = _chunk_size(line)
                    state = _DATA if self._left else _TRAILER
                elif line in (b"\r\n", b"\n"):
                    self.done = True
                    self.extra = size - position
                    break
        self._state = state


def _chunk_size(line: bytes) -> int:
    match = _SIZE_LINE.fullmatch(line)
    if match is None:
        raise FramingError("a chunk size is not a hexadecimal number")
    return int(match[1], 16)


class LengthFraming:
    """A body of ``Content-Length`` bytes; with ``length`` None, one that ends when the
    server closes (which is never a clean end: the connection goes with it)."""

    __slots__ = ("_left", "broken", "done", "extra")

    def __init__(self, length: int | None) -> None:
        self._left = length
        self.done = length == 0
        self.extra = 0
        self.broken: FramingError | None = None  # a length cannot be malformed mid-body

    def feed(self, data: bytes) -> bytes:
        left = self._left
        if left is None:
            return data
        if self.done:
            self.extra += len(data)
            return b""
        if len(data) < left:
            self._left = left - len(data)
            return data
        self._left = 0
        self.done = True
        self.extra = len(data) - left
        return data[:left]

    def closed(self) -> bool:
        """The connection closed: the end of a body without length, else a body cut short."""
        if self._left is None:
            self.done = True
        return self.done


class BodyReader:
    """One response's body, read from http.client's buffer with its framing undone."""

    def __init__(self, response: requests.Response) -> None:
        self._raw = response.raw  # urllib3's HTTPResponse
        self._message = getattr(self._raw, "_fp", None)  # http.client's HTTPResponse
        self._fp: Any = getattr(self._message, "fp", None)  # its buffered reader
        self._sock = _socket_of(response)
        if getattr(self._message, "chunked", False):
            self._framing: ChunkedFraming | LengthFraming = ChunkedFraming()
        else:
            self._framing = LengthFraming(getattr(self._message, "length", None))
        #: Only a body whose end its framing gives can leave its connection reusable.
        self._framed = isinstance(self._framing, ChunkedFraming) or (
            getattr(self._message, "length", None) is not None
        )
        self._failed = False

    @property
    def ended(self) -> bool:
        """Whether the body was read to its end, without error."""
        return self._framing.done and not self._failed

    def read(self) -> bytes:
        """The next body bytes, waiting for them; b"" once the body has ended.

        Raises what the socket raises, or a urllib3 ``ProtocolError`` for
        malformed framing or a body cut short (both a lost connection).
        """
        framing, fp = self._framing, self._fp
        if fp is None:
            self._failed = True
            raise urllib3.exceptions.ProtocolError("the response has no body to read")
        try:
            while not framing.done:
                if framing.broken is not None:
                    raise framing.broken
                piece = fp.read1(PIECE)
                if not piece:
                    if isinstance(framing, LengthFraming) and framing.closed():
                        return b""
                    raise urllib3.exceptions.ProtocolError("the body ended before its framing did")
                data = framing.feed(piece)
                if data:
                    return data
        except BaseException:
            self._failed = True
            raise
        return b""

    def wait_for_more(self, timeout: float) -> bool:
        """Whether more of the body is at hand within ``timeout`` seconds (buffered, or
        the socket became readable)."""
        if self._sock is None or self._fp is None:
            return False
        if _peek(self._fp, self._sock):
            return True
        readable, _, _ = select.select([self._sock], [], [], timeout)
        return bool(readable)

    def finish(self) -> None:
        """Give the connection back to the pool if the body ended cleanly.

        Clean: read to exactly the end its framing gives, nothing after it
        (neither in what was read nor in http.client's buffer, looked at
        without waiting), and the server did not say it closes. A byte still
        in the socket is found by urllib3's check before reuse.
        """
        message = self._message
        if not (self.ended and self._framed and not self._framing.extra):
            return
        if getattr(message, "will_close", True) or self._sock is None:
            return
        if _peek(self._fp, self._sock) != b"":
            return
        assert message is not None
        # http.client forgets the response only once it is closed, which also
        # lets go of its buffer; the socket stays open, for the pool.
        message.close()
        self._raw.release_conn()


def _peek(buffer: Any, sock: socket.socket) -> bytes | None:
    """What ``buffer`` holds, reading the socket only if nothing is there and never waiting.

    None when it cannot be told (no buffer, or it is closed).
    """
    if not hasattr(buffer, "peek"):
        return None
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return bytes(buffer.peek())
    except ssl.SSLWantReadError:
        return b""  # a TLS record not yet complete: nothing buffered yet
    except (ValueError, OSError):
        return None  # closed
    finally:
        sock.settimeout(timeout)


def _socket_of(response: requests.Response) -> socket.socket | None:
    # urllib3 exposes the connection it reads from; the look at the buffer needs its socket.
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    return sock if isinstance(sock, socket.socket) else None
