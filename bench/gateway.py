"""What the gateway adds to a streamed request, against going straight to the backend.

Run with ``make bench`` (``make bench-peers`` adds LiteLLM's proxy). A local
openai-format backend (``Stream(chunks=20)``, no delay) serves from a child
process; ``lb serve`` (and, with ``--peers``, ``litellm --config`` from
``.peers-venv``) runs as another, over that same backend, started here and
stopped by its PID. Two callers send the same 20-chunk streamed request:

* the ``openai`` SDK (``AsyncOpenAI``, no retries), iterating the stream;
* a raw httpcore client that splits lines and ``json.loads`` each ``data:`` line.
  Its connections are spread over pools of 8: one httpcore pool of 200
  connections walks them all (and polls each idle socket) whenever a request
  comes or goes, and caps the caller near 20 requests/s at 200 streams, which
  would measure the caller's pool instead of the route.

Straight to the backend, through ``lb serve`` and through LiteLLM's proxy are
measured interleaved, round by round: the added latency (p50 and p90 of each
round, through minus straight) at concurrency 1, and requests/s at 50 and 200
concurrent streams, with every error counted. The CPU time each gateway process
spends per request at concurrency 1 (from /proc) shows what the
gateway costs apart from waiting, beside the CPU its own ``AsyncClient`` takes
for the same request alone (in the bench's process): the difference is the
gateway's inbound side.

``--baseline SRC`` adds a second ``lb serve`` run from another checkout's
``src`` (``git worktree add /work/wt-base main``, then
``--baseline /work/wt-base/src``), measured interleaved with this one, for an
A/B of a change; such a run prints its tables and is not kept for the record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpcore
import openai
from _harness import (
    BENCH_DIR,
    KEY,
    Section,
    Table,
    backends_in_child,
    cpu_seconds,
    difference,
    median_of,
    percentile,
    publish,
    quick,
    ratio,
    rounds_async,
    spread,
    stop_child,
)

from lbtransports._async import AsyncClient
from lbtransports.gateway._config import load_config
from lbtransports.gateway._openai_format import OpenAIFormat


def _count(flag: str, default: int) -> int:
    """``--flag N`` from the command line (fewer rounds for a quick look), else ``default``."""
    if flag in sys.argv[:-1]:
        return int(sys.argv[sys.argv.index(flag) + 1])
    return default


CHUNKS = 20
ROUNDS = _count("--rounds", 2 if quick() else 5)
PER_ROUND = 4 if quick() else 40
THROUGHPUT_ROUNDS = _count("--load-rounds", 1 if quick() else 3)
THROUGHPUT_REQUESTS = 20 if quick() else 300
CONCURRENCY = (2, 4) if quick() else (50, 200)
LITELLM = BENCH_DIR.parent / ".peers-venv" / "bin" / "litellm"
MESSAGES = [{"role": "user", "content": "Say something short."}]


@dataclass(frozen=True)
class Route:
    """Where a caller sends the request: a base URL ending in /v1, and the model to ask for."""

    name: str
    base_url: str
    model: str
    key: str = KEY
    #: The process serving the route, when the bench started it (its CPU is measured).
    pid: int | None = None


# -- the servers -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def stopped_by_pid(
    command: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        yield child
    finally:
        stop_child(child, grace_s=15)


@contextlib.contextmanager
def lb_serve(
    backend_url: str, workdir: Path, name: str = "lb serve", src: str | None = None
) -> Iterator[Route]:
    """``lb serve`` over the backend; from the ``src`` directory of another checkout if given."""
    config = workdir / "gateway.toml"
    config.write_text(
        '[gateway]\nhost = "127.0.0.1"\n\n'
        '[groups.bench]\nstrategy = "failover"\n'
        "settings = { timeout_ms = 30000, failover_retry_count = 1 }\n"
        "backends = [\n"
        + "".join(
            f'  {{ name = "{name}", provider = "openai", model = "bench-model", '
            f'base_url = "{backend_url}", credential = {{ key = "{KEY}" }} }},\n'
            for name in ("a", "b")
        )
        + "]\n"
    )
    lb = Path(sys.executable).parent / "lb"
    command = [str(lb), "serve", "--config", str(config), "--port", "0", "--no-auth"]
    env = None
    if src is not None:
        # Ahead of this checkout's editable install on sys.path.
        env = {**os.environ, "PYTHONPATH": src}
        command = [sys.executable, "-m", "lbtransports.cli", *command[1:]]
    with stopped_by_pid(command, env=env) as child:
        assert child.stdout is not None
        line = child.stdout.readline()
        if "listening on http://" not in line:
            raise RuntimeError(f"lb serve did not start: {line!r}")
        address = line.split("listening on ", 1)[1].split()[0]
        yield Route(name, f"{address}/v1", "bench", pid=child.pid)


@contextlib.contextmanager
def litellm_proxy(backend_url: str, workdir: Path) -> Iterator[Route]:
    if not LITELLM.exists():
        raise SystemExit(f"{LITELLM} is missing: run `make bench-peers`")
    config = workdir / "litellm.yaml"
    # The proxy refuses to start without a strong key; callers present it.
    master_key = f"sk-{secrets.token_hex(32)}"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench-model\n"
        f"      api_base: {backend_url}\n"
        f"      api_key: {KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  num_retries: 0\n"
        "general_settings:\n"
        f"  master_key: {master_key}\n"
    )
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    command = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with stopped_by_pid(command, env=env) as child:
        wait_until_up(child, f"http://127.0.0.1:{port}/health/liveliness", seconds=180)
        yield Route("LiteLLM proxy", f"http://127.0.0.1:{port}/v1", "bench", master_key)


def wait_until_up(child: subprocess.Popen[str], url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with httpcore.ConnectionPool() as pool:
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise RuntimeError(f"the server ended before it answered {url}")
            with contextlib.suppress(httpcore.NetworkError):
                if pool.request("GET", url).status == 200:
                    return
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


# -- the callers -------------------------------------------------------------------

Caller = Callable[[Route], Awaitable[int]]


def sdk_caller(clients: dict[str, openai.AsyncOpenAI]) -> Caller:
    async def call(route: Route) -> int:
        stream = await clients[route.name].chat.completions.create(
            model=route.model,
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        count = 0
        async for chunk in stream:
            count += bool(chunk.choices and chunk.choices[0].delta.content)
        return count

    return call


#: Connections per pool of the raw caller (why: the module's docstring).
RAW_POOL_SIZE = 8


def raw_caller(pools: list[httpcore.AsyncConnectionPool]) -> Caller:
    busy = [0] * len(pools)

    async def call(route: Route) -> int:
        index = next(i for i, taken in enumerate(busy) if taken < RAW_POOL_SIZE)
        busy[index] += 1
        try:
            return await _raw_call(pools[index], route)
        finally:
            busy[index] -= 1

    return call


async def _raw_call(pool: httpcore.AsyncConnectionPool, route: Route) -> int:
    body = json.dumps({"model": route.model, "messages": MESSAGES, "stream": True}).encode()
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Authorization", f"Bearer {route.key}".encode()),
    ]
    count = 0
    rest = b""
    async with pool.stream(
        "POST", f"{route.base_url}/chat/completions", headers=headers, content=body
    ) as response:
        if response.status != 200:
            raise RuntimeError(f"{route.name} answered {response.status}")
        stream = response.stream
        assert isinstance(stream, AsyncIterable)
        async for data in stream:
            *lines, rest = (rest + data).split(b"\n")
            for line in lines:
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    event = json.loads(line[6:])
                    choices = event.get("choices") or [{}]
                    count += bool(choices[0].get("delta", {}).get("content"))
    return count


# -- measures ----------------------------------------------------------------------


def cpu_of(pid: int) -> float:
    """CPU seconds of a process: the scheduler's nanoseconds over its threads where the
    kernel keeps them (/proc/PID/task/*/schedstat), else its clock ticks."""
    try:
        return (
            sum(
                int(path.read_text().split()[0])
                for path in Path(f"/proc/{pid}/task").glob("*/schedstat")
            )
            / 1e9
        )
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pid)


