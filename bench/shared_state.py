"""Shared state (spec §26): what it costs a decision, and how fast news travels between processes.

Run alone: ``python bench/shared_state.py`` (``make bench`` runs it too). Two parts:

* *Decision cost*: the same prepared requests through a fresh core with
  ``peer_sharing`` off and on, interleaved round by round; with it on, every
  success also yields a ``Publish`` (tokens) and each call's facts are batched.
  The ratio is taken within each round.
* *Propagation*: two clients on a real ``redis-server`` (started here on a free
  loopback port and stopped by its PID). One client's carrier is handed a
  breaker opening, as its core publishes it; the time until the other client's
  core has the breaker open (its next request would skip the backend) is one
  sample. Median and p99 over the samples.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable

from _harness import Section, Table, percentile, publish, quick, ratio, rounds, spread

from lbcore import (
    AttemptSucceeded,
    BackendSpec,
    Balancer,
    BalancerConfig,
    BreakerClosed,
    BreakerOpened,
    BreakerState,
    ChunkReceived,
    Event,
    Publish,
    RequestStarted,
    Settings,
)

REQUESTS = 40 if quick() else 2_000
ROUNDS = 3 if quick() else 9
SAMPLES = 5 if quick() else 300
CHUNKS = 20


def core_config(sharing: bool) -> BalancerConfig:
    backends = tuple(BackendSpec(name=f"b{n}", provider="openai", model="m") for n in range(3))
    settings = Settings(
        timeout_ms=30_000, circuit_breaker_enabled=True, tpm_threshold=10, peer_sharing=sharing
    )
    return BalancerConfig(strategy="failover", backends=backends, settings=settings)


def decisions(sharing: bool) -> Callable[[], float]:
    """One round: ns per whole request (a start, 20 chunks, a success with usage)."""
    config = core_config(sharing)
    prepared: list[list[Event]] = []
    for n in range(REQUESTS):
        rid = f"r{n}"
        events: list[Event] = [RequestStarted(at=n, request_id=rid)]
        events += [ChunkReceived(at=n, request_id=rid, attempt=1)] * CHUNKS
        events.append(
            AttemptSucceeded(at=n, request_id=rid, attempt=1, input_tokens=10, output_tokens=20)
        )
        prepared.append(events)

    def measure() -> float:
        handle = Balancer(config).handle
        began = time.perf_counter_ns()
        for events in prepared:
            for event in events:
                handle(event)
        return (time.perf_counter_ns() - began) / REQUESTS

    return measure


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def propagation(server: str) -> list[float]:
    """Milliseconds from one carrier being handed a breaker opening to the peer's core having it."""
    from lbtransports import Client, ClientConfig  # the transports are only needed here

    port = _free_port()
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        mapping = {
            "strategy": "failover",
            "settings": {"circuit_breaker_enabled": True},
            "backends": [
                {"name": n, "provider": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
                for n in ("bad", "good")
            ],
            "shared_state": f"redis://127.0.0.1:{port}/0",
            "shared_prefix": "bench",
        }
        config = ClientConfig.from_mapping(mapping)
        with Client(config) as sender, Client(config) as receiver:
            for client in (sender, receiver):
                assert client._share is not None
                if not client._share.subscribed.wait(10):
                    raise RuntimeError("the clients did not reach redis-server")
            share = sender._share
            assert share is not None

            def state() -> BreakerState:
                snapshot = receiver.stats().circuit_breaker_states.get("bad")
                return BreakerState.CLOSED if snapshot is None else snapshot.state

            samples = []
            for _ in range(SAMPLES):
                opened = Publish(facts=(BreakerOpened(backend="bad", recovery_left_ms=60_000),))
                began = time.perf_counter()
                share.offer(opened)
                # Polled with a short sleep: a busy loop would hold the GIL from the
                # carrier's threads for a whole switch interval (5 ms) at a time.
                for _ in range(1_000_000):  # bounded
                    if state() is BreakerState.OPEN:
                        break
                    time.sleep(0.0001)
                samples.append((time.perf_counter() - began) * 1000)
                share.offer(Publish(facts=(BreakerClosed(backend="bad"),)))
                for _ in range(1_000_000):
                    if state() is BreakerState.CLOSED:
                        break
                    time.sleep(0.0001)
            return samples
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(10)


def main() -> None:
    began = time.monotonic()
    section = Section(
        key="shared",
        order=70,
        title="Shared state through Redis",
        method=(
            f"*Decision cost*: {REQUESTS:,} whole requests (a start, {CHUNKS} chunks, a success "
            "with usage) through a fresh core, breakers and a TPM threshold on, `peer_sharing` "
            f"off and on, interleaved over {ROUNDS} rounds; median (min-max), ratio per round. "
            "*Propagation*: two clients on a local `redis-server`; a breaker opening handed to "
            "one client's carrier (as its core publishes it) until the other client's core has "
            f"the breaker open; {SAMPLES} samples."
        ),
    )
    results = rounds({"off": decisions(False), "on": decisions(True)}, ROUNDS)
    cost = Table(
        "µs per whole request in the core, peer sharing off and on",
        ["sharing off", "sharing on", "on / off"],
    )
    off = spread([v / 1000 for v in results["off"]])
    on = spread([v / 1000 for v in results["on"]])
    share_ratio = ratio(results["on"], results["off"])
    cost.rows.append([off.show(1), on.show(1), share_ratio.show(3, "x")])
    section.tables.append(cost)
    section.figure("shared.request_ratio", share_ratio)

    server = shutil.which("redis-server")
    latency = Table(
        "ms from one process's breaker opening to the other's", ["median", "p99", "max"]
    )
    if server is None:
        latency.rows.append(["redis-server not installed", "-", "-"])
    else:
        samples = propagation(server)
        median = spread(samples)
        latency.rows.append(
            [f"{median.median:.2f}", f"{percentile(samples, 0.99):.2f}", f"{median.high:.2f}"]
        )
        section.figure("shared.propagation_ms", median)
    section.tables.append(latency)
    publish(section, began)


if __name__ == "__main__":
    main()
