"""Non-2xx answers, Retry-After, redaction, and non-streaming responses."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import FailureKind
from lbtransports.wire import (
    ChatResponse,
    ToolCall,
    Usage,
    WireError,
    parse_error,
    parse_response,
    redact,
    retry_after_ms,
)

from .streams import js

NO_HEADERS: list[tuple[str, str]] = []

# provider, status, body, (provider_type, code, message)
ERROR_BODIES = [
    (
        "openai",
        429,
        js(
            {
                "error": {
                    "message": "You exceeded your current quota.",
                    "type": "insufficient_quota",
                    "param": None,
                    "code": "insufficient_quota",
                }
            }
        ),
        ("insufficient_quota", "insufficient_quota", "You exceeded your current quota."),
    ),
    (
        "openai",
        429,
        js({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}}),
        ("requests", "rate_limit", "Rate limit reached"),
    ),
    (
        "openai",
        401,
        js({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
        ("invalid_request_error", None, "Incorrect API key provided"),
    ),
    ("openai", 400, js({"detail": "Model not loaded"}), (None, None, "Model not loaded")),
    ("openai", 500, js({"error": "llama.cpp crashed"}), (None, None, "llama.cpp crashed")),
    (
        "anthropic",
        429,
        js({"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}),
        ("rate_limit_error", None, "Slow down"),
    ),
    (
        "anthropic",
        529,
        js({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ("overloaded_error", None, "Overloaded"),
    ),
    (
        "anthropic",
        401,
        js({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}),
        ("authentication_error", None, "bad key"),
    ),
    (
        "gemini",
        429,
        js(
            {
                "error": {
                    "code": 429,
                    "message": "Quota exceeded",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "RATE_LIMIT_EXCEEDED",
                        }
                    ],
                }
            }
        ),
        ("RESOURCE_EXHAUSTED", "RATE_LIMIT_EXCEEDED", "Quota exceeded"),
    ),
    (
        "gemini",
        400,
        js(
            [{"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}]
        ),
        ("INVALID_ARGUMENT", None, "API key not valid"),
    ),
]


@pytest.mark.parametrize(("provider", "status", "body", "expected"), ERROR_BODIES)
@pytest.mark.parametrize(
    "retry",
    [
        (NO_HEADERS, None),
        ([("Retry-After", "7")], 7000),
        ([("retry-after-ms", "1500"), ("Retry-After", "2")], 1500),
    ],
)
def test_error_bodies(
    provider: str,
    status: int,
    body: str,
    expected: tuple[str | None, str | None, str],
    retry: tuple[list[tuple[str, str]], int | None],
) -> None:
    headers, delay = retry
    failure = parse_error(provider, status, headers, body.encode())
    assert failure.kind is FailureKind.HTTP
    assert failure.status == status
    assert (failure.provider_type, failure.code, failure.message) == expected
    assert failure.retry_after_ms == delay


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "HTTP 502 Bad Gateway"),
        (b"<html><body>Bad\ngateway</body></html>", "HTTP 502 Bad Gateway: <html><body>Bad gat"),
        (b'{"unexpected": [1, 2]}', 'HTTP 502 Bad Gateway: {"unexpected": [1, 2]}'),
        (b"\xff\xfe\x00garbage", "HTTP 502 Bad Gateway: \ufffd\ufffd garbage"),
        (b"[]", "HTTP 502 Bad Gateway: []"),
    ],
)
def test_bodies_that_are_not_the_expected_shape(provider: str, body: bytes, message: str) -> None:
    failure = parse_error(provider, 502, {}, body)
    assert failure.kind is FailureKind.HTTP
    assert failure.status == 502
    assert failure.message.startswith(message)


def test_gemini_retry_info_stands_in_for_retry_after() -> None:
    body = js(
        {
            "error": {
                "code": 429,
                "status": "RESOURCE_EXHAUSTED",
                "message": "slow",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}
                ],
            }
        }
    ).encode()
    assert parse_error("gemini", 429, {}, body).retry_after_ms == 31_000
    assert parse_error("gemini", 429, {"Retry-After": "2"}, body).retry_after_ms == 2000


@pytest.mark.parametrize(
    ("headers", "now", "expected"),
    [
        ({"Retry-After": "120"}, None, 120_000),
        ({"retry-after": "0.5"}, None, 500),
        ({"Retry-After": "-3"}, None, 0),
        ({"Retry-After": "99999999"}, None, 86_400_000),
        ({"Retry-After": "soon"}, None, None),
        ({"Retry-After": "nan"}, None, None),
        ({"Retry-After": "inf"}, None, None),
        ({"retry-after-ms": "250"}, None, 250),
        ({"retry-after-ms": "junk", "Retry-After": "1"}, None, 1000),
        # Only digits (with a fraction) are a delay; what float() also takes is garbage.
        ({"Retry-After": "1_0"}, None, None),
        ({"Retry-After": "1e3"}, None, None),
        ({"Retry-After": "0x10"}, None, None),
        ({"retry-after-ms": "2e3"}, None, None),
        ({"Retry-After": " 12 "}, None, 12_000),
        # A valid but absurdly long delay is capped like any other long one.
        ({"Retry-After": "9" * 400}, None, 86_400_000),
        ({"retry-after-ms": "9" * 400}, None, 86_400_000),
        # An HTTP date, measured against the response's own Date header...
        (
            {
                "Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT",
                "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
            },
            None,
            30_000,
        ),
        # ...or against the caller's clock, which wins.
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, 1445412500.0, 10_000),
        # Without either, a date cannot be turned into a delay.
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, None, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT", "Date": "garbage"}, None, None),
        ({}, None, None),
    ],
)
def test_retry_after(headers: dict[str, str], now: float | None, expected: int | None) -> None:
    assert retry_after_ms(headers, now) == expected


@pytest.mark.parametrize(
    "date",
    [
        "Wed, 21 Oct 2015 07:28:30 GMT",
        "Wed, 21 Oct 2015 07:28:30 -0000",
        "Wed Oct 21 07:28:30 2015",  # asctime, one of the three HTTP-date forms: no zone
        "Wednesday, 21-Oct-15 07:28:30 GMT",  # RFC 850
    ],
)
def test_retry_after_dates_are_gmt_whatever_the_local_timezone(
    date: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HTTP dates are always GMT; reading a zone-less one as local time made the
    # delay depend on the machine's TZ (off by hours away from UTC).
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert retry_after_ms({"Retry-After": date}, 1445412500.0) == 10_000
    finally:
        monkeypatch.undo()
        time.tzset()


def test_retry_after_from_byte_header_pairs() -> None:
    assert retry_after_ms([(b"Retry-After", b"3")]) == 3000


def test_messages_are_sanitised_capped_and_redacted() -> None:
    secret = "k3y-that-is-ours-42"
    message = f"bad\x00key {secret} and sk-abcdefghijklmnop and AIzaSyA1234567890abcdefghijk " * 30
    body = js({"error": {"message": message, "type": "x"}}).encode()
    failure = parse_error("openai", 401, {}, body, secrets=(secret,))
    assert secret not in failure.message
    assert "sk-abcdefghijklmnop" not in failure.message
    assert "AIza" not in failure.message
    assert "\x00" not in failure.message
    assert len(failure.message) <= 512


def test_redact_leaves_short_secrets_and_plain_text_alone() -> None:
    assert redact("a b c", ("a",)) == "a b c"
    # Words that merely contain "sk-" or "AIza" are not keys.
    text = "field task-identifier-12345, risk-assessment-x, KAIzaaaaaaaaaaaaaaaaaaaaaaaa"
    assert redact(text) == text
    assert redact("key=sk-proj-abcdefgh12 (AIzaSyA1234567890abcdefghijk)") == (
        "key=[redacted] ([redacted])"
    )
    assert redact("Authorization: Bearer abc.def-123456") == "Authorization: [redacted]"


@pytest.mark.parametrize("status", [0, 99, 600, 1000, -1])
def test_an_impossible_status_is_a_protocol_failure(status: int) -> None:
    failure = parse_error("openai", status, {}, b"")
    assert failure.kind is FailureKind.PROTOCOL
    assert failure.status is None


@settings(max_examples=80)
@given(
    st.sampled_from(["openai", "anthropic", "gemini"]),
    st.integers(-1000, 2000),
    st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=4),
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["error", "message", "type", "code", "status", "details"]),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=10,
        ).map(lambda value: js(value).encode()),
    ),
)
def test_parse_error_never_raises(
    provider: str, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    failure = parse_error(provider, status, headers, body)
    assert failure.kind in (FailureKind.HTTP, FailureKind.PROTOCOL)
    try:
        parse_response(provider, status, headers, body)
    except WireError as error:
        assert error.failure.kind is not FailureKind.CONTEXT_LIMIT


# ------------------------------------------------------ non-streaming answers

RESPONSES = [
    (
        "openai",
        js(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "lookup", "arguments": '{"city":"Lyon"}'},
                                }
                            ],
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": {"prompt_tokens": 75, "completion_tokens": 125, "total_tokens": 200},
            }
        ),
        ChatResponse(
            tool_calls=(ToolCall(id="call_1", name="lookup", arguments='{"city":"Lyon"}'),),
            finish_reason="tool_calls",
            usage=Usage(input_tokens=75, output_tokens=125),
        ),
    ),
    (
        "anthropic",
        js(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"city": "L"}},
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 50, "output_tokens": 150},
            }
        ),
        ChatResponse(
            text="Looking.",
            tool_calls=(ToolCall(id="toolu_1", name="lookup", arguments='{"city":"L"}'),),
            finish_reason="tool_calls",
            usage=Usage(input_tokens=50, output_tokens=150),
        ),
    ),
    (
        "gemini",
        js(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": "Hello"}], "role": "model"},
                        "finishReason": "STOP",
                    }
                ],
                "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 200},
            }
        ),
        ChatResponse(
            text="Hello", finish_reason="stop", usage=Usage(input_tokens=100, output_tokens=200)
        ),
    ),
]


@pytest.mark.parametrize(("provider", "body", "expected"), RESPONSES)
def test_non_streaming_responses(provider: str, body: str, expected: ChatResponse) -> None:
    assert parse_response(provider, 200, {}, body.encode()) == expected


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"choices": 5, "content": 5}'])
def test_malformed_non_streaming_responses_are_protocol_failures(
    provider: str, body: bytes
) -> None:
    if provider != "openai" and body.startswith(b"{"):
        body = b'{"candidates": 5, "content": 5}'
    with pytest.raises(WireError) as caught:
        parse_response(provider, 200, {}, body)
    assert caught.value.failure.kind is FailureKind.PROTOCOL


def test_non_streaming_error_status_raises_the_http_failure() -> None:
    body = js({"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}}).encode()
    with pytest.raises(WireError) as caught:
        parse_response("anthropic", 529, {"retry-after": "4"}, body)
    failure = caught.value.failure
    assert (failure.kind, failure.status, failure.provider_type, failure.retry_after_ms) == (
        FailureKind.HTTP,
        529,
        "overloaded_error",
        4000,
    )


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("status", [None, "200", 200.0, True])
def test_a_status_that_is_not_an_integer_is_a_protocol_failure(
    provider: str, status: object
) -> None:
    with pytest.raises(WireError) as caught:
        parse_response(provider, status, {}, b"{}")  # type: ignore[arg-type]
    assert caught.value.failure.kind is FailureKind.PROTOCOL
    assert parse_error(provider, status, {}, b"{}").kind is FailureKind.PROTOCOL  # type: ignore[arg-type]


def test_parse_error_for_an_unknown_provider_returns_a_setup_failure() -> None:
    # parse_error never raises: a transport builds its failure from it unguarded.
    failure = parse_error("cohere", 500, {}, b"{}")
    assert failure.kind is FailureKind.SETUP
    assert "cohere" in failure.message
