"""A caller who iterates late: nothing was sent or started before the first iteration, so
the first attempt goes out then, with its whole first-chunk window, and is not charged
a timeout. (Before requests started lazily, this was a review regression: the overdue
attempt had to be cancelled unsent.)"""

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
def test_iterating_late_sends_once_and_blames_no_backend(mode: str) -> None:
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
    # One request went out, when the caller started reading, and it was answered.
    assert received == 1
    lines = decision_lines(trace.getvalue())
    assert lines[0] == "RequestStarted -> Selected(a), StartAttempt#1(a)"
    assert lines[-1] == "AttemptSucceeded#1 -> RequestCompleted(a)"
    assert not any("CancelAttempt" in line for line in lines)
