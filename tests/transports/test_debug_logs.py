"""With every logger at DEBUG, a request's log never holds the backend's key, even
when the backend echoes it in a response header (httpcore logs response heads)."""

from __future__ import annotations

import logging

import anyio
import pytest

from lbtransports import AsyncClient, Client, ClientConfig
from tests.raw_backend import ECHO_KEY, RawBackend, RawReply, sse

from .harness import REQUEST

SECRET = "sk-echoed-do-not-log-0123456789"
ANSWER = (
    sse({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    + b"data: [DONE]\n\n"
)


def _config(raw: RawBackend) -> ClientConfig:
    return ClientConfig.from_mapping(
        {
            "strategy": "round-robin",
            "backends": [
                {
                    "name": "echo",
                    "provider": "openai",
                    "model": "m",
                    "base_url": raw.base_url + "/v1",
                    "credential": {"key": SECRET},
                }
            ],
        }
    )


@pytest.fixture
def raw() -> RawBackend:
    return RawBackend([RawReply(ANSWER, headers=(("x-echo-key", ECHO_KEY.decode()),))])


def test_the_async_client_never_logs_an_echoed_key(
    raw: RawBackend, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> str:
        # httpcore's pools (the h11 layer of _h1.py logs nothing at all).
        async with AsyncClient(_config(raw), plain_http="httpcore") as client:
            return (await client.complete(REQUEST)).text

    # Also on httpcore's own logger, which the README's advice may have quietened.
    with raw, caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="httpcore"):
        assert anyio.run(main) == "hi"
    # httpcore did log the response head (the test would prove nothing otherwise) ...
    assert "receive_response_headers.complete return_value=(b'HTTP/1.1', 200" in caplog.text
    # ... without its header values.
    assert SECRET not in caplog.text
    assert "x-echo-key" not in caplog.text


def test_the_sync_client_never_logs_an_echoed_key(
    raw: RawBackend, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        raw,
        caplog.at_level(logging.DEBUG),
        caplog.at_level(logging.DEBUG, logger="urllib3"),
        Client(_config(raw)) as client,
    ):
        assert client.complete(REQUEST).text == "hi"
    assert any(record.name.startswith("urllib3") for record in caplog.records)
    assert SECRET not in caplog.text
