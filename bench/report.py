"""Write ``bench/RESULTS.md`` from the sections the benches stored in ``bench/.results/``.

``make bench`` runs every bench, then this; ``make bench-peers`` adds the
LiteLLM sections and runs this again. It measures nothing itself: it adds the
machine, the versions, the method and the goals table (each goal of issues 10, 11
and 12 against the figure that decides it) to what the benches recorded.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from _harness import BENCH_DIR, RESULTS_DIR, Section, Table, load_sections

OUT = BENCH_DIR / "RESULTS.md"
#: Why a goal is missed, by its figure, written by whoever measured it: shown
#: under the goals table for each goal the record says is missed.
MISSES = BENCH_DIR / "misses.md"
LIBRARIES = ("lbcore", "msgspec", "requests", "urllib3", "httpcore", "h11", "anyio", "openai")


@dataclass(frozen=True)
class Goal:
    text: str
    figure: str
    #: "<=" or ">=": how the figure's median must compare with the target.
    sense: str
    target: float
    unit: str = "x"


GOALS = (
    Goal(
        "Core: a routing decision under 5 µs, every mechanism on, 3 backends (issue 10)",
        "core.pick_us.3",
        "<=",
        5,
        " µs",
    ),
    Goal(
        "Core: a whole 20-chunk request under 20 µs, every mechanism on, 3 backends (issue 10)",
        "core.request_us.3",
        "<=",
        20,
        " µs",
    ),
    Goal(
        "Core: a routing decision under 5 µs with 10,000 requests queued (issue 10)",
        "core.queued_pick_us.10000",
        "<=",
        5,
        " µs",
    ),
    Goal(
        "20-chunk stream through `Client` within 1.10x raw requests",
        "client.sync.stream_ratio",
        "<=",
        1.10,
    ),
    Goal(
        "20-chunk stream through `AsyncClient` within 1.10x raw httpcore",
        "client.asyncio.stream_ratio",
        "<=",
        1.10,
    ),
    Goal(
        "Sync throughput at 16 threads at least 0.9x raw requests",
        "client.sync.throughput_ratio.16",
        ">=",
        0.9,
    ),
    Goal(
        "Sync throughput at 50 threads at least 0.9x raw requests",
        "client.sync.throughput_ratio.50",
        ">=",
        0.9,
    ),
    Goal(
        "Async throughput at 50 concurrent at least raw httpcore's",
        "client.asyncio.throughput_ratio.50",
        ">=",
        1.0,
    ),
    Goal(
        "Async throughput at 200 concurrent at least raw httpcore's",
        "client.asyncio.throughput_ratio.200",
        ">=",
        1.0,
    ),
    Goal(
        "Failover hop (503) within 0.3 ms of the two raw requests, `Client`",
        "client.sync.hop_503_vs_hand_us",
        "<=",
        300,
        " µs",
    ),
    Goal(
        "Failover hop (503) within 0.3 ms of the two raw requests, `AsyncClient`",
        "client.asyncio.hop_503_vs_hand_us",
        "<=",
        300,
        " µs",
    ),
    Goal(
        "Failover hop (refused connection) within 0.3 ms of the refused connect and "
        "the request by hand, `Client`",
        "client.sync.hop_refused_vs_hand_us",
        "<=",
        300,
        " µs",
    ),
    Goal(
        "Failover hop (refused connection) within 0.3 ms of the refused connect and "
        "the request by hand, `AsyncClient`",
        "client.asyncio.hop_refused_vs_hand_us",
        "<=",
        300,
        " µs",
    ),
    Goal(
        "Gateway: added p50 latency under 0.5 ms at concurrency 1 (raw httpcore caller)",
        "gateway.lb.raw.added_p50_us",
        "<=",
        500,
        " µs",
    ),
    Goal(
        "Gateway: added p50 latency under 0.5 ms at concurrency 1 (openai SDK caller)",
        "gateway.lb.SDK.added_p50_us",
        "<=",
        500,
        " µs",
    ),
    Goal(
        "Gateway at 200 concurrent: at least 0.8x of going direct (raw httpcore caller)",
        "gateway.lb.raw.rps_vs_straight.200",
        ">=",
        0.8,
    ),
    Goal(
        "Gateway at 200 concurrent: at least 10x LiteLLM's proxy (raw httpcore caller)",
        "gateway.lb_vs_litellm.raw.200",
        ">=",
        10,
    ),
    Goal(
        "Gateway: no error under load at 200 concurrent (raw caller)",
        "gateway.lb.raw.errors.200",
        "<=",
        0,
        "",
    ),
    Goal(
        "Gateway: no error under load at 200 concurrent (SDK caller)",
        "gateway.lb.SDK.errors.200",
        "<=",
        0,
        "",
    ),
    Goal("`make bench` runs in under 10 minutes", "bench.seconds", "<=", 600, " s"),
)


def is_met(goal: Goal, value: float) -> bool:
    return value <= goal.target if goal.sense == "<=" else value >= goal.target


def judged(goal: Goal, figures: dict[str, dict[str, float]]) -> list[str]:
    figure = figures.get(goal.figure)
    target = f"{goal.sense} {goal.target:g}{goal.unit}"
    if figure is None:
        return [goal.text, target, "not measured", "-"]
    value = figure["median"]
    met = is_met(goal, value)
    # A miss too small for two decimals shows more, so it never reads "0.90x, missed".
    places = 2 if goal.unit == "x" else 0
    while not met and places < 5 and round(value, places) == goal.target:
        places += 1
    shown = f"{value:.{places}f}{goal.unit}"
    if figure["low"] != figure["high"]:
        low, high = figure["low"], figure["high"]
        shown += f" ({low:.2f}-{high:.2f})" if goal.unit == "x" else f" ({low:.0f}-{high:.0f})"
    if met:
        return [goal.text, target, shown, "met"]
    gap = value - goal.target
    if goal.unit == "x":
        share = abs(gap) / goal.target
        of_target = f"{share:.0%}" if share >= 0.01 else "under 1%"
        by = f"missed by {abs(gap):.{places}f}x ({of_target} of the target)"
    else:
        by = f"missed by {abs(gap):.{places}f}{goal.unit}"
    return [goal.text, target, shown, f"**{by}**"]


def read_misses(path: Path) -> dict[str, str]:
    """``path``'s explanations: a ``## figure`` heading, then its paragraph."""
    if not path.exists():
        return {}
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = found.setdefault(line[3:].strip(), [])
        elif current is not None and line.strip():
            current.append(line.strip())
    return {figure: " ".join(lines) for figure, lines in found.items() if lines}


