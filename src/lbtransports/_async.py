"""The async client: ``httpcore`` underneath, one connection pool per backend.

It runs on asyncio and on trio (through anyio). Its twin is
:mod:`lbtransports._sync`: same loop, same :class:`CoreLink`, same
:class:`AttemptReader`; only the waiting and the HTTP library differ.

Every wait (the send and the status line, each read of the body) is in a
cancel scope ending at the attempt's deadline, as its :class:`AttemptTimer`
gives it (spec/transports.md section 4); httpcore's own read timeout, which
counts from each network read, is only a safety net. A read that a scope
interrupts leaves httpcore's connection unusable, which is what we want: at
a deadline the attempt is over and its connection is closed.
"""

from __future__ import annotations

import contextlib
import inspect
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Final, Literal, Self

import anyio
import h11
import h11._readers
import httpcore

from lbcore import ConfigError, TimeoutPhase, truncate

from ._client_base import CLIENT_HEADERS, ClientBase, CompressHook
from ._coalesce import CoalescingBackend
from ._completion import Completion
from ._config import ClientConfig
from ._errors import LoadBalancerError
from ._h1 import H1Exchange, H1Pool, origin_of
from ._log_guard import guard_httpcore_logs
from ._nested import nested_failure
from ._network import stream_failure
from ._observers import Observer, Observers
from ._reader import Failed, Succeeded
from ._run import Attempt, Compress, Finished, Queued, RequestRun, Wait
from ._stream import StreamView, completion_of
from ._timer import UPLOAD_PIECE
from ._tls import default_tls, tls_context
from ._tracefile import TraceTarget
from ._troubles import HTTPCORE_ERRORS, HTTPCORE_TROUBLES, Trouble, report, reported, trouble_of
from ._upstream import Upstream
from .wire import ChatRequest, Chunk, HttpRequest, Usage

__all__ = ("AsyncChatStream", "AsyncClient", "PlainHttp")

#: httpcore's trace events that mean the request has left: the body's end, or, when
#: httpcore swallowed a failed write to read the server's answer anyway, the wait
#: for the response head.
_SENT_EVENTS: Final = frozenset(
    {"http11.send_request_body.complete", "http11.receive_response_headers.started"}
)
#: What serves an AsyncClient's http:// backends: httpcore's pools, or its own h11 layer.
PlainHttp = Literal["httpcore", "h11"]
#: How long a request may wait for a connection slot to its backend.
DEFAULT_POOL_TIMEOUT_MS: Final = 30_000
#: After the terminator, how long and how many reads the body's own end may take
#: to come, for the connection to be pooled (spec/transports.md section 5).
BODY_END_WAIT_S: Final = 0.05
BODY_END_READS: Final = 8
#: Connections per httpcore pool (AsyncClient._pool says why they are split).
POOL_SHARD: Final = 8
#: Bounds on finishing an abandoned body: it is closed, so this is only a safety net.
_DRAIN_SECONDS: Final = 1.0
_DRAIN_READS: Final = 10_000


