"""What a caller reads when it prints a failed request's exception."""

from __future__ import annotations

from lbcore import BackendFailed, Failure, FailureKind
from lbtransports import BackendError, Client
from lbtransports.testing import Fail

from .harness import REQUEST, BackendPlan, client_config, start_backends


def _backend_error(failure: Failure, chunks: int = 0) -> BackendError:
    return BackendError(
        "req-1",
        BackendFailed(
            backend="primary",
            message=failure.message,
            failure=failure,
            chunks_delivered=chunks,
            retryable=False,
        ),
    )


def test_a_backend_error_names_the_backend_and_the_status() -> None:
    failure = Failure(kind=FailureKind.HTTP, message="No connected db.", status=500)
    error = _backend_error(failure)
    assert str(error) == 'backend "primary" failed: No connected db. (status: 500)'
    # The provider's own text stays where callers and the gateway read it.
    assert error.message == "No connected db."


def test_a_backend_error_without_a_status_says_how_far_the_answer_got() -> None:
    failure = Failure(kind=FailureKind.NETWORK, message="connection lost")
    error = _backend_error(failure, chunks=3)
    assert str(error) == 'backend "primary" failed after 3 chunks: connection lost'


def test_a_round_robin_failure_prints_its_backend_and_status() -> None:
    plans = [BackendPlan("solo", "openai", default=Fail(500, message="No connected db."))]
    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin")
        with Client(config) as client:
            try:
                client.complete(REQUEST)
            except BackendError as error:
                caught = error
    assert str(caught) == 'backend "solo" failed: No connected db. (status: 500)'
