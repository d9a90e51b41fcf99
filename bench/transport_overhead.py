"""What the clients add to a real HTTP request, against the same HTTP library used by hand.

Run with ``make bench`` (or alone). Local openai-format backends
(``lbtransports.testing``, ``Stream(chunks=20)``, no delay) serve from a child
process, so they have their own core and interpreter lock. The baselines are
what a user writes by hand: ``requests`` with ``iter_lines`` and ``json.loads``
per ``data:`` line (sync), ``httpcore.AsyncConnectionPool`` splitting lines and
``json.loads`` per ``data:`` line (async), with the timeouts a careful caller
sets. Every case runs interleaved with its baseline, round by round, in one run.

* latency and time to first chunk of a 20-chunk stream, one at a time;
* failover: a 503 then the stream (two backends whose scripts alternate, so
  every request makes exactly one hop), a refused connection then the stream,
  a first-chunk stall then the stream (``timeout_ms`` = ``STALL_MS``; these
  two with a fresh client per request on both sides, as a client remembers
  where it last succeeded), each against going straight to the healthy
  backend, and the first two against the same two requests by hand;
* throughput at 1, 16 and 50 threads (sync; by hand a session per thread, ours
  one shared ``Client``) and at 1, 50 and 200 concurrent streams (async), with
  the CPU share the backend process used: the local server's own capacity.

``--profile`` runs the balanced paths under cProfile instead and records where
lbtransports and lbcore spend their time.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import socket
import threading
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import requests
from _harness import (
    KEY,
    Section,
    ServedBackends,
    Spread,
    Table,
    alternating,
    backends_in_child,
    cpu_seconds,
    difference,
    median_of,
    publish,
    quick,
    ratio,
    rounds,
    rounds_async,
    spread,
)
from _harness import (
    client_config as config,  # one attempt per backend: a failure moves on at once
)

from lbcore import LBError
from lbtransports import AsyncClient, Client
from lbtransports.wire import (
    BackendTarget,
    ChatRequest,
    CredentialSource,
    UserMessage,
    build_request,
)

CHUNKS = 20
ROUNDS = 3 if quick() else 5
PER_ROUND = 4 if quick() else 60  # even: see the 503 pair below
STALL_PER_ROUND = 2 if quick() else 10
# Long enough that a healthy answer on a loaded machine beats it; the smoke run
# (--quick) makes it longer still, so that it never depends on the machine.
STALL_MS = 500 if quick() else 200
WARMUP = 4 if quick() else 20  # even
THREADS = (1, 4) if quick() else (1, 16, 50)
TASKS = (1, 4) if quick() else (1, 50, 200)
THROUGHPUT_REQUESTS = 16 if quick() else 300
THROUGHPUT_ROUNDS = 2 if quick() else 3
PROFILE_REQUESTS = 20 if quick() else 1_000
PROFILE_ROWS = 12
REQUEST = ChatRequest(messages=(UserMessage(content="Say something short."),))
MODES = ("sync", "asyncio")

# The 503 pair plays 503, stream, 503, stream... (``first``) and stream, 503...
# (``second``). Failover starts a request where the
# last one succeeded, so r1 gets a 503 from first and streams from second, r2
# gets a 503 from second and streams from first, and so on: one hop per request
# as long as each client comes after an even number of requests. Each client's
# stats are checked for one failure and one success per request.
HOP_REQUESTS = 2 + WARMUP + ROUNDS * PER_ROUND
STREAM = f"stream:{CHUNKS}"
BACKENDS = [
    f"stream=openai:{STREAM}",
    f"spare=openai:{STREAM}",
    "unavailable=openai:fail:503",
    "closed=openai:closed",
    f"first=openai:{alternating('fail:503', STREAM, HOP_REQUESTS * len(MODES))}",
    f"second=openai:{alternating(STREAM, 'fail:503', HOP_REQUESTS * len(MODES))}",
    "stalled=openai:stall",
]


def target(name: str, url: str) -> BackendTarget:
    return BackendTarget(
        name=name,
        provider="openai",
        model="bench-model",
        base_url=url,
        credential=CredentialSource(key=KEY),
    )


#: Stall cases in which the healthy backend too missed the first-chunk deadline
#: (a loaded machine): counted and reported, not fatal.
missed: list[int] = []


# -- by hand -----------------------------------------------------------------------

#: What a careful caller sets on httpcore (the sync side passes ``timeout=(10, 300)``).
TIMEOUTS: dict[str, object] = {"timeout": {"connect": 10, "read": 300, "write": 300, "pool": None}}


@dataclass
class FirstChunk:
    """When the last request's first chunk arrived (perf_counter_ns)."""

    at: int = 0


