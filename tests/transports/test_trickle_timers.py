"""Timers against the clock: bytes that complete nothing must not hold a timer off.

A raw-socket backend trickles bytes that never finish what they started, at
every phase of an answer (the status line, a header, a chunk-size line, an
SSE line, keep-alive comments). Whichever timer runs, the first-chunk
deadline or the idle timeout, it must fire on time measured by the clock,
not be granted afresh by every byte that arrives.
"""

from __future__ import annotations

import io
import time
from typing import Final

import anyio
import pytest

from lbtransports import AsyncClient, Client, ClientConfig, LoadBalancerError

from .harness import REQUEST, decision_lines
from .raw_servers import trickling_backend

TIMER_MS: Final = 600
#: Far under the trickle's length (8 s): a held-off timer cannot pass.
BOUND_S: Final = 3.0

_HEAD: Final = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
_EVENT: Final = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


#: phase -> (opening with no chunk, opening after one chunk, what trickles after it)
PHASES: Final = {
    "status line": (b"HTTP/1.1 200 ", None, b"x"),
    "headers": (_HEAD + b"X-Pad: ", None, b"a"),
    "chunk framing": (
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;",
        _HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(_EVENT) + b"5;",
        b"a",
    ),
    "sse line": (
        _HEAD + b"Content-Length: 100000\r\n\r\ndata: ",
        _HEAD + b"Content-Length: 100000\r\n\r\n" + _EVENT + b"data: ",
        b"x",
    ),
    "keep-alive comments": (
        _HEAD + b"Content-Length: 100000\r\n\r\n",
        _HEAD + b"Content-Length: 100000\r\n\r\n" + _EVENT,
        b": ping\n\n",
    ),
}


def _config(url: str, timer: str) -> ClientConfig:
    backend = {"name": "slow", "provider": "openai", "model": "m", "base_url": url}
    if timer == "first chunk":
        # Only the core's first-chunk deadline can end the wait; both backends trickle.
        return ClientConfig.from_mapping(
            {
                "strategy": "failover",
                "settings": {"timeout_ms": TIMER_MS, "failover_retry_count": 1},
                "idle_timeout_ms": 60_000,
                "backends": [backend, {**backend, "name": "slower"}],
            }
        )
    return ClientConfig.from_mapping(
        {"strategy": "round-robin", "idle_timeout_ms": TIMER_MS, "backends": [backend]}
    )


def _run(mode: str, config: ClientConfig, trace: io.BytesIO) -> tuple[int, BaseException | None]:
    """The chunks the caller saw and how the request ended."""
    if mode == "sync":
        seen = 0
        with Client(config, trace=trace) as client:
            try:
                with client.chat(REQUEST) as stream:
                    for _ in stream:
                        seen += 1
            except LoadBalancerError as error:
                return seen, error
            return seen, None

    async def main() -> tuple[int, BaseException | None]:
        seen = 0
        async with AsyncClient(config, trace=trace) as client:
            with anyio.fail_after(15):
                try:
                    async with client.chat(REQUEST) as stream:
                        async for _ in stream:
                            seen += 1
                except LoadBalancerError as error:
                    return seen, error
            return seen, None

    return anyio.run(main, backend=mode)


@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("timer", ["first chunk", "idle"])
def test_a_trickle_does_not_hold_a_timer_off(mode: str, timer: str, phase: str) -> None:
    bare, after_chunk, drip = PHASES[phase]
    # The idle timer is shown mid-answer where the phase allows a chunk before it.
    opening = after_chunk if timer == "idle" and after_chunk is not None else bare
    trace = io.BytesIO()
    with trickling_backend(opening, drip) as url:
        started = time.monotonic()
        seen, error = _run(mode, _config(url, timer), trace)
        elapsed = time.monotonic() - started
    assert elapsed < BOUND_S, f"{timer} timer of {TIMER_MS} ms fired after {elapsed:.1f} s"
    assert isinstance(error, LoadBalancerError), repr(error)
    assert seen == (1 if opening is after_chunk else 0)
    lines = decision_lines(trace.getvalue())
    if timer == "first chunk":
        assert any("CancelAttempt#1(first_chunk_timeout)" in line for line in lines), lines
    else:
        assert lines[-1] == "AttemptTimedOut#1(read) -> RequestFailed(BackendFailed)", lines
