"""Closing a client and collecting its streams: connections end, nothing deadlocks.

Closing a client closes its connections whatever else still holds their pools,
and a stream the garbage collector finalizes, even inside the client's guarded
section on the thread holding the guard, never waits for that guard.
"""

from __future__ import annotations

import gc
import io
import threading

import pytest

from lbtransports import Client
from lbtransports.testing import Reset, Stream

from .harness import REQUEST, BackendPlan, client_config, decision_lines, start_backends


def test_sync_close_closes_a_pooled_connection_even_if_a_failure_still_holds_its_pool() -> None:
    # urllib3's exception for the reset keeps the pool alive in a reference
    # cycle; the retry's connection goes back to that same pool. Dropping the
    # pool (all that Session.close does in urllib3 2) would leave that
    # connection open until the next garbage collection.
    plans = [
        BackendPlan("a", script=[Reset(before_headers=True)], default=Stream(1)),
        BackendPlan("b"),
    ]
    settings = {"failover_retry_count": 2}
    with start_backends(plans) as backends:
        gc.collect()
        gc.disable()  # what is left in cycles stays there until the test ends
        try:
            with Client(client_config(backends, plans, settings=settings)) as client:
                answer = client.complete(REQUEST)
            backends.wait_idle(timeout=2.0)
        finally:
            gc.enable()
    assert (answer.backend, answer.text) == ("a", "a-0 ")


# A collection finalizes everything in the cycle in no set order: the socket's own
# finalizer may run before the generator's closes it, and warn that it is unclosed.
@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_a_started_stream_collected_under_the_guard_does_not_deadlock() -> None:
    plans = [BackendPlan("a", default=Stream(20, delay_ms=20))]
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin")
        with Client(config, trace=trace) as client:
            stream = client.chat(REQUEST)
            assert next(stream).text == "a-0 "
            # Only the collector can free it now: it sits in a reference cycle.
            cycle: list[object] = [stream]
            cycle.append(cycle)
            del stream, cycle

            def collect_while_guarded() -> None:
                with client._link._locked():  # how every guarded section is entered
                    gc.collect()

            gc.disable()  # the collection must happen under the guard, not before
            try:
                worker = threading.Thread(target=collect_while_guarded, daemon=True)
                worker.start()
                worker.join(timeout=5)
            finally:
                gc.enable()
            assert not worker.is_alive(), "the stream's finalizer deadlocked on the guard"
            assert client.stats().in_flight == 0
        backends.wait_idle(timeout=3.0)
    assert decision_lines(trace.getvalue())[-1] == (
        "RequestCancelled -> CancelAttempt#1(cancelled), RequestAborted"
    )