def data_line(line: bytes) -> bool:
    return line.startswith(b"data: ") and line != b"data: [DONE]"


def raw_sync(session: requests.Session, where: BackendTarget, first: FirstChunk) -> int:
    http = build_request(where, REQUEST)
    count = 0
    with session.post(
        http.url,
        headers=dict(http.headers),
        data=http.body,
        stream=True,
        timeout=(10, 300),
        allow_redirects=False,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if data_line(line):
                json.loads(line[6:])
                if not count:
                    first.at = time.perf_counter_ns()
                count += 1
    return count


def refused_connect(url: str) -> None:
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=10).close()
    except ConnectionRefusedError:
        return
    raise AssertionError("the closed backend accepted a connection")


def raw_failing_sync(session: requests.Session, where: BackendTarget) -> None:
    http = build_request(where, REQUEST)
    with session.post(
        http.url, headers=dict(http.headers), data=http.body, timeout=(10, 300)
    ) as response:
        assert response.status_code == 503 and response.content


def httpcore_headers(headers: tuple[tuple[str, str], ...]) -> list[tuple[bytes, bytes]]:
    out = [(b"User-Agent", b"bench"), (b"Accept-Encoding", b"identity")]
    return out + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def raw_async(
    pool: httpcore.AsyncConnectionPool, where: BackendTarget, first: FirstChunk
) -> int:
    http = build_request(where, REQUEST)
    count = 0
    rest = b""
    async with pool.stream(
        http.method,
        http.url,
        headers=httpcore_headers(http.headers),
        content=http.body,
        extensions=TIMEOUTS,
    ) as response:
        assert response.status == 200
        body = response.stream
        assert isinstance(body, AsyncIterable)
        async for data in body:
            *lines, rest = (rest + data).split(b"\n")
            for line in lines:
                if data_line(line):
                    json.loads(line[6:])
                    if not count:
                        first.at = time.perf_counter_ns()
                    count += 1
    return count


async def raw_failing_async(pool: httpcore.AsyncConnectionPool, where: BackendTarget) -> None:
    http = build_request(where, REQUEST)
    response = await pool.request(
        http.method,
        http.url,
        headers=httpcore_headers(http.headers),
        content=http.body,
        extensions=TIMEOUTS,
    )
    assert response.status == 503 and response.content


# -- through the clients -----------------------------------------------------------


def ours_sync(client: Client, first: FirstChunk) -> int:
    count = 0
    for _ in client.chat(REQUEST):
        if not count:
            first.at = time.perf_counter_ns()
        count += 1
    return count


async def ours_async(client: AsyncClient, first: FirstChunk) -> int:
    count = 0
    async with client.chat(REQUEST) as stream:
        async for _ in stream:
            if not count:
                first.at = time.perf_counter_ns()
            count += 1
    return count


def check_hops(client: Client | AsyncClient, requests_sent: int) -> None:
    """Every request through a failover pair made exactly one hop."""
    metrics = client.stats().backend_metrics
    failures = sum(m.failures for m in metrics.values())
    successes = sum(m.successes for m in metrics.values())
    assert (failures, successes) == (requests_sent, requests_sent), (failures, successes)


# -- per-request cases -------------------------------------------------------------

#: A latency case: per round, (total ns per request, first-chunk ns per request).
Latency = tuple[list[int], list[int]]


def with_first_chunk_sync(job: Callable[[FirstChunk], object], count: int) -> Callable[[], Latency]:
    def measure() -> Latency:
        first = FirstChunk()
        totals, firsts = [], []
        for _ in range(count):
            began = time.perf_counter_ns()
            job(first)
            totals.append(time.perf_counter_ns() - began)
            firsts.append(first.at - began)
        return totals, firsts

    return measure


