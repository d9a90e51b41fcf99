"""Failure classification and the failover aggregate, as tables (reference sections 3.4-3.6)."""

from __future__ import annotations

import pytest

from lbcore import BackendFailure, Category, Failure, FailureKind, Settings
from lbcore._aggregate import failover_error
from lbcore._classify import (
    allows_same_backend_retry,
    category_of,
    effective_status,
    is_immediate_failover,
    is_transient,
)

HTTP = FailureKind.HTTP
NETWORK = FailureKind.NETWORK
TIMEOUT = FailureKind.TIMEOUT
PROTOCOL = FailureKind.PROTOCOL
PROVIDER = FailureKind.PROVIDER
SETUP = FailureKind.SETUP


def _failure(
    kind: FailureKind = HTTP,
    status: int | None = None,
    *,
    provider_type: str | None = None,
    message: str = "boom",
) -> Failure:
    return Failure(kind=kind, message=message, status=status, provider_type=provider_type)


def _http(status: int) -> Failure:
    return _failure(HTTP, status, message=f"HTTP {status}")


# ------------------------------------------------------ same-backend retries

DEFAULTS = Settings()
CUSTOM_CODES = Settings(failover_status_codes=(408, 409))
NO_CODES = Settings(failover_status_codes=())
NO_NETWORK = Settings(failover_on_network_errors=False)
NO_NETWORK_CUSTOM = Settings(failover_on_network_errors=False, failover_status_codes=(408,))


@pytest.mark.parametrize(
    ("failure", "settings", "expected"),
    [
        (_http(502), DEFAULTS, True),
        (_http(404), DEFAULTS, False),
        (_http(429), DEFAULTS, True),
        (_http(500), DEFAULTS, True),
        (_http(599), DEFAULTS, True),
        (_http(400), DEFAULTS, False),
        (_http(408), DEFAULTS, False),
        (_http(409), CUSTOM_CODES, True),
        (_http(408), CUSTOM_CODES, True),
        (_http(502), CUSTOM_CODES, False),
        (_http(429), CUSTOM_CODES, False),
        # An empty list allows no status-bearing retry at all.
        (_http(503), NO_CODES, False),
        (_failure(NETWORK), DEFAULTS, True),
        (_failure(TIMEOUT), DEFAULTS, True),
        # Network errors bypass the status list while failover_on_network_errors is on...
        (_failure(NETWORK, 503), NO_CODES, True),
        (_failure(TIMEOUT, 404), DEFAULTS, True),
        # ...and off, only the status list decides for those carrying a status,
        (_failure(NETWORK, 503), NO_NETWORK_CUSTOM, False),
        (_failure(NETWORK, 408), NO_NETWORK_CUSTOM, True),
        (_failure(TIMEOUT, 503), NO_NETWORK, True),
        # while a status-less one still retries (the reference's rule 4 quirk).
        (_failure(NETWORK), NO_NETWORK, True),
        (_failure(TIMEOUT), NO_NETWORK, True),
        (_failure(PROTOCOL), DEFAULTS, True),
        (_failure(PROTOCOL), NO_CODES, True),
        (_failure(PROVIDER), DEFAULTS, True),
        (_failure(PROVIDER, 400), DEFAULTS, False),
        (_failure(SETUP), DEFAULTS, True),
    ],
)
def test_allows_same_backend_retry(failure: Failure, settings: Settings, expected: bool) -> None:
    assert allows_same_backend_retry(failure, settings) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, True),
        (402, True),
        (403, True),
        (429, False),
        (400, False),
        (500, False),
        (None, False),
    ],
)
def test_immediate_failover_statuses(status: int | None, expected: bool) -> None:
    assert is_immediate_failover(_failure(HTTP, status)) is expected


# ------------------------------------------------------ transient or not


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (_http(429), True),
        (_http(500), True),
        (_http(503), True),
        (_http(599), True),
        (_http(400), False),
        (_http(402), False),
        (_http(404), False),
        (_http(408), False),
        # 401 and 403 are never transient, even when they look like the network.
        (_http(401), False),
        (_http(403), False),
        (_failure(NETWORK, 401), False),
        (_failure(PROVIDER, 403, provider_type="overloaded_error"), False),
        (_failure(NETWORK), True),
        (_failure(TIMEOUT), True),
        (_failure(NETWORK, 400), True),
        (_failure(PROVIDER, provider_type="overloaded_error"), True),
        (_failure(PROVIDER, provider_type="rate_limit_error"), True),
        (_failure(PROVIDER, provider_type="api_error"), True),
        (_failure(PROVIDER, 400, provider_type="overloaded_error"), True),
        (_failure(PROVIDER, provider_type="invalid_request_error"), False),
        (_failure(PROTOCOL), False),
        (_failure(SETUP), False),
    ],
)
def test_is_transient(failure: Failure, expected: bool) -> None:
    assert is_transient(failure) is expected


