"""An in-stream error's HTTP status, whether the code is a number or a digit string."""

from __future__ import annotations

import pytest

from lbcore import FailureKind
from lbtransports.wire import WireError, parse_response

from . import streams as s

# provider, the error event's data as the backend sends it
DIGIT_STRING_ERRORS = [
    # LiteLLM's proxy writes the upstream status as a string.
    ("openai", {"error": {"message": "No connected db.", "type": "None", "code": "500"}}),
    (
        "anthropic",
        {"type": "error", "error": {"type": "api_error", "message": "boom", "code": "503"}},
    ),
    ("gemini", {"error": {"code": "429", "message": "quota", "status": "RESOURCE_EXHAUSTED"}}),
]


def _event(provider: str, value: object) -> bytes:
    return s.sse(("error", s.js(value)) if provider == "anthropic" else s.js(value))


@pytest.mark.parametrize(("provider", "value"), DIGIT_STRING_ERRORS)
def test_a_digit_string_code_is_the_status(provider: str, value: dict[str, object]) -> None:
    out = s.decode(provider, _event(provider, value))
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROVIDER
    error = value["error"]
    assert isinstance(error, dict)
    assert out.failure.status == int(error["code"])


@pytest.mark.parametrize(("provider", "value"), DIGIT_STRING_ERRORS)
def test_an_error_inside_a_2xx_body_reads_the_same_status(
    provider: str, value: dict[str, object]
) -> None:
    with pytest.raises(WireError) as caught:
        parse_response(provider, 200, [], s.js(value).encode())
    failure = caught.value.failure
    error = value["error"]
    assert isinstance(error, dict)
    assert (failure.kind, failure.status) == (FailureKind.PROVIDER, int(error["code"]))


@pytest.mark.parametrize(
    "code",
    [
        "invalid_api_key",
        "5000",
        "099",
        "600",
        " 50",
        "\uff15\uff10\uff10",
        "1e2",
        "-500",
        True,
        500.0,
    ],
)
def test_codes_that_are_no_http_status_give_none(code: object) -> None:
    out = s.decode("openai", s.sse(s.js({"error": {"message": "x", "code": code}})))
    assert out.failure is not None
    assert out.failure.status is None
