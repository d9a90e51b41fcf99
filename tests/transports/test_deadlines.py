"""Deadlines as the caller meets them: a late first iteration, and the HTTP
libraries' own timers.

Nothing is sent before the first iteration, so a caller who iterates late gets
the whole first-chunk window and no backend is charged. The async client bounds
the wait for the status line with a cancel scope while httpcore's own read
timeout runs alongside it; either may fire first, and both end as the core's
timeout.
"""

from __future__ import annotations

import io
import time

import anyio
import pytest

from lbcore import FailureKind
from lbtransports import AsyncClient, BackendError, Client, ClientConfig
from lbtransports._link import CoreLink
from lbtransports._run import Attempt, RequestRun
from lbtransports.testing import Hang, Stream

from .harness import (
    ASYNC_MODES,
    REQUEST,
    BackendPlan,
    client_config,
    decision_lines,
    start_backends,
)

SETTINGS = {"failover_retry_count": 2, "timeout_ms": 300}


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


@pytest.mark.parametrize("mode", ASYNC_MODES)
def test_httpcore_read_timeout_while_waiting_for_headers_is_a_read_timeout(mode: str) -> None:
    # Round-robin: no first-chunk deadline, only the idle timeout bounds the wait.
    plans = [BackendPlan("a", default=Hang())]
    trace = io.BytesIO()

    async def main(config: ClientConfig) -> BaseException | None:
        async with AsyncClient(config, trace=trace) as client:
            link = client._link
            bound = CoreLink.wait_limit

            def late_scope(run: RequestRun, attempt: Attempt) -> float:
                # The client's own scope ends later than httpcore's read timeout,
                # as it does whenever connecting and sending took under 1 ms.
                return bound(link, run, attempt) + 0.5

            link.wait_limit = late_scope  # type: ignore[method-assign]
            with anyio.fail_after(5):
                try:
                    await client.complete(REQUEST)
                except Exception as error:  # the test inspects it
                    return error
            assert client.stats().in_flight == 0
        return None

    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin", idle_timeout_ms=300)
        error = anyio.run(main, config, backend=mode)
        backends.wait_idle(timeout=3.0)
    assert isinstance(error, BackendError), repr(error)
    assert error.failure.kind == FailureKind.TIMEOUT
    assert decision_lines(trace.getvalue())[-1] == (
        "AttemptTimedOut#1(read) -> RequestFailed(BackendFailed)"
    )
