"""Callers that send every byte sequence HTTP/1.1 allows, and some it does not, over raw sockets.

Each case gets the answer spec/gateway.md gives it: a request HTTP allows is
answered (pipelined, chunked, ``Expect: 100-continue``, HTTP/1.0, an
absolute-form target, HEAD), a limit is enforced at its exact value, and
what breaks HTTP or a limit gets its status and a close, never a traceback
or a hang.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from lbtransports.gateway import Gateway
from lbtransports.testing import Hang, LocalBackends, Stream

from .harness import KEY, group, make_config, serving

MAX_HEAD = 2048
MAX_BODY = 4096
CHAT = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    backends = LocalBackends()
    backend = backends.add("oa", "openai", default=Stream(chunks=2))
    with backends:
        config = make_config(
            {"gpt": group(backend, strategy="round-robin")},
            max_header_bytes=MAX_HEAD,
            max_body_bytes=MAX_BODY,
            header_timeout_s=0.5,
            body_timeout_s=0.5,
        )
        with serving(config) as gateway:
            yield gateway


def post(
    body: bytes,
    *,
    target: bytes = b"/v1/chat/completions",
    version: bytes = b"HTTP/1.1",
    extra: bytes = b"",
    length: bool = True,
) -> bytes:
    head = b"POST %s %s\r\nhost: x\r\nauthorization: Bearer %s\r\n" % (
        target,
        version,
        KEY.encode(),
    )
    if length:
        head += b"content-length: %d\r\n" % len(body)
    return head + extra + b"\r\n" + body


def exchange(gateway: Gateway, data: bytes, *, trickle: bytes = b"", shut: bool = False) -> bytes:
    """Send ``data``, then ``trickle`` a byte every 20 ms, then read until the gateway closes."""
    assert gateway.port is not None
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        try:
            sock.sendall(data)
            for at in range(len(trickle)):
                time.sleep(0.02)
                sock.sendall(trickle[at : at + 1])
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the gateway answered and closed before all of it was sent
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass  # closed with bytes of ours unread: what came before still counts
    return answer


def statuses(answer: bytes) -> list[int]:
    """The status of every response in ``answer`` (bodies here never hold "HTTP/1.1 ")."""
    return [int(part[:3]) for part in answer.split(b"HTTP/1.1 ")[1:]]


def closing(data: bytes) -> bytes:
    """``data``'s head with ``connection: close``, so the gateway closes after answering."""
    return data.replace(b"host: x\r\n", b"host: x\r\nconnection: close\r\n", 1)


GOOD = closing(post(json.dumps(CHAT).encode()))


def test_pipelined_requests_are_each_answered_in_order(gateway: Gateway) -> None:
    streamed = post(json.dumps({**CHAT, "stream": True}).encode())
    answer = exchange(gateway, post(json.dumps(CHAT).encode()) + streamed + GOOD)
    assert statuses(answer) == [200, 200, 200]
    assert answer.count(b"data: [DONE]") == 1
    assert answer.count(b'"object":"chat.completion"') == 2


def test_expect_100_continue_gets_100_then_the_answer(gateway: Gateway) -> None:
    assert gateway.port is not None
    head, _, body = GOOD.partition(b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(head + b"\r\nexpect: 100-continue\r\n\r\n")
        interim = sock.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert statuses(answer) == [200]


def test_a_chunked_request_body_with_extensions_and_trailers_is_read(gateway: Gateway) -> None:
    body = json.dumps(CHAT).encode()
    chunked = b"5;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nx-trailer: 1\r\n\r\n" % (
        body[:5],
        len(body) - 5,
        body[5:],
    )
    data = closing(post(chunked, extra=b"transfer-encoding: chunked\r\n", length=False))
    assert statuses(exchange(gateway, data)) == [200]


def test_a_chunked_body_over_the_limit_gets_413(gateway: Gateway) -> None:
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY + 1, b"x" * (MAX_BODY + 1))
    data = post(chunked, extra=b"transfer-encoding: chunked\r\n", length=False)
    assert statuses(exchange(gateway, data)) == [413]


def test_an_http_1_0_caller_is_answered_and_the_connection_closed(gateway: Gateway) -> None:
    answer = exchange(gateway, post(json.dumps(CHAT).encode(), version=b"HTTP/1.0"))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b'"object":"chat.completion"' in answer  # and the read ended: it was closed


