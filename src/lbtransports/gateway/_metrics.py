"""The gateway's numbers, in the Prometheus text exposition format (version 0.0.4).

Counters, breaker states and attempts in flight come from each group's client
``stats()`` (the core's count); what only the gateway sees (how long whole
answers took) is kept here.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Final

from lbcore import BreakerState, Stats

__all__ = ("CONTENT_TYPE", "Latencies", "render_metrics")

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds of the latency histogram, in seconds.
BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BREAKER_VALUES: Final = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class _Histogram:
    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        position = bisect.bisect_left(BUCKETS, seconds)
        if position < len(BUCKETS):
            self.counts[position] += 1
        self.total += seconds
        self.count += 1


class Latencies:
    """Per (group, backend): a histogram of answer durations."""

    def __init__(self) -> None:
        self.histograms: dict[tuple[str, str], _Histogram] = {}

    def observe(self, group: str, backend: str, seconds: float) -> None:
        self.histograms.setdefault((group, backend), _Histogram()).observe(seconds)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def render_metrics(stats: Mapping[str, Stats], latencies: Latencies, connections: int) -> bytes:
    """The exposition text for every group's backends (``stats`` by group name)."""
    rows = [
        (group, backend, snapshot)
        for group, snapshot in stats.items()
        for backend in snapshot.members
    ]

    def labels(group: str, backend: str) -> str:
        return f'{{model="{_label(group)}",backend="{_label(backend)}"}}'

    lines: list[str] = []
    counters = (
        (
            "lb_backend_requests_total",
            "requests",
            "Attempts started on the backend, retries included.",
        ),
        ("lb_backend_failures_total", "failures", "Attempts that failed."),
        ("lb_backend_timeouts_total", "timeouts", "Attempts that timed out."),
    )
    for name, field, help_text in counters:
        lines += _family(name, "counter", help_text)
        for group, backend, snapshot in rows:
            metrics = snapshot.backend_metrics.get(backend)
            value = getattr(metrics, field) if metrics is not None else 0
            lines.append(f"{name}{labels(group, backend)} {value}")
    lines += _family(
        "lb_backend_breaker_state", "gauge", "Circuit breaker: 0 closed, 1 half-open, 2 open."
    )
    for group, backend, snapshot in rows:
        breaker = snapshot.circuit_breaker_states.get(backend)
        value = _BREAKER_VALUES[breaker.state] if breaker is not None else 0
        lines.append(f"lb_backend_breaker_state{labels(group, backend)} {value}")
    lines += _family(
        "lb_backend_in_flight", "gauge", "Attempts under way at the backend (sent or sending)."
    )
    for group, backend, snapshot in rows:
        value = snapshot.backend_in_flight.get(backend, 0)
        lines.append(f"lb_backend_in_flight{labels(group, backend)} {value}")
    name = "lb_backend_latency_seconds"
    lines += _family(
        name, "histogram", "Time from request to the answer's end, by answering backend."
    )
    for group, backend, _ in rows:
        histogram = latencies.histograms.get((group, backend)) or _Histogram()
        base = f'model="{_label(group)}",backend="{_label(backend)}"'
        running = 0
        for bound, count in zip(BUCKETS, histogram.counts, strict=True):
            running += count
            lines.append(f'{name}_bucket{{{base},le="{_number(bound)}"}} {running}')
        lines.append(f'{name}_bucket{{{base},le="+Inf"}} {histogram.count}')
        lines.append(f"{name}_sum{{{base}}} {_number(histogram.total)}")
        lines.append(f"{name}_count{{{base}}} {histogram.count}")
    lines += _family("lb_gateway_open_connections", "gauge", "Caller connections open now.")
    lines.append(f"lb_gateway_open_connections {connections}")
    return ("\n".join(lines) + "\n").encode()
