"""Telling the sync client the moment its request has been sent, and on what.

The first-chunk deadline counts from the send (spec/behaviour.md section
8.3), but ``requests`` sends and waits for the status line in one call.
urllib3 asks its connection for the response right after the request went
out, so a connection class that runs a hook there sees exactly that moment.
The hook is set per request in a context variable: the sending thread is the
one running the request, so no other request can see it. The connection also
says whether it was already open (taken from the pool) when the request
started, which tells a stale pooled connection from a backend that failed.

Through the same watch the connection bounds its I/O by the attempt's
timers (:mod:`._sync_deadline`): it sends the request in pieces, each under
the time left and each counted as progress, and gives http.client a
response whose every ``recv`` is bounded the same way.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from ._sync_deadline import WaitLeft, deadline_response, send_in_pieces

__all__ = ("SendWatch", "SentAdapter", "watching")

#: Called once the request is sent; returns the seconds left to wait for the status line.
SentHook = Callable[[], float]


class SendWatch:
    """What one request's sending looked like, filled in by the connection,
    and how long its I/O may wait."""

    __slots__ = ("fired", "on_sent", "progressed", "reused", "wait_left")

    def __init__(
        self, on_sent: SentHook, wait_left: WaitLeft, progressed: Callable[[], None]
    ) -> None:
        self.on_sent = on_sent
        #: Seconds the attempt may still wait, asked before every send and recv.
        self.wait_left = wait_left
        #: The backend took a piece of the request.
        self.progressed = progressed
        #: The connection was open already: it came from the pool.
        self.reused = False
        self.fired = False


_WATCH: contextvars.ContextVar[SendWatch | None] = contextvars.ContextVar(
    "lbtransports_send_watch", default=None
)


@contextlib.contextmanager
def watching(watch: SendWatch) -> Iterator[None]:
    """Let ``watch`` see the request this thread sends next."""
    token = _WATCH.set(watch)
    try:
        yield
    finally:
        _WATCH.reset(token)


def _starting(connection: urllib3.connection.HTTPConnection) -> None:
    watch = _WATCH.get()
    if watch is None:
        return
    watch.reused = not connection.is_closed
    # Per request, as an instance attribute, dropped once the response exists.
    connection.response_class = deadline_response(watch.wait_left)  # type: ignore[assignment]


def _fire(connection: urllib3.connection.HTTPConnection) -> None:
    watch = _WATCH.get()
    if watch is None or watch.fired:
        return
    watch.fired = True  # once per request, even if urllib3 asked again
    # urllib3 applies the connection's timeout to the socket before the status
    # line; the response's reader re-aims it before every recv anyway.
    connection.timeout = watch.on_sent()


def _ipv4_literal(host: str) -> bool:
    """Whether ``host`` is an IPv4 address as written canonically (``127.0.0.1``;
    not ``127.1`` or ``010.0.0.1``, which getaddrinfo reads its own way)."""
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, host)) == host
    except (OSError, ValueError, TypeError):
        return False


class _SentHTTPConnection(urllib3.connection.HTTPConnection):
    """Reports to the watch; the HTTPS class below shares it (urllib3's HTTPS
    connection is an HTTP connection, so these methods sit above its own)."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        _starting(self)
        try:
            if self.sock is None:
                # Connect before the head is built, as urllib3 already does for
                # HTTPS: a refused connection fails without formatting headers.
                self.connect()
            super().request(*args, **kwargs)
        except BaseException:
            self.__dict__.pop("response_class", None)  # no response will need it
            raise

    def _new_conn(self) -> socket.socket:
        host, timeout = self._dns_host, self.timeout
        if (
            self.source_address is not None
            or not (timeout is None or isinstance(timeout, int | float))
            or not _ipv4_literal(host)
        ):
            return super()._new_conn()
        # An IPv4 address needs no resolving, yet urllib3 asks getaddrinfo for
        # it (about 5 µs a connection). The socket is made, set and connected
        # as urllib3 does, and its failure raised as urllib3 raises it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            for option in self.socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            sock.connect((host, self.port))
            # In the try: an interrupt up to the return must not leave the
            # connected socket to the garbage collector.
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        except BaseException as error:
            sock.close()
            if isinstance(error, TimeoutError):
                raise urllib3.exceptions.ConnectTimeoutError(
                    self, f"Connection to {self.host} timed out. (connect timeout={timeout})"
                ) from error
            if isinstance(error, OSError):
                raise urllib3.exceptions.NewConnectionError(
                    self, f"Failed to establish a new connection: {error}"
                ) from error
            raise

    def send(self, data: Any) -> None:
        watch = _WATCH.get()
        if watch is None or self.sock is None or not isinstance(data, bytes | bytearray):
            super().send(data)
            return
        # sendall's timeout bounds the whole call: urllib3 would send the body
        # under the connect timeout. Pieces, each under the time left, instead.
        send_in_pieces(self.sock, data, watch.wait_left, watch.progressed)

    def getresponse(self) -> Any:
        _fire(self)
        try:
            return super().getresponse()
        finally:
            # The response holds its timers; the pooled connection must not keep
            # the attempt (and its prompt) alive.
            self.__dict__.pop("response_class", None)


