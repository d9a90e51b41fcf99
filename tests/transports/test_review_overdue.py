"""Review regressions: an attempt whose first-chunk deadline passed before its loop took
it (the caller iterated late) is never sent: the core hears the deadline first."""

from __future__ import annotations

import io
import time

import anyio
import pytest

from lbtransports import AsyncClient, Client
from lbtransports.testing import Stream

from .harness import REQUEST, BackendPlan, client_config, decision_lines, start_backends

SETTINGS = {"failover_retry_count": 2, "timeout_ms": 300}


@pytest.mark.parametrize("mode", ["sync", "asyncio", "trio"])
def test_an_attempt_overdue_before_the_first_iteration_is_never_sent(mode: str) -> None:
    plans = [BackendPlan("a", default=Stream(2)), BackendPlan("b")]
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        config = client_config(backends, plans, settings=SETTINGS)
        if mode == "sync":
            with Client(config, trace=trace) as client:
                with client.chat(REQUEST) as stream:
                    time.sleep(0.5)  # the caller does something else first
                    texts = [chunk.text for chunk in stream]
        else:

            async def main() -> list[str]:
                async with AsyncClient(config, trace=trace) as client:
                    async with client.chat(REQUEST) as stream:
                        await anyio.sleep(0.5)
                        return [chunk.text async for chunk in stream]

            texts = anyio.run(main, backend=mode)
        received = len(backends["a"].received)
        backends.wait_idle(timeout=3.0)
    assert [text for text in texts if text] == ["a-0 ", "a-1 "]
    # Only the retry went out; the first attempt was over before anything was sent.
    assert received == 1
    assert decision_lines(trace.getvalue())[1] == (
        "Tick -> CancelAttempt#1(first_chunk_timeout), StartAttempt#2(a)"
    )
