"""Review regressions: a TLS handshake that fails is a failure to connect, in every client."""

from __future__ import annotations

import anyio
import pytest

from lbcore import Failure, FailureKind
from lbtransports import AsyncClient, BackendError, Client, ClientConfig

from .harness import REQUEST, BackendPlan, client_config, start_backends


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
