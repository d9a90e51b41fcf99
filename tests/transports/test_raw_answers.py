"""Answers HTTP/1.1 allows but no well-behaved backend sends, over raw sockets, to every client.

Each answer ends as spec/transports.md says: a success only when the answer
is whole, otherwise a classified attempt failure; never a crash or a hang.
And the connection it came on is reused only when its answer ended exactly
where its framing said: the next request on the same client gets "reused"
from the same connection, or "fresh" from a new one, and never the rest of
a broken exchange.
"""

from __future__ import annotations

import gzip
import json
import time

import anyio
import pytest

from lbcore import FailureKind, Stats
from lbtransports import AsyncClient, BackendError, Client, PlainHttp

from .harness import REQUEST
from .test_connection_reuse import RawConnection, answer, config, raw_backend, run_requests


def _json_body(text: str = "hello", **usage: object) -> bytes:
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, **usage},
        }
    ).encode()


BODY = _json_body()
PAGE = b"<html>502 Bad Gateway</html>"
JSON = b"Content-Type: application/json\r\n"


def whole(head: bytes, body: bytes = BODY, status: bytes = b"200 OK") -> bytes:
    """A response: status line, ``head`` (header lines), a blank line, ``body``."""
    return b"HTTP/1.1 " + status + b"\r\n" + head + b"\r\n" + body


