"""Running events through a fresh balancer, and checking recorded traces."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from ._balancer import Balancer
from ._config import BalancerConfig
from ._events import Event
from ._trace import Step, TraceError, TraceHeader, decode_trace, encode_line, split_lines

# Everything in __all__ is re-exported by lbcore.
__all__ = ("Mismatch", "replay", "run", "verify_trace")


def run(config: BalancerConfig, events: Iterable[Event]) -> list[Step]:
    """Feed ``events`` to a new balancer and return the steps it takes."""
    balancer = Balancer(config, record=True)
    for event in events:
        balancer.handle(event)
    return balancer.take_steps()


def replay(header: TraceHeader, steps: Iterable[Step]) -> list[Step]:
    return run(header.config, [step.event for step in steps])


class Mismatch(msgspec.Struct, frozen=True, kw_only=True):
    """Where a replay first departed from the recording."""

    line: int
    expected: str
    actual: str


def verify_trace(data: bytes) -> Mismatch | None:
    """Replay a recorded trace and compare it byte for byte, line by line.

    Returns None when every line matches. A line that cannot be decoded, or an
    event the balancer refuses, is reported as the mismatch at that line.
    """
    lines = split_lines(data)
    try:
        header, steps = decode_trace(data)
    except TraceError as exc:
        return Mismatch(line=0, expected="a readable trace", actual=str(exc))
    if encode_line(header) != lines[0]:
        return Mismatch(line=1, expected=lines[0].decode(), actual=encode_line(header).decode())
    balancer = Balancer(header.config, record=True)
    for number, (step, original) in enumerate(zip(steps, lines[1:], strict=True), start=2):
        try:
            balancer.handle(step.event)
        except Exception as exc:  # a refused event is a replay failure, not a crash
            return Mismatch(line=number, expected=original.decode(), actual=f"refused: {exc}")
        (produced,) = balancer.take_steps()
        encoded = encode_line(produced)
        if encoded != original:
            return Mismatch(line=number, expected=original.decode(), actual=encoded.decode())
    return None