class AsyncChatStream(StreamView):
    """The chunks of one answer, as they arrive. Use ``async with``, then ``async for``.

    Closing it before the end (``aclose()``, leaving the ``async with``
    block, or cancelling the task) cancels the request and closes its
    connection. A failed request raises from the iteration.
    """

    def __init__(self, client: AsyncClient, run: RequestRun) -> None:
        super().__init__(client._link, run)
        self._chunks = client._drive(run)

    @property
    def upstream(self) -> Upstream | None:
        """With ``chat(..., keep_upstream=True)``: the answering backend's own
        events (taken as they are forwarded) or whole body; else None."""
        return self._run.upstream

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Chunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()
        self._cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class AsyncClient(ClientBase):
    """A load-balanced LLM client for async code (asyncio or trio).

    One client serves any number of concurrent requests on its event loop.
    Use it from one event loop only.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        trace: TraceTarget | None = None,
        max_connections: int = 100,
        pool_timeout_ms: int = DEFAULT_POOL_TIMEOUT_MS,
        compress: CompressHook | None = None,
        observers: Iterable[Observer] | Observers = (),
        plain_http: PlainHttp = "httpcore",
    ) -> None:
        """
        Args:
            config: the backends and the routing settings.
            trace: a path or a binary file to record every decision to, as a
                JSON-lines trace that ``python -m lbcore replay`` verifies.
            max_connections: connections in use allowed per backend. A request
                beyond them waits its turn (first come, first served) without
                its first-chunk timer running.
            pool_timeout_ms: how long a request may wait for one of them before
                it fails with :class:`LocalSaturationError`.
            compress: ``compress(request, backend, limit) -> ChatRequest`` (or a
                coroutine function), called when the prompt does not fit
                ``backend`` (spec/behaviour.md section 11.3).
            observers: callables given each decision as it is taken
                (:class:`Observation`), on the event loop; see :meth:`observe`.
            plain_http: what serves http:// backends: httpcore's pools, or
                ``"h11"``, the client's own HTTP/1.1 connections driven by h11
                directly (:mod:`._h1`: the same reading rules, about 0.3 ms of
                CPU less per streamed answer; the gateway's choice). https://
                backends always go through httpcore.
        """
        for name, value in (
            ("max_connections", max_connections),
            ("pool_timeout_ms", pool_timeout_ms),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"{name}: must be an integer >= 1, got {truncate(repr(value), 60)}"
                )
        if plain_http not in ("httpcore", "h11"):
            raise ConfigError(
                f"plain_http: must be 'httpcore' or 'h11', got {truncate(repr(plain_http), 60)}"
            )
        super().__init__(config, trace, compress=compress, observers=observers)
        guard_httpcore_logs()
        self._own_http1 = plain_http == "h11"
        self._h1_pools: dict[str, H1Pool] = {}
        self._max_connections = max_connections
        self._pool_timeout_s = pool_timeout_ms / 1000
        self._pools: dict[str, _BackendPools] = {}
        # Loaded once for all of this client's pools (a bundle takes milliseconds to read).
        self._tls = tls_context(config.ca_file)
        # Our own count of connections in use, in front of httpcore's pool:
        # a wait here is visible to the core (AttemptHeld), and httpcore's
        # pool, whose bookkeeping grows with every queued request, never queues.
        # Per backend: its slots, and how many there are.
        self._slots: dict[str, tuple[anyio.Semaphore, int]] = {}
        #: Attempts between preparing their send and letting go of its connection.
        self._running = 0

    # -- requests ---------------------------------------------------------------

    def chat(
        self,
        request: ChatRequest,
        *,
        request_id: str | None = None,
        attempt_budget: int | None = None,
        keep_upstream: bool = False,
    ) -> AsyncChatStream:
        """Send ``request`` and stream its answer.

        Nothing is sent before the stream is iterated: the request starts in
        the core then, and its answer streams as it arrives. With
        ``keep_upstream``, the backend's own events (or whole body) are kept on
        :attr:`AsyncChatStream.upstream` beside the chunks, for a caller that
        forwards them.
        """
        run = self._start(request, request_id, attempt_budget)
        if keep_upstream:
            run.upstream = Upstream()
        return AsyncChatStream(self, run)

    async def complete(
        self,
        request: ChatRequest,
        *,
        request_id: str | None = None,
        attempt_budget: int | None = None,
    ) -> Completion:
        """Send ``request`` and return its whole answer."""
        async with self.chat(
            request, request_id=request_id, attempt_budget=attempt_budget
        ) as stream:
            chunks = [chunk async for chunk in stream]
        return completion_of(stream, chunks)

    async def aclose(self) -> None:
        """Close every pooled connection and the trace file this client opened.

        Streams still reading keep their connections and may finish: the
        pools close once the last running attempt ends (spec/transports.md
        section 5), not under it, where its reads would fail as the backend's.
        """
        self._closed = True
        if not self._running:
            await self._close_pools()
        for inner in list(self._inner.values()):
            assert isinstance(inner, AsyncClient)
            await inner.aclose()
        self._close_trace()

    async def _close_pools(self) -> None:
        shards, self._pools = [s for each in self._pools.values() for s in each.shards], {}
        own, self._h1_pools = list(self._h1_pools.values()), {}
        with anyio.CancelScope(shield=True):
            for shard in shards:
                await shard.pool.aclose()
            for pool in own:
                await pool.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the loop ------------------------------------------------------------

    async def _drive(self, run: RequestRun) -> AsyncGenerator[Chunk, None]:
        link = self._link
        try:
            link.open(run)
            while True:
                step = link.next_step(run)
                if isinstance(step, Finished):
                    break
                if isinstance(step, Wait):
                    await self._sleep_until(step.until)
                    link.tick()
                    continue
                if isinstance(step, Queued):
                    await self._wait_in_queue(run, step.until)
                    continue
                if isinstance(step, Compress):
                    await self._compress(run, step)
                    continue
                # Closed explicitly: an abandoned inner generator would keep its
                # connection open until garbage collection.
                async with contextlib.aclosing(self._attempt(run, step.attempt)) as chunks:
                    async for chunk in chunks:
                        yield chunk
        finally:
            # Closed early, cancelled, or a bug: the core must not keep the request.
            link.cancel(run)
        if run.error is not None:
            raise self._caller_error(run)

    def _nested_client(self, config: ClientConfig) -> AsyncClient:
        return AsyncClient(
            config,
            max_connections=self._max_connections,
            pool_timeout_ms=int(self._pool_timeout_s * 1000),
            compress=self._compress_hook,
            observers=self._observers,
            plain_http="h11" if self._own_http1 else "httpcore",
        )

    async def _nested_attempt(
        self, run: RequestRun, attempt: Attempt, inner: AsyncClient
    ) -> AsyncGenerator[Chunk, None]:
        """``attempt`` on a backend that is a load balancer: through its own client.

        Each wait for the inner balancer's next chunk ends at the outer
        attempt's deadline, as a read from a backend does.
        """
        link = self._link
        # Only this attempt's inner error may become the caller's (an earlier one is spent).
        run.nested_error = None
        link.sent(run, attempt)
        try:
            async with inner.chat(run.request_for(attempt.backend)) as stream:
                chunks = aiter(stream)
                while True:
                    with anyio.move_on_after(link.wait_limit(run, attempt)) as waited:
                        chunk = await anext(chunks, None)
                    if waited.cancelled_caught:
                        link.expire(run, attempt, TimeoutPhase.READ)
                        return
                    if chunk is None:
                        break
                    visible = link.deliver(run, attempt, [chunk])
                    if not visible:
                        return  # the core gave up on it; leaving cancels the inner request
                    for each in visible:
                        yield each
                    link.resumed(attempt)
        except LoadBalancerError as error:
            run.nested_error = error
            link.finish(run, attempt, Failed(nested_failure(error)))
            return
        link.finish(run, attempt, Succeeded(stream.usage or Usage()))

    async def _compress(self, run: RequestRun, step: Compress) -> None:
        """Run the hook on the original request and report the result; awaited if async."""
        hook = self._compress_hook
        assert hook is not None  # the core asks only when the client has one
        ask = step.ask
        try:
            result = hook(run.chat, ask.backend, ask.limit)
            if inspect.isawaitable(result):
                result = await result
        except Exception as error:
            self._hook_failed(run, error)
            return
        self._shrunk(run, ask, result)

    async def _wait_in_queue(self, run: RequestRun, until: int | None) -> None:
        """Wait until the core dispatches or ends ``run``, or its queue timeout is due.

        Woken by whichever task frees the slot; cancelling the wait cancels the
        request (``_drive``'s ``finally``), which frees its place in the queue.
        """
        news = anyio.Event()
        if not self._link.wait_for_news(run, news.set):
            return
        if until is None:
            await news.wait()
            return
        while not news.is_set() and (left := until - self._link.now()) >= 0:
            with anyio.move_on_after((left + 1) / 1000):
                await news.wait()
        self._link.tick()  # the queue timeout is due: the core ends the request

    async def _sleep_until(self, until: int) -> None:
        while (left := until - self._link.now()) > 0:
            await anyio.sleep((left + 1) / 1000)

    async def _attempt(self, run: RequestRun, attempt: Attempt) -> AsyncGenerator[Chunk, None]:
        link, upstream = self._link, run.upstream
        inner = self._inner_client(attempt.backend)
        if inner is not None:
            assert isinstance(inner, AsyncClient)
            async with contextlib.aclosing(self._nested_attempt(run, attempt, inner)) as nested:
                async for chunk in nested:
                    yield chunk
            return
        reader = self._prepare(run, attempt)
        if reader is None:
            return
        async with contextlib.AsyncExitStack() as stack:
            # First in, so last out: after the attempt's connection is let go.
            self._running += 1
            stack.push_async_callback(self._attempt_left)
            exchange = await self._send(stack, run, attempt)
            if exchange is None:
                return
            reader.start(exchange.status, exchange.headers)
            finished = False  # the body's reads ran to their end (or failed)
            ended = False  # ... and the body ended where its framing said, without error
            try:
                while not attempt.over:  # another request's tick may cancel it
                    data = b""
                    try:
                        # Every read ends at the attempt's deadline, whatever bytes
                        # arrive meanwhile: httpcore's read timeout counts from each
                        # network read, and h11 yields nothing for framing bytes.
                        with anyio.move_on_after(link.wait_limit(run, attempt)) as waited:
                            data = await exchange.read()
                        if waited.cancelled_caught:
                            finished = True
                            link.expire(run, attempt, TimeoutPhase.READ)
                            break
                    except HTTPCORE_ERRORS as error:
                        finished = True
                        if trouble_of(HTTPCORE_TROUBLES, error) is not Trouble.LOST:
                            link.expire(run, attempt, TimeoutPhase.READ)
                            break
                        reader.broken(stream_failure(error))
                    if not data:
                        ended = not finished and reader.ending is None
                        finished = True
                    chunks = reader.feed(data) if data else reader.end()
                    if (
                        not chunks
                        and reader.ending is None
                        and attempt.timer.expired(link.now()) is not None
                    ):
                        # Bytes arrive (keep-alives), but no chunk came in time.
                        link.expire(run, attempt, TimeoutPhase.READ)
                        break
                    visible = link.deliver(run, attempt, chunks)
                    if visible:
                        if upstream is not None:
                            # Handed over with the chunks the caller sees, never before.
                            upstream.receive(attempt.target.provider, reader.take_events())
                        for chunk in visible:
                            yield chunk
                        link.resumed(attempt)
                    if reader.ending is not None:
                        link.finish(run, attempt, reader.ending)
                        done = run.completed
                        if upstream is not None and done and done.attempt == attempt.number:
                            # Only once the core took the success: a late one is dropped.
                            upstream.receive(
                                attempt.target.provider, reader.take_events(), reader.whole_body
                            )
                        break
                if reader.ended_before_body:
                    finished, ended = await _read_to_body_end(exchange)
            finally:
                await exchange.settle(finished, ended)

    async def _send(
        self, stack: contextlib.AsyncExitStack, run: RequestRun, attempt: Attempt
    ) -> _Exchange | None:
        """Send ``attempt`` and wait for its status line, keeping the answer open
        on ``stack``; None, already reported to the core, if that fails."""
        http = attempt.http
        assert http is not None
        if not await self._take_slot(stack, run, attempt):
            return None
        if self._own_http1 and http.url.startswith("http:"):
            return await self._send_h1(stack, run, attempt, http)
        response = await self._send_httpcore(stack, run, attempt, http)
        return None if response is None else _CoreExchange(response)

    async def _send_h1(
        self, stack: contextlib.AsyncExitStack, run: RequestRun, attempt: Attempt, http: HttpRequest
    ) -> H1Exchange | None:
        """:meth:`_send` over :mod:`._h1`'s own connections, by httpcore's rules."""
        link, config = self._link, self.config
        self._check_open()
        pool = self._h1_pools.get(attempt.backend)
        if pool is None:
            pool = self._h1_pools[attempt.backend] = H1Pool()
        origin = origin_of(http.url)
        link.resumed(attempt)
        limit = link.wait_limit(run, attempt)
        connect_s = min(config.connect_timeout_ms / 1000, limit)
        method = http.method.encode("ascii")
        headers = _request_headers(http)
        with anyio.move_on_after(limit) as scope:

            def uploaded() -> None:
                attempt.timer.progressed(link.now())
                scope.deadline = anyio.current_time() + link.wait_limit(run, attempt)

            for last_try in (False, True):
                exchange: H1Exchange | None = None
                new = True
                try:
                    exchange, new = await pool.exchange(origin, connect_s)
                    await exchange.send(method, origin, headers, http.body, uploaded)
                    if not attempt.sent:
                        # As httpcore traces it: the body is out, or its write
                        # failed and the answer is read anyway.
                        link.sent(run, attempt)
                        scope.deadline = anyio.current_time() + link.wait_limit(run, attempt)
                    await exchange.read_head()
                except BaseException as error:
                    if exchange is not None:
                        await exchange.release()  # not kept: closed
                    if not isinstance(error, HTTPCORE_ERRORS):
                        raise
                    trouble = trouble_of(HTTPCORE_TROUBLES, error)
                    if trouble is Trouble.READ_TIMEOUT:
                        break
                    if trouble is Trouble.LOST and not new and not last_try:
                        continue  # a stale pooled connection: once more, charged nothing
                    assert trouble is not None
                    report(link, run, attempt, reported(trouble, error, reused=not new))
                    return None
                stack.push_async_callback(exchange.release)
                return exchange
        link.expire(run, attempt, TimeoutPhase.READ)
        return None

    async def _send_httpcore(
        self, stack: contextlib.AsyncExitStack, run: RequestRun, attempt: Attempt, http: HttpRequest
    ) -> httpcore.Response | None:
        """:meth:`_send` through httpcore's pools."""
        link, config = self._link, self.config
        pool = self._pool(stack, attempt.backend, secure=http.url.startswith("https:"))
        # A wait for a slot is the client's own: the idle timer (and the connect
        # bound taken from it) starts once the attempt can go out.
        link.resumed(attempt)
        limit = link.wait_limit(run, attempt)
        idle_s = config.idle_timeout_ms / 1000
        timeouts = {
            # As in the sync client, a connect slower than the attempt's first
            # deadline is a connect timeout: httpcore's connect timer ends with it.
            "connect": min(config.connect_timeout_ms / 1000, limit),
            "read": idle_s,
            "write": idle_s,
            "pool": None,
        }
        with anyio.move_on_after(limit) as scope:
            opened = False  # this try opened its connection (not one from the pool)

            def aim() -> None:
                scope.deadline = anyio.current_time() + link.wait_limit(run, attempt)

            def uploaded() -> None:
                # The backend took a piece of the request: progress, as in the sync client.
                attempt.timer.progressed(link.now())
                aim()

            async def on_progress(name: str, info: object) -> None:
                nonlocal opened
                if name == "connection.connect_tcp.started":
                    opened = True
                elif name in _SENT_EVENTS and not attempt.sent:
                    # The body is out: the first-chunk deadline restarts from
                    # now, and the wait for the status line with it.
                    link.sent(run, attempt)
                    aim()
                    # Nothing later is wanted: httpcore reads the trace from the
                    # request's extensions at each step, so the response's
                    # steps (a dozen awaits per request) skip the callback.
                    extensions.pop("trace", None)

            headers = _request_headers(http)
            for last_try in (False, True):
                opened = False
                # Fresh for each try: a retried send is traced again.
                extensions: dict[str, object] = {"timeout": timeouts, "trace": on_progress}
                try:
                    return await stack.enter_async_context(
                        pool.stream(
                            http.method,
                            http.url,
                            headers=headers,
                            content=_BodyIterator(http.body, uploaded),
                            extensions=extensions,
                        )
                    )
                except HTTPCORE_ERRORS as error:
                    trouble = trouble_of(HTTPCORE_TROUBLES, error)
                    if trouble is Trouble.READ_TIMEOUT:
                        # httpcore's own read (or write) timer may fire a hair
                        # before the scope: a read timeout all the same, below.
                        break
                    if trouble is Trouble.LOST and not opened and not last_try:
                        # A pooled connection the backend had closed, before any
                        # byte of an answer: not the backend failing. Once more.
                        continue
                    assert trouble is not None
                    report(link, run, attempt, reported(trouble, error, reused=not opened))
                    return None
        link.expire(run, attempt, TimeoutPhase.READ)
        return None

    async def _take_slot(
        self, stack: contextlib.AsyncExitStack, run: RequestRun, attempt: Attempt
    ) -> bool:
        """Take one of the backend's connection slots, for as long as ``stack`` is open.

        Waiting for one is the client's queue, not the backend's slowness: the
        core hears the attempt is held, and its first-chunk deadline stops.
        False, already reported to the core, if the attempt is over instead.
        """
        known = self._slots.get(attempt.backend)
        if known is None:
            # Once per backend: finding its limit walks the config's backends.
            size = self._connections_for(attempt.backend, self._max_connections, closing=True)
            known = self._slots[attempt.backend] = (anyio.Semaphore(size), size)
        slots, size = known
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            if not self._link.held(run, attempt):
                return False
            got = False
            with anyio.move_on_after(self._pool_timeout_s):
                await slots.acquire()
                got = True
            if not got:
                self._link.saturated(run, attempt, size)
                return False
            if attempt.over:  # the request ended while it waited
                slots.release()
                return False
        stack.callback(slots.release)
        return True

    async def _attempt_left(self) -> None:
        self._running -= 1
        if self._closed and not self._running:
            # Closed while this attempt ran: the last one out closes the pools.
            await self._close_pools()

    def _pool(
        self, stack: contextlib.AsyncExitStack, backend: str, *, secure: bool
    ) -> httpcore.AsyncConnectionPool:
        """A pool with a connection free for this attempt, held until ``stack`` closes.

        A backend's connections are spread over pools of :data:`POOL_SHARD`:
        httpcore's pool walks every connection it holds (asking each idle one's
        socket whether it is readable, and counting idle ones once per idle one)
        whenever a request comes or goes, so one pool of hundreds of connections
        costs more per request than the request itself. The first pool with
        room is taken, so sequential requests keep reusing the same connection.
        """
        self._check_open()
        pools = self._pools.get(backend)
        if pools is None:
            # Our slots (_take_slot) never let more than this many in at once.
            size = self._connections_for(backend, self._max_connections, closing=True)
            tls = self._tls
            if tls is None and secure:
                tls = default_tls()  # made at the first https backend, not per connection
            pools = self._pools[backend] = _BackendPools(size, tls)
        shard = pools.with_room()
        shard.busy += 1
        stack.callback(shard.leave)
        return shard.pool


class _CoreExchange:
    """An httpcore response, read as the attempt's loop reads an exchange."""

    __slots__ = ("_body", "_response", "_state", "headers", "status")

    def __init__(self, response: httpcore.Response) -> None:
        self._response = response
        self.status = response.status
        self.headers = _text_headers(response.headers)
        assert isinstance(response.stream, AsyncIterable)
        self._body: AsyncIterator[bytes] = aiter(response.stream)
        self._state = _h11_state(response)

    async def read(self) -> bytes:
        """The next body bytes (b"" at its end), with what else the same network
        read brought: decoded and reported together, not one chunk at a time."""
        data = await anext(self._body, b"")
        if data and self._state is not None:
            data += _buffered_body(self._state)
        return data

    async def settle(self, finished: bool, ended: bool) -> None:
        """Let the connection go: pooled by httpcore only after a clean end."""
        if not finished:
            await _abandon(self._response, self._body)
        elif not (ended and _reusable(self._response)):
            await _close_connection(self._response)


#: What the attempt's loop reads an answer from.
_Exchange = _CoreExchange | H1Exchange


class _BackendPools:
    """A backend's pools, each made the first time every earlier one is full.

    Made up front, a backend allowed 100 connections would cost 13 pools to
    make and to close, for a client that may send it one request.
    """

    __slots__ = ("shards", "size", "tls")

    def __init__(self, size: int, tls: ssl.SSLContext | None) -> None:
        #: Connections allowed to the backend in all.
        self.size = size
        self.tls = tls
        self.shards: list[_PoolShard] = []

    def with_room(self) -> _PoolShard:
        for shard in self.shards:
            if shard.busy < shard.size:
                return shard
        made = len(self.shards) * POOL_SHARD
        # The caller holds one of at most ``size`` slots, so there is room left.
        shard = _PoolShard(min(POOL_SHARD, self.size - made), self.tls)
        self.shards.append(shard)
        return shard


class _PoolShard:
    """One of a backend's httpcore pools, and how many attempts are using it."""

    __slots__ = ("busy", "pool", "size")

    def __init__(self, size: int, tls: ssl.SSLContext | None) -> None:
        self.size = size
        self.busy = 0
        # retries=0: the core owns retries; nothing may retry underneath it.
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=tls, max_connections=size, retries=0, network_backend=CoalescingBackend()
        )

    def leave(self) -> None:
        self.busy -= 1


class _BodyIterator:
    """A request body httpcore can read without an async generator, in pieces.

    httpcore wraps plain bytes in an async generator; a deadline that
    interrupts the send leaves it suspended, and trio warns when it is
    collected. This iterator holds no frame to finish. httpcore writes each
    piece before it asks for the next, so each ask after the first means the
    backend took one: ``taken`` is told, and the send's deadline moves on
    (spec/transports.md section 4). It is read once: the pool never retries
    (retries=0).
    """

    __slots__ = ("_data", "_offset", "_taken")

    def __init__(self, data: bytes, taken: Callable[[], None]) -> None:
        self._data = data
        self._offset = 0
        self._taken = taken

    def __aiter__(self) -> _BodyIterator:
        return self

    async def __anext__(self) -> bytes:
        start = self._offset
        if start:
            self._taken()
        if start >= len(self._data):
            raise StopAsyncIteration
        self._offset = start + UPLOAD_PIECE
        return self._data[start : self._offset]


async def _read_to_body_end(exchange: _Exchange) -> tuple[bool, bool]:
    """After the terminator, read on to the body's end if it comes at once.

    The answer is complete and the caller has every chunk; only the connection
    is at stake. Returns (finished, ended) as the read loop keeps them: a read
    cut short by the bound leaves the body unfinished, to be abandoned.
    """
    with anyio.move_on_after(BODY_END_WAIT_S):
        for _ in range(BODY_END_READS):
            try:
                data = await exchange.read()
            except HTTPCORE_ERRORS:
                return True, False
            if not data:
                return True, True
    return False, False


async def _abandon(response: httpcore.Response, body: AsyncIterator[bytes]) -> None:
    """Close the connection, then run httpcore's body generators to their end.

    httpcore reads a body through nested async generators. Closing the
    outermost one leaves the inner ones suspended, and trio rightly warns when
    they are collected. Once the connection is closed, each further read ends
    at once (with buffered data, the end, or an error), so the chain finishes.
    """
    with anyio.CancelScope(shield=True), anyio.move_on_after(_DRAIN_SECONDS):
        await response.aclose()
        for _ in range(_DRAIN_READS):
            try:
                await anext(body)
            except (StopAsyncIteration, httpcore.NetworkError, httpcore.ProtocolError):
                return


def _reusable(response: httpcore.Response) -> bool:
    """Whether the pool may hand this response's connection to another request.

    Only after an answer (an error status's too) read to the end of its
    framing with nothing after it: bytes a server sent past that end wait in
    h11's buffer and would be read as the next request's answer (response
    desync). httpcore does not check that, so this looks at the connection's
    h11 state; when it cannot be found, the connection is not reused. A
    server that closes after an error status without saying so (uvicorn
    after a 500) costs the next request on it the stale connection's one
    uncharged retry, not the backend's failure (spec/transports.md section 5).
    """
    state = _h11_state(response)
    if state is None:
        return False
    left_over, closed = state.trailing_data
    return state.their_state is h11.DONE and not left_over and not closed


async def _close_connection(response: httpcore.Response) -> None:
    """Make httpcore close the connection under ``response`` instead of pooling it.

    httpcore pools a connection when both sides of its h11 state are done;
    marking our side failed makes it close the connection when the response
    is closed, through its own path. Closing the socket underneath is only
    the fallback: httpcore's trio backend cannot ask a closed socket whether
    it is readable.
    """
    state = _h11_state(response)
    if state is not None:
        state.send_failed()
        return
    stream = response.extensions.get("network_stream")
    if isinstance(stream, httpcore.AsyncNetworkStream):
        with anyio.CancelScope(shield=True):
            await stream.aclose()


def _buffered_body(state: h11.Connection) -> bytes:
    """The body bytes h11 can give without reading the network: the rest of what
    the last read brought.

    httpcore's body iterator gives one h11 event (one HTTP chunk) per step,
    through three generators; this takes the chunks already buffered at once.
    It takes only events that are surely data (:func:`_data_next`), never the
    body's end, which httpcore's iterator must see itself to finish the
    exchange and pool the connection; it stops at bytes that complete
    nothing (the iterator reads on) and at malformed framing (the
    iterator's next step raises it).
    """
    pieces = []
    while _data_next(state):
        try:
            event = state.next_event()
        except h11.RemoteProtocolError:
            break  # h11 is now in error: the iterator's next step reports it
        if type(event) is not h11.Data:
            break  # NEED_DATA: nothing was taken
        pieces.append(bytes(event.data))
    return b"".join(pieces)


def _data_next(state: h11.Connection) -> bool:
    """Whether h11's next event is surely a chunk's data, not the body's end.

    Read from h11's chunked reader and buffer; False whenever that cannot be
    told (another framing, or h11 changed shape).
    """
    reader = getattr(state, "_reader", None)
    if type(reader) is not h11._readers.ChunkedReader or reader._reading_trailer:
        return False
    # The buffer's own bytes, not a copy of them (which would make taking n
    # buffered chunks quadratic).
    buffered = getattr(getattr(state, "_receive_buffer", None), "_data", None)
    if not isinstance(buffered, bytearray):
        return False
    if reader._bytes_in_chunk:
        return bool(buffered)
    # A new chunk: its size line follows the CRLF still to discard; a size
    # starting with 0 may be the last chunk's, whose trailer ends the body.
    start = len(reader._bytes_to_discard)
    return buffered.find(b"\n", start) >= 0 and not buffered.startswith(b"0", start)


def _h11_state(response: httpcore.Response) -> h11.Connection | None:
    # The pool's byte stream wraps the HTTP/1.1 connection's, which holds the
    # connection and so its h11 state machine. None if httpcore changed shape.
    stream = getattr(response.stream, "_stream", None)
    state = getattr(getattr(stream, "_connection", None), "_h11_state", None)
    return state if isinstance(state, h11.Connection) else None


def _request_headers(http: HttpRequest) -> list[tuple[bytes, bytes]]:
    headers = [*CLIENT_HEADERS, *http.headers, ("Content-Length", str(len(http.body)))]
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _text_headers(headers: list[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in headers
    )
