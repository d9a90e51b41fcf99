"""The status a gateway caller gets for the core's deadline and retry-budget outcomes."""

from __future__ import annotations

from lbcore import DeadlineExceeded, RetryBudgetExhausted
from lbtransports import DeadlineExceededError, RetryBudgetError
from lbtransports.gateway._answer import upstream_status


def test_a_passed_total_deadline_is_a_gateway_timeout() -> None:
    error = DeadlineExceeded(message="late", deadline_ms=100, chunks_delivered=0, failures=())
    assert upstream_status(DeadlineExceededError("r1", error)) == 504


def test_a_refused_retry_is_service_unavailable() -> None:
    error = RetryBudgetExhausted(message="too many retries", failures=())
    assert upstream_status(RetryBudgetError("r1", error)) == 503
