"""What the clients add to a real HTTP request, against the same request made by hand.

Run with ``make bench``. A local backend (``lbtransports.testing``, openai
format, ``Stream(chunks=20)`` with no delay) serves from a child process, so
it has its own core and its own interpreter lock; the client side, measured
here, has the other. Each case is timed side by side in the same run:

* direct: the same HTTP library by hand. ``build_request`` makes the request,
  ``requests.Session`` (sync) or ``httpcore.AsyncConnectionPool`` (async)
  sends it, the body is read piece by piece (``raw.read1``, or the response's
  byte stream) and decoded with ``stream_decoder``;
* balanced: ``Client.chat`` / ``AsyncClient.chat`` over a failover config
  (two backends, the first one serving, ``timeout_ms`` set), iterated to the end;
* failover hop: the balancer again, but every request first gets a 429 from
  one backend and then streams from another. Against the direct request to a
  streaming backend, the difference is the whole price of the hop; against
  the same two requests by hand (a 429, then the stream), it is what the
  balancer adds to them.

Runs of each case are interleaved, with the order rotating from run to run;
the table shows the median and 90th percentile per request over every request
of every run, the balanced/direct ratio of the medians, and the difference.

``--profile`` runs the balanced paths under cProfile instead and prints where
lbtransports and lbcore spend their time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterator, Sequence
from typing import Any

import anyio
import httpcore
import requests

from lbtransports import AsyncClient, Client, ClientConfig
from lbtransports.testing import Behaviour, Fail, LocalBackends, Stream
from lbtransports.wire import (
    BackendTarget,
    ChatRequest,
    CredentialSource,
    UserMessage,
    build_request,
    stream_decoder,
)

CHUNKS = 20
RUNS = 7
REQUESTS = 200
WARMUP = 40  # even: see the failover pair below
PROFILE_REQUESTS = 2_000
READ_PIECE = 64 * 1024
KEY = "sk-bench-not-a-real-key"
REQUEST = ChatRequest(messages=(UserMessage(content="Say something short."),))
MODES = ("sync", "asyncio", "trio")

# The failover pair plays 429, stream, 429, stream... (``first``) and stream,
# 429, stream, 429... (``second``). Failover is sticky: a request starts where
# the last one succeeded. So r1 gets a 429 from first and streams from second,
# r2 gets a 429 from second and streams from first, and so on: every request
# makes exactly one hop, as long as each new client (which starts at first)
# comes after an even number of requests. The counts above keep it so, and
# each client's stats are checked for one failure and one success per request.
PAIRS_PER_CLIENT = WARMUP + RUNS * REQUESTS
RATE_LIMITED: Behaviour = Fail(429, retry_after="1", message="rate limited")
STREAM: Behaviour = Stream(chunks=CHUNKS)


# -- the backends, served by a child process ------------------------------------------


def serve(pairs: int) -> None:
    """The child: serve the backends until stdin closes."""
    backends = LocalBackends()
    backends.add("stream", "openai", default=STREAM)
    backends.add("spare", "openai", default=STREAM)
    backends.add("limited", "openai", default=RATE_LIMITED)
    backends.add("first", "openai", *((RATE_LIMITED, STREAM) * pairs), default=STREAM)
    backends.add("second", "openai", *((STREAM, RATE_LIMITED) * pairs), default=STREAM)
    with backends:
        for backend in backends:
            print(backend.name, backend.base_url, flush=True)
        print("ready", flush=True)
        sys.stdin.read()


@contextlib.contextmanager
def backends_in_child(pairs: int) -> Iterator[dict[str, str]]:
    """Start the child; yields each backend's base URL."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(pairs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        urls = {}
        for line in child.stdout:
            if line.strip() == "ready":
                break
            name, url = line.split()
            urls[name] = url
        else:
            raise RuntimeError("the backend process ended before it was ready")
        yield urls
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def target(name: str, url: str) -> BackendTarget:
    return BackendTarget(
        name=name,
        provider="openai",
        model="bench-model",
        base_url=url,
        credential=CredentialSource(key=KEY),
    )


def failover_config(urls: dict[str, str], first: str, second: str) -> ClientConfig:
    # One attempt per backend: a 429 moves on to the other backend at once
    # rather than retrying the same one.
    return ClientConfig.from_mapping(
        {
            "strategy": "failover",
            "settings": {"timeout_ms": 30_000, "failover_retry_count": 1},
            "backends": [
                {
                    "name": name,
                    "provider": "openai",
                    "model": "bench-model",
                    "base_url": urls[name],
                    "credential": {"key": KEY},
                }
                for name in (first, second)
            ],
        }
    )


