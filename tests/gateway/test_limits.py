"""Limits and config rules, over raw sockets where an SDK would not misbehave on purpose."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from lbcore import ConfigError
from lbtransports.gateway import Gateway, config_from_mapping
from lbtransports.testing import LocalBackends

from .harness import group, make_config, serving

ONE = {"strategy": "round-robin", "backends": [{"name": "a", "provider": "openai", "model": "m"}]}


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    backends = LocalBackends()
    backend = backends.add("oa", "openai")
    with backends:
        config = make_config(
            {"gpt": group(backend, strategy="round-robin")},
            max_header_bytes=2048,
            max_body_bytes=1000,
            header_timeout_s=0.3,
        )
        with serving(config) as gateway:
            yield gateway
        assert backend.requests_total == 0


def exchange(gateway: Gateway, data: bytes) -> bytes:
    assert gateway.port is not None
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_huge_head_gets_431(gateway: Gateway) -> None:
    answer = exchange(gateway, b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000)
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_huge_body_gets_413(gateway: Gateway) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n"
    assert exchange(gateway, head).startswith(b"HTTP/1.1 413 ")


def test_a_slow_head_gets_408_and_a_close(gateway: Gateway) -> None:
    started = time.monotonic()
    answer = exchange(gateway, b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3  # the timeout is 0.3 s, not the socket's 5 s


def test_no_auth_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigError, match="no_auth"):
        config_from_mapping(
            {"gateway": {"host": "0.0.0.0", "no_auth": True}, "groups": {"g": ONE}}, environ={}
        )


def test_a_plain_key_in_the_config_is_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_mapping({"gateway": {"keys": ["my-plain-key"]}, "groups": {}}, environ={})
    assert "my-plain-key" not in str(error.value)
    assert "gateway.keys[0]" in str(error.value)


def test_a_group_may_use_any_core_strategy_with_weights() -> None:
    weighted = {
        "strategy": "weighted-round-robin",
        "backends": [
            {"name": "a", "provider": "openai", "model": "m", "weight": 3},
            {"name": "b", "provider": "openai", "model": "m", "weight": 0},
        ],
    }
    config = config_from_mapping(
        {"gateway": {"no_auth": True}, "groups": {"w": weighted}}, environ={}
    )
    balancer = config.groups[0].client.balancer
    assert (balancer.strategy, [b.weight for b in balancer.backends]) == (
        "weighted-round-robin",
        [3, 0],
    )
