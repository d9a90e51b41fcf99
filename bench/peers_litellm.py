"""``AsyncClient`` against LiteLLM's Router, over the same local server and the same backends.

Run with ``make bench-peers``, which builds ``.peers-venv`` from the hashed
``bench/peers/requirements.txt``. LiteLLM runs in a worker process under that
venv (``bench/peers/litellm_worker.py``), driven over a pipe; lbcore runs here.
Both talk to the same local backends, served by a third process: three that
stream 20 chunks (``a``, ``b``, ``c``), and for the failover a backend that
answers 503 (LiteLLM: a ``bad`` model with a fallback to the three; ours: two
backends whose scripts alternate 503 and the stream, so that every request
makes exactly one hop although failover starts where the last request
succeeded). Each round runs our block and LiteLLM's block, the order
rotating, and every figure is reported as ours over LiteLLM's within a round.

* per-request latency of a 20-chunk stream, one at a time (round-robin over
  the three on our side, LiteLLM's default simple shuffle on its side);
* the routing pick alone: ``Balancer.handle`` of a start and a success (ours)
  against ``Router.async_get_available_deployment`` (LiteLLM's);
* failover: a 503, then the stream;
* throughput at 50 concurrent streams.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from _harness import (
    BENCH_DIR,
    Section,
    Table,
    alternating,
    backends_in_child,
    client_config,
    difference,
    median_of,
    publish,
    quick,
    ratio,
    rounds_async,
    spread,
)

from lbcore import AttemptSucceeded, Balancer, RequestStarted
from lbtransports import AsyncClient, ClientConfig
from lbtransports.wire import ChatRequest, UserMessage

CHUNKS = 20
ROUNDS = 2 if quick() else 5
PER_ROUND = 4 if quick() else 40
PICKS = 50 if quick() else 2_000
TASKS = 50
LOAD_REQUESTS = 50 if quick() else 400
WARMUP = 4  # even
PEERS_PYTHON = BENCH_DIR.parent / ".peers-venv" / "bin" / "python"
WORKER = BENCH_DIR / "peers" / "litellm_worker.py"
REQUEST = ChatRequest(messages=(UserMessage(content="Say something short."),))
HOPS = 2 * (WARMUP + ROUNDS * PER_ROUND)
STREAM = f"stream:{CHUNKS}"
BACKENDS = [
    *(f"{name}=openai:{STREAM}" for name in "abc"),
    "unavailable=openai:fail:503",
    f"first=openai:{alternating('fail:503', STREAM, HOPS)}",
    f"second=openai:{alternating(STREAM, 'fail:503', HOPS)}",
]


class Worker:
    """The LiteLLM side, in its own venv and process, stopped by its PID."""

    def __init__(self, urls: dict[str, str]) -> None:
        if not PEERS_PYTHON.exists():
            raise SystemExit(f"{PEERS_PYTHON} is missing: run `make bench-peers`")
        self.child = subprocess.Popen(
            [str(PEERS_PYTHON), str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self.ask({"urls": urls})
        self.version = str(hello["litellm"])

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps(command) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            raise RuntimeError("the LiteLLM worker ended")
        return dict(json.loads(line))

    async def ask_async(self, command: dict[str, Any]) -> dict[str, Any]:
        return await anyio.to_thread.run_sync(self.ask, command)

    def stop(self) -> None:
        if self.child.poll() is None:
            self.ask_quietly()
        try:
            self.child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait(timeout=10)

    def ask_quietly(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write('{"op": "quit"}\n')
        self.child.stdin.close()


async def one_stream(client: AsyncClient) -> int:
    count = 0
    async with client.chat(REQUEST) as stream:
        async for _ in stream:
            count += 1
    return count


def latencies(client: AsyncClient) -> Callable[[], Awaitable[list[int]]]:
    async def measure() -> list[int]:
        samples = []
        for _ in range(PER_ROUND):
            began = time.perf_counter_ns()
            await one_stream(client)
            samples.append(time.perf_counter_ns() - began)
        return samples

    return measure


def our_pick(config: ClientConfig) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        balancer = Balancer(config.balancer)
        began = time.perf_counter_ns()
        for n in range(PICKS):
            balancer.handle(RequestStarted(at=n, request_id=f"r{n}"))
            balancer.handle(AttemptSucceeded(at=n, request_id=f"r{n}", attempt=1))
        return (time.perf_counter_ns() - began) / PICKS

    return measure


def our_load(client: AsyncClient) -> Callable[[], Awaitable[float]]:
    async def measure() -> float:
        each = LOAD_REQUESTS // TASKS

        async def worker() -> None:
            for _ in range(each):
                await one_stream(client)

        began = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(TASKS):
                group.start_soon(worker)
        return each * TASKS / (time.perf_counter() - began)

    return measure


async def bench(urls: dict[str, str], worker: Worker) -> dict[str, list[Any]]:
    spread3 = client_config(urls, "a", "b", "c", strategy="round-robin")
    async with (
        AsyncClient(spread3) as ours,
        AsyncClient(client_config(urls, "first", "second")) as hop,
    ):
        for _ in range(WARMUP):
            await one_stream(ours)
            await one_stream(hop)
        await worker.ask_async({"op": "stream", "model": "bench", "count": WARMUP})
        await worker.ask_async({"op": "stream", "model": "bad", "count": WARMUP})

        async def theirs(command: dict[str, Any], field: str) -> Any:
            return (await worker.ask_async(command))[field]

        stream = {"op": "stream", "model": "bench", "count": PER_ROUND}
        failing = {"op": "stream", "model": "bad", "count": PER_ROUND}
        load = {"op": "load", "tasks": TASKS, "requests": LOAD_REQUESTS}
        measures: dict[str, Callable[[], Awaitable[Any]]] = {
            "ours stream": latencies(ours),
            "litellm stream": lambda: theirs(stream, "ns"),
            "ours pick": our_pick(spread3),
            "litellm pick": lambda: theirs({"op": "pick", "count": PICKS}, "ns_per_pick"),
            "ours failover": latencies(hop),
            "litellm failover": lambda: theirs(failing, "ns"),
            "ours load": our_load(ours),
            "litellm load": lambda: worker.ask_async(load),
        }
        return await rounds_async(measures, ROUNDS)


def record(results: dict[str, list[Any]], version: str) -> Section:
    section = Section(
        key="peers",
        order=35,
        title=f"4. Against LiteLLM's Router (litellm {version})",
        method=__doc__.split("\n\n", 1)[1].replace("``", "`")
        + f"\n\n{ROUNDS} rounds; {PER_ROUND} requests per latency case, {PICKS} picks, "
        f"{LOAD_REQUESTS} requests over {TASKS} tasks for throughput. µs per request: the "
        "median of each round's median; min-max over rounds.",
        versions={"litellm": version},
    )
    table = Table(
        "lbcore's `AsyncClient` against LiteLLM's Router, same run",
        ["case", "ours", "LiteLLM", "ours / LiteLLM"],
    )
    for case, label in (
        ("stream", "20-chunk stream, µs"),
        ("failover", "a 503 then the stream, µs"),
    ):
        ours = [median_of(run) / 1000 for run in results[f"ours {case}"]]
        theirs = [median_of(run) / 1000 for run in results[f"litellm {case}"]]
        share = ratio(ours, theirs)
        table.rows.append([label, spread(ours).show(), spread(theirs).show(), share.show(3, "x")])
        section.figure(f"peers.{case}_ratio", share)
        section.figure(f"peers.{case}_saved_us", difference(theirs, ours))
    picks_ours = [v / 1000 for v in results["ours pick"]]
    picks_theirs = [v / 1000 for v in results["litellm pick"]]
    table.rows.append(
        [
            "the routing pick, µs",
            spread(picks_ours).show(1),
            spread(picks_theirs).show(1),
            ratio(picks_ours, picks_theirs).show(3, "x"),
        ]
    )
    load_ours = results["ours load"]
    load_theirs = [r["per_second"] for r in results["litellm load"]]
    errors = sum(r["errors"] for r in results["litellm load"])
    share = ratio(load_ours, load_theirs)
    table.rows.append(
        [
            f"requests/s at {TASKS} concurrent",
            spread(load_ours).show(),
            spread(load_theirs).show() + (f" ({errors} errors)" if errors else ""),
            share.show(2, "x"),
        ]
    )
    section.figure("peers.throughput_ratio", share)
    section.tables.append(table)
    return section


def main() -> None:
    began = time.monotonic()
    with backends_in_child(BACKENDS) as served:
        worker = Worker(served.urls)
        try:
            results = anyio.run(bench, served.urls, worker)
        finally:
            worker.stop()
    publish(record(results, worker.version), began)


if __name__ == "__main__":
    main()