# ------------------------------------------------------ categories and statuses


@pytest.mark.parametrize(
    ("failure", "category", "status"),
    [
        (_http(429), Category.RATE_LIMIT, 429),
        (_failure(PROVIDER, provider_type="rate_limit_error"), Category.RATE_LIMIT, 429),
        # The provider's type wins over the status's own class.
        (_failure(PROVIDER, 400, provider_type="rate_limit_error"), Category.RATE_LIMIT, 400),
        (_failure(HTTP, 402, provider_type="rate_limit_error"), Category.RATE_LIMIT, 402),
        (_http(402), Category.QUOTA, 402),
        (_http(401), Category.AUTHENTICATION, 401),
        (_http(403), Category.AUTHENTICATION, 403),
        (_failure(HTTP, 401, provider_type="overloaded_error"), Category.AUTHENTICATION, 401),
        (_failure(PROVIDER, provider_type="overloaded_error"), Category.SERVER_ERROR, None),
        (_failure(PROVIDER, provider_type="api_error"), Category.SERVER_ERROR, None),
        (_failure(PROVIDER, 400, provider_type="api_error"), Category.SERVER_ERROR, 400),
        (_http(500), Category.SERVER_ERROR, 500),
        (_http(503), Category.SERVER_ERROR, 503),
        (_http(400), Category.CLIENT_ERROR, 400),
        (_http(404), Category.CLIENT_ERROR, 404),
        (_http(408), Category.CLIENT_ERROR, 408),
        # A status decides before the kind does.
        (_failure(NETWORK, 503), Category.SERVER_ERROR, 503),
        (_failure(NETWORK), Category.NETWORK, None),
        (_failure(TIMEOUT), Category.NETWORK, None),
        (_failure(PROTOCOL, message="Stream timeout after 30s"), Category.SERVER_ERROR, None),
        (_failure(PROTOCOL, message="stream timeout"), None, None),
        (_failure(PROTOCOL), None, None),
        (_failure(SETUP), None, None),
        (_failure(HTTP, 302), None, 302),
    ],
)
def test_category_and_effective_status(
    failure: Failure, category: Category | None, status: int | None
) -> None:
    assert category_of(failure) == category
    assert effective_status(failure) == status


# ------------------------------------------------------ the aggregate


def _failures(*failures: Failure) -> list[BackendFailure]:
    return [BackendFailure(backend=f"b{i}", failure=f) for i, f in enumerate(failures)]


NETWORK_DOWN = _failure(NETWORK, message="ECONNREFUSED")
PLAIN = _failure(PROTOCOL, message="malformed stream")
OVERLOADED = _failure(PROVIDER, provider_type="overloaded_error")
RATE_LIMITED = _failure(PROVIDER, provider_type="rate_limit_error")


@pytest.mark.parametrize(
    ("failures", "retryable"),
    [
        pytest.param([_http(429), _http(429)], True, id="all 429"),
        pytest.param([_http(500), _http(503), _http(502)], True, id="all 5xx"),
        pytest.param([_http(429), _http(400)], True, id="429 + 400"),
        pytest.param([_http(429), _http(401)], True, id="429 + 401"),
        pytest.param([OVERLOADED, OVERLOADED], True, id="all overloaded_error"),
        pytest.param([RATE_LIMITED, RATE_LIMITED], True, id="all rate_limit_error"),
        pytest.param([NETWORK_DOWN, NETWORK_DOWN], True, id="all network"),
        pytest.param([NETWORK_DOWN, _http(400)], True, id="network + 400"),
        pytest.param([_http(503), PLAIN], True, id="transient + status-less"),
        pytest.param([PLAIN, PLAIN], False, id="all plain status-less"),
        pytest.param([_http(401), _http(401)], False, id="all 401"),
        pytest.param([_http(403), _http(403)], False, id="all 403"),
        pytest.param([], False, id="empty"),
    ],
)
def test_aggregate_is_retryable_when_any_failure_is_transient(
    failures: list[Failure], retryable: bool
) -> None:
    assert failover_error("lb", _failures(*failures)).retryable is retryable


