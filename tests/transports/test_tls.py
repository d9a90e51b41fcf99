"""HTTPS backends: both clients stream over TLS, trusting a private authority by ``ca_file``.

The backends serve with a certificate for 127.0.0.1 signed by a test-only
authority (``tls/``, valid until 2126): without ``ca_file`` it is unknown to
every client, with it the answer arrives whole. Host names are still checked.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from lbcore import ConfigError, FailureKind
from lbtransports import (
    AsyncClient,
    Client,
    ClientConfig,
    Completion,
    FailoverError,
    LoadBalancerError,
)
from lbtransports._tls import default_tls
from lbtransports.testing import LocalBackends, Stream
from lbtransports.wire import ChatRequest, UserMessage

TLS = Path(__file__).parent / "tls"
CA = str(TLS / "ca.pem")
REQUEST = ChatRequest(messages=(UserMessage(content="hi"),))


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(TLS / "server.pem", TLS / "server.key")
    return context


@pytest.fixture
def backends() -> Iterator[LocalBackends]:
    backends = LocalBackends(tls=_server_context())
    backends.add("a", "openai", default=Stream(3))
    backends.add("b", "anthropic", default=Stream(2))
    with backends:
        yield backends


def _backend(backends: LocalBackends, name: str, host: str = "127.0.0.1") -> dict[str, Any]:
    b = backends[name]
    url = b.base_url.replace("127.0.0.1", host)
    return {"name": name, "provider": b.provider, "model": f"m-{name}", "base_url": url}


def _config(backends: LocalBackends, host: str = "127.0.0.1", **more: Any) -> ClientConfig:
    return ClientConfig.from_mapping(
        {
            "strategy": "failover",
            "backends": [_backend(backends, name, host) for name in ("a", "b")],
            **more,
        }
    )


Outcome = Completion | LoadBalancerError


def _complete(mode: str, config: ClientConfig, calls: int = 1) -> list[Outcome]:
    outcomes: list[Outcome] = []
    if mode == "sync":
        with Client(config) as client:
            for _ in range(calls):
                try:
                    outcomes.append(client.complete(REQUEST))
                except LoadBalancerError as error:
                    outcomes.append(error)
        return outcomes

    async def main() -> None:
        with anyio.fail_after(10):
            async with AsyncClient(config) as client:
                for _ in range(calls):
                    try:
                        outcomes.append(await client.complete(REQUEST))
                    except LoadBalancerError as error:
                        outcomes.append(error)

    anyio.run(main, backend=mode)
    return outcomes


def test_a_private_authority_in_ca_file_is_trusted_and_connections_are_reused(
    mode: str, backends: LocalBackends
) -> None:
    assert backends["a"].base_url.startswith("https://127.0.0.1:")
    outcomes = _complete(mode, _config(backends, ca_file=CA), calls=3)
    assert [o.text for o in outcomes if isinstance(o, Completion)] == ["a-0 a-1 a-2 "] * 3
    # Three answers over one TLS connection: the pool keeps it.
    assert backends["a"].connections_total == 1
    assert backends["b"].requests_total == 0


def test_an_unknown_authority_is_a_connect_failure_and_fails_over(
    mode: str, backends: LocalBackends
) -> None:
    (error,) = _complete(mode, _config(backends))
    assert isinstance(error, FailoverError)
    # Both backends were tried; neither saw a request.
    assert [f.backend for f in error.failures] == ["a", "b"]
    for failure in (f.failure for f in error.failures):
        assert failure.kind == FailureKind.NETWORK
        assert failure.message == "could not connect to the backend (TLS handshake failed)"
    assert backends["a"].received == [] and backends["b"].received == []


def test_the_host_name_is_still_checked_with_ca_file(mode: str, backends: LocalBackends) -> None:
    # "localhost" reaches the same server, but the certificate names only 127.0.0.1.
    (error,) = _complete(mode, _config(backends, host="localhost", ca_file=CA))
    assert isinstance(error, FailoverError)
    messages = {f.failure.message for f in error.failures}
    assert messages == {"could not connect to the backend (TLS handshake failed)"}


def test_a_nested_balancer_trusts_its_parents_ca_file(backends: LocalBackends) -> None:
    inner = {"strategy": "round-robin", "backends": [_backend(backends, "a")]}
    config = ClientConfig.from_mapping(
        {
            "strategy": "failover",
            "ca_file": CA,
            "backends": [
                {"name": "team", "provider": "load-balancer", "balancer": inner},
                _backend(backends, "b"),
            ],
        }
    )
    assert config.nested["team"].ca_file == CA
    (answer,) = _complete("sync", config)
    assert isinstance(answer, Completion) and answer.text == "a-0 a-1 a-2 "


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "/nonexistent/ca.pem",
            "ca_file: cannot load certificate authorities from '/nonexistent/ca.pem'",
        ),
        (str(TLS / "server.key"), "ca_file: cannot load certificate authorities from"),
        ("", "ca_file: must be a path to a PEM file, got ''"),
        (3, "config: Expected `str | null`, got `int` - at `$.ca_file`"),
    ],
)
def test_a_ca_file_that_cannot_be_loaded_is_a_config_error(value: object, message: str) -> None:
    mapping = {
        "strategy": "round-robin",
        "backends": [{"name": "a", "provider": "openai", "model": "m"}],
        "ca_file": value,
    }
    with pytest.raises(ConfigError) as caught:
        ClientConfig.from_mapping(mapping)
    assert str(caught.value).startswith(message)


def test_without_ca_file_the_default_store_is_loaded_once_for_every_connection(
    backends: LocalBackends, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default store includes the system's, which SSL_CERT_FILE names: pointing it
    # at the test authority shows that store is the one used, as httpcore's own is.
    monkeypatch.setenv("SSL_CERT_FILE", CA)
    default_tls.cache_clear()
    try:
        config = _config(backends)

        async def main() -> list[str]:
            with anyio.fail_after(10):
                async with AsyncClient(config) as client:

                    async def one(texts: list[str]) -> None:
                        texts.append((await client.complete(REQUEST)).text)

                    texts: list[str] = []
                    async with anyio.create_task_group() as group:
                        for _ in range(3):
                            group.start_soon(one, texts)
                    # Three connections at once, one context loaded for all of them.
                    shards = client._pools["a"].shards
                    assert {id(s.pool._ssl_context) for s in shards} == {id(default_tls())}
                    return texts

        texts = anyio.run(main)
        assert texts == ["a-0 a-1 a-2 "] * 3
        assert backends["a"].connections_total == 3
    finally:
        default_tls.cache_clear()
