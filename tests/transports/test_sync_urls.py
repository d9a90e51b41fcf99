"""The sync client's URL preparation is requests' own, whichever way it is taken.

:func:`lbtransports._sync_route.prepared_url` hands a plain URL back as it is
instead of asking requests; these pin that requests gives back the same, for
URLs on both sides of the line.
"""

from __future__ import annotations

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from lbtransports._sync_route import prepared_url


def by_requests(url: str) -> str | type[Exception]:
    scratch = requests.PreparedRequest()
    try:
        scratch.prepare_url(url, None)
    except requests.exceptions.RequestException as error:
        return type(error)
    assert scratch.url is not None
    return scratch.url


def ours(url: str) -> str | type[Exception]:
    try:
        return prepared_url(url)
    except requests.exceptions.RequestException as error:
        return type(error)


EDGES = [
    "http://127.0.0.1:8080/v1/chat/completions",
    "https://api.openai.com/v1/chat/completions",
    "https://api.anthropic.com/v1/messages",
    "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
    "http://localhost/v1/",
    "http://localhost/",
    "http://localhost",
    "http://Localhost/v1",
    "HTTP://localhost/v1",
    "http://localhost:0/v1",
    "http://localhost:080/v1",
    "http://localhost:65535/v1",
    "http://localhost:65536/v1",
    "http://localhost:99999/v1",
    "http://localhost/a/./b",
    "http://localhost/a/../b",
    "http://localhost/a/..",
    "http://localhost/a/.",
    "http://localhost/.well-known/x",
    "http://localhost//double//slash",
    "http://localhost/a%41b",
    "http://localhost/a b",
    "http://localhost/ü",
    "http://bücher.example/v1",
    "http://.localhost/v1",
    "http://*.localhost/v1",
    "http://example.com./v1",
    "http://a..b/v1",
    "http://user:pw@localhost/v1",
    "http://localhost/v1?x=1",
    "http://localhost/v1#frag",
    "http://[::1]:8080/v1",
    " http://localhost/v1",
    "http://localhost/v1 ",
    "http:///v1",
    "localhost/v1",
]


@pytest.mark.parametrize("url", EDGES)
def test_edges_are_prepared_as_requests_does(url: str) -> None:
    assert ours(url) == by_requests(url)


_PIECES = st.sampled_from(
    ["a", "Z", "0", "9", ".", "..", "-", "_", "~", "/", ":", "%", "%41", "@", "?", "#", " ", "ü"]
)


@settings(max_examples=500)
@given(
    scheme=st.sampled_from(["http", "https", "HTTP", "Https"]),
    host=st.text(st.sampled_from("abcXYZ019.-_*"), min_size=0, max_size=8),
    port=st.one_of(st.none(), st.integers(0, 70000).map(str), st.just("0080")),
    path=st.lists(_PIECES, max_size=10).map("".join),
)
def test_random_urls_are_prepared_as_requests_does(
    scheme: str, host: str, port: str | None, path: str
) -> None:
    url = f"{scheme}://{host}{'' if port is None else ':' + port}/{path}"
    assert ours(url) == by_requests(url)
