"""The incremental server-sent-events parser: line ends, fields, limits, splits."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import FailureKind
from lbtransports.wire import SseEvent, SseParser, WireError

from .splits import feed_in_pieces, split_points


def parse(data: bytes, **limits: int) -> list[SseEvent]:
    parser = SseParser(**limits)
    return parser.feed(data) + parser.end()


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        (b"data: hi\n\n", [SseEvent(data="hi")]),
        (b"data: hi\r\n\r\n", [SseEvent(data="hi")]),
        (b"data: hi\r\r", [SseEvent(data="hi")]),
        (b"data: a\ndata: b\n\n", [SseEvent(data="a\nb")]),
        (b"data:no-space\n\n", [SseEvent(data="no-space")]),
        (b"data:  two spaces\n\n", [SseEvent(data=" two spaces")]),
        (b"event: ping\ndata: {}\n\n", [SseEvent(event="ping", data="{}")]),
        (b"id: 7\ndata: x\n\n", [SseEvent(data="x", id="7")]),
        (b": keep-alive\n\n", []),
        (b": comment\ndata: x\n\n", [SseEvent(data="x")]),
        (b"event: only\n\n", []),
        (b"data\n\n", [SseEvent(data="")]),
        (b"data:\n\n", [SseEvent(data="")]),
        (b"retry: 10\nfoo: bar\ndata: x\n\n", [SseEvent(data="x")]),
        (b"\xef\xbb\xbfdata: bom\n\n", [SseEvent(data="bom")]),
        ("data: caf\u00e9 \u2603\n\n".encode(), [SseEvent(data="caf\u00e9 \u2603")]),
        (b"data: bad \xff\n\n", [SseEvent(data="bad \ufffd")]),
        (b"data: a\n\ndata: b\n\n", [SseEvent(data="a"), SseEvent(data="b")]),
        # The event type resets after each dispatch.
        (b"event: e\ndata: a\n\ndata: b\n\n", [SseEvent(event="e", data="a"), SseEvent(data="b")]),
    ],
)
def test_parses_the_standard_forms(stream: bytes, expected: list[SseEvent]) -> None:
    assert parse(stream) == expected


def test_an_event_whose_last_line_ended_is_kept_at_eof() -> None:
    assert parse(b"data: [DONE]\n") == [SseEvent(data="[DONE]")]


def test_a_partial_last_line_is_dropped_at_eof() -> None:
    assert parse(b'data: a\n\ndata: {"cut') == [SseEvent(data="a")]


def test_crlf_split_between_pieces_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\r") == [SseEvent(data="a")]
    assert parser.feed(b"\ndata: b\n\n") == [SseEvent(data="b")]


def test_utf8_split_across_pieces() -> None:
    encoded = "data: \u00e9\u20ac\U0001f600\n\n".encode()
    parser = SseParser()
    events: list[SseEvent] = []
    for byte in encoded:
        events += parser.feed(bytes([byte]))
    assert events == [SseEvent(data="\u00e9\u20ac\U0001f600")]


def test_an_overlong_line_is_a_protocol_failure() -> None:
    parser = SseParser(max_line=16)
    parser.feed(b"data: 0123456789")
    with pytest.raises(WireError) as caught:
        parser.feed(b"abcdef")
    assert caught.value.failure.kind is FailureKind.PROTOCOL
    assert "longer than 16 bytes" in caught.value.failure.message


def test_an_overlong_line_inside_one_piece_is_a_protocol_failure() -> None:
    with pytest.raises(WireError):
        parse(b"data: " + b"x" * 64 + b"\n\n", max_line=32)


def test_an_oversize_event_is_a_protocol_failure() -> None:
    with pytest.raises(WireError) as caught:
        parse(b"data: 0123456789\n" * 10 + b"\n", max_event=64)
    assert caught.value.failure.kind is FailureKind.PROTOCOL
    assert "larger than 64 bytes" in caught.value.failure.message


def test_lines_within_the_limit_pass() -> None:
    assert parse(b"data: 0123456789\n\n", max_line=16) == [SseEvent(data="0123456789")]


_STREAM = (
    b": hello\r\nevent: a\r\ndata: one\r\ndata: two\r\n\r\n"
    b"data: \xc3\xa9t\xc3\xa9\r\rid: 1\ndata: three\n\n: bye\n"
)


@settings(max_examples=150)
@given(st.data())
def test_every_split_gives_the_same_events(data: st.DataObject) -> None:
    points = data.draw(split_points(len(_STREAM)))
    parser = SseParser()
    assert feed_in_pieces(parser.feed, _STREAM, points) + parser.end() == parse(_STREAM)


@settings(max_examples=150)
@given(st.binary(max_size=300), st.data())
def test_arbitrary_bytes_only_ever_fail_with_wire_error(blob: bytes, data: st.DataObject) -> None:
    points = data.draw(split_points(len(blob)))
    parser = SseParser(max_line=64, max_event=128)
    try:
        feed_in_pieces(parser.feed, blob, points)
        parser.end()
    except WireError as error:
        assert error.failure.kind is FailureKind.PROTOCOL


def test_one_large_piece_with_many_lines_is_parsed_in_linear_time() -> None:
    # A buffered read can hand over megabytes at once. Searching the whole rest
    # of the piece for a CR on every LF-ended line made this quadratic
    # (seconds); a linear scan takes a few hundred milliseconds at most.
    keep_alives = b": k\n" * 400_000
    parser = SseParser(max_line=64)
    started = time.perf_counter()
    assert parser.feed(keep_alives + b"data: x\n\n") == [SseEvent(data="x")]
    assert time.perf_counter() - started < 1.5
    cr_only = b": k\r" * 400_000
    parser = SseParser(max_line=64)
    started = time.perf_counter()
    assert parser.feed(cr_only + b"data: y\r\r") == [SseEvent(data="y")]
    assert time.perf_counter() - started < 1.5


def test_the_event_limit_counts_bytes_not_characters() -> None:
    # 2 x 40 bytes of UTF-8 is 2 x 20 characters: the limit is in bytes.
    line = "data: " + "\u00e9" * 20 + "\n"
    with pytest.raises(WireError):
        parse((line * 2 + "\n").encode(), max_event=64)
    assert parse((line + "\n").encode(), max_event=64) == [SseEvent(data="\u00e9" * 20)]
