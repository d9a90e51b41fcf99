"""Shared state: the async client on both loops, real processes, and secrets."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from lbcore import BreakerState, ConfigError
from lbtransports import AsyncClient, Client, ClientConfig, LoadBalancerError, SharedState
from lbtransports.testing import Fail, LocalBackends, Stream

from .conftest import RedisServer
from .harness import HELLO, breaker_state, replays, shared_config, subscribed, wait_until

BREAKER = {
    "circuit_breaker_enabled": True,
    "circuit_breaker_failure_threshold": 1,
    "circuit_breaker_recovery_timeout_ms": 60_000,
}


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_the_async_client_shares_on_both_loops(
    redis_server: RedisServer, tmp_path: Path, loop: str
) -> None:
    backends = LocalBackends()
    backends.add("bad", "openai", default=Fail(503))
    backends.add("good", "openai", default=Stream(2))
    with backends:
        config = shared_config(backends, redis_server.url, **BREAKER)
        trace = tmp_path / "async.jsonl"

        async def main() -> None:
            async with AsyncClient(config, trace=trace) as client:
                with Client(config) as peer:
                    subscribed(peer)
                    share = client._share
                    assert share is not None
                    await anyio.to_thread.run_sync(share.subscribed.wait, 5)
                    answer = await client.complete(HELLO)
                    assert answer.backend == "good"
                    await anyio.to_thread.run_sync(
                        wait_until, lambda: breaker_state(peer, "bad") is BreakerState.OPEN
                    )
                    assert peer.complete(HELLO).backend == "good"
                    assert len(backends["bad"].received) == 1

        anyio.run(main, backend=loop)
    replays(trace)


_CHILD = """
import json, sys, time
from lbcore import BreakerState
from lbtransports import Client, ClientConfig, ChatRequest, UserMessage
config = ClientConfig.from_mapping(json.loads(sys.argv[1]))
with Client(config, trace=sys.argv[2]) as client:
    client._share.subscribed.wait(5)
    print("ready", flush=True)
    start = time.monotonic()
    for _ in range(5000):  # bounded: 5 s
        snapshot = client.stats().circuit_breaker_states.get("bad")
        if snapshot is not None and snapshot.state is BreakerState.OPEN:
            break
        time.sleep(0.001)
    heard = time.monotonic()
    answer = client.complete(ChatRequest(messages=(UserMessage(content="Hi"),)))
    print(json.dumps({"backend": answer.backend, "open": snapshot is not None}), flush=True)
"""


def test_real_processes_share_a_breaker(redis_server: RedisServer, tmp_path: Path) -> None:
    backends = LocalBackends()
    backends.add("bad", "openai", default=Fail(503))
    backends.add("good", "openai", default=Stream(2))
    with backends:
        mapping = {
            "strategy": "failover",
            "settings": {"failover_retry_count": 1, **BREAKER},
            "backends": [
                {"name": b.name, "provider": "openai", "model": "m", "base_url": b.base_url}
                for b in backends
            ],
            "shared_state": redis_server.url,
            "shared_prefix": "procs",
        }
        traces = [tmp_path / f"child{i}.jsonl" for i in range(3)]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(mapping), str(trace)],
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            for trace in traces
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "ready"
            with Client(ClientConfig.from_mapping(mapping)) as parent:
                subscribed(parent)
                assert parent.complete(HELLO).backend == "good"
            results = []
            for child in children:
                out, _ = child.communicate(timeout=20)
                results.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait(5)
    assert results == [{"backend": "good", "open": True}] * 3
    assert len(backends["bad"].received) == 1  # only the parent ever tried it
    for trace in traces:
        replays(trace)


def test_the_password_never_shows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lbtransports.shared")
    secret = "s3cret-password-123"
    backends = LocalBackends()
    backends.add("good", "openai", default=Stream(2))
    backends.add("other", "openai", default=Stream(2))
    with backends:
        # Nothing listens on port 1: Redis is down from the start.
        config = shared_config(backends, f"redis://user:{secret}@127.0.0.1:1/0")
        trace = tmp_path / "t.jsonl"
        with Client(config, trace=trace) as client:
            assert client.complete(HELLO).backend == "good"  # never waits for Redis
            share = client._share
            assert share is not None
            shown = [repr(config), repr(config.shared_state), repr(share), repr(client)]
            time.sleep(0.3)
    assert caplog.records, "the outage is logged"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "[redacted]@127.0.0.1:1" in logged
    for text in [*shown, logged, trace.read_text()]:
        assert secret not in text
        assert "user" not in text or "[redacted]" in text
    with pytest.raises(ConfigError) as refused:
        SharedState(url=f"http://x:{secret}@host/0")
    assert secret not in str(refused.value)
    assert "[redacted]@host" in str(refused.value)


@pytest.mark.parametrize("prefix", ["", "has space", "x" * 65])
def test_a_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigError, match="shared_prefix"):
        SharedState(url="redis://127.0.0.1:6379/0", prefix=prefix)


def test_prefixes_keep_deployments_apart(redis_server: RedisServer) -> None:
    backends = LocalBackends()
    backends.add("bad", "openai", default=Fail(503))
    backends.add("good", "openai", default=Stream(2))
    with backends:
        ours = shared_config(backends, redis_server.url, prefix="ours", **BREAKER)
        theirs = shared_config(backends, redis_server.url, prefix="theirs", **BREAKER)
        with Client(ours) as first, Client(theirs) as second:
            subscribed(first)
            subscribed(second)
            first.complete(HELLO)
            assert breaker_state(first, "bad") is BreakerState.OPEN
            time.sleep(0.2)
            assert breaker_state(second, "bad") is BreakerState.CLOSED


def test_with_redis_down_each_process_probes_on_its_own() -> None:
    backends = LocalBackends()
    backends.add("bad", "openai", Fail(503), default=Stream(2))
    backends.add("good", "openai", Stream(2), default=Fail(503))
    with backends:
        config = shared_config(
            backends,
            "redis://127.0.0.1:1/0",  # nothing listens: every claim is granted locally
            circuit_breaker_enabled=True,
            circuit_breaker_failure_threshold=1,
            circuit_breaker_recovery_timeout_ms=200,
        )
        with Client(config) as client:
            assert client.complete(HELLO).backend == "good"
            assert breaker_state(client, "bad") is BreakerState.OPEN
            time.sleep(0.25)

            def recovered() -> bool:
                with contextlib.suppress(LoadBalancerError):
                    client.complete(HELLO)
                return breaker_state(client, "bad") is BreakerState.CLOSED

            wait_until(recovered, 5)
