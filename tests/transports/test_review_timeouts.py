"""Review regressions: every timer an HTTP library owns ends as the core's timeout.

The async client bounds the wait for the status line with a cancel scope, but
httpcore's own read timeout (``idle_timeout_ms``, per read) runs alongside it.
On loopback the two are within a millisecond of each other, so either may fire
first; these tests make httpcore's fire first on purpose.
"""

from __future__ import annotations

import io

import anyio
import pytest

from lbcore import FailureKind
from lbtransports import AsyncClient, BackendError, ClientConfig
from lbtransports._link import CoreLink
from lbtransports._run import Attempt, RequestRun
from lbtransports.testing import Hang

from .harness import REQUEST, BackendPlan, client_config, decision_lines, start_backends


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
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
