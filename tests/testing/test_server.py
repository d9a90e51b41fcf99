"""The server itself (threaded mode): routes, records, scripts, connections, shutdown."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterator

import httpcore
import msgspec
import pytest

from lbcore import FailureKind
from lbtransports.testing import (
    ErrorEvent,
    Fail,
    Hang,
    KeepAlive,
    LocalBackend,
    LocalBackends,
    Malformed,
    NoTerminator,
    Received,
    Reset,
    Stall,
    Stream,
)
from lbtransports.wire import parse_error

from .client import PROVIDERS, fetch, timeouts, wire_request

PATHS = {
    "openai": ("/v1/chat/completions", "", "/v1"),
    "anthropic": ("/v1/messages", "", ""),
    "gemini": ("/v1beta/models/m1:streamGenerateContent", "alt=sse", "/v1beta"),
}


@pytest.fixture
def pool() -> Iterator[httpcore.ConnectionPool]:
    with httpcore.ConnectionPool() as pool:
        yield pool


def raw_request(path: str, body: bytes = b"{}", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def connect(backend: LocalBackend) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", backend.port), timeout=2.0)
    sock.settimeout(2.0)
    return sock


def wait_for(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the server"
        time.sleep(0.005)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(65536):
        data += piece
    return data


# ------------------------------------------------------------------ where requests land


@pytest.mark.parametrize("provider", PROVIDERS)
def test_received_records_path_model_headers_and_body(
    pool: httpcore.ConnectionPool, provider: str
) -> None:
    backends = LocalBackends()
    backend = backends.add("x", provider, Fail(503))
    with backends:
        assert backend.base_url == f"http://127.0.0.1:{backend.port}{PATHS[provider][2]}"
        http = wire_request(backend, model="m1", key="sk-test-key-123")
        first = fetch(pool, backend, http=http)
        second = fetch(pool, backend)
    assert first.status == 503 and second.status == 200
    assert first.header("x-local-backend") == "x"
    received = backend.received
    assert [r.behaviour for r in received] == [Fail(503), Stream()]
    record = received[0]
    assert isinstance(record, Received)
    assert (record.backend, record.method) == ("x", "POST")
    assert (record.path, record.query) == PATHS[provider][:2]
    assert record.model == "m1"
    assert record.stream is True
    assert record.body == http.body
    assert record.header("Content-Type") == "application/json"
    key_header = {"openai": "authorization", "anthropic": "x-api-key", "gemini": "x-goog-api-key"}
    assert record.header(key_header[provider]) in ("Bearer sk-test-key-123", "sk-test-key-123")
    assert all(name == name.lower() for name, _ in record.headers)
    body = record.json()
    assert body.get("model", "m1") == "m1"
    assert "messages" in body or "contents" in body
    assert backend.requests_total == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_wrong_path_is_a_provider_shaped_404_that_keeps_the_script(provider: str) -> None:
    backends = LocalBackends()
    backend = backends.add("x", provider, Fail(429))
    with backends, connect(backend) as sock:
        sock.sendall(raw_request("/v2/nothing?a=1", extra="connection: close\r\n"))
        answer = read_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    failure = parse_error(provider, 404, [], body)
    assert failure.kind is FailureKind.HTTP
    assert failure.message == "no route for POST /v2/nothing"
    assert failure.provider_type is not None
    [record] = backend.received
    assert (record.path, record.query, record.behaviour) == ("/v2/nothing", "a=1", None)
    assert backend.remaining == (Fail(429),)


def test_a_request_h11_cannot_parse_gets_400_and_harms_nothing() -> None:
    backends = LocalBackends()
    backend = backends.add("x", "openai")
    with backends:
        with connect(backend) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert read_all(sock).startswith(b"HTTP/1.1 400 ")
        with httpcore.ConnectionPool() as pool:
            assert fetch(pool, backend).failure is None
        backends.wait_idle()
    assert backend.errors == ()


# ------------------------------------------------------------------ scripts


def test_the_script_plays_in_order_then_the_default_forever(
    pool: httpcore.ConnectionPool,
) -> None:
    backends = LocalBackends()
    backend = backends.add("a", "openai", Fail(429, retry_after="1"), Stream(1), default=Fail(503))
    with backends:
        statuses = [fetch(pool, backend).status for _ in range(4)]
        assert statuses == [429, 200, 503, 503]
        assert backend.remaining == ()
        backend.script(Fail(401))
        assert backend.default == Fail(503)
        backend.script(Stream(), default=Fail(502))
        assert [fetch(pool, backend).status for _ in range(3)] == [200, 502, 502]


def test_keep_alive_reuses_one_connection_across_answers(pool: httpcore.ConnectionPool) -> None:
    backends = LocalBackends()
    backend = backends.add("a", "anthropic", Fail(429), Stream(), Fail(500), default=Stream())
    with backends:
        outcomes = [fetch(pool, backend, stream=n % 2 == 0) for n in range(6)]
        assert [o.status for o in outcomes] == [429, 200, 500, 200, 200, 200]
        assert backend.requests_total == 6
        assert backend.connections_total == 1
        assert backend.open_connections == 1  # pooled, idle
    assert backend.open_connections == 0


# ------------------------------------------------------------------ connections


def test_open_connections_go_back_to_zero_when_clients_leave() -> None:
    backends = LocalBackends()
    backend = backends.add("a", "openai", default=Stream(50, delay_ms=10))
    with backends:
        with httpcore.ConnectionPool() as pool:
            out = fetch(pool, backend, stop_after=0.05)  # leaves mid-stream
            assert out.failure is None and 0 < len(out.chunks) < 50
            socks = [connect(backend) for _ in range(3)]
            wait_for(lambda: backend.open_connections == 3)  # accepted, idle
            for sock in socks:
                sock.close()
        backends.wait_idle(timeout=2.0)
        assert backend.open_connections == 0
        assert backend.connections_total == 4
    assert backend.errors == ()


LEAVING_POINTS = ("mid-request", "after the request", "after the first bytes")


@pytest.mark.parametrize("abortive", [False, True], ids=["fin", "rst"])
def test_a_client_may_leave_at_any_point(abortive: bool) -> None:
    behaviours = [
        Stream(5, delay_ms=5),
        Stream(),
        Fail(500),
        Hang(),
        Stall(1),
        KeepAlive(5),
        Reset(1),
        Reset(before_headers=True),
        Malformed(1, kind="sse"),
        NoTerminator(),
        ErrorEvent(1),
    ]
    backends = LocalBackends()
    backend = backends.add("a", "anthropic", default=Hang())
    request = raw_request("/v1/messages", b'{"stream": true}')
    with backends:
        for behaviour in behaviours:
            for point in LEAVING_POINTS:
                backend.script(behaviour)
                sock = connect(backend)
                if abortive:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with sock:
                    if point == "mid-request":
                        sock.sendall(request[:-5])
                        continue
                    sock.sendall(request)
                    if point == "after the first bytes":
                        sock.settimeout(0.05)  # a hang sends no bytes at all
                        with contextlib.suppress(ConnectionResetError, TimeoutError):
                            sock.recv(10)
        backends.wait_idle(timeout=2.0)
    assert backend.errors == ()
    assert backend.connections_total == len(behaviours) * len(LEAVING_POINTS)


def test_wait_idle_names_the_busy_backends() -> None:
    backends = LocalBackends()
    backends.add("quiet", "openai")
    busy = backends.add("busy", "gemini")
    with backends, connect(busy):
        wait_for(lambda: busy.open_connections == 1)
        with pytest.raises(TimeoutError, match=r"busy: 1") as caught:
            backends.wait_idle(timeout=0.05)
        assert "quiet" not in str(caught.value)


def test_a_client_leaving_a_hang_frees_the_connection() -> None:
    backends = LocalBackends()
    backend = backends.add("a", "openai", default=Hang())
    with backends:
        with httpcore.ConnectionPool() as pool:
            out = fetch(pool, backend, read_timeout=0.1)
            assert isinstance(out.error, httpcore.ReadTimeout)
        backends.wait_idle(timeout=1.0)


@pytest.mark.parametrize("behaviour", [Hang(), Stall(1)])
def test_stopping_mid_hang_closes_connections_promptly(behaviour: Hang | Stall) -> None:
    backends = LocalBackends()
    backend = backends.add("a", "gemini", default=behaviour)
    with backends:
        sock = connect(backend)
        sock.sendall(raw_request("/v1beta/models/m:streamGenerateContent"))
        wait_for(lambda: bool(backend.received))
        started = time.monotonic()
    stopped = time.monotonic() - started
    with sock:
        read_all(sock)  # the server's close arrives: EOF, not a timeout
    assert stopped < 1.0
    assert backend.open_connections == 0


def test_reset_is_a_tcp_rst() -> None:
    backends = LocalBackends()
    backend = backends.add("a", "openai", default=Reset(before_headers=True))
    with backends, connect(backend) as sock:
        sock.sendall(raw_request("/v1/chat/completions"))
        with pytest.raises(ConnectionResetError):
            read_all(sock)


def test_a_closed_backend_refuses_connections(pool: httpcore.ConnectionPool) -> None:
    backends = LocalBackends()
    refused = backends.closed("c", "gemini")
    with backends:
        assert refused.refused
        assert refused.base_url.endswith("/v1beta")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", refused.port), timeout=1.0)
        http = wire_request(refused)
        with pytest.raises(httpcore.ConnectError):
            pool.request(http.method, http.url, content=http.body, extensions=timeouts())
        # The port stays bound, so nothing else can take it meanwhile.
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", refused.port))
    assert refused.connections_total == 0


def test_backends_can_serve_again_after_stopping(pool: httpcore.ConnectionPool) -> None:
    backends = LocalBackends(thread_backend="trio")
    backend = backends.add("a", "anthropic")
    for _ in range(2):
        with backends:
            assert backends.serving
            assert fetch(pool, backend).failure is None
        assert not backends.serving
    assert backend.requests_total == 2


# ------------------------------------------------------------------ misuse


def test_misuse_is_refused_early() -> None:
    backends = LocalBackends()
    backend = backends.add("a", "openai")
    with pytest.raises(RuntimeError, match="enter its LocalBackends"):
        _ = backend.base_url
    with pytest.raises(ValueError, match="already a backend named 'a'"):
        backends.add("a", "gemini")
    with pytest.raises(ValueError, match="unknown provider 'grok'"):
        backends.add("b", "grok")
    with pytest.raises(TypeError, match="must be a behaviour"):
        backends.add("b", "openai", "stream")  # type: ignore[arg-type]
    with backends:
        with pytest.raises(RuntimeError, match="while the backends are serving"):
            backends.add("b", "openai")
        with pytest.raises(RuntimeError, match="already serving"):
            backends.__enter__()
    assert list(backends) == [backend] and "a" in backends and len(backends) == 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: Stream(-1),
        lambda: Stream(delay_ms=-5),
        lambda: Fail(100),
        lambda: Fail(304),
        lambda: Stall(-1),
        lambda: Reset(2, before_headers=True),
    ],
)
def test_impossible_behaviours_are_refused(make: object) -> None:
    with pytest.raises(ValueError):
        make()  # type: ignore[operator]


def test_behaviours_are_a_tagged_union() -> None:
    from lbtransports.testing import Behaviour

    steps = [Stream(2, delay_ms=5), Fail(429, retry_after="1"), Hang(), Reset(before_headers=True)]
    encoded = msgspec.json.encode(steps)
    assert msgspec.json.decode(encoded, type=list[Behaviour]) == steps


def test_a_bug_in_an_answer_is_recorded_and_ends_only_its_connection(
    monkeypatch: pytest.MonkeyPatch, pool: httpcore.ConnectionPool
) -> None:
    from lbtransports.testing import _server

    real_play = _server.play

    async def broken_once(behaviour: object, exchange: object) -> object:
        monkeypatch.setattr(_server, "play", real_play)
        raise RuntimeError("a bug")

    monkeypatch.setattr(_server, "play", broken_once)
    backends = LocalBackends()
    backend = backends.add("a", "openai")
    with backends:
        assert fetch(pool, backend).status is None  # the connection just closed
        assert fetch(pool, backend).failure is None  # the next one is served
    assert backend.errors == ("RuntimeError: a bug",)