@pytest.mark.parametrize(
    ("failures", "status", "category"),
    [
        pytest.param([_http(429), _http(429)], 429, Category.RATE_LIMIT, id="all 429"),
        # Effective status: a rate-limit type without a status stands for 429.
        pytest.param([_http(429), RATE_LIMITED], 429, Category.RATE_LIMIT, id="429 + type"),
        pytest.param([RATE_LIMITED, RATE_LIMITED], 429, Category.RATE_LIMIT, id="all type"),
        pytest.param([_http(500), _http(503)], None, Category.SERVER_ERROR, id="mixed 5xx"),
        pytest.param([_http(503), OVERLOADED], None, Category.SERVER_ERROR, id="503 + type"),
        pytest.param([_http(401), _http(403)], None, Category.AUTHENTICATION, id="401 + 403"),
        pytest.param([_http(402), _http(402)], 402, Category.QUOTA, id="all 402"),
        pytest.param([_http(429), _http(400)], None, None, id="disagree"),
        pytest.param([NETWORK_DOWN, NETWORK_DOWN], None, Category.NETWORK, id="network"),
        pytest.param([PLAIN, PLAIN], None, None, id="plain"),
        pytest.param([], None, None, id="empty"),
    ],
)
def test_aggregate_status_and_category_need_every_failure_to_agree(
    failures: list[Failure], status: int | None, category: Category | None
) -> None:
    error = failover_error("lb", _failures(*failures))
    assert error.status == status
    assert error.category == category


def test_aggregate_message_lists_each_backend_and_status() -> None:
    failures = [
        BackendFailure(backend="zai", failure=_failure(HTTP, 401, message="Unauthorized")),
        BackendFailure(backend="glm51", failure=_failure(HTTP, 429, message="Rate limit")),
    ]
    error = failover_error("team", failures)
    assert error.message == (
        'Load balancer "team" failover exhausted after 2 backend failures (tried: zai, glm51): '
        "zai: Unauthorized (status: 401); glm51: Rate limit (status: 429)"
    )
    assert error.failures == tuple(failures)
    assert error.profile_name == "team"
    assert error.reason == "retries_exhausted"


def test_aggregate_message_without_statuses() -> None:
    failures = [
        BackendFailure(backend="zai", failure=_failure(PROVIDER, message="rate limited by vendor")),
        BackendFailure(
            backend="glm51", failure=_failure(PROVIDER, message="authentication failed")
        ),
    ]
    assert failover_error("lb", failures).message.endswith(
        ": zai: rate limited by vendor; glm51: authentication failed"
    )


def test_aggregate_summarises_three_failures_and_counts_the_rest() -> None:
    failures = _failures(*[_failure(HTTP, 500 + i, message=f"e{i}") for i in range(5)])
    error = failover_error("lb", failures)
    assert error.message == (
        'Load balancer "lb" failover exhausted after 5 backend failures '
        "(tried: b0, b1, b2, b3, b4): "
        "b0: e0 (status: 500); b1: e1 (status: 501); b2: e2 (status: 502); +2 more"
    )
    assert len(error.failures) == 5  # the list itself is never cut


def test_aggregate_names_at_most_eight_backends() -> None:
    error = failover_error("lb", _failures(*[PLAIN] * 10))
    labels = ", ".join(f"b{i}" for i in range(8))
    assert f"(tried: {labels} (+2 more)): " in error.message
    assert error.message.endswith("; +7 more")


def test_aggregate_cuts_long_backend_labels_to_64_code_points() -> None:
    name = "n" * 100
    error = failover_error("lb", [BackendFailure(backend=name, failure=PLAIN)])
    label = "n" * 63 + "\u2026"
    assert f"(tried: {label}): {label}: malformed stream" in error.message


def test_aggregate_of_nothing() -> None:
    error = failover_error("lb", [])
    assert error.message == (
        'Load balancer "lb" failover exhausted after 0 backend failures '
        "(tried: none): no backend attempts were recorded"
    )
    assert error.failures == ()


def test_aggregate_message_is_capped_at_512_code_points() -> None:
    error = failover_error("lb", _failures(_failure(PROTOCOL, message="x" * 2000)))
    assert len(error.message) == 512
    assert error.message.endswith("x\u2026")
    # The failure itself keeps its full message.
    assert len(error.failures[0].failure.message) == 2000


def test_aggregate_message_has_no_control_characters() -> None:
    failure = _failure(PROTOCOL, message="line one\r\n\tline\x00two\x1b[31m  red\x7f")
    message = failover_error("lb", [BackendFailure(backend="a\nb", failure=failure)]).message
    assert message.endswith("(tried: a b): a b: line one line two [31m red")
    assert message.isprintable()
