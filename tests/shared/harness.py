"""Clients sharing state through a real Redis, over local backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lbcore import BreakerState, StartAttempt, decode_trace, verify_trace
from lbtransports import ChatRequest, Client, ClientConfig, UserMessage
from lbtransports.testing import LocalBackends

HELLO = ChatRequest(messages=(UserMessage(content="Hi"),))


def shared_config(
    backends: LocalBackends, url: str, prefix: str = "t", **settings: Any
) -> ClientConfig:
    return ClientConfig.from_mapping(
        {
            "strategy": "failover",
            "settings": {"failover_retry_count": 1, **settings},
            "backends": [
                {"name": b.name, "provider": b.provider, "model": "m", "base_url": b.base_url}
                for b in backends
            ],
            "shared_state": url,
            "shared_prefix": prefix,
        }
    )


def wait_until(check: Callable[[], bool], limit_s: float = 5.0) -> float:
    """Seconds until ``check()`` held (bounded); raises if it never did."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > limit_s:
            raise AssertionError(f"not true within {limit_s} s")
        time.sleep(0.001)
    return time.perf_counter() - start


def breaker_state(client: Client, backend: str) -> BreakerState:
    snapshot = client.stats().circuit_breaker_states.get(backend)
    return BreakerState.CLOSED if snapshot is None else snapshot.state


def subscribed(client: Client) -> None:
    share = client._share
    assert share is not None
    assert share.subscribed.wait(5)


def replays(path: Path) -> None:
    data = path.read_bytes()
    assert verify_trace(data) is None


def probes(path: Path, backend: str) -> int:
    _, steps = decode_trace(path.read_bytes())
    return sum(
        1
        for step in steps
        for action in step.actions
        if isinstance(action, StartAttempt) and action.probe and action.backend == backend
    )
