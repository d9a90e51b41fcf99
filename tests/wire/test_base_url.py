"""Where each provider's requests go, and how a URL is shown in a failure."""

from __future__ import annotations

import pytest

from lbcore import Failure, FailureKind
from lbtransports.wire import (
    BackendTarget,
    ChatRequest,
    UserMessage,
    build_request,
    shown_url,
    with_url_tried,
)

REQUEST = ChatRequest(messages=(UserMessage(content="Hi"),))


def _url(provider: str, base_url: str | None) -> str:
    target = BackendTarget(name="b", provider=provider, model="m", base_url=base_url)
    return build_request(target, REQUEST, environ={}).url


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.anthropic.com",
        "https://api.anthropic.com/",
        "https://api.anthropic.com/v1",
        "https://api.anthropic.com/v1/",
    ],
)
def test_anthropic_takes_its_base_url_with_or_without_v1(base_url: str) -> None:
    assert _url("anthropic", base_url) == "https://api.anthropic.com/v1/messages"


def test_anthropic_keeps_a_proxy_path_and_drops_only_a_final_v1() -> None:
    assert _url("anthropic", "https://proxy.test/anthropic/v1") == (
        "https://proxy.test/anthropic/v1/messages"
    )
    assert _url("anthropic", "https://proxy.test/v1x") == "https://proxy.test/v1x/v1/messages"


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ("openai", "https://api.openai.com/v1/chat/completions"),
        ("anthropic", "https://api.anthropic.com/v1/messages"),
        (
            "gemini",
            "https://generativelanguage.googleapis.com/v1beta/models/m:streamGenerateContent?alt=sse",
        ),
    ],
)
def test_default_base_urls(provider: str, expected: str) -> None:
    assert _url(provider, None) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://g.test/v1beta/models/m:generateContent?key=AIzaSyA-0123456789abcdefghijk",
            "https://g.test/v1beta/models/m:generateContent?key=[redacted]",
        ),
        (
            "https://h.test/p?alt=sse&api_key=plain-secret&API-KEY=x&token=t&access_token=a",
            "https://h.test/p?alt=sse&api_key=[redacted]&API-KEY=[redacted]"
            "&token=[redacted]&access_token=[redacted]",
        ),
        ("http://user:pw@h.test:8080/v1/messages", "http://[redacted]@h.test:8080/v1/messages"),
        ("http://127.0.0.1:9/v1/chat/completions", "http://127.0.0.1:9/v1/chat/completions"),
        ("http://[::1/v1?key=abc", "(unparsable URL)"),
    ],
)
def test_a_shown_url_hides_keys_in_the_query_and_the_user_part(url: str, expected: str) -> None:
    assert shown_url(url) == expected


def test_a_shown_url_hides_the_request_key_wherever_it_is() -> None:
    secret = "my-own-key-0123"
    assert secret not in shown_url(f"https://h.test/{secret}/x?q={secret}", (secret,))


def test_only_a_wrong_place_status_names_the_url() -> None:
    url = "https://h.test/v1/v1/messages"
    refused = Failure(kind=FailureKind.HTTP, message="Overloaded", status=529)
    assert with_url_tried(refused, url) is refused
    missing = Failure(kind=FailureKind.HTTP, message="Not Found", status=404)
    assert with_url_tried(missing, url).message == f"Not Found (url tried: {url})"


def test_a_long_message_is_cut_so_the_url_still_shows() -> None:
    url = "https://h.test/v1/v1/messages"
    missing = Failure(kind=FailureKind.HTTP, message="x" * 600, status=404)
    message = with_url_tried(missing, url).message
    assert message.endswith(f"(url tried: {url})")
    assert len(message) <= 512