def why_missed(missed: list[Goal], explained: dict[str, str]) -> list[str]:
    """A paragraph per missed goal that has an explanation, under the goals table."""
    rows = [
        f"- {goal.text}: {explained[goal.figure]}" for goal in missed if goal.figure in explained
    ]
    if not rows:
        return []
    return ["**Why the missed goals are missed** (from `bench/misses.md`)", "", *rows, ""]


def libraries(sections: list[Section]) -> str:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    for section in sections:
        found += [f"{name} {v} (in `.peers-venv`)" for name, v in section.versions.items()]
    return ", ".join(found)


def git_commit() -> str:
    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = run("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" with local changes" if run("status", "--porcelain", "--", "../src") else "")


def machine() -> str:
    model = "unknown"
    memory = "unknown"
    cpuinfo, meminfo = Path("/proc/cpuinfo"), Path("/proc/meminfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        model = models[0] if models else model
    if meminfo.exists():
        total_kib = int(meminfo.read_text().split()[1])
        memory = f"{total_kib / 1024**2:.1f} GiB"
    return (
        f"{os.cpu_count()} cores, {model}, {memory} RAM, {platform.system()} {platform.release()}"
    )


def loaded(sections: list[Section]) -> str:
    cores = os.cpu_count() or 1
    loads = [s.load_average for s in sections]
    worst = max(loads, default=0.0)
    if worst > cores * 0.75:
        return (
            f"**Measured under load**: the 1-minute load average reached {worst:.1f} on "
            f"{cores} cores while the benches ran. The benches' own processes count in it (the "
            "measured client, the backend process and `lb serve` can each keep a core busy), "
            "so this does not by itself mean other work shared the machine; absolute times "
            "may be inflated, and the ratios, taken within each round, are what to read."
        )
    return f"The machine was otherwise quiet (1-minute load average at most {worst:.1f})."


METHOD = """\
Every figure is the median over several rounds, with the min and max over rounds in
brackets. Each case runs interleaved with its baseline in the same process and the same
run: every round runs every case once, in an order that rotates from round to round, and a
ratio is taken within each round (ours over the baseline of the same round) before its
median, min and max are taken over the rounds. The local backends (`lbtransports.testing`)
serve from a child process, and `lb serve` and LiteLLM run as processes of their own, each
started by the bench and stopped by its PID. The shared machinery is `bench/_harness.py`.
Rerun `make bench` (and `make bench-peers`) to refresh every figure."""


def write(sections: list[Section]) -> str:
    figures: dict[str, dict[str, float]] = {}
    for section in sections:
        figures |= section.figures
    timed = RESULTS_DIR / "make-bench-seconds"  # written by `make bench` at its end
    if timed.exists():
        took = float(timed.read_text())
        figures["bench.seconds"] = {"median": took, "low": took, "high": took}
    goals = Table(
        "Goals (issues 10, 11 and 12)",
        ["goal", "target", "measured: median (min-max)", "verdict"],
        [judged(goal, figures) for goal in GOALS],
        note=(
            "`make bench` seconds: the wall time of its last whole run (LiteLLM is not part "
            "of it). "
            "Where a goal is missed, the sections below show where the time goes; the "
            "profile section lists the clients' own code by time per request."
        ),
    )
    missed = [
        goal
        for goal in GOALS
        if goal.figure in figures and not is_met(goal, figures[goal.figure]["median"])
    ]
    head = [
        "# Benchmark results",
        "",
        "Generated by `make bench` (and `make bench-peers` for the LiteLLM rows) with "
        "`bench/report.py`: do not edit by hand.",
        "",
        f"- Written: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"lbcore at {git_commit()}",
        f"- Machine: {machine()}",
        f"- Python {platform.python_version()} ({sys.implementation.name}); {libraries(sections)}",
        f"- {loaded(sections)}",
        "",
        "## Method",
        "",
        METHOD,
        "",
        goals.markdown(),
        "",
        *why_missed(missed, read_misses(MISSES)),
    ]
    return "\n".join(head) + "\n" + "\n".join(s.markdown() for s in sections)


def main(argv: list[str]) -> int:
    sections = load_sections()
    if not sections:
        print(f"no stored results in {RESULTS_DIR}: run `make bench`", file=sys.stderr)
        return 1
    OUT.write_text(write(sections))
    print(f"wrote {OUT.relative_to(BENCH_DIR.parent)} from {len(sections)} sections")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