#: CPU µs per request of each measured route's process, per latency round, by measure name.
CPU_US: dict[str, list[float]] = {}


def latencies(call: Caller, route: Route, name: str) -> Callable[[], Awaitable[list[int]]]:
    async def measure() -> list[int]:
        samples = []
        cpu_before = cpu_of(route.pid) if route.pid is not None else 0.0
        for _ in range(PER_ROUND):
            began = time.perf_counter_ns()
            await call(route)
            samples.append(time.perf_counter_ns() - began)
        if route.pid is not None:
            spent = cpu_of(route.pid) - cpu_before
            CPU_US.setdefault(name, []).append(spent / PER_ROUND * 1e6)
        return samples

    return measure


@dataclass(frozen=True)
class Load:
    per_second: float
    errors: int


def load(call: Caller, route: Route, tasks: int) -> Callable[[], Awaitable[Load]]:
    each = max(1, THROUGHPUT_REQUESTS // tasks)

    async def measure() -> Load:
        errors = 0

        async def worker() -> None:
            nonlocal errors
            for _ in range(each):
                try:
                    if await call(route) != CHUNKS:
                        errors += 1
                except Exception:
                    errors += 1

        began = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(tasks):
                group.start_soon(worker)
        return Load(each * tasks / (time.perf_counter() - began), errors)

    return measure


#: The CPU table's row for the gateway's client alone (:func:`client_alone`).
CLIENT_ALONE = "AsyncClient alone"


async def client_alone(config: Path) -> None:
    """What the gateway's own client costs, apart from the gateway: CPU µs per request
    (this process's, one round per latency round) of an ``AsyncClient`` built from the
    same group, given the request as the gateway parses it, the backend's events kept
    as for passthrough. The gateway's process less this is its inbound side."""
    group = load_config(config, no_auth=True).groups[0]
    body = json.dumps({"model": "bench", "messages": MESSAGES, "stream": True}).encode()
    async with AsyncClient(group.client, trace=group.trace) as client:
        for _ in range(ROUNDS):
            began = time.process_time()
            for _ in range(PER_ROUND):
                chat = OpenAIFormat().parse(body).chat
                async with client.chat(chat, keep_upstream=True) as stream:
                    async for _chunk in stream:
                        if stream.upstream is not None:
                            stream.upstream.take_events()
            spent = time.process_time() - began
            CPU_US.setdefault(CLIENT_ALONE, []).append(spent / PER_ROUND * 1e6)


async def bench(
    routes: list[Route], config: Path
) -> tuple[dict[str, list[list[int]]], dict[str, list[Load]]]:
    top = max(CONCURRENCY)
    # The SDK's own connection limits (1,000 connections, 100 kept alive): what a user gets.
    clients = {
        route.name: openai.AsyncOpenAI(base_url=route.base_url, api_key=route.key, max_retries=0)
        for route in routes
    }
    async with contextlib.AsyncExitStack() as stack:
        pools = [
            await stack.enter_async_context(
                httpcore.AsyncConnectionPool(max_connections=RAW_POOL_SIZE, retries=0)
            )
            for _ in range(-(-top // RAW_POOL_SIZE))
        ]
        callers = {"SDK": sdk_caller(clients), "raw httpcore": raw_caller(pools)}
        for caller in callers.values():  # every route works, and warm up
            for route in routes:
                for _ in range(3):
                    assert await caller(route) == CHUNKS, route
        timing = await rounds_async(
            {
                f"{c} {r.name}": latencies(call, r, f"{c} {r.name}")
                for c, call in callers.items()
                for r in routes
            },
            ROUNDS,
        )
        await client_alone(config)
        loads = await rounds_async(
            {
                f"{c} {r.name} {n}": load(call, r, n)
                for c, call in callers.items()
                for r in routes
                for n in CONCURRENCY
            },
            THROUGHPUT_ROUNDS,
        )
    for client in clients.values():
        await client.close()
    return timing, loads


# -- the record --------------------------------------------------------------------

BASELINE = "lb serve (baseline)"
_SLUGS = {"lb serve": "lb", "LiteLLM proxy": "litellm", BASELINE: "lb_baseline"}


def cpu_table(routes: list[Route]) -> Table:
    cpu = Table(
        "CPU per request of the gateway's process at concurrency 1, µs",
        ["caller", "route", "CPU per request"],
    )
    for caller in ("SDK", "raw httpcore"):
        for route in routes:
            rounds = CPU_US.get(f"{caller} {route.name}")
            if rounds:
                cpu.rows.append([caller, route.name, spread(rounds).show()])
    if CLIENT_ALONE in CPU_US:
        row = "the request alone, in the bench's process"
        cpu.rows.append([row, CLIENT_ALONE, spread(CPU_US[CLIENT_ALONE]).show()])
    return cpu


def versus_baseline(
    timing: dict[str, list[list[int]]], loads: dict[str, list[Load]], straight: Route
) -> Table:
    """This checkout's gateway over the baseline's, ratios taken round by round."""
    top = max(CONCURRENCY)
    table = Table(
        "`lb serve` here against the baseline checkout's, same run (ratio per round)",
        [
            "caller",
            "added p50, here / baseline",
            "CPU per request, here / baseline",
            f"requests/s at {top}, here / baseline",
        ],
    )
    for caller in ("SDK", "raw httpcore"):
        base = [median_of(run) for run in timing[f"{caller} {straight.name}"]]
        added = {
            name: [
                median_of(run) - b for run, b in zip(timing[f"{caller} {name}"], base, strict=True)
            ]
            for name in ("lb serve", BASELINE)
        }
        rps = {
            name: [m.per_second for m in loads[f"{caller} {name} {top}"]]
            for name in ("lb serve", BASELINE)
        }
        table.rows.append(
            [
                caller,
                ratio(added["lb serve"], added[BASELINE]).show(2, "x"),
                ratio(CPU_US[f"{caller} lb serve"], CPU_US[f"{caller} {BASELINE}"]).show(2, "x"),
                ratio(rps["lb serve"], rps[BASELINE]).show(2, "x"),
            ]
        )
    return table


def record(
    routes: list[Route], timing: dict[str, list[list[int]]], loads: dict[str, list[Load]]
) -> Section:
    section = Section(
        key="gateway",
        order=40,
        title="5. The gateway (`lb serve`) against going straight to the backend",
        method=__doc__.split("\n\n", 1)[1].replace("``", "`")
        + f"\n\n{ROUNDS} rounds of {PER_ROUND} requests per route and caller; throughput "
        f"over {THROUGHPUT_REQUESTS} requests per round, {THROUGHPUT_ROUNDS} rounds. "
        "On this 2-core machine the backend, the gateway and the caller share two cores, "
        "so the gateway's throughput is bounded by the core it gets.",
    )
    straight = routes[0]
    added = Table(
        "Added latency at concurrency 1, µs (through minus straight, per round)",
        ["caller", "route", "straight p50", "p50", "added p50", "added p90"],
    )
    rps = Table(
        "Requests/s (median, min-max over rounds), errors in all rounds",
        ["caller", "route", *(f"{n} concurrent" for n in CONCURRENCY), "vs straight at 200"],
    )
    for caller in ("SDK", "raw httpcore"):
        base = timing[f"{caller} {straight.name}"]
        base_p50 = [median_of(run) / 1000 for run in base]
        base_p90 = [percentile(run, 0.9) / 1000 for run in base]
        for route in routes:
            runs = timing[f"{caller} {route.name}"]
            p50 = [median_of(run) / 1000 for run in runs]
            p90 = [percentile(run, 0.9) / 1000 for run in runs]
            row = [caller, route.name, spread(base_p50).show(), spread(p50).show()]
            if route is straight:
                row += ["-", "-"]
            else:
                plus50, plus90 = difference(p50, base_p50), difference(p90, base_p90)
                row += [plus50.show(), plus90.show()]
                slug = _SLUGS[route.name]
                section.figure(f"gateway.{slug}.{caller.split()[0]}.added_p50_us", plus50)
            added.rows.append(row)
            cells = []
            for n in CONCURRENCY:
                measured = loads[f"{caller} {route.name} {n}"]
                errors = sum(m.errors for m in measured)
                cells.append(
                    spread([m.per_second for m in measured]).show()
                    + (f", **{errors} errors**" if errors else "")
                )
                slug = _SLUGS.get(route.name, "straight")
                section.figure(
                    f"gateway.{slug}.{caller.split()[0]}.rps.{n}",
                    spread([m.per_second for m in measured]),
                )
                section.figures[f"gateway.{slug}.{caller.split()[0]}.errors.{n}"] = {
                    "median": errors,
                    "low": errors,
                    "high": errors,
                }
            top = max(CONCURRENCY)
            through = [m.per_second for m in loads[f"{caller} {route.name} {top}"]]
            direct = [m.per_second for m in loads[f"{caller} {straight.name} {top}"]]
            share = ratio(through, direct)
            cells.append("-" if route is straight else share.show(2, "x"))
            if route.name == "lb serve":
                section.figure(f"gateway.lb.{caller.split()[0]}.rps_vs_straight.{top}", share)
            rps.rows.append([caller, route.name, *cells])
    litellm = [r for r in routes if r.name == "LiteLLM proxy"]
    if litellm:
        top = max(CONCURRENCY)
        versus = Table(
            f"`lb serve` over LiteLLM's proxy at {top} concurrent, same run",
            ["caller", "requests/s ratio"],
        )
        for caller in ("SDK", "raw httpcore"):
            ours = [m.per_second for m in loads[f"{caller} lb serve {top}"]]
            theirs = [m.per_second for m in loads[f"{caller} LiteLLM proxy {top}"]]
            share = ratio(ours, theirs)
            versus.rows.append([caller, share.show(1, "x")])
            section.figure(f"gateway.lb_vs_litellm.{caller.split()[0]}.{top}", share)
        section.tables.append(versus)
    else:
        section.method += " LiteLLM's proxy: run `make bench-peers`."
    section.tables[:0] = [added, rps, cpu_table(routes)]
    if any(route.name == BASELINE for route in routes):
        section.tables.insert(3, versus_baseline(timing, loads, straight))
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", action="store_true", help="add LiteLLM's proxy")
    parser.add_argument(
        "--baseline", metavar="SRC", help="add `lb serve` run from another checkout's src (A/B)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, not for the record")
    parser.add_argument("--rounds", type=int, help=f"latency rounds (default {ROUNDS})")
    parser.add_argument(
        "--load-rounds", type=int, help=f"throughput rounds (default {THROUGHPUT_ROUNDS})"
    )
    args = parser.parse_args()
    # --rounds and --load-rounds were read with the module's constants (_count).
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as scratch,
        backends_in_child([f"backend=openai:stream:{CHUNKS}"]) as served,
        contextlib.ExitStack() as stack,
    ):
        url = served.urls["backend"]
        routes = [Route("straight", url, "bench-model")]
        routes.append(stack.enter_context(lb_serve(url, Path(scratch))))
        if args.baseline:
            baseline = lb_serve(url, Path(scratch), BASELINE, src=args.baseline)
            routes.append(stack.enter_context(baseline))
        if args.peers:
            routes.append(stack.enter_context(litellm_proxy(url, Path(scratch))))
        timing, loads = anyio.run(bench, routes, Path(scratch) / "gateway.toml")
    section = record(routes, timing, loads)
    if args.baseline:
        print(section.markdown())  # an A/B of a change, not the record
        return
    publish(section, began)


if __name__ == "__main__":
    main()