@pytest.mark.parametrize(
    "target",
    [b"http://127.0.0.1/v1/chat/completions", b"HTTP://gw.example:8080/v1/chat/completions"],
)
def test_an_absolute_form_target_is_served_as_its_path(gateway: Gateway, target: bytes) -> None:
    # RFC 9112 3.2.2: a server must accept the form a caller uses towards a proxy.
    answer = exchange(gateway, closing(post(json.dumps(CHAT).encode(), target=target)))
    assert statuses(answer) == [200]
    health = b"GET http://x/healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    assert exchange(gateway, health).endswith(b'{"status":"ok"}')


def test_head_gets_the_head_a_get_would_get_and_the_connection_goes_on(gateway: Gateway) -> None:
    requests = b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n"
    answer = exchange(gateway, requests + b"connection: close\r\n\r\n")
    first, _, second = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 ") and b"content-length: 15" in first
    assert second.startswith(b"HTTP/1.1 200 ")  # no body between the two heads
    assert second.endswith(b'{"status":"ok"}')


def _head_of(size: int) -> bytes:
    base = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-pad: "
    head = base + b"a" * (size - len(base) - 4) + b"\r\n\r\n"
    assert len(head) == size
    return head


def test_a_head_of_exactly_the_limit_is_served_and_one_byte_more_gets_431(
    gateway: Gateway,
) -> None:
    # In one piece: h11 alone refuses only a head still incomplete past the limit.
    assert statuses(exchange(gateway, _head_of(MAX_HEAD))) == [200]
    assert statuses(exchange(gateway, _head_of(MAX_HEAD + 1))) == [431]


def _body_of(size: int) -> bytes:
    empty = len(json.dumps({**CHAT, "messages": [{"role": "user", "content": ""}]}))
    body = json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * (size - empty)}]})
    assert len(body) == size
    return body.encode()


def test_a_body_of_exactly_the_limit_is_served_and_one_byte_more_gets_413(
    gateway: Gateway,
) -> None:
    assert statuses(exchange(gateway, closing(post(_body_of(MAX_BODY))))) == [200]
    assert statuses(exchange(gateway, post(_body_of(MAX_BODY + 1)))) == [413]


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (b"content-length: 3\r\n", "two lengths"),
        (b"transfer-encoding: chunked\r\n", "two framings"),
    ],
)
def test_a_request_with_two_framings_gets_400_and_a_close(
    gateway: Gateway, extra: bytes, why: str
) -> None:
    # Which framing a proxy in front used is unknowable (request smuggling):
    # the answer is 400 and the connection is closed, a pipelined request unread.
    body = json.dumps(CHAT).encode()
    framed = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if b"chunked" in extra else body
    answer = exchange(gateway, post(framed, extra=extra) + GOOD)
    assert statuses(answer) == [400], why


@pytest.mark.parametrize(
    "data",
    [
        post(b"{}", extra=b"x bad: 1\r\n"),  # a space in a header name
        b"P(ST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # no Host
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(40),  # a TLS hello
    ],
)
def test_invalid_http_gets_400_and_a_close(gateway: Gateway, data: bytes) -> None:
    answer = exchange(gateway, data)
    assert statuses(answer) == [400]
    assert b"not valid HTTP/1.1" in answer


def test_a_transfer_coding_other_than_chunked_gets_501_and_a_close(gateway: Gateway) -> None:
    body = json.dumps(CHAT).encode()
    data = post(body, extra=b"transfer-encoding: gzip, chunked\r\n", length=False)
    answer = exchange(gateway, data + GOOD)
    assert statuses(answer) == [501]
    assert b"transfer coding is not supported" in answer


def test_wrong_methods_and_paths_get_405_and_404(gateway: Gateway) -> None:
    answer = exchange(
        gateway,
        b"GET /v1/chat/completions HTTP/1.1\r\nhost: x\r\n\r\n"
        + b"FOO /v1/messages HTTP/1.1\r\nhost: x\r\n\r\n"
        + closing(post(b"{}", target=b"/v1/../v1/chat%2Fcompletions")),
    )
    assert statuses(answer) == [405, 405, 404]
    assert answer.count(b"allow: POST\r\n") == 2


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{nope", b"not valid JSON"),
        (b'{"model":"gpt","messages":[{"role":"user","content":"\xff\xfe"}]}', b"UTF-8"),
        (b'{"model":"gpt","temperature":1e400,"messages":[]}', b"$.temperature"),
        (b'{"model":"gpt","temperature":NaN,"messages":[]}', b"not valid JSON"),
        (b"", b"not valid JSON"),
        (b"[]", b"Expected `object`"),
        # Nesting past msgspec's depth limit, in an ignored field: was a 500.
        (b'{"model":"gpt","x":' + b"[" * 1000 + b"]" * 1000 + b"}", b"nested too deeply"),
    ],
)
@pytest.mark.parametrize("path", [b"/v1/chat/completions", b"/v1/messages"])
def test_a_body_that_is_not_a_request_gets_400(
    body: bytes, says: bytes, path: bytes, gateway: Gateway
) -> None:
    answer = exchange(gateway, closing(post(body, target=path)))
    assert statuses(answer) == [400]
    assert says in answer
    assert b"Traceback" not in answer


