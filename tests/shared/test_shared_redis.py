"""Shared state through a real Redis (spec/behaviour.md §26): the scenarios of issue 14."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lbcore import BreakerState
from lbtransports import Client, LoadBalancerError
from lbtransports.testing import Fail, LocalBackends, Stream

from .conftest import RedisServer
from .harness import HELLO, breaker_state, probes, replays, shared_config, subscribed, wait_until

BREAKER = {
    "circuit_breaker_enabled": True,
    "circuit_breaker_failure_threshold": 1,
    "circuit_breaker_recovery_timeout_ms": 1_500,
}


def test_four_clients_skip_within_50ms_and_one_probe(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    backends = LocalBackends()
    backends.add("bad", "openai", default=Fail(503))
    backends.add("good", "openai", default=Stream(2))
    with backends:
        config = shared_config(backends, redis_server.url, **BREAKER)
        traces = [tmp_path / f"p{i}.jsonl" for i in range(4)]
        clients = [Client(config, trace=t) for t in traces]
        try:
            for client in clients:
                subscribed(client)
            # Client 0 sees the threshold reached (one failure: sticky failover moves on to good).
            assert clients[0].complete(HELLO).backend == "good"
            assert breaker_state(clients[0], "bad") is BreakerState.OPEN
            for other in clients[1:]:
                assert (
                    wait_until(lambda o=other: breaker_state(o, "bad") is BreakerState.OPEN) < 0.05
                )
            seen = len(backends["bad"].received)
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(lambda c: c.complete(HELLO).backend, clients * 3))
            assert set(answers) == {"good"}
            assert len(backends["bad"].received) == seen  # nobody tried bad
            # bad recovers and good breaks (or sticky failover would never go back to
            # bad); after the recovery time every client keeps asking.
            backends["bad"].script(default=Stream(2))
            backends["good"].script(default=Fail(503))
            time.sleep(1.6)
            stop = time.monotonic() + 1.5

            def keep_asking(client: Client) -> None:
                while (
                    time.monotonic() < stop
                    and breaker_state(client, "bad") is not BreakerState.CLOSED
                ):
                    with contextlib.suppress(LoadBalancerError):
                        client.complete(HELLO)
                    time.sleep(0.005)

            with ThreadPoolExecutor(4) as pool:
                list(pool.map(keep_asking, clients))
            for client in clients:
                wait_until(lambda c=client: breaker_state(c, "bad") is BreakerState.CLOSED)
        finally:
            for client in clients:
                client.close()
    assert sum(probes(t, "bad") for t in traces) == 1
    for trace in traces:
        replays(trace)


def test_tokens_and_retry_after_are_shared(redis_server: RedisServer, tmp_path: Path) -> None:
    backends = LocalBackends()
    backends.add("paused", "openai", Fail(429, retry_after="3"), default=Stream(2))
    backends.add("good", "openai", default=Stream(2))
    with backends:
        config = shared_config(backends, redis_server.url)
        first, second = Client(config, trace=tmp_path / "a.jsonl"), Client(config)
        try:
            subscribed(first)
            subscribed(second)
            one = first.complete(HELLO)
            assert one.backend == "good"  # paused asked for 3 s
            wait_until(lambda: "paused" in second.stats().cooldown_until, 0.05)
            two = second.complete(HELLO)
            assert two.backend == "good"
            assert len(backends["paused"].received) == 1  # second never tried it
            # TPM: each client's window holds both clients' tokens (one minute: the sum).
            both = sum(u.input_tokens + u.output_tokens for u in (one.usage, two.usage))
            assert both > 0
            for client in (first, second):
                wait_until(lambda c=client: c.stats().current_tpm["good"] == both)
        finally:
            first.close()
            second.close()
    replays(tmp_path / "a.jsonl")


def test_a_late_joiner_catches_up_from_the_snapshot(redis_server: RedisServer) -> None:
    backends = LocalBackends()
    backends.add("bad", "openai", default=Fail(503))
    backends.add("good", "openai", default=Stream(2))
    with backends:
        config = shared_config(backends, redis_server.url, **BREAKER)
        with Client(config) as early:
            subscribed(early)
            early.complete(HELLO)
            assert breaker_state(early, "bad") is BreakerState.OPEN
            time.sleep(0.05)  # the publisher wrote the snapshot key
            with Client(config) as late:
                subscribed(late)
                assert breaker_state(late, "bad") is BreakerState.OPEN


def test_redis_killed_and_restarted(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lbtransports.shared")
    backends = LocalBackends()
    backends.add("bad", "openai", default=Stream(2))
    backends.add("good", "openai", default=Stream(2))
    with backends:
        config = shared_config(backends, redis_server.url, **BREAKER)
        traces = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
        first, second = (Client(config, trace=t) for t in traces)
        errors: list[BaseException] = []
        stop = threading.Event()

        def traffic(client: Client) -> None:
            while not stop.is_set():
                try:
                    client.complete(HELLO)
                except BaseException as error:
                    errors.append(error)
                time.sleep(0.002)

        workers = [threading.Thread(target=traffic, args=(c,)) for c in (first, second)]
        try:
            subscribed(first)
            subscribed(second)
            for worker in workers:
                worker.start()
            time.sleep(0.2)
            redis_server.kill()
            time.sleep(0.5)  # requests go on meanwhile
            redis_server.start()
            time.sleep(0.2)
            stop.set()
            for worker in workers:
                worker.join(10)
            assert errors == []
            # Converged again: what one learns the other hears once reconnected.
            backends["bad"].script(default=Fail(503))
            wait_until(
                lambda: (
                    first.complete(HELLO) is not None
                    and breaker_state(first, "bad") is BreakerState.OPEN
                )
            )
            wait_until(lambda: breaker_state(second, "bad") is BreakerState.OPEN, 5)
        finally:
            stop.set()
            first.close()
            second.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert 1 <= len(warnings) <= 2  # once per outage (each thread may notice first)
    assert all("unreachable" in r.getMessage() for r in warnings)
    for trace in traces:
        replays(trace)
