"""The trace format: JSON lines, a header with the config, then one line per step.

A step is one accepted event and the actions it produced. Encoding is
deterministic (struct fields in definition order, dict keys sorted), so the
same decisions always give the same bytes and a trace can be checked by
replaying it and comparing byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, final

import msgspec

from ._actions import Action
from ._config import LATER_BACKEND_FIELDS, LATER_SETTINGS, BalancerConfig
from ._events import Event
from ._records import Record

# Everything in __all__ is re-exported by lbcore.
__all__ = (
    "TRACE_FORMAT",
    "Step",
    "TraceError",
    "TraceHeader",
    "decode_trace",
    "encode_line",
    "encode_trace",
)

TRACE_FORMAT: Final = 1


@final
class TraceHeader(Record, frozen=True, kw_only=True):
    format: int
    config: BalancerConfig
    #: Free text for readers (what the trace shows, who recorded it); never read by replay.
    about: str = ""


@final
class Step(Record, frozen=True, kw_only=True):
    #: 1 for the first accepted event, counting up with no gaps.
    seq: int
    event: Event
    actions: tuple[Action, ...]


class TraceError(ValueError):
    """The bytes are not a trace this version can read."""


_ENCODER: Final = msgspec.json.Encoder(order="deterministic")
#: Keeps the insertion order of the builtins a header is turned into (field order).
_HEADER_ENCODER: Final = msgspec.json.Encoder()
_LINE_DECODER: Final = msgspec.json.Decoder(TraceHeader | Step)


def _drop_later_defaults(fields: dict[str, object], later: dict[str, object]) -> None:
    for name, default in later.items():
        # Compared with the type too: 0 == False, and a header must never lose a value.
        if name in fields and type(fields[name]) is type(default) and fields[name] == default:
            del fields[name]


def _header_bytes(header: TraceHeader) -> bytes:
    """A header with the settings added after format 1 left out while at their defaults.

    So a trace recorded before those settings existed encodes to the same bytes,
    and a trace that uses one names it. Decoding fills the defaults back in.
    """
    data = msgspec.to_builtins(header)
    config = data["config"]
    _drop_later_defaults(config["settings"], LATER_SETTINGS)
    for backend in config["backends"]:
        _drop_later_defaults(backend, LATER_BACKEND_FIELDS)
    return _HEADER_ENCODER.encode(data)


def encode_line(record: TraceHeader | Step) -> bytes:
    """One trace line, without its newline."""
    if type(record) is TraceHeader:
        return _header_bytes(record)
    return _ENCODER.encode(record)


def encode_trace(header: TraceHeader, steps: Iterable[Step]) -> bytes:
    lines = [encode_line(header), *(encode_line(step) for step in steps)]
    return b"".join(line + b"\n" for line in lines)


def split_lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line.strip()]


def decode_trace(data: bytes) -> tuple[TraceHeader, list[Step]]:
    lines = split_lines(data)
    if not lines:
        raise TraceError("empty trace: expected a header line")
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(_LINE_DECODER.decode(line))
        except msgspec.DecodeError as exc:
            raise TraceError(f"line {number}: {exc}") from None
    header, *rest = records
    if not isinstance(header, TraceHeader):
        raise TraceError("line 1: expected a TraceHeader")
    if header.format != TRACE_FORMAT:
        raise TraceError(f"line 1: trace format {header.format} is not supported")
    steps: list[Step] = []
    for number, record in enumerate(rest, start=2):
        if not isinstance(record, Step):
            raise TraceError(f"line {number}: expected a Step, found another header")
        steps.append(record)
    return header, steps
