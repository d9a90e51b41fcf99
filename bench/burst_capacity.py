"""The issue-10 burst: 1,000 concurrent streams through one AsyncClient, with
``max_concurrent`` set on every backend, against 12 healthy fake backends and 3
broken ones (connection closed, 503, hang).

Usage: python bench/burst_capacity.py [requests] [asyncio|trio] [max_concurrent]

Prints how long the burst took, how each request ended, per-backend metrics and
the breaker states. Done when every request a healthy backend can serve is
served and no healthy backend's breaker opened.
"""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time

import anyio

from lbtransports import AsyncClient, ChatRequest, ClientConfig, LoadBalancerError
from lbtransports.wire import UserMessage

REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
LOOP = sys.argv[2] if len(sys.argv) > 2 else "asyncio"
LIMIT = int(sys.argv[3]) if len(sys.argv) > 3 else 5
BROKEN = ["f1=openai:closed", "f2=openai:fail:503", "f3=openai:hang"]
HEALTHY = [f"h{i}=openai:stream:20" for i in range(12)]


def serve() -> tuple[subprocess.Popen[str], dict[str, str]]:
    command = [sys.executable, "-m", "lbtransports.cli", "serve-fake", "--duration", "300"]
    proc = subprocess.Popen([*command, *BROKEN, *HEALTHY], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    for line in proc.stdout:
        if line.strip() == "ready":
            break
        name, _, url = line.split()
        urls[name] = url
    return proc, urls


def config(urls: dict[str, str]) -> ClientConfig:
    return ClientConfig.from_mapping(
        {
            "strategy": "failover",
            "profile_name": "lb",
            "settings": {
                "timeout_ms": 1500,
                "circuit_breaker_enabled": True,
                "max_queued": REQUESTS,
            },
            "backends": [
                {
                    "name": name,
                    "provider": "openai",
                    "model": "m",
                    "base_url": url,
                    "credential": {"key": "sk-bench"},
                    "max_concurrent": LIMIT,
                }
                for name, url in urls.items()
            ],
        }
    )


async def burst(cfg: ClientConfig) -> None:
    ends: collections.Counter[tuple[str, ...]] = collections.Counter()
    request = ChatRequest(messages=(UserMessage(content="hi"),))
    async with AsyncClient(cfg) as client:

        async def one() -> None:
            try:
                async with client.chat(request) as stream:
                    async for _ in stream:
                        pass
                ends[("ok", stream.backend or "?")] += 1
            except LoadBalancerError as error:
                ends[(type(error).__name__,)] += 1

        began = time.monotonic()
        async with anyio.create_task_group() as group:
            for _ in range(REQUESTS):
                group.start_soon(one)
        elapsed = time.monotonic() - began
        stats = client.stats()
    served = sum(n for key, n in ends.items() if key[0] == "ok")
    print(f"{REQUESTS} requests, max_concurrent={LIMIT}, {LOOP}: {elapsed:.1f}s, served {served}")
    print(sorted(ends.items(), key=str))
    for name, m in sorted(stats.backend_metrics.items()):
        print(f"  {name}: attempts {m.requests} ok {m.successes} failed {m.failures}")
    opened = {n: b.state for n, b in stats.circuit_breaker_states.items() if b.state != "closed"}
    print("breakers not closed:", opened)
    healthy_open = [n for n in opened if n.startswith("h")]
    print("healthy breakers opened:", healthy_open or "none")


def main() -> None:
    proc, urls = serve()
    try:
        anyio.run(burst, config(urls), backend=LOOP)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    main()
