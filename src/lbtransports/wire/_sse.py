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

from ._errors import WireError, protocol_error

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
        #: The partial line the last piece ended in (never holds a line end).
        self._buffer = bytearray()
        # A CR ended the last piece: an LF opening the next piece belongs to it.
        self._skip_lf = False
        self._first_line = True
        # True when the buffer holds no partial line, i.e. the input ended on a line end.
        self._at_line_start = True
        self._event = ""
        # The raw bytes of each data value; decoded once, when the event is dispatched.
        self._data: list[bytes] = []
        self._data_size = 0
        self._last_id: str | None = None

    def feed(self, data: bytes) -> list[SseEvent]:
        """Parse another piece of the stream and return the events it completed."""
        events, error = self.parse(data)
        if error is not None:
            raise error
        return events

    def parse(self, data: bytes) -> tuple[list[SseEvent], WireError | None]:
        """Like :meth:`feed`, but a limit passed is returned after the events before it.

        A decoder stops at its terminator, so a line past the limit that comes
        after the terminator in the same piece must not fail the answer.
        After an error the parser is spent: its state is not meaningful.
        """
        events: list[SseEvent] = []
        if not data:
            return events, None
        if self._skip_lf:
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        try:
            if b"\r" in data:
                self._feed_any_line_end(data, events)
            else:
                self._feed_lf(data, events)
        except WireError as error:
            return events, error
        return events, None

    def _feed_lf(self, data: bytes, events: list[SseEvent]) -> None:
        """The usual case, a piece with LF line ends only: split it in one go."""
        buffer = self._buffer
        last = data.rfind(b"\n")
        if last < 0:
            buffer += data
            self._at_line_start = not buffer
            self._check_partial()
            return
        if buffer:
            head = bytes(buffer) + data[:last]
            buffer.clear()
        else:
            head = data[:last]
        self._lines(head.split(b"\n"), events)
        buffer += data[last + 1 :]
        self._at_line_start = not buffer
        self._check_partial()

    def _feed_any_line_end(self, data: bytes, events: list[SseEvent]) -> None:
        """Any mix of LF, CR and CRLF; a CRLF may be split between two pieces."""
        buffer = self._buffer
        scan = len(buffer)
        buffer += data
        start = 0
        lines: list[bytes] = []
        # The next LF and CR from ``scan``; -1 once the piece has no more. Each
        # is searched for again only when passed: looking for the line end a
        # stream does not use afresh on every line would be quadratic.
        lf = buffer.find(b"\n", scan)
        cr = buffer.find(b"\r", scan)
        while lf >= 0 or cr >= 0:
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            lines.append(bytes(buffer[start:end]))
            start = end + 1
            if end == cr:
                if start < len(buffer):
                    if buffer[start] == 0x0A:
                        start += 1
                else:
                    self._skip_lf = True
            if 0 <= lf < start:
                lf = buffer.find(b"\n", start)
            if 0 <= cr < start:
                cr = buffer.find(b"\r", start)
        del buffer[:start]
        self._lines(lines, events)
        self._at_line_start = not buffer
        self._check_partial()

    def _check_partial(self) -> None:
        if len(self._buffer) > self._max_line:
            raise protocol_error(f"server-sent event line longer than {self._max_line} bytes")

    def end(self) -> list[SseEvent]:
        """Signal the end of the stream and return any event it completes.

        The standard drops an event the stream did not close with a blank line.
        We keep one whose last line did end, because some servers omit the
        final blank line; a partial last line is still dropped, so a stream cut
        mid-line never passes for a complete one.
        """
        events: list[SseEvent] = []
        if self._at_line_start:
            self._lines([b""], events)
        self._buffer.clear()
        self._reset_event()
        return events

    def _reset_event(self) -> None:
        self._event = ""
        self._data = []
        self._data_size = 0

    def _lines(self, lines: list[bytes], events: list[SseEvent]) -> None:
        """Interpret complete lines (without their line ends), in order.

        The frequent lines (blank, ``data:``, ``event:``, comments) are read
        here as bytes; every other line goes through :meth:`_line`. Values are
        decoded from UTF-8 only once they are known to be needed.
        """
        max_line, max_event = self._max_line, self._max_event
        if self._first_line and lines:
            self._line(lines[0], events)  # the only line that may open with a BOM
            lines = lines[1:]
        for raw in lines:
            if not raw:
                data = self._data
                if data:  # _dispatch, inlined: this runs once per event
                    joined = data[0] if len(data) == 1 else b"\n".join(data)
                    events.append(
                        SseEvent(
                            event=self._event or "message",
                            data=joined.decode("utf-8", "replace"),
                            id=self._last_id,
                        )
                    )
                    self._data = []
                    self._data_size = 0
                self._event = ""
                continue
            if len(raw) > max_line:
                raise protocol_error(f"server-sent event line longer than {max_line} bytes")
            if raw.startswith(b"data:"):
                value = raw[6:] if raw[5:6] == b" " else raw[5:]
                self._data_size += len(value) + 1
                if self._data_size > max_event:
                    raise protocol_error(f"server-sent event larger than {max_event} bytes")
                self._data.append(value)
            elif raw[0] == 0x3A:
                continue  # a comment: the keep-alive servers send while the model thinks
            elif raw.startswith(b"event:"):
                value = raw[7:] if raw[6:7] == b" " else raw[6:]
                self._event = value.decode("utf-8", "replace")
            else:
                self._line(raw, events)

    def _dispatch(self, events: list[SseEvent]) -> None:
        data = self._data
        joined = data[0] if len(data) == 1 else b"\n".join(data)
        events.append(
            SseEvent(
                event=self._event or "message",
                data=joined.decode("utf-8", "replace"),
                id=self._last_id,
            )
        )
        self._reset_event()

    def _line(self, raw: bytes, events: list[SseEvent]) -> None:
        """Any one line, by the standard's rules (the slow, general path)."""
        if len(raw) > self._max_line:
            raise protocol_error(f"server-sent event line longer than {self._max_line} bytes")
        line = raw.decode("utf-8", "replace")
        if self._first_line:
            self._first_line = False
            if line.startswith(_BOM):
                line = line[1:]
        if not line:
            if self._data:
                self._dispatch(events)
            else:
                self._reset_event()
            return
        if line.startswith(":"):
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            # The value's size in bytes: the raw line less its ASCII "data:" prefix.
            self._data_size += len(raw) - (len(line) - len(value)) + 1
            if self._data_size > self._max_event:
                raise protocol_error(f"server-sent event larger than {self._max_event} bytes")
            self._data.append(value.encode("utf-8"))
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        # "retry" and unknown fields are ignored, as the standard says.
