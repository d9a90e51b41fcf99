"""Both clients read any bytes a backend sends the same way: a differential property.

Hypothesis takes a whole answer (a streamed SSE one, or a whole JSON one) and
breaks it a few bytes at a time (deleting, inserting, replacing, repeating or
cutting off), then a raw socket backend sends exactly those bytes to the
blocking client and to the async client. Whatever the bytes, both must end
without crashing or hanging, agree on whether the answer succeeded and on its
text, and serve the next request (from the same connection or a new one).
A second property holds the async client's two HTTP/1.1 layers (httpcore's
pools, and its own h11 layer that the gateway uses) to exactly the same
outcomes, failure messages and connection reuse included.

The two clients share no parser: ``Client`` reads through http.client with our
own checks (``_sync_head.py``, ``_sync_body.py``), ``AsyncClient`` through
h11, so a difference is a byte sequence one of them reads against
spec/transports.md section 3. Where the spec lets them differ (the kind of a
failure, whether a connection is kept), this property does not look.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbtransports import LoadBalancerError

from .test_raw_answers import EVENTS, _run, sized, sse

#: Bytes that matter to HTTP framing, SSE and JSON.
_PIECES = (b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b";", b"0", b"1", b"f", b"\x00", b"\xff", b'"')
_ANSWERS = (sse(EVENTS), sized())


@st.composite
def broken_answers(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(_ANSWERS))
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, len(data) - 1))
        end = min(len(data), start + draw(st.integers(1, 4)))
        how = draw(st.sampled_from(("delete", "insert", "replace", "repeat", "cut")))
        piece = draw(st.sampled_from(_PIECES))
        if how == "delete":
            data = data[:start] + data[end:]
        elif how == "insert":
            data = data[:start] + piece + data[start:]
        elif how == "replace":
            data = data[:start] + piece + data[end:]
        elif how == "repeat":
            data = data[:end] + data[start:end] + data[end:]
        else:
            data = data[:end]
        if not data:
            data = b"\r\n"
    return data


def _seen(outcome: object) -> tuple[bool, str | None]:
    """Whether the request succeeded, and its text if so."""
    if isinstance(outcome, LoadBalancerError):
        return False, None
    assert isinstance(outcome, str), outcome
    return True, outcome


@settings(
    max_examples=24,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never meets a new one
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=broken_answers())
def test_both_clients_read_any_answer_alike(data: bytes) -> None:
    sync_outcomes, _ = _run("sync", data)
    async_outcomes, _ = _run("asyncio", data)
    assert _seen(sync_outcomes[0]) == _seen(async_outcomes[0]), data
    # Whatever the first answer did to its connection, the next request is served.
    assert sync_outcomes[1] in ("reused", "fresh"), (data, sync_outcomes[1])
    assert async_outcomes[1] in ("reused", "fresh"), (data, async_outcomes[1])


def _exactly(outcome: object) -> object:
    """An outcome as both async HTTP layers must give it: an error's type and message."""
    if isinstance(outcome, LoadBalancerError):
        return type(outcome).__name__, str(outcome)
    return outcome


@settings(
    max_examples=24,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=broken_answers())
def test_the_async_clients_two_http_layers_read_any_answer_exactly_alike(data: bytes) -> None:
    # httpcore's pools and the client's own h11 layer (_h1.py, the gateway's) share
    # h11 but nothing above it: the same failure, message and reuse for any bytes.
    through_httpcore, _ = _run("asyncio", data, plain_http="httpcore")
    through_h11, _ = _run("asyncio", data, plain_http="h11")
    assert [_exactly(o) for o in through_h11] == [_exactly(o) for o in through_httpcore], data
