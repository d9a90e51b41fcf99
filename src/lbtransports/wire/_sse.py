"""An incremental server-sent-events parser with size limits.

It follows the WHATWG "event stream interpretation" rules: lines end in LF,
CRLF or CR; a leading BOM is dropped; ``:`` starts a comment; one space after
the field's colon is dropped; ``data`` lines join with LF; a blank line
dispatches the event, and an event with no data is not dispatched at all.

Bytes may arrive in any split, down to one byte at a time. Lines are decoded
only once complete, so a UTF-8 sequence cut between two pieces is never seen
half-way (LF and CR never occur inside a multi-byte sequence). Invalid UTF-8 is
replaced, as the standard asks.

Two limits keep a hostile or broken backend from growing our memory without
bound: one line, and one event's accumulated data. Passing either raises a
protocol :class:`~lbtransports.wire.WireError`.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ._errors import protocol_error

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("SseEvent", "SseParser")

#: The largest single line accepted (1 MiB). Real provider events are a few KiB.
DEFAULT_MAX_LINE: Final = 1 << 20
#: The largest data accepted for one event (4 MiB).
DEFAULT_MAX_EVENT: Final = 4 << 20

_BOM: Final = "\ufeff"


class SseEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One dispatched event. ``event`` is "message" when the stream named none."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class SseParser:
    """Feed bytes with :meth:`feed`, get complete events back; call :meth:`end` at EOF."""

    def __init__(
        self, *, max_line: int = DEFAULT_MAX_LINE, max_event: int = DEFAULT_MAX_EVENT
    ) -> None:
        self._max_line = max_line
        self._max_event = max_event
        self._buffer = bytearray()
        # Where the next search for a line end starts, so byte-at-a-time input stays linear.
        self._scanned = 0
        # A CR ended the last piece: an LF opening the next piece belongs to it.
        self._skip_lf = False
        self._first_line = True
        # True when the buffer holds no partial line, i.e. the input ended on a line end.
        self._at_line_start = True
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0
        self._last_id: str | None = None

    def feed(self, data: bytes) -> list[SseEvent]:
        """Parse another piece of the stream and return the events it completed."""
        events: list[SseEvent] = []
        if not data:
            return events
        buffer = self._buffer
        buffer += data
        start = 0
        if self._skip_lf:
            self._skip_lf = False
            if buffer[:1] == b"\n":
                start = 1
        scan = max(self._scanned, start)
        # The next LF and CR from ``scan``; -1 once the piece has no more. Each
        # is searched for again only when passed: looking for the line end a
        # stream does not use (CR in an LF stream) afresh on every line was
        # quadratic in the size of the piece.
        lf = buffer.find(b"\n", scan)
        cr = buffer.find(b"\r", scan)
        while lf >= 0 or cr >= 0:
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            self._line(bytes(buffer[start:end]), events)
            start = end + 1
            if end == cr:
                if start < len(buffer):
                    if buffer[start] == 0x0A:
                        start += 1
                else:
                    self._skip_lf = True
            scan = start
            if 0 <= lf < scan:
                lf = buffer.find(b"\n", scan)
            if 0 <= cr < scan:
                cr = buffer.find(b"\r", scan)
        del buffer[:start]
        self._scanned = len(buffer)
        self._at_line_start = not buffer
        if len(buffer) > self._max_line:
            raise protocol_error(f"server-sent event line longer than {self._max_line} bytes")
        return events

    def end(self) -> list[SseEvent]:
        """Signal the end of the stream and return any event it completes.

        The standard drops an event the stream did not close with a blank line.
        We keep one whose last line did end, because some servers omit the
        final blank line; a partial last line is still dropped, so a stream cut
        mid-line never passes for a complete one.
        """
        events: list[SseEvent] = []
        if self._at_line_start:
            self._line(b"", events)
        self._buffer.clear()
        self._scanned = 0
        self._reset_event()
        return events

    def _reset_event(self) -> None:
        self._event = ""
        self._data = []
        self._data_size = 0

    def _line(self, raw: bytes, events: list[SseEvent]) -> None:
        if len(raw) > self._max_line:
            raise protocol_error(f"server-sent event line longer than {self._max_line} bytes")
        line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            if self._data:
                data = "\n".join(self._data)
                events.append(SseEvent(event=self._event or "message", data=data, id=self._last_id))
            self._reset_event()
            return
        if line.startswith(":"):
            return  # a comment: the keep-alive servers send while the model thinks
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            # The value's size in bytes: the raw line less its ASCII "data:" prefix.
            self._data_size += len(raw) - (len(line) - len(value)) + 1
            if self._data_size > self._max_event:
                raise protocol_error(f"server-sent event larger than {self._max_event} bytes")
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields are ignored, as the standard says.
