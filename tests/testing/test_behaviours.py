"""Every behaviour, for every provider, decoded by our own wire layer (threaded server).

What a transport sees is judged by ``lbtransports.wire`` itself: the chunks
and usage a stream decodes into, the failure an error body parses into, and
the failure kind a broken stream gets.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpcore
import pytest

from lbcore import FailureKind
from lbtransports.testing import (
    ErrorEvent,
    Fail,
    Hang,
    KeepAlive,
    LocalBackends,
    Malformed,
    NoTerminator,
    Reset,
    Stall,
    Stream,
)
from lbtransports.wire import ChatResponse, Usage

from .client import PROVIDERS, ending_chunks, fetch, text_chunks

DEFAULT_TEXTS = Stream().texts


@pytest.fixture
def backends() -> Iterator[LocalBackends]:
    """One backend per provider, named after it, served from a thread."""
    backends = LocalBackends()
    for provider in PROVIDERS:
        backends.add(provider, provider)
    with backends:
        yield backends
        backends.wait_idle(timeout=2.0)
    assert [b.errors for b in backends] == [(), (), ()]


@pytest.fixture
def pool() -> Iterator[httpcore.ConnectionPool]:
    with httpcore.ConnectionPool() as pool:
        yield pool


pytestmark = pytest.mark.parametrize("provider", PROVIDERS)


# ------------------------------------------------------------------ good answers


def test_stream_decodes_into_the_intended_chunks_and_usage(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backend = backends[provider]
    behaviour = Stream(4, text="<{backend}:{i}>", input_tokens=7, output_tokens=30)
    backend.script(behaviour)
    out = fetch(pool, backend)
    assert out.status == 200
    assert out.header("content-type") == "text/event-stream"
    assert out.header("transfer-encoding") == "chunked"
    assert out.failure is None and out.error is None
    texts = [f"<{provider}:{i}>" for i in range(4)]
    usage = Usage(input_tokens=7, output_tokens=30)
    assert out.chunks == text_chunks(texts) + ending_chunks(provider, usage)
    assert out.usage == behaviour.usage == usage


def test_stream_defaults_count_one_output_token_per_chunk(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    out = fetch(pool, backends[provider])
    usage = Usage(input_tokens=11, output_tokens=3)
    assert out.chunks == text_chunks(DEFAULT_TEXTS(provider)) + ending_chunks(provider, usage)


def test_a_non_streamed_request_gets_one_json_answer(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backend = backends[provider]
    backend.script(Stream(2, input_tokens=5))
    out = fetch(pool, backend, stream=False)
    assert out.header("content-type") == "application/json"
    assert out.header("content-length") == str(len(out.body))
    usage = Usage(input_tokens=5, output_tokens=2)
    assert out.response == ChatResponse(
        text=f"{provider}-0 {provider}-1 ", finish_reason="stop", usage=usage
    )
    assert backend.received[-1].stream is False


def test_stream_waits_delay_ms_before_each_chunk(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(Stream(3, delay_ms=40))
    out = fetch(pool, backends[provider])
    assert out.failure is None
    assert out.elapsed >= 0.12


# ------------------------------------------------------------------ error statuses

STATUSES = (400, 401, 402, 403, 404, 429, 500, 502, 503, 529)
# What each provider's error body names for a status when the test names nothing.
DEFAULT_TYPES = {
    "openai": {429: "rate_limit_exceeded", 500: "server_error", 400: "invalid_request_error"},
    "anthropic": {429: "rate_limit_error", 529: "overloaded_error", 402: "billing_error"},
    "gemini": {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 404: "NOT_FOUND"},
}


@pytest.mark.parametrize("status", STATUSES)
def test_fail_answers_a_provider_shaped_error(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str, status: int
) -> None:
    backend = backends[provider]
    backend.script(Fail(status, message="{backend} is out"))
    out = fetch(pool, backend)
    assert out.status == status
    assert out.header("content-type") == "application/json"
    assert out.failure is not None
    assert out.failure.kind is FailureKind.HTTP
    assert out.failure.status == status
    assert out.failure.message == f"{provider} is out"
    assert out.failure.retry_after_ms is None
    expected_type = DEFAULT_TYPES[provider].get(status)
    if expected_type is not None:
        assert out.failure.provider_type == expected_type


def test_fail_sends_retry_after_and_the_named_error_type(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backend = backends[provider]
    backend.script(Fail(429, retry_after="3", error_type="custom_type"))
    out = fetch(pool, backend)
    assert out.header("retry-after") == "3"
    assert out.failure is not None
    assert out.failure.retry_after_ms == 3000
    assert out.failure.provider_type == "custom_type"
    assert out.failure.message == "injected failure"


def test_fail_with_a_2xx_status_is_an_error_inside_a_successful_answer(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(Fail(200, message="quota gone"))
    out = fetch(pool, backends[provider], stream=False)
    assert out.status == 200
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROVIDER
    assert out.failure.message == "quota gone"


# ------------------------------------------------------------------ broken streams


def test_no_terminator_is_a_network_failure_after_its_chunks(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(NoTerminator(2))
    out = fetch(pool, backends[provider])
    assert out.error is None  # the HTTP body itself ended properly
    assert out.chunks == text_chunks(DEFAULT_TEXTS(provider)[:2])
    assert out.failure is not None
    assert out.failure.kind is FailureKind.NETWORK
    assert out.failure.message.startswith("stream ended early")


def test_no_terminator_without_a_stream_cuts_the_json_body(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(NoTerminator())
    out = fetch(pool, backends[provider], stream=False)
    assert out.status == 200
    assert isinstance(out.error, httpcore.RemoteProtocolError)  # fewer bytes than announced


@pytest.mark.parametrize("after", [0, 2])
def test_malformed_json_is_a_protocol_failure(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str, after: int
) -> None:
    backends[provider].script(Malformed(after))
    out = fetch(pool, backends[provider])
    assert out.error is None
    assert out.chunks == text_chunks(DEFAULT_TEXTS(provider)[:after])
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROTOCOL
    assert "not valid JSON" in out.failure.message


def test_malformed_sse_is_a_protocol_failure(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(Malformed(1, kind="sse"))
    out = fetch(pool, backends[provider])
    assert out.chunks == text_chunks(DEFAULT_TEXTS(provider)[:1])
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROTOCOL
    assert "longer than" in out.failure.message


def test_malformed_without_a_stream_is_a_protocol_failure(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(Malformed())
    out = fetch(pool, backends[provider], stream=False)
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROTOCOL


def test_error_event_is_a_provider_failure(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(ErrorEvent(1, message="{backend} overloaded"))
    out = fetch(pool, backends[provider])
    assert out.chunks == text_chunks(DEFAULT_TEXTS(provider)[:1])
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROVIDER
    assert out.failure.message == f"{provider} overloaded"
    expected = {"openai": "server_error", "anthropic": "overloaded_error", "gemini": "UNAVAILABLE"}
    assert out.failure.provider_type == expected[provider]


def test_reset_after_chunks_breaks_the_stream(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(Reset(2))
    out = fetch(pool, backends[provider])
    assert out.status == 200
    assert isinstance(out.error, httpcore.ReadError)
    assert "reset" in str(out.error).lower()
    assert out.chunks == text_chunks(DEFAULT_TEXTS(provider)[:2])
    assert out.failure is not None
    assert out.failure.kind is FailureKind.NETWORK


def test_reset_before_headers_sends_nothing(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backend = backends[provider]
    backend.script(Reset(before_headers=True))
    out = fetch(pool, backend)
    assert out.status is None
    assert isinstance(out.error, httpcore.ReadError | httpcore.RemoteProtocolError)
    assert backend.received[-1].behaviour == Reset(before_headers=True)


def test_reset_without_a_stream_cuts_the_json_body(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(Reset(1))
    out = fetch(pool, backends[provider], stream=False)
    assert out.status == 200
    assert isinstance(out.error, httpcore.ReadError)
    assert out.response is None


# ------------------------------------------------------------------ silence


def test_hang_sends_nothing_until_the_client_gives_up(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backend = backends[provider]
    backend.script(Hang())
    out = fetch(pool, backend, read_timeout=0.2)
    assert isinstance(out.error, httpcore.ReadTimeout)
    assert out.status is None
    assert 0.2 <= out.elapsed < 1.5
    assert len(backend.received) == 1


def test_stall_sends_headers_and_chunks_then_nothing(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(Stall(1))
    out = fetch(pool, backends[provider], read_timeout=0.2)
    assert out.status == 200
    assert isinstance(out.error, httpcore.ReadTimeout)
    assert out.chunks == text_chunks(DEFAULT_TEXTS(provider)[:1])
    assert out.failure is None


def test_stall_without_a_stream_sends_only_headers(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(Stall())
    out = fetch(pool, backends[provider], stream=False, read_timeout=0.2)
    assert out.status == 200
    assert out.pieces == []
    assert isinstance(out.error, httpcore.ReadTimeout)


def test_keep_alive_sends_comments_but_never_a_chunk(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(KeepAlive(10, after_chunks=1))
    # Reads never time out (the comments keep coming), so the client stops on its own;
    # the read timeout is only a bound, generous so that a loaded machine cannot trip it.
    out = fetch(pool, backends[provider], read_timeout=5.0, stop_after=0.25)
    assert out.error is None
    assert out.body.count(b": keep-alive\n\n") >= 5
    assert out.chunks == text_chunks(DEFAULT_TEXTS(provider)[:1])


def test_keep_alive_without_a_stream_trickles_whitespace(
    backends: LocalBackends, pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends[provider].script(KeepAlive(10))
    out = fetch(pool, backends[provider], stream=False, read_timeout=0.5, stop_after=0.15)
    assert out.status == 200
    assert out.body.strip() == b""
    assert len(out.body) >= 3
