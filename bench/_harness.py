"""What every bench shares: interleaved rounds, spreads and ratios, local backends, the record.

A bench measures each case against its baseline in the same process and the
same run: :func:`rounds` runs every measure once per round, in an order that
rotates from round to round, so a slow spell of the machine falls on all the
cases alike. A figure is the median of the per-round values, with their min and
max; a ratio is taken within each round (ours over the baseline of the same
round) before the median, min and max are taken over rounds.

Each bench script builds a :class:`Section` and calls :func:`publish`, which
prints it and stores it in ``bench/.results/<key>.json``; ``bench/report.py``
turns the stored sections into ``bench/RESULTS.md``.

This module runs under the project's venv and under ``.peers-venv`` alike, so it
uses the standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

from lbtransports import ClientConfig

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / ".results"
#: The project's interpreter, which serves the local backends (``lbtransports.testing``).
PROJECT_PYTHON = BENCH_DIR.parent / ".venv" / "bin" / "python"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


# A bench stopped by its PID still stops the servers it started (the
# ``finally`` blocks run), instead of leaving them behind.
signal.signal(signal.SIGTERM, _exit_on_sigterm)


# -- spreads and ratios ------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    """The median of some per-round values, with their min and max."""

    median: float
    low: float
    high: float

    def show(self, digits: int = 0, unit: str = "") -> str:
        return f"{self.median:.{digits}f}{unit} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("a spread needs at least one value")
    return Spread(statistics.median(values), min(values), max(values))


def ratio(ours: Sequence[float], base: Sequence[float]) -> Spread:
    """Ours over the baseline, round by round (both lists have one value per round)."""
    if len(ours) != len(base):
        raise ValueError("a ratio needs one value per round on each side")
    return spread([o / b for o, b in zip(ours, base, strict=True)])


def difference(ours: Sequence[float], base: Sequence[float]) -> Spread:
    return spread([o - b for o, b in zip(ours, base, strict=True)])


def median_of(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


# -- interleaved rounds ------------------------------------------------------------


def rotated(names: Sequence[str], shift: int) -> list[str]:
    shift %= max(1, len(names))
    return [*names[shift:], *names[:shift]]


def rounds(measures: Mapping[str, Callable[[], T]], count: int) -> dict[str, list[T]]:
    """Each measure's result in each of ``count`` rounds, the order rotating per round."""
    results: dict[str, list[T]] = {name: [] for name in measures}
    for index in range(count):
        for name in rotated(list(measures), index):
            results[name].append(measures[name]())
    return results


async def rounds_async(
    measures: Mapping[str, Callable[[], Awaitable[T]]], count: int
) -> dict[str, list[T]]:
    results: dict[str, list[T]] = {name: [] for name in measures}
    for index in range(count):
        for name in rotated(list(measures), index):
            results[name].append(await measures[name]())
    return results


# -- CPU use, to show where the bottleneck is -------------------------------------


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (this one when None), from /proc."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


# -- local backends in a child process -------------------------------------------


@dataclass(frozen=True)
class ServedBackends:
    """Local backends served by another process: their URLs, and its PID."""

    urls: dict[str, str]
    pid: int


@contextlib.contextmanager
def backends_in_child(specs: Sequence[str]) -> Iterator[ServedBackends]:
    """Serve ``python -m lbtransports.testing SPEC...`` in a child, stopped by its PID after.

    The child has its own core and its own interpreter lock, so the side being
    measured does not pay for the server. Each spec is ``NAME=PROVIDER[:SCRIPT]``.
    """
    child = subprocess.Popen(
        [str(PROJECT_PYTHON), "-m", "lbtransports.testing", "--duration", "3600", *specs],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        urls = {}
        for line in child.stdout:
            words = line.split()
            if words == ["ready"]:
                break
            if len(words) == 3:
                urls[words[0]] = words[2]
        else:
            raise RuntimeError("the backend process ended before it was ready")
        yield ServedBackends(urls, child.pid)
    finally:
        stop_child(child, grace_s=10)


def stop_child(child: subprocess.Popen[str], *, grace_s: float) -> None:
    """Stop a process the bench started, by its PID: terminate, then kill after ``grace_s``."""
    child.terminate()
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=10)


#: The key every bench backend is given: a made-up one, so redaction is exercised.
KEY = "sk-bench-not-a-real-key"


def client_config(
    urls: Mapping[str, str], *names: str, strategy: str = "failover", **settings: object
) -> ClientConfig:
    """A client over the named local openai-format backends, as the benches use it."""
    return ClientConfig.from_mapping(
        {
            "strategy": strategy,
            "settings": {"timeout_ms": 30_000, "failover_retry_count": 1, **settings},
            "backends": [
                {
                    "name": name,
                    "provider": "openai",
                    "model": "bench-model",
                    "base_url": urls[name],
                    "credential": {"key": KEY},
                }
                for name in names
            ],
        }
    )


def alternating(first: str, second: str, pairs: int) -> str:
    """A backend script playing ``first, second`` ``pairs`` times."""
    return ",".join([first, second] * pairs)


# -- the record --------------------------------------------------------------------


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join(" --- " for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class Section:
    """One bench's part of RESULTS.md, and the figures the goals table reads."""

    key: str
    order: int
    title: str
    method: str
    tables: list[Table] = field(default_factory=list)
    #: Named figures (a Spread as a dict) for the goals table.
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Versions of what was measured, beyond the project's own (e.g. litellm).
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: The machine's 1-minute load average when the section was written.
    load_average: float = 0.0

    def figure(self, name: str, value: Spread) -> None:
        self.figures[name] = asdict(value)

    def markdown(self) -> str:
        parts = [f"## {self.title}", self.method.strip()]
        parts += [table.markdown() for table in self.tables]
        return "\n\n".join(parts) + "\n"


def publish(section: Section, began: float) -> None:
    """Print the section and store it for ``bench/report.py``."""
    section.seconds = round(time.monotonic() - began, 1)
    section.load_average = round(os.getloadavg()[0], 2)
    print(section.markdown())
    if "--quick" in sys.argv:
        return  # a smoke run: do not overwrite the record with tiny sizes
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{section.key}.json"
    path.write_text(json.dumps(asdict(section), indent=1) + "\n")


def load_sections() -> list[Section]:
    sections = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        data["tables"] = [Table(**table) for table in data["tables"]]
        sections.append(Section(**data))
    return sorted(sections, key=lambda s: (s.order, s.key))


def quick() -> bool:
    """Whether the bench runs with tiny sizes (the smoke test), not for the record."""
    return "--quick" in sys.argv


def us(ns: float) -> float:
    return ns / 1000