def with_first_chunk_async(
    job: Callable[[FirstChunk], Awaitable[object]], count: int
) -> Callable[[], Awaitable[Latency]]:
    async def measure() -> Latency:
        first = FirstChunk()
        totals, firsts = [], []
        for _ in range(count):
            began = time.perf_counter_ns()
            await job(first)
            totals.append(time.perf_counter_ns() - began)
            firsts.append(first.at - began)
        return totals, firsts

    return measure


def latency_sync(served: ServedBackends) -> dict[str, list[Latency]]:
    urls = served.urls
    stream = target("stream", urls["stream"])
    unavailable = target("unavailable", urls["unavailable"])
    session = requests.Session()
    session.trust_env = False
    session.headers.update({"User-Agent": "bench", "Accept-Encoding": "identity"})

    def fresh(*names: str) -> Callable[[FirstChunk], int]:
        def job(first: FirstChunk) -> int:
            with Client(config(urls, *names)) as client:
                return ours_sync(client, first)

        return job

    def fresh_raw(refuse: bool) -> Callable[[FirstChunk], int]:
        def job(first: FirstChunk) -> int:
            with requests.Session() as own:
                own.trust_env = False
                if refuse:
                    refused_connect(urls["closed"])
                return raw_sync(own, stream, first)

        return job

    def stalled(first: FirstChunk) -> int:
        with Client(config(urls, "stalled", "stream", timeout_ms=STALL_MS)) as client:
            try:
                return ours_sync(client, first)
            except LBError:
                missed.append(1)
                return 0

    with (
        session,
        Client(config(urls, "stream", "spare")) as balanced,
        Client(config(urls, "first", "second")) as hop,
    ):
        jobs: dict[str, tuple[Callable[[FirstChunk], object], int]] = {
            "raw": (lambda f: raw_sync(session, stream, f), PER_ROUND),
            "ours": (lambda f: ours_sync(balanced, f), PER_ROUND),
            "503 ours": (lambda f: ours_sync(hop, f), PER_ROUND),
            "503 raw": (
                lambda f: (raw_failing_sync(session, unavailable), raw_sync(session, stream, f)),
                PER_ROUND,
            ),
            "fresh ours": (fresh("stream", "spare"), PER_ROUND),
            "refused ours": (fresh("closed", "stream"), PER_ROUND),
            "fresh raw": (fresh_raw(False), PER_ROUND),
            "refused raw": (fresh_raw(True), PER_ROUND),
            "stall ours": (stalled, STALL_PER_ROUND),
            "stall fresh ours": (fresh("stream", "spare"), STALL_PER_ROUND),
        }
        for name, (job, _) in jobs.items():
            # Warm up; the hop pair gets an even count, as its scripts need.
            for _ in range(2 if name.startswith("stall") else WARMUP + 2):
                job(FirstChunk())
        results = rounds(
            {name: with_first_chunk_sync(job, count) for name, (job, count) in jobs.items()},
            ROUNDS,
        )
        check_hops(hop, HOP_REQUESTS)
    return results