# -- one request, each way ---------------------------------------------------------

#: The direct paths set the timeouts any careful caller sets (the sync one passes
#: ``timeout=(10, 300)``): httpcore then bounds every read with a timer, as the
#: balanced client does.
TIMEOUTS: dict[str, object] = {"timeout": {"connect": 10, "read": 300, "write": 300, "pool": None}}


def direct_sync(session: requests.Session, where: BackendTarget) -> int:
    http = build_request(where, REQUEST)
    decoder = stream_decoder("openai", secrets=http.secrets)
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
        while data := response.raw.read1(READ_PIECE):
            count += len(decoder.feed(data))
    return count + len(decoder.end())


def by_hand_sync(session: requests.Session, limited: BackendTarget, where: BackendTarget) -> int:
    """What the failover hop does, by hand: a request that gets a 429, then the stream."""
    http = build_request(limited, REQUEST)
    with session.post(
        http.url, headers=dict(http.headers), data=http.body, timeout=(10, 300)
    ) as response:
        assert response.status_code == 429 and response.content
    return direct_sync(session, where)


def balanced_sync(client: Client) -> int:
    return sum(1 for _ in client.chat(REQUEST))


async def direct_async(pool: httpcore.AsyncConnectionPool, where: BackendTarget) -> int:
    http = build_request(where, REQUEST)
    decoder = stream_decoder("openai", secrets=http.secrets)
    headers = [(b"User-Agent", b"bench"), (b"Accept-Encoding", b"identity")]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in http.headers]
    count = 0
    async with pool.stream(
        http.method, http.url, headers=headers, content=http.body, extensions=TIMEOUTS
    ) as response:
        assert response.status == 200
        body = response.stream
        assert isinstance(body, AsyncIterable)
        async for data in body:
            count += len(decoder.feed(data))
    return count + len(decoder.end())


async def by_hand_async(
    pool: httpcore.AsyncConnectionPool, limited: BackendTarget, where: BackendTarget
) -> int:
    http = build_request(limited, REQUEST)
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in http.headers]
    response = await pool.request(
        http.method, http.url, headers=headers, content=http.body, extensions=TIMEOUTS
    )
    assert response.status == 429 and response.content
    return await direct_async(pool, where)


async def balanced_async(client: AsyncClient) -> int:
    count = 0
    async with client.chat(REQUEST) as stream:
        async for _ in stream:
            count += 1
    return count


# -- timing ------------------------------------------------------------------------

Samples = dict[str, list[int]]


def time_sync(job: Callable[[], int], count: int) -> list[int]:
    samples = []
    for _ in range(count):
        began = time.perf_counter_ns()
        job()
        samples.append(time.perf_counter_ns() - began)
    return samples


async def time_async(job: Callable[[], Awaitable[int]], count: int) -> list[int]:
    samples = []
    for _ in range(count):
        began = time.perf_counter_ns()
        await job()
        samples.append(time.perf_counter_ns() - began)
    return samples


def rotated(names: Sequence[str], run: int) -> list[str]:
    shift = run % len(names)
    return [*names[shift:], *names[:shift]]


def check_hops(stats: Any, requests_sent: int) -> None:
    """Every request through the failover pair made exactly one hop."""
    metrics = stats.backend_metrics
    failures = sum(m.failures for m in metrics.values())
    successes = sum(m.successes for m in metrics.values())
    assert (failures, successes) == (requests_sent, requests_sent), (failures, successes)


def bench_sync(urls: dict[str, str]) -> Samples:
    where = target("stream", urls["stream"])
    limited = target("limited", urls["limited"])
    session = requests.Session()
    session.trust_env = False
    session.headers.update({"User-Agent": "bench", "Accept-Encoding": "identity"})
    with (
        session,
        Client(failover_config(urls, "stream", "spare")) as balanced,
        Client(failover_config(urls, "first", "second")) as hop,
    ):
        jobs: dict[str, Callable[[], int]] = {
            "direct": lambda: direct_sync(session, where),
            "balanced": lambda: balanced_sync(balanced),
            "failover": lambda: balanced_sync(hop),
            "by hand": lambda: by_hand_sync(session, limited, where),
        }
        counts = {name: job() for name, job in jobs.items()}
        assert len(set(counts.values())) == 1, counts
        for job in jobs.values():
            time_sync(job, WARMUP - 1)
        samples: Samples = {name: [] for name in jobs}
        for run in range(RUNS):
            for name in rotated(list(jobs), run):
                samples[name] += time_sync(jobs[name], REQUESTS)
        check_hops(hop.stats(), PAIRS_PER_CLIENT)
    return samples


