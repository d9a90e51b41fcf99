"""Sending a request is a wait like any other (spec/transports.md section 4).

A backend that accepts the connection but never reads the request: sending the
body blocks until a timer ends it. Both clients must call that a timeout, not a
lost connection, as they do for a backend that reads and never answers. A
backend that reads a large body slowly but steadily makes progress: the upload
is not bounded by the connect timeout, nor by one idle timeout as a whole.
"""

from __future__ import annotations

import io
import time

import anyio
import pytest

from lbtransports import (
    AsyncClient,
    BackendError,
    ChatRequest,
    Client,
    ClientConfig,
    LoadBalancerError,
    UserMessage,
)

from .harness import decision_lines
from .raw_servers import deaf_backend, slow_reader_backend

#: Far more than loopback socket buffers hold, so the send must block.
HUGE = ChatRequest(messages=(UserMessage(content="x" * (48 * 1024 * 1024)),))


def _config(url: str, timer: str = "idle") -> ClientConfig:
    backend = {"name": "deaf", "provider": "openai", "model": "m", "base_url": url}
    if timer == "first chunk":
        return ClientConfig.from_mapping(
            {
                "strategy": "failover",
                "settings": {"timeout_ms": 500, "failover_retry_count": 1},
                "idle_timeout_ms": 60_000,
                "backends": [backend, {**backend, "name": "deafer"}],
            }
        )
    return ClientConfig.from_mapping(
        {"strategy": "round-robin", "idle_timeout_ms": 500, "backends": [backend]}
    )


def test_a_send_that_never_drains_is_a_timeout(mode: str) -> None:
    trace = io.BytesIO()
    with deaf_backend() as url:
        started = time.monotonic()
        if mode == "sync":
            with Client(_config(url), trace=trace) as client, pytest.raises(BackendError) as caught:
                client.complete(HUGE)
        else:

            async def main() -> None:
                async with AsyncClient(_config(url), trace=trace) as client:
                    await client.complete(HUGE)

            with pytest.raises(BackendError) as caught:
                anyio.run(main, backend=mode)
        elapsed = time.monotonic() - started
    # The idle timer (500 ms) ends it; the connect timeout (10 s) plays no part.
    assert elapsed < 3.0, elapsed
    assert caught.value.failure.kind == "timeout"
    assert decision_lines(trace.getvalue())[1] == (
        "AttemptTimedOut#1(read) -> RequestFailed(BackendFailed)"
    )


def test_a_send_that_never_drains_meets_the_first_chunk_deadline(mode: str) -> None:
    trace = io.BytesIO()
    with deaf_backend() as url:
        started = time.monotonic()
        if mode == "sync":
            with Client(_config(url, "first chunk"), trace=trace) as client:
                with pytest.raises(LoadBalancerError):
                    client.complete(HUGE)
        else:

            async def main() -> None:
                async with AsyncClient(_config(url, "first chunk"), trace=trace) as client:
                    with pytest.raises(LoadBalancerError):
                        await client.complete(HUGE)

            anyio.run(main, backend=mode)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, elapsed  # two attempts of 500 ms, not the idle timeout of 60 s
    lines = decision_lines(trace.getvalue())
    assert sum("CancelAttempt" in line and "first_chunk_timeout" in line for line in lines) == 2


#: Larger than what loopback socket buffers take at once, so the backend's pace shows.
LARGE = ChatRequest(messages=(UserMessage(content="x" * (12 * 1024 * 1024)),))
_EVENT = b'data: {"choices":[{"index":0,"delta":{"content":"read it"}}]}\n\ndata: [DONE]\n\n'
_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n"
    % len(_EVENT)
) + _EVENT


def test_a_slowly_read_upload_is_progress_not_a_timeout(mode: str) -> None:
    # About 1.5 s to upload at 8 MiB/s: longer than the connect timeout and than
    # one idle timeout, yet the backend takes a piece far more often than that.
    config = {
        "strategy": "round-robin",
        "connect_timeout_ms": 300,
        "idle_timeout_ms": 1_000,
    }
    with slow_reader_backend(8 * 1024 * 1024, _ANSWER) as url:
        config["backends"] = [{"name": "slow", "provider": "openai", "model": "m", "base_url": url}]
        client_config = ClientConfig.from_mapping(config)
        if mode == "sync":
            with Client(client_config) as client:
                answer = client.complete(LARGE).text
        else:

            async def main() -> str:
                async with AsyncClient(client_config) as client:
                    return (await client.complete(LARGE)).text

            answer = anyio.run(main, backend=mode)
    assert answer == "read it"
