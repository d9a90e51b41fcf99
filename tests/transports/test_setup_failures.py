"""Attempts that cannot start: a request no HTTP library can send is a setup
failure sent nowhere, and a failed TLS handshake is a failure to connect, the
same in every client.
"""

from __future__ import annotations

import io
from typing import Any

import anyio
import pytest

from lbcore import Failure, FailureKind
from lbtransports import AsyncClient, BackendError, Client, ClientConfig, Completion
from lbtransports.testing import Stream

from .harness import REQUEST, BackendPlan, client_config, decision_lines, start_backends

#: A key pasted with a typographic ellipsis: HTTP headers are Latin-1, so no
#: library can send it, and its error would carry the whole header value.
PASTED_KEY = "sk-pasted\u2026-do-not-leak-0123456789"


def test_a_key_no_header_can_carry_is_a_setup_failure_and_fails_over(mode: str) -> None:
    plans = [BackendPlan("a", default=Stream(1)), BackendPlan("b", default=Stream(2))]
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        base = client_config(backends, plans)
        config = ClientConfig.from_mapping(
            {
                "strategy": "failover",
                "backends": [
                    {
                        "name": target.name,
                        "provider": target.provider,
                        "model": target.model,
                        "base_url": target.base_url,
                        "credential": {
                            "key": PASTED_KEY if target.name == "a" else target.credential.key
                        },
                    }
                    for target in base.targets
                ],
            }
        )
        if mode == "sync":
            with Client(config, trace=trace) as client:
                answer = client.complete(REQUEST)
        else:

            async def main() -> Completion:
                async with AsyncClient(config, trace=trace) as client:
                    return await client.complete(REQUEST)

            answer = anyio.run(main, backend=mode)
        assert backends["a"].received == []
        backends.wait_idle(timeout=3.0)
    assert (answer.backend, answer.text) == ("b", "b-0 b-1 ")
    lines = decision_lines(trace.getvalue())
    assert "FailOver(a->b, setup)" in lines[1], lines
    assert "authorization" in lines[1]
    assert PASTED_KEY not in trace.getvalue().decode()


def _failure(mode: str, config: ClientConfig) -> Failure:
    if mode == "sync":
        with Client(config) as client, pytest.raises(BackendError) as caught:
            client.complete(REQUEST)
        return caught.value.failure

    async def main() -> Failure:
        async with AsyncClient(config) as client:
            with pytest.raises(BackendError) as caught:
                await client.complete(REQUEST)
            return caught.value.failure

    return anyio.run(main, backend=mode)


def test_a_failed_tls_handshake_is_the_same_connect_failure_in_every_client() -> None:
    # https:// to a backend that speaks plain HTTP: the handshake fails before
    # any byte of the request was sent.
    plans = [BackendPlan("a")]
    with start_backends(plans) as backends:
        plain = client_config(backends, plans, strategy="round-robin")
        (target,) = plain.targets
        config = ClientConfig.from_mapping(
            {
                "strategy": "round-robin",
                "backends": [
                    {
                        "name": "a",
                        "provider": "openai",
                        "model": "m",
                        "base_url": target.base_url.replace("http://", "https://"),
                    }
                ],
            }
        )
        failures = {mode: _failure(mode, config) for mode in ("sync", "asyncio", "trio")}
        assert backends["a"].received == []
        backends.wait_idle(timeout=3.0)
    for failure in failures.values():
        assert failure.kind == FailureKind.NETWORK
        assert failure.message == "could not connect to the backend (TLS handshake failed)"
        # An ssl error's errno is the TLS library's, not the operating system's.
        assert failure.code is None
    assert failures["asyncio"] == failures["sync"] == failures["trio"]


def test_a_missing_key_is_a_setup_failure_that_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LBCORE_TEST_UNSET_KEY", raising=False)
    plans = [BackendPlan("a", default=Stream(1)), BackendPlan("b", default=Stream(1))]
    with start_backends(plans) as backends:
        mapping = config_mapping(client_config(backends, plans))
        mapping["backends"][0]["credential"] = {"env": "LBCORE_TEST_UNSET_KEY"}
        trace = io.BytesIO()
        with Client(ClientConfig.from_mapping(mapping), trace=trace) as client:
            answer = client.complete(REQUEST)
        assert backends["a"].received == []
    assert answer.backend == "b"
    lines = decision_lines(trace.getvalue())
    assert "LBCORE_TEST_UNSET_KEY" in lines[1] and "FailOver(a->b, setup)" in lines[1]


def config_mapping(config: ClientConfig) -> dict[str, Any]:
    """The mapping that builds ``config`` again (credentials included: test keys only)."""
    return {
        "strategy": config.balancer.strategy,
        "settings": config.settings,
        "backends": [
            {
                "name": t.name,
                "provider": t.provider,
                "model": t.model,
                "base_url": t.base_url,
                "credential": {"key": t.credential.key},
            }
            for t in config.targets
        ],
    }