def test_a_body_under_another_content_type_is_read_as_json(gateway: Gateway) -> None:
    data = GOOD.replace(b"host: x\r\n", b"host: x\r\ncontent-type: text/plain\r\n")
    assert statuses(exchange(gateway, data)) == [200]


def test_slowloris_on_the_head_and_on_the_body_gets_408(gateway: Gateway) -> None:
    # A byte every 20 ms: each one is progress to a per-read timer, never to these.
    head, _, body = GOOD.partition(b"\r\n\r\n")
    started = time.monotonic()
    slow_head = exchange(gateway, b"", trickle=head)
    slow_body = exchange(gateway, head + b"\r\n\r\n", trickle=body)
    assert statuses(slow_head) == [408] and b"headers took too long" in slow_head
    assert statuses(slow_body) == [408] and b"body took too long" in slow_body
    assert time.monotonic() - started < 5  # each timeout is 0.5 s


def test_a_caller_that_half_closes_after_its_request_is_taken_as_gone(gateway: Gateway) -> None:
    # The end of the caller's side cannot be told from a close: the request is
    # cancelled and nothing is answered (spec/gateway.md); an incomplete
    # request before it is invalid HTTP.
    assert exchange(gateway, GOOD, shut=True) == b""
    assert statuses(exchange(gateway, GOOD[:-5], shut=True)) == [400]


def test_pipelined_bytes_sent_while_answering_are_not_buffered_without_bound() -> None:
    backends = LocalBackends()
    backend = backends.add("slow", "openai", Hang())
    with backends:
        config = make_config(
            {"gpt": group(backend, strategy="round-robin")},
            max_header_bytes=MAX_HEAD,
            max_body_bytes=MAX_BODY,
            grace_period_s=0.1,  # the backend never answers: no need to wait for it
        )
        with serving(config) as gw:
            assert gw.port is not None
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
                sock.sendall(post(json.dumps(CHAT).encode()))
                time.sleep(0.2)  # the answer is under way (the backend never answers)
                sock.settimeout(0.5)
                flood, sent = b"x" * 65536, 0
                with pytest.raises(TimeoutError):
                    while sent < 256 * 1024 * 1024:
                        sent += sock.send(flood)
    # Before the fix the gateway read (and kept) all of it; now the socket
    # buffers fill: what the kernel holds, a few MiB, plus one request's worth.
    assert sent < 64 * 1024 * 1024


def _open_connections(gateway: Gateway) -> int:
    """The gateway's own count of caller connections, this one asking included."""
    metrics = b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
    answer = exchange(gateway, metrics + b"authorization: Bearer %s\r\n\r\n" % KEY.encode())
    line = answer.split(b"\nlb_gateway_open_connections ")[1]
    return int(line.split(b"\n")[0])


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "whole"])
def test_a_caller_that_stops_reading_is_let_go_after_the_body_timeout(streamed: bool) -> None:
    # The answer waits for a slow caller (memory stays bounded), but not for
    # ever: one that takes nothing for body_timeout_s is taken as gone, so it
    # cannot hold a connection, a task and an upstream stream indefinitely.
    backends = LocalBackends()
    backend = backends.add("big", "openai", default=Stream(chunks=8000, text="x" * 1000))
    with backends:
        config = make_config({"gpt": group(backend, strategy="round-robin")}, body_timeout_s=0.3)
        with serving(config) as gw:
            assert gw.port is not None
            with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                sock.sendall(closing(post(json.dumps({**CHAT, "stream": streamed}).encode())))
                # It reads nothing of an 8 MB answer, more than the socket buffers hold.
                open_now = [_open_connections(gw)]
                for _ in range(60):
                    if open_now[-1] == 1:
                        break
                    time.sleep(0.05)
                    open_now.append(_open_connections(gw))
    # At first it held its connection; then only the one asking was left open
    # (before the fix it was held for as long as the caller kept the socket).
    assert open_now[0] == 2
    assert open_now[-1] == 1
