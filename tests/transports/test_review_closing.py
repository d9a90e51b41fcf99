"""Review regressions: closing a client closes its connections, whatever else holds its pools."""

from __future__ import annotations

import gc

from lbtransports import Client
from lbtransports.testing import Reset, Stream

from .harness import REQUEST, BackendPlan, client_config, start_backends


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