def sized(body: bytes = BODY, extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    return whole(JSON + b"Content-Length: %d\r\n" % len(body) + extra, body, status)


def chunked(data: bytes, piece: int = 1 << 20) -> bytes:
    framed = b"".join(
        b"%x\r\n%s\r\n" % (len(data[at : at + piece]), data[at : at + piece])
        for at in range(0, len(data), piece)
    )
    return framed + b"0\r\n\r\n"


def event(delta: dict[str, object], finish: str | None = None) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
EVENTS = event({"content": "hel"}) + event({"content": "lo"}, "stop") + USAGE + b"data: [DONE]\n\n"
SSE = b"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"


def sse(events: bytes, piece: int = 1 << 20, extra: bytes = b"") -> bytes:
    return whole(SSE + extra, chunked(events, piece))


def _sized_chunk(size_line: bytes) -> bytes:
    return whole(
        JSON + b"Transfer-Encoding: chunked\r\n", size_line + b"\r\n%s\r\n0\r\n\r\n" % BODY
    )


def _chunked_raw(framed: bytes) -> bytes:
    return whole(JSON + b"Transfer-Encoding: chunked\r\n", framed)


# ------------------------------------------------------------ the answers, and how each ends

#: Whole and cleanly framed, however odd: a success, and the connection is reused.
WHOLE_AND_REUSED = {
    "equal content-lengths in a list": whole(
        JSON + b"Content-Length: %d, %d\r\n" % (len(BODY), len(BODY))
    ),
    "the same content-length twice": sized(extra=b"Content-Length: %d\r\n" % len(BODY)),
    "chunk extensions and trailers": whole(
        JSON + b"Transfer-Encoding: chunked\r\n",
        b'%x;name="v";q\r\n%s\r\n0;last\r\nX-Trailer: 1\r\nX-More: 2\r\n\r\n' % (len(BODY), BODY),
    ),
    "chunked and a content-length (chunked wins)": whole(
        JSON + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", chunked(BODY)
    ),
    "a folded header line": sized(extra=b"X-Folded: one\r\n  two\r\n"),
    "100 Continue first": b"HTTP/1.1 100 Continue\r\n\r\n" + sized(),
    "103 Early Hints twice first": b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
    b"HTTP/1.1 103 Early Hints\r\n\r\n" + sse(EVENTS),
    "LF line ends and no reason phrase": sized().replace(b"\r\n", b"\n").replace(b" OK", b"", 1),
    "a charset parameter (ignored: JSON is UTF-8)": sized().replace(
        b"application/json", b"application/json; charset=ISO-8859-1"
    ),
    "non-ASCII header values": sized(extra="X-Latin: caf\xe9\r\n".encode("latin-1")),
    "SSE with CRLF line ends": sse(EVENTS.replace(b"\n", b"\r\n")),
    "SSE with CR line ends": sse(EVENTS.replace(b"\n", b"\r")),
    "SSE with a BOM, comments and every field": sse(
        b"\xef\xbb\xbf: keep-alive\n\nevent: message\nid: 7\nretry: 1000\nfoo: bar\n" + EVENTS
    ),
    "SSE in one-byte HTTP chunks": sse(EVENTS, piece=1),
    "upper-case hex, a space after a chunk size": _sized_chunk(b"%X " % len(BODY)),
    # The email parser under http.client finds fault with the body these types
    # announce, or parses one: the head itself is sound, and the events are SSE.
    "a multipart media type over SSE": whole(
        b"Content-Type: multipart/mixed\r\nTransfer-Encoding: chunked\r\n", chunked(EVENTS)
    ),
    "a message/rfc822 media type over SSE": whole(
        b"Content-Type: message/rfc822\r\nTransfer-Encoding: chunked\r\n", chunked(EVENTS)
    ),
    "a second answer after the terminator, in the same body": sse(EVENTS + EVENTS),
}

#: Whole, but not to be trusted with another request: a success, on a connection then closed.
WHOLE_AND_CLOSED = {
    "HTTP/1.0 without a length, ending at the close": whole(JSON, status=b"200 OK").replace(
        b"HTTP/1.1", b"HTTP/1.0", 1
    ),
    "Connection: close, with the socket left open": sized(extra=b"Connection: close\r\n"),
    "bytes past the end of the body": sized() + b"HTTP/1.1 200 OK\r\n",
    "bytes past the end of a streamed body": sse(EVENTS) + b"\r\n",
    # The terminator came before the break: the answer is whole, its connection is not.
    "a bare LF after the chunk that held the terminator": whole(
        SSE, b"%x\r\n%s\n0\r\n\r\n" % (len(EVENTS), EVENTS)
    ),
}


#: A head or chunk framing h11 refuses: a lost connection for both clients, at
#: once (the sync client's http.client took such heads as bodies read until the
#: server closes, and Python's int() read such chunk sizes).
REFUSED_FRAMING = {
    "conflicting content-lengths": sized(extra=b"Content-Length: 3\r\n"),
    "a negative content-length": whole(JSON + b"Content-Length: -1\r\n"),
    "a signed content-length": whole(JSON + b"Content-Length: +%d\r\n" % len(BODY)),
    "a transfer coding other than chunked": whole(
        JSON + b"Transfer-Encoding: gzip, chunked\r\n", chunked(gzip.compress(BODY))
    ),
    "Transfer-Encoding: identity": whole(JSON + b"Transfer-Encoding: identity\r\n"),
    "a space before a header's colon": sized().replace(b"Content-Type:", b"Content-Type :"),
    "a NUL in a header value": sized(extra=b"X-Nul: a\x00b\r\n"),
    "a 200 KB header": sized(extra=b"X-Big: " + b"a" * 200_000 + b"\r\n"),
    "a status line that is not one": b"HELLO WORLD\r\n\r\n",
    "101 Switching Protocols, never asked for": b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n" + sized(),
    "an HTTP/2 status line": b"HTTP/2 200\r\ncontent-length: 2\r\n\r\n{}",
    "two spaces in the status line": sized().replace(b"HTTP/1.1 ", b"HTTP/1.1  ", 1),
    "a tab in the status line": sized().replace(b"HTTP/1.1 ", b"HTTP/1.1\t", 1),
    "HTTP/1.10": sized().replace(b"HTTP/1.1 ", b"HTTP/1.10 ", 1),
    "a status of 2_00": sized().replace(b"200 OK", b"2_00 OK", 1),
    "a signed chunk size": _sized_chunk(b"+%x" % len(BODY)),
    "a chunk size with 0x": _sized_chunk(b"0x%x" % len(BODY)),
    "a chunk size with an underscore": _sized_chunk(b"%x_%x" % divmod(len(BODY), 16)),
    "a space before a chunk size": _sized_chunk(b" %x" % len(BODY)),
    "a space before a chunk extension": _sized_chunk(b"%x ;a=b" % len(BODY)),
    "a chunk size of 21 digits": _sized_chunk(b"%021x" % len(BODY)),
    # The sync client skipped the two bytes after a chunk's data unread: "XY"
    # passed as its CRLF, and the answer as whole, on a connection then reused.
    "bytes other than CRLF after a chunk's data": _chunked_raw(
        b"%x\r\n%sXY0\r\n\r\n" % (len(BODY), BODY)
    ),
    "a bare LF after a chunk's data": _chunked_raw(b"%x\r\n%s\n0\r\n\r\n" % (len(BODY), BODY)),
    "no CRLF between a chunk's data and the next size": _chunked_raw(
        b"%x\r\n%s0\r\n\r\n" % (len(BODY), BODY)
    ),
    "a status below 100": sized(status=b"099 Odd"),
    # http.client's header parser ends a line at a bare CR, and takes what follows an
    # empty-looking line for a body it never uses: both passed unseen.
    "a bare CR inside a header line": sized(extra=b"X-Odd: a\rb\r\n"),
    "a bare CR ending the head's framing header": whole(
        JSON + b"Transfer-Encoding: chunked\r\r\n", chunked(BODY)
    ),
    "a header line without a colon": sized(extra=b"no colon here\r\n"),
    "a header name that is not a token": sized().replace(b"Content-Length", b"Con}ent-Length"),
}

#: (answer, kind, what the message says, whether the connection is reused; None
#: where that depends on whether the body's end came in the same read as the failure)
FAILED = {
    "a web page with 200 to a streamed request": (
        whole(b"Content-Type: text/html\r\nContent-Length: %d\r\n" % len(PAGE), PAGE),
        FailureKind.PROTOCOL,
        "HTTP 200 with a text/html body, not an answer: <html>502 Bad Gateway</html>",
        True,
    ),
    "a gzip body never asked for": (
        sized(gzip.compress(BODY), b"Content-Encoding: gzip\r\n"),
        FailureKind.PROTOCOL,
        "openai response",
        True,
    ),
    "an unknown content coding": (
        sized(b"\x0b\x02\x80hello\x03", b"Content-Encoding: br\r\n"),
        FailureKind.PROTOCOL,
        "openai response",
        True,
    ),
    # A streamed request reads a 2xx as SSE: an empty one is a stream that ended early.
    "204 with a body": (
        whole(b"Content-Length: %d\r\n" % len(BODY), status=b"204 No Content"),
        FailureKind.NETWORK,
        "stream ended early",
        False,
    ),
    "304 with a body": (sized(status=b"304 Not Modified"), FailureKind.HTTP, "HTTP 304", False),
    "NaN in the JSON": (
        sized(BODY.replace(b'"prompt_tokens": 5', b'"prompt_tokens": NaN')),
        FailureKind.PROTOCOL,
        "openai response",
        True,
    ),
    "JSON nested 100 000 deep": (
        sized(b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        FailureKind.PROTOCOL,
        "openai response",
        True,
    ),
    "JSON in UTF-16": (
        sized(BODY.decode().encode("utf-16"), b"X-Note: charset=utf-16\r\n"),
        FailureKind.PROTOCOL,
        "openai response",
        True,
    ),
    "a byte order mark before the JSON": (
        sized(b"\xef\xbb\xbf" + BODY),
        FailureKind.PROTOCOL,
        "openai response",
        True,
    ),
    "two answers in one body": (sized(BODY + BODY), FailureKind.PROTOCOL, "openai response", True),
    # 10**400 tokens overflowed the core's float token rate (stats() raised).
    "a token count of 10**400": (
        sized(_json_body(prompt_tokens=10**400)),
        FailureKind.PROTOCOL,
        "prompt_tokens is out of range",
        True,
    ),
    "a streamed token count of 2**64": (
        sse(event({"content": "a"}) + b'data: {"usage":{"prompt_tokens":%d}}\n\n' % 2**64),
        FailureKind.PROTOCOL,
        "out of range",
        None,
    ),
    "a 3 MB data line": (
        sse(event({"content": "x" * 3_000_000}), piece=65536),
        FailureKind.PROTOCOL,
        "server-sent event line longer than",
        False,
    ),
    "an error event after the first chunk": (
        sse(event({"content": "hel"}) + b'data: {"error":{"message":"overloaded","code":503}}\n\n'),
        FailureKind.PROVIDER,
        "overloaded",
        None,
    ),
}


def _reply_on(responses: bytes, *, bytewise: bool = False):  # type: ignore[no-untyped-def]
    """The first connection answers its first request with ``responses``, then with
    "reused"; every later connection answers "fresh"."""

    def handler(connection: RawConnection) -> None:
        if connection.index == 0:
            if connection.read_request():
                if bytewise:
                    for at in range(len(responses)):
                        connection.send(responses[at : at + 1])
                else:
                    connection.send(responses)
                if b"Content-Length" not in responses.partition(b"\r\n\r\n")[0] and (
                    b"HTTP/1.0" in responses[:8]
                ):
                    connection.sock.close()  # a body without framing ends at the close
                    return
            while connection.read_request():
                connection.send(answer("reused"))
        else:
            while connection.read_request():
                connection.send(answer("fresh"))

    return handler


def _run(
    mode: str, responses: bytes, *, bytewise: bool = False, plain_http: PlainHttp | None = None
) -> tuple[list[object], list[int]]:
    with raw_backend(_reply_on(responses, bytewise=bytewise)) as backend:
        outcomes = run_requests(mode, config(backend.url), 2, plain_http)
    return list(outcomes), backend.requests


@pytest.mark.parametrize("name", WHOLE_AND_REUSED)
def test_an_odd_but_whole_answer_succeeds_and_keeps_its_connection(mode: str, name: str) -> None:
    outcomes, requests = _run(mode, WHOLE_AND_REUSED[name])
    assert outcomes == ["hello", "reused"]
    assert requests == [2]


def test_an_answer_sent_a_byte_at_a_time_is_read_whole(mode: str) -> None:
    # Every byte in a send of its own: the status line, each header, each chunk size.
    outcomes, requests = _run(mode, sse(EVENTS), bytewise=True)
    assert outcomes == ["hello", "reused"]
    assert requests == [2]


@pytest.mark.parametrize("name", WHOLE_AND_CLOSED)
def test_a_whole_answer_on_a_connection_not_to_reuse_succeeds_and_closes_it(
    mode: str, name: str
) -> None:
    outcomes, requests = _run(mode, WHOLE_AND_CLOSED[name])
    assert outcomes == ["hello", "fresh"]
    assert requests == [1, 1]


@pytest.mark.parametrize("name", REFUSED_FRAMING)
def test_framing_h11_refuses_is_a_lost_connection_at_once(mode: str, name: str) -> None:
    outcomes, requests = _run(mode, REFUSED_FRAMING[name])
    first, second = outcomes
    assert isinstance(first, BackendError), first
    assert first.failure.kind is FailureKind.NETWORK
    assert first.failure.message.startswith("connection lost before the answer ended")
    assert (second, requests) == ("fresh", [1, 1])


@pytest.mark.parametrize("name", FAILED)
def test_a_broken_answer_is_a_classified_failure(mode: str, name: str) -> None:
    responses, kind, says, reused = FAILED[name]
    outcomes, requests = _run(mode, responses)
    first, second = outcomes
    assert isinstance(first, BackendError), first
    assert first.failure.kind is kind
    assert says in first.failure.message
    if reused is not None:
        assert (second, requests) == (("reused", [2]) if reused else ("fresh", [1, 1]))


def test_invalid_utf8_is_replaced_and_a_terminator_first_is_an_empty_answer(mode: str) -> None:
    invalid = b'data: {"choices":[{"index":0,"delta":{"content":"a\xff\xfeb"}}]}\n\n' + EVENTS
    outcomes, _ = _run(mode, sse(invalid))
    assert outcomes[0] == "a\ufffd\ufffdbhello"
    # The terminator ends the answer: what follows it is not read as more of it.
    outcomes, requests = _run(mode, sse(b"data: [DONE]\n\n" + EVENTS))
    assert outcomes == ["", "reused"]
    assert requests == [2]


def test_a_huge_token_count_leaves_the_clients_stats_readable(mode: str) -> None:
    # Before the cap, 10**400 prompt tokens reached the core, whose token rate
    # (a float) then overflowed: stats() raised OverflowError for good.
    responses = sized(_json_body(prompt_tokens=10**400))
    with raw_backend(_reply_on(responses)) as backend:
        if mode == "sync":
            with Client(config(backend.url)) as client:
                with pytest.raises(BackendError):
                    client.complete(REQUEST)
                stats = client.stats()
        else:

            async def main() -> Stats:
                async with AsyncClient(config(backend.url)) as client:
                    with pytest.raises(BackendError):
                        await client.complete(REQUEST)
                    return client.stats()

            stats = anyio.run(main, backend=mode)
    assert stats.backend_metrics["raw"].failures == 1
    assert stats.current_tpm["raw"] == 0


def test_bytes_that_arrive_after_a_clean_answer_are_never_read_as_the_next_one(mode: str) -> None:
    # The first answer ended cleanly and its connection was pooled; a second,
    # unasked-for answer arrives while it idles. The next request must not take it.
    def late_smuggler(connection: RawConnection) -> None:
        if connection.index == 0:
            if connection.read_request():
                connection.send(answer("first"))
                connection.stop.wait(0.05)
                connection.send(answer("smuggled"))
            while connection.read_request():
                connection.send(answer("reused"))
        else:
            while connection.read_request():
                connection.send(answer("fresh"))

    texts: list[str] = []
    with raw_backend(late_smuggler) as backend:
        if mode == "sync":
            with Client(config(backend.url)) as client:
                texts.append(client.complete(REQUEST).text)
                time.sleep(0.2)
                texts.append(client.complete(REQUEST).text)
        else:

            async def main() -> None:
                async with AsyncClient(config(backend.url)) as client:
                    texts.append((await client.complete(REQUEST)).text)
                    await anyio.sleep(0.2)
                    texts.append((await client.complete(REQUEST)).text)

            anyio.run(main, backend=mode)
    assert texts == ["first", "fresh"]
    assert backend.requests == [1, 1]


def test_chunk_sizes_ended_by_a_bare_lf_are_refused_or_bounded_by_the_idle_timer(mode: str) -> None:
    # h11 ends a chunk-size line only at CRLF, so AsyncClient waits for one until
    # its idle timer (1 s here) ends the attempt; the sync client refuses at once.
    # Either way a classified failure, and the connection is not reused.
    framed = _chunked_raw(b"%x\n%s\n0\n\n" % (len(BODY), BODY))
    outcomes, requests = _run(mode, framed)
    first, second = outcomes
    assert isinstance(first, BackendError), first
    if mode == "sync":
        assert first.failure.kind is FailureKind.NETWORK
        assert first.failure.message.startswith("connection lost before the answer ended")
    else:
        assert first.failure.kind is FailureKind.TIMEOUT
    assert (second, requests) == ("fresh", [1, 1])