async def bench_async(urls: dict[str, str]) -> Samples:
    where = target("stream", urls["stream"])
    limited = target("limited", urls["limited"])
    async with (
        httpcore.AsyncConnectionPool(retries=0) as pool,
        AsyncClient(failover_config(urls, "stream", "spare")) as balanced,
        AsyncClient(failover_config(urls, "first", "second")) as hop,
    ):
        jobs: dict[str, Callable[[], Awaitable[int]]] = {
            "direct": lambda: direct_async(pool, where),
            "balanced": lambda: balanced_async(balanced),
            "failover": lambda: balanced_async(hop),
            "by hand": lambda: by_hand_async(pool, limited, where),
        }
        counts = {name: await job() for name, job in jobs.items()}
        assert len(set(counts.values())) == 1, counts
        for job in jobs.values():
            await time_async(job, WARMUP - 1)
        samples: Samples = {name: [] for name in jobs}
        for run in range(RUNS):
            for name in rotated(list(jobs), run):
                samples[name] += await time_async(jobs[name], REQUESTS)
        check_hops(hop.stats(), PAIRS_PER_CLIENT)
    return samples


# -- report ------------------------------------------------------------------------


def median_p90_us(samples: list[int]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.9)] / 1000


#: Each row: the balanced case, what it is compared with, and how the row reads.
ROWS = (
    ("balanced", "direct", "stream: balanced vs direct"),
    ("failover", "direct", "429 + failover vs direct"),
    ("failover", "by hand", "429 + failover vs by hand"),
)


def report(results: dict[str, Samples]) -> None:
    print(
        f"{CHUNKS}-chunk streamed answers from local openai backends in another process; "
        f"per request over {RUNS} interleaved runs x {REQUESTS} requests; us = microseconds"
    )
    print(
        f"{'mode':<8} {'case':<26} {'base us':>8} {'p90':>6} {'ours us':>8} {'p90':>6} "
        f"{'ratio':>6} {'added us':>8}"
    )
    for mode, samples in results.items():
        for case, base_case, label in ROWS:
            base, base_p90 = median_p90_us(samples[base_case])
            ours, ours_p90 = median_p90_us(samples[case])
            print(
                f"{mode:<8} {label:<26} {base:>8.0f} {base_p90:>6.0f} {ours:>8.0f} "
                f"{ours_p90:>6.0f} {ours / base:>6.2f} {ours - base:>+8.0f}"
            )
    print(
        "direct: the same request by hand with the same HTTP library; by hand: a request "
        "answered 429, then the stream"
    )


# -- profile -----------------------------------------------------------------------


def print_profile(title: str, profile: cProfile.Profile) -> None:
    print(f"\n== {title}: our own code by own time (tottime), then by cumulative time")
    stats = pstats.Stats(profile)
    for key in ("tottime", "cumulative"):
        stats.sort_stats(key).print_stats(r"src/(lbtransports|lbcore)/", 15)


def profile_balanced(urls: dict[str, str]) -> None:
    with Client(failover_config(urls, "stream", "spare")) as client:
        for _ in range(WARMUP):
            balanced_sync(client)
        profile = cProfile.Profile()
        profile.runcall(lambda: [balanced_sync(client) for _ in range(PROFILE_REQUESTS)])
    print_profile(f"sync Client, {PROFILE_REQUESTS} requests", profile)

    async def run() -> cProfile.Profile:
        async with AsyncClient(failover_config(urls, "stream", "spare")) as client:
            for _ in range(WARMUP):
                await balanced_async(client)
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(PROFILE_REQUESTS):
                await balanced_async(client)
            profile.disable()
        return profile

    print_profile(f"AsyncClient on asyncio, {PROFILE_REQUESTS} requests", anyio.run(run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=int, metavar="PAIRS", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help="profile the balanced paths")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    if args.profile:
        with backends_in_child(0) as urls:
            profile_balanced(urls)
        return
    results: dict[str, Samples] = {}
    with backends_in_child(PAIRS_PER_CLIENT * len(MODES)) as urls:
        results["sync"] = bench_sync(urls)
        for loop in MODES[1:]:
            results[loop] = anyio.run(bench_async, urls, backend=loop)
    report(results)


if __name__ == "__main__":
    main()
