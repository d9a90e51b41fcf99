"""Undoing a chunked body in bulk, by exactly the rules h11 applies one chunk at a time.

h11 gives a chunked body one event per HTTP chunk, each through its state
machine: for a 20-event stream sent one event per chunk, that is most of
what reading it costs. Once h11 has parsed the answer's head and said the
body is chunked, :mod:`._h1` hands the rest to :class:`ChunkedBody`, which
takes every complete chunk of a network read at once. It accepts and refuses
what h11 does (spec/transports.md section 3): a chunk-size line is 1 to 20
hex digits, an optional extension after ``;`` and optional blanks, ended by
CRLF (h11's own pattern is used); exactly CRLF follows each chunk's data; the
trailer lines after the last chunk are h11's header lines; anything still
incomplete past 100 KiB, or a close before the end, is a broken framing.
"""

from __future__ import annotations

import re
from typing import Final

import h11._readers

__all__ = ("ChunkedBody", "FramingBroken")

#: h11's (private) pattern of a chunk-size line, CRLF included: the same rules, not a copy.
_SIZE_LINE: Final = h11._readers.chunk_header_re
#: Where the trailer ends: a blank line, after an LF (h11's rule).
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")
_CRLF: Final = b"\r\n"


class FramingBroken(Exception):
    """The body's chunked framing is not HTTP/1.1's (or was cut off)."""


class ChunkedBody:
    """The state of one chunked body being undone; :meth:`take` after each read."""

    __slots__ = ("_buffer", "_discard", "_error", "_left", "_limit", "_trailer", "ended")

    def __init__(self, start: bytes, limit: int) -> None:
        self._buffer = bytearray(start)
        #: Bytes of the current chunk's data still to come.
        self._left = 0
        #: Bytes of the CRLF after a chunk's data still to match.
        self._discard = 0
        self._trailer = False
        #: Bound on what may wait incomplete (a size line, a trailer), as h11's.
        self._limit = limit
        #: Found after data taken in the same step: raised at the next one.
        self._error: FramingBroken | None = None
        #: The last chunk and its trailer were read.
        self.ended = False

    @property
    def left_over(self) -> bool:
        """Bytes after the body's end: never to be read as another answer."""
        return bool(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def take(self) -> bytes:
        """The data of every chunk the bytes fed so far complete (or part of one)."""
        if self._error is not None:
            raise self._error
        pieces: list[bytes | bytearray] = []
        buffer = self._buffer
        at = 0
        try:
            while not self.ended:
                if self._trailer:
                    end = self._trailer_end(buffer, at)
                    if end < 0:
                        break
                    at = end
                    self.ended = True
                    break
                if self._discard:
                    have = min(len(buffer) - at, self._discard)
                    if not have:
                        break
                    expected = _CRLF[2 - self._discard : 2 - self._discard + have]
                    if buffer[at : at + have] != expected:
                        raise FramingBroken("malformed chunk footer")
                    at += have
                    self._discard -= have
                    if self._discard:
                        break
                if not self._left:
                    line_end = buffer.find(_CRLF, at)
                    if line_end < 0:
                        break
                    match = _SIZE_LINE.fullmatch(buffer, at, line_end + 2)
                    if match is None:
                        raise FramingBroken("illegal chunk header")
                    at = line_end + 2
                    size = int(match["chunk_size"], 16)
                    if not size:
                        self._trailer = True
                        continue
                    self._left = size
                count = min(self._left, len(buffer) - at)
                if not count:
                    break
                pieces.append(buffer[at : at + count])
                at += count
                self._left -= count
                if not self._left:
                    self._discard = 2
        except FramingBroken as error:
            if not pieces:
                raise
            self._error = error  # the data before it is delivered first
        del buffer[:at]
        if self._error is None and not self.ended and len(buffer) > self._limit:
            too_long = FramingBroken("an incomplete size line or trailer is too long")
            if not pieces:
                raise too_long
            self._error = too_long
        return b"".join(pieces)

    def closed(self) -> None:
        """The server closed the connection: an error unless the body had ended."""
        if not self.ended:
            raise FramingBroken("the connection closed inside a chunked body")

    @staticmethod
    def _trailer_end(buffer: bytearray, at: int) -> int:
        """Where the trailer that starts at ``at`` ends (validated), or -1 if it has not."""
        if buffer.startswith(b"\n", at):
            return at + 1
        if buffer.startswith(_CRLF, at):
            return at + 2
        blank = _BLANK_LINE.search(buffer, at)
        if blank is None:
            return -1
        lines = bytes(buffer[at : blank.end()]).split(b"\n")[:-2]
        try:
            # h11's own check of header lines (obsolete folding included).
            list(h11._readers._decode_header_lines([line.removesuffix(b"\r") for line in lines]))
        except h11.ProtocolError as error:
            raise FramingBroken("illegal trailer line") from error
        return blank.end()
