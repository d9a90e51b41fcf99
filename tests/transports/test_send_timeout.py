"""A backend that accepts the connection but never reads the request: sending the body
blocks until a timer ends it. Both clients must call that a timeout, not a lost
connection, as they do for a backend that reads and never answers.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import pytest

from lbtransports import AsyncClient, BackendError, ChatRequest, Client, ClientConfig, UserMessage

from .harness import decision_lines

#: Far more than loopback socket buffers hold, so the send must block.
HUGE = ChatRequest(messages=(UserMessage(content="x" * (48 * 1024 * 1024)),))


@contextmanager
def deaf_backend() -> Iterator[str]:
    """A listener that accepts connections and never reads from them."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            accepted.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        listener.close()


def _config(url: str) -> ClientConfig:
    return ClientConfig.from_mapping(
        {
            "strategy": "round-robin",
            "idle_timeout_ms": 500,
            "backends": [{"name": "deaf", "provider": "openai", "model": "m", "base_url": url}],
        }
    )


def test_a_send_that_never_drains_is_a_timeout(mode: str) -> None:
    trace = io.BytesIO()
    with deaf_backend() as url:
        if mode == "sync":
            with Client(_config(url), trace=trace) as client, pytest.raises(BackendError) as caught:
                client.complete(HUGE)
        else:

            async def main() -> None:
                async with AsyncClient(_config(url), trace=trace) as client:
                    await client.complete(HUGE)

            with pytest.raises(BackendError) as caught:
                anyio.run(main, backend=mode)
    assert caught.value.failure.kind == "timeout"
    assert decision_lines(trace.getvalue())[1] == (
        "AttemptTimedOut#1(read) -> RequestFailed(BackendFailed)"
    )