async def latency_async(served: ServedBackends) -> dict[str, list[Latency]]:
    urls = served.urls
    stream = target("stream", urls["stream"])
    unavailable = target("unavailable", urls["unavailable"])

    def fresh(*names: str) -> Callable[[FirstChunk], Awaitable[int]]:
        async def job(first: FirstChunk) -> int:
            async with AsyncClient(config(urls, *names)) as client:
                return await ours_async(client, first)

        return job

    def fresh_raw(refuse: bool) -> Callable[[FirstChunk], Awaitable[int]]:
        async def job(first: FirstChunk) -> int:
            async with httpcore.AsyncConnectionPool(retries=0) as own:
                if refuse:
                    refused_connect(urls["closed"])
                return await raw_async(own, stream, first)

        return job

    async def by_hand_503(first: FirstChunk) -> int:
        await raw_failing_async(pool, unavailable)
        return await raw_async(pool, stream, first)

    async def stalled(first: FirstChunk) -> int:
        async with AsyncClient(config(urls, "stalled", "stream", timeout_ms=STALL_MS)) as client:
            try:
                return await ours_async(client, first)
            except LBError:
                missed.append(1)
                return 0

    async with (
        httpcore.AsyncConnectionPool(retries=0) as pool,
        AsyncClient(config(urls, "stream", "spare")) as balanced,
        AsyncClient(config(urls, "first", "second")) as hop,
    ):
        jobs: dict[str, tuple[Callable[[FirstChunk], Awaitable[object]], int]] = {
            "raw": (lambda f: raw_async(pool, stream, f), PER_ROUND),
            "ours": (lambda f: ours_async(balanced, f), PER_ROUND),
            "503 ours": (lambda f: ours_async(hop, f), PER_ROUND),
            "503 raw": (by_hand_503, PER_ROUND),
            "fresh ours": (fresh("stream", "spare"), PER_ROUND),
            "refused ours": (fresh("closed", "stream"), PER_ROUND),
            "fresh raw": (fresh_raw(False), PER_ROUND),
            "refused raw": (fresh_raw(True), PER_ROUND),
            "stall ours": (stalled, STALL_PER_ROUND),
            "stall fresh ours": (fresh("stream", "spare"), STALL_PER_ROUND),
        }
        for name, (job, _) in jobs.items():
            for _ in range(2 if name.startswith("stall") else WARMUP + 2):
                await job(FirstChunk())
        results = await rounds_async(
            {name: with_first_chunk_async(job, count) for name, (job, count) in jobs.items()},
            ROUNDS,
        )
        check_hops(hop, HOP_REQUESTS)
    return results


# -- throughput --------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    per_second: float
    #: Share of one core the backend process used, and this process.
    server_busy: float
    client_busy: float


