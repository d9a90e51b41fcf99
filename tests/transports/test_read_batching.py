"""Both clients take every chunk one network read brought at once, never the body's end."""

from __future__ import annotations

import h11
import pytest

from lbtransports._async import _buffered_body

HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def started(body: bytes) -> h11.Connection:
    """A client-side h11 connection that has read the head and the first chunk of ``body``."""
    state = h11.Connection(h11.CLIENT)
    state.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    state.send(h11.EndOfMessage())
    state.receive_data(HEAD + body)
    assert isinstance(state.next_event(), h11.Response)
    first = state.next_event()
    assert isinstance(first, h11.Data) and first.data == b"one"
    return state


@pytest.mark.parametrize("end", [b"", b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n"])
def test_the_buffered_chunks_are_taken_but_the_body_end_is_left_to_httpcore(end: bytes) -> None:
    state = started(b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n" + end)
    assert _buffered_body(state) == b"twothree"
    # httpcore's own next step sees the end (or reads on), as if nothing was taken.
    following = state.next_event()
    assert isinstance(following, h11.EndOfMessage) if end else following is h11.NEED_DATA


def test_a_partial_chunk_is_taken_and_a_partial_size_line_is_left() -> None:
    state = started(b"3\r\none\r\n5\r\nthr")
    assert _buffered_body(state) == b"thr"
    state = started(b"3\r\none\r\n1")
    assert _buffered_body(state) == b""
    assert state.next_event() is h11.NEED_DATA


def test_malformed_framing_is_left_for_httpcore_to_report() -> None:
    state = started(b"3\r\none\r\nzz\r\n")
    assert _buffered_body(state) == b""
    with pytest.raises(h11.RemoteProtocolError):
        state.next_event()
