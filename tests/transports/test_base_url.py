"""A wrong base_url is told apart from a missing model: the failure shows the URL tried.

Real sockets to local backends on 127.0.0.1, both clients.
"""

from __future__ import annotations

import anyio
import pytest

from lbtransports import AsyncClient, BackendError, Client, ClientConfig, Completion
from lbtransports.testing import LocalBackends, Stream

from .harness import REQUEST, secret_of

MODES = ("sync", "asyncio")
GOOGLE_SHAPED_KEY = "AIzaSyA-0123456789abcdefghijklmn"


def _config(name: str, provider: str, base_url: str) -> ClientConfig:
    return ClientConfig.from_mapping(
        {
            "strategy": "round-robin",
            "connect_timeout_ms": 2_000,
            "idle_timeout_ms": 2_000,
            "backends": [
                {
                    "name": name,
                    "provider": provider,
                    "model": "m",
                    "base_url": base_url,
                    "credential": {"key": secret_of(name)},
                }
            ],
        }
    )


def _backends(name: str, provider: str, behaviour: Stream) -> LocalBackends:
    backends = LocalBackends()
    backends.add(name, provider, default=behaviour)
    return backends


def _complete(config: ClientConfig, mode: str) -> Completion | BackendError:
    """The whole answer, or the BackendError the request ended with."""
    if mode == "sync":
        with Client(config) as client:
            try:
                return client.complete(REQUEST)
            except BackendError as error:
                return error

    async def run() -> Completion | BackendError:
        async with AsyncClient(config) as client:
            try:
                return await client.complete(REQUEST)
            except BackendError as error:
                return error

    return anyio.run(run, backend=mode)


def _failure_text(config: ClientConfig, mode: str) -> str:
    error = _complete(config, mode)
    assert isinstance(error, BackendError), error
    assert error.status == 404
    return f"{error.failure.message}\n{error}\n{error!r}\n{error.error!r}"


@pytest.mark.parametrize("mode", MODES)
def test_gemini_without_v1beta_shows_the_url_it_tried(mode: str) -> None:
    with _backends("g", "gemini", Stream(1)) as backends:
        root = f"http://127.0.0.1:{backends['g'].port}"
        text = _failure_text(_config("g", "gemini", root), mode)
        assert backends["g"].received[0].path == "/models/m:streamGenerateContent"
    assert f"{root}/models/m:streamGenerateContent?alt=sse" in text


@pytest.mark.parametrize("mode", MODES)
def test_anthropic_with_v1_twice_shows_the_url_it_tried(mode: str) -> None:
    with _backends("a", "anthropic", Stream(1)) as backends:
        root = backends["a"].base_url
        text = _failure_text(_config("a", "anthropic", f"{root}/v1/v1"), mode)
    # The one trailing /v1 is taken as the API's own; the other is the wrong part.
    assert f"{root}/v1/v1/messages" in text


@pytest.mark.parametrize("mode", MODES)
def test_a_key_in_the_url_tried_is_never_shown(mode: str) -> None:
    with _backends("g", "gemini", Stream(1)) as backends:
        root = f"http://127.0.0.1:{backends['g'].port}"
        text = _failure_text(_config("g", "gemini", f"{root}/?key={GOOGLE_SHAPED_KEY}"), mode)
    assert f"{root}/?key=[redacted]" in text
    assert GOOGLE_SHAPED_KEY not in text
    assert secret_of("g") not in text


@pytest.mark.parametrize("mode", MODES)
def test_anthropic_with_a_trailing_v1_is_served(mode: str) -> None:
    with _backends("a", "anthropic", Stream(2)) as backends:
        answer = _complete(_config("a", "anthropic", f"{backends['a'].base_url}/v1"), mode)
        assert backends["a"].received[0].path == "/v1/messages"
    assert isinstance(answer, Completion), answer
    assert answer.text