def share(level: int) -> int:
    """Requests per thread or task at ``level`` concurrent (each makes at least one)."""
    return max(1, THROUGHPUT_REQUESTS // level)


def gauge(pid: int, level: int, run: Callable[[], None]) -> Throughput:
    server, client = cpu_seconds(pid), cpu_seconds()
    began = time.perf_counter()
    run()
    elapsed = time.perf_counter() - began
    return Throughput(
        share(level) * level / elapsed,
        (cpu_seconds(pid) - server) / elapsed,
        (cpu_seconds() - client) / elapsed,
    )


async def gauge_async(pid: int, level: int, run: Callable[[], Awaitable[None]]) -> Throughput:
    server, client = cpu_seconds(pid), cpu_seconds()
    began = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - began
    return Throughput(
        share(level) * level / elapsed,
        (cpu_seconds(pid) - server) / elapsed,
        (cpu_seconds() - client) / elapsed,
    )


def repeat(job: Callable[[], object], count: int) -> None:
    for _ in range(count):
        job()


def in_threads(threads: int, job: Callable[[int], Callable[[], object]]) -> Callable[[], None]:
    """``THROUGHPUT_REQUESTS`` requests split over ``threads``; ``job(i)`` is thread i's."""

    def run() -> None:
        each = share(threads)
        workers = [threading.Thread(target=repeat, args=(job(i), each)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    return run


def throughput_sync(served: ServedBackends) -> dict[str, list[Throughput]]:
    urls = served.urls
    stream = target("stream", urls["stream"])
    sessions = [requests.Session() for _ in range(max(THREADS))]
    for session in sessions:
        session.trust_env = False
    measures: dict[str, Callable[[], Throughput]] = {}
    with Client(config(urls, "stream", "spare")) as client:
        for threads in THREADS:
            measures[f"raw {threads}"] = lambda t=threads: gauge(
                served.pid,
                t,
                in_threads(t, lambda i: lambda: raw_sync(sessions[i], stream, FirstChunk())),
            )
            measures[f"ours {threads}"] = lambda t=threads: gauge(
                served.pid, t, in_threads(t, lambda i: lambda: ours_sync(client, FirstChunk()))
            )
        for measure in measures.values():
            measure()  # warm up: every connection opened
        results = rounds(measures, THROUGHPUT_ROUNDS)
    for session in sessions:
        session.close()
    return results


def in_tasks(tasks: int, job: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        each = share(tasks)

        async def worker() -> None:
            for _ in range(each):
                await job()

        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(worker)

    return run


async def throughput_async(served: ServedBackends) -> dict[str, list[Throughput]]:
    urls = served.urls
    stream = target("stream", urls["stream"])
    top = max(TASKS)
    async with (
        httpcore.AsyncConnectionPool(retries=0, max_connections=top) as pool,
        AsyncClient(config(urls, "stream", "spare"), max_connections=top) as client,
    ):
        measures: dict[str, Callable[[], Awaitable[Throughput]]] = {}
        for tasks in TASKS:
            measures[f"raw {tasks}"] = lambda t=tasks: gauge_async(
                served.pid, t, in_tasks(t, lambda: raw_async(pool, stream, FirstChunk()))
            )
            measures[f"ours {tasks}"] = lambda t=tasks: gauge_async(
                served.pid, t, in_tasks(t, lambda: ours_async(client, FirstChunk()))
            )
        for measure in measures.values():
            await measure()
        return await rounds_async(measures, THROUGHPUT_ROUNDS)


# -- the record --------------------------------------------------------------------


def medians_us(latencies: list[Latency], which: int) -> list[float]:
    return [median_of(run[which]) / 1000 for run in latencies]


def latency_tables(section: Section, results: dict[str, dict[str, list[Latency]]]) -> None:
    stream = Table(
        f"A {CHUNKS}-chunk stream, one at a time: µs per request (median of each round's "
        "median; min-max over rounds)",
        ["client", "raw", "ours", "ratio", "first chunk raw", "first chunk ours", "ratio"],
    )
    hops = Table(
        "Failover: µs per request",
        ["client", "failure", "straight", "ours", "added", "by hand, added", "ours - by hand"],
    )
    for mode, latencies in results.items():
        client = "`Client` vs requests" if mode == "sync" else "`AsyncClient` vs httpcore"
        raw, ours = medians_us(latencies["raw"], 0), medians_us(latencies["ours"], 0)
        raw_first, ours_first = medians_us(latencies["raw"], 1), medians_us(latencies["ours"], 1)
        whole, first = ratio(ours, raw), ratio(ours_first, raw_first)
        stream.rows.append(
            [
                client,
                spread(raw).show(),
                spread(ours).show(),
                whole.show(2, "x"),
                spread(raw_first).show(),
                spread(ours_first).show(),
                first.show(2, "x"),
            ]
        )
        section.figure(f"client.{mode}.stream_ratio", whole)
        section.figure(f"client.{mode}.first_chunk_ratio", first)
        cases = (
            ("503", "raw", "503 ours", "503 raw"),
            ("refused connection", "fresh raw", "refused ours", "refused raw"),
            (f"first-chunk stall ({STALL_MS} ms deadline)", "raw", "stall ours", None),
        )
        for label, straight_case, ours_case, by_hand_case in cases:
            straight = medians_us(latencies[straight_case], 0)
            # The hop's own cost: ours with the hop minus ours without it, so that
            # the client's per-stream overhead (the table above) is not counted
            # again as the hop's; for the refused connection and the stall both
            # sides make a fresh client, so the client's set-up is not counted either.
            baseline = {"503 ours": "ours", "refused ours": "fresh ours"}.get(
                ours_case, "stall fresh ours"
            )
            added = difference(
                medians_us(latencies[ours_case], 0), medians_us(latencies[baseline], 0)
            )
            row = [
                client,
                label,
                spread(straight).show(),
                spread(medians_us(latencies[ours_case], 0)).show(),
                added.show(),
            ]
            if by_hand_case is None:
                row += ["-", f"{added.median - STALL_MS * 1000:+.0f} beyond the deadline"]
            else:
                by_hand = difference(medians_us(latencies[by_hand_case], 0), straight)
                row += [by_hand.show(), f"{added.median - by_hand.median:+.0f}"]
                key = "503" if ours_case == "503 ours" else "refused"
                section.figures[f"client.{mode}.hop_{key}_vs_hand_us"] = {
                    "median": added.median - by_hand.median,
                    "low": added.low - by_hand.high,
                    "high": added.high - by_hand.low,
                }
            hops.rows.append(row)
    hops.note = (
        "*straight*: by hand, straight to the healthy backend. *added*: what the hop adds "
        "to our client: for the 503, ours with the hop minus ours straight to the healthy "
        "backend (so the stream's own overhead, in the table above, is not counted twice); "
        "for the refused connection and the stall, where each request makes a fresh "
        "client, ours minus a fresh client of ours going straight, so that the client's "
        "set-up is not counted as the hop. *by hand, added*: the failing request (a 503, "
        "or a refused connect) then the stream, by hand, minus straight. *ours - by hand*: "
        "what our hop costs beyond the by-hand one."
    )
    if missed:
        hops.note += (
            f" In {len(missed)} stall requests the healthy backend too missed the "
            f"{STALL_MS} ms deadline (the machine was loaded); they count in the timings."
        )
    section.tables += [stream, hops]


def throughput_table(
    section: Section, results: dict[str, dict[str, list[Throughput]]]
) -> tuple[Table, float, float]:
    table = Table(
        f"Throughput: requests/s over {THROUGHPUT_REQUESTS} streamed requests per round "
        "(at least one per thread or task) "
        f"(median, min-max over {THROUGHPUT_ROUNDS} rounds); the backend process's and this "
        "process's CPU use in shares of one core",
        ["client", "concurrent", "raw req/s", "ours req/s", "ratio", "backend CPU", "client CPU"],
    )
    server_max = client_max = 0.0
    for mode, measured in results.items():
        levels = THREADS if mode == "sync" else TASKS
        for level in levels:
            raw, ours = measured[f"raw {level}"], measured[f"ours {level}"]
            share = ratio([t.per_second for t in ours], [t.per_second for t in raw])
            busy = [t.server_busy for t in raw + ours]
            mine = [t.client_busy for t in raw + ours]
            server_max, client_max = max(server_max, *busy), max(client_max, *mine)
            kind = "threads" if mode == "sync" else "tasks"
            table.rows.append(
                [
                    "`Client`" if mode == "sync" else "`AsyncClient`",
                    f"{level} {kind}",
                    spread([t.per_second for t in raw]).show(),
                    spread([t.per_second for t in ours]).show(),
                    share.show(2, "x"),
                    f"{median_of(busy):.2f} (max {max(busy):.2f})",
                    f"{median_of(mine):.2f}",
                ]
            )
            section.figure(f"client.{mode}.throughput_ratio.{level}", share)
    section.tables.append(table)
    return table, server_max, client_max


def capacity_section(server_max: float, client_max: float, best: Spread) -> Section:
    section = Section(
        key="server",
        order=30,
        title="3. The local test server's own capacity",
        method=(
            "The backends (`lbtransports.testing`, one asyncio process) serve every "
            "client bench from their own process. During each throughput round the bench "
            "reads that process's CPU time from `/proc`: a server at its capacity would use "
            "a whole core (1.00). "
            f"The busiest round used {server_max:.2f} of a core while the client side used up "
            f"to {client_max:.2f} (threads can exceed 1.00 only outside the interpreter lock); "
            f"the fastest raw client reached {best.median:.0f} requests/s "
            f"({best.low:.0f}-{best.high:.0f}). "
            + (
                "The server had headroom in every round: it was not the bottleneck."
                if server_max < 0.9
                else "In some rounds the server came near a whole core: those throughput "
                "ratios understate the difference between the clients, and are marked so."
            )
        ),
    )
    section.figures["server.max_busy"] = {
        "median": server_max,
        "low": server_max,
        "high": server_max,
    }
    return section


# -- profile -----------------------------------------------------------------------


def profile_table(title: str, profile: cProfile.Profile, requests: int) -> Table:
    """Our own functions by own time per request, and the share of all our own time."""
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    ours = {
        where: (own, cumulative)
        for where, (_, _, own, cumulative, _) in stats.items()
        if "/src/lbtransports/" in where[0] or "/src/lbcore/" in where[0]
    }
    everything = sum(own for _, _, own, _, _ in stats.values())
    own_total = sum(own for own, _ in ours.values())
    table = Table(
        f"{title}: {own_total / requests * 1e6:.0f} µs per request in lbtransports and lbcore "
        f"({own_total / everything:.0%} of all profiled time)",
        ["function", "own µs/request", "cumulative µs/request"],
    )
    ranked = sorted(ours.items(), key=lambda item: item[1][0], reverse=True)[:PROFILE_ROWS]
    for (path, line, name), (own, cumulative) in ranked:
        short = path.split("/src/", 1)[1]
        table.rows.append(
            [
                f"`{short}:{line} {name}`",
                f"{own / requests * 1e6:.1f}",
                f"{cumulative / requests * 1e6:.1f}",
            ]
        )
    return table


def profile_balanced(urls: dict[str, str]) -> Section:
    began = time.monotonic()
    section = Section(
        key="profile",
        order=25,
        title="2b. Where the clients' time goes (cProfile)",
        method=(
            f"`bench/transport_overhead.py --profile`: {PROFILE_REQUESTS} streamed requests "
            "through each client under cProfile after a warm-up, against the same local "
            "backend. cProfile inflates every call, so read the shares, not the absolute "
            "times; rerun after a change to see where the time went."
        ),
    )
    with Client(config(urls, "stream", "spare")) as client:
        for _ in range(WARMUP):
            ours_sync(client, FirstChunk())
        profile = cProfile.Profile()
        profile.runcall(lambda: [ours_sync(client, FirstChunk()) for _ in range(PROFILE_REQUESTS)])
    section.tables.append(profile_table("`Client`", profile, PROFILE_REQUESTS))

    async def run() -> cProfile.Profile:
        async with AsyncClient(config(urls, "stream", "spare")) as client:
            for _ in range(WARMUP):
                await ours_async(client, FirstChunk())
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(PROFILE_REQUESTS):
                await ours_async(client, FirstChunk())
            profile.disable()
        return profile

    section.tables.append(
        profile_table("`AsyncClient` on asyncio", anyio.run(run), PROFILE_REQUESTS)
    )
    section.seconds = round(time.monotonic() - began, 1)
    return section


def measure_latency(served: ServedBackends) -> dict[str, dict[str, list[Latency]]]:
    return {
        "sync": latency_sync(served),
        "asyncio": anyio.run(latency_async, served, backend="asyncio"),
    }


def measure_throughput(served: ServedBackends) -> dict[str, dict[str, Any]]:
    return {
        "sync": throughput_sync(served),
        "asyncio": anyio.run(throughput_async, served, backend="asyncio"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="profile the balanced paths")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, not for the record")
    parser.add_argument(
        "--only",
        choices=("latency", "throughput"),
        help="run one part and print it, not for the record",
    )
    args = parser.parse_args()
    if args.profile:
        began = time.monotonic()
        with backends_in_child([f"stream=openai:{STREAM}", f"spare=openai:{STREAM}"]) as served:
            section = profile_balanced(served.urls)
        publish(section, began)
        return
    if args.only:
        with backends_in_child(BACKENDS) as served:
            part = Section(key="part", order=0, title=f"{args.only} only", method="")
            if args.only == "latency":
                latency_tables(part, measure_latency(served))
            else:
                throughput_table(part, measure_throughput(served))
        print(part.markdown())
        return
    began = time.monotonic()
    with backends_in_child(BACKENDS) as served:
        latencies = measure_latency(served)
        throughputs = measure_throughput(served)
    section = Section(
        key="clients",
        order=20,
        title="2. The clients against the same HTTP library by hand",
        method=__doc__.split("\n\n", 1)[1].rsplit("\n\n", 1)[0].replace("``", "`")
        + f"\n\nLatency: {ROUNDS} interleaved rounds of {PER_ROUND} requests per case "
        f"({STALL_PER_ROUND} for the stall), after {WARMUP} warm-up requests.",
    )
    latency_tables(section, latencies)
    _, server_max, client_max = throughput_table(section, throughputs)
    best = max(
        (
            spread([t.per_second for t in runs])
            for m in throughputs.values()
            for n, runs in m.items()
            if n.startswith("raw")
        ),
        key=lambda s: s.median,
    )
    publish(section, began)
    publish(capacity_section(server_max, client_max, best), began)


if __name__ == "__main__":
    main()