class _SentHTTPSConnection(_SentHTTPConnection, urllib3.connection.HTTPSConnection):
    pass


class _IdleConnections:
    """A pool's idle connections, newest first, without urllib3's placeholders.

    urllib3 fills a new pool's queue with one None per slot, and puts a None
    back for a connection it dropped, so that a blocking pool has something to
    wait on. These pools never block (the client sizes them and the core
    bounds what is in flight), and to a pool that does not block an empty
    queue means what a None means: open a new connection. Without them a pool
    is made and closed in O(1), not O(pool size): 100 placeholders put and
    drained cost about 0.3 ms for every backend a client first reaches.

    Nor does it need a ``queue.LifoQueue``, whose three conditions exist for
    waiting: made for every backend a client first reaches, they cost about
    5 µs, and each get or put takes one. A list under one lock does what a
    pool that never waits asks: LIFO, bounded, ``queue.Empty`` when empty
    (urllib3 drains a closing pool until then), ``queue.Full`` when full.
    """

    __slots__ = ("_idle", "_lock", "maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            return
        with self._lock:
            if 0 < self.maxsize <= len(self._idle):
                raise queue.Full
            self._idle.append(item)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        # Never waits, even if asked to: no pool of these blocks (pool_block=False).
        with self._lock:
            if not self._idle:
                raise queue.Empty
            return self._idle.pop()

    def qsize(self) -> int:
        return len(self._idle)


class _SentHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _SentHTTPConnection
    # Not a LifoQueue, as urllib3 types it: it has every method urllib3 calls on one.
    QueueCls = _IdleConnections  # type: ignore[assignment]


class _SentHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _SentHTTPSConnection
    # Not a LifoQueue, as urllib3 types it: it has every method urllib3 calls on one.
    QueueCls = _IdleConnections  # type: ignore[assignment]


#: Pools remembered per adapter (one per URL a backend is sent to): more is odd URLs.
_POOLS_KEPT = 16


class SentAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections report to the :func:`watching` watch.

    Without a proxy it also finds a request's pool with less work than
    requests does (the same pool, as the URL and TLS settings pick it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: (URL, verify, cert) -> the pool requests' lookup gave for them, while it is open.
        self._pools: dict[
            tuple[str, bool | str, tuple[str, str] | str | None],
            urllib3.connectionpool.HTTPConnectionPool,
        ] = {}
        super().__init__(*args, **kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _SENT_POOLS

    def get_connection_with_tls_context(
        self,
        request: requests.PreparedRequest,
        verify: bool | str | None,
        proxies: Mapping[str, str] | None = None,
        cert: tuple[str, str] | str | None = None,
    ) -> urllib3.connectionpool.ConnectionPool:
        if proxies or verify is None:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        # No proxy (the client's own sending): requests would parse the URL
        # twice to find none, then again, with the TLS settings, to key the
        # pool, about 12 µs a request. The pool it found is kept per URL and
        # settings for as long as it is open (a pool the manager let go, or
        # closed, is looked up again).
        assert request.url is not None
        key = (request.url, verify, cert)
        pool = self._pools.get(key)
        if pool is not None and pool.pool is not None:
            return pool
        try:
            host, tls = self.build_connection_pool_key_attributes(request, verify, cert)
        except ValueError as error:
            raise requests.exceptions.InvalidURL(error, request=request) from error
        manager: urllib3.PoolManager = self.poolmanager
        pool = manager.connection_from_host(**host, pool_kwargs=dict(tls))
        if len(self._pools) >= _POOLS_KEPT:
            self._pools.clear()
        self._pools[key] = pool
        return pool

    def request_url(
        self, request: requests.PreparedRequest, proxies: Mapping[str, str] | None
    ) -> str:
        if proxies:
            return super().request_url(request, proxies)
        # No proxy: only the path goes on the request line, as requests sends it.
        return request.path_url

    def close(self) -> None:
        self._pools.clear()
        super().close()

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        # With trust_env and a proxy, requests sends through a manager of its
        # own, built here: it must use the same connections.
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = _SENT_POOLS
        return manager


_SENT_POOLS: dict[str, type[urllib3.connectionpool.HTTPConnectionPool]] = {
    "http": _SentHTTPPool,
    "https": _SentHTTPSPool,
}
