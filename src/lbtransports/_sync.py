"""The blocking client: ``requests`` underneath, one connection pool per backend.

Its twin is :mod:`lbtransports._async`; the two differ only in how they wait
and which HTTP library they call. Decisions come from :class:`CoreLink`,
response bytes are understood by :class:`AttemptReader`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Iterator
from types import TracebackType
from typing import Final, Self

import requests
import urllib3

from lbcore import TimeoutPhase

from ._client_base import ClientBase, CompressHook
from ._completion import Completion
from ._config import ClientConfig
from ._errors import LoadBalancerError
from ._nested import nested_failure
from ._network import stream_failure
from ._observers import Observer, Observers
from ._reader import Failed, Succeeded
from ._run import Attempt, Compress, Finished, Queued, RequestRun, Wait
from ._stream import StreamView, completion_of
from ._sync_body import BodyReader
from ._sync_route import Route
from ._sync_sent import SendWatch, watching
from ._tracefile import TraceTarget
from ._troubles import REQUESTS_ERRORS, REQUESTS_TROUBLES, Trouble, report, reported, trouble_of
from .wire import ChatRequest, Chunk, Usage

__all__ = ("ChatStream", "Client")

#: After the terminator, how long and how many reads the body's own end may take
#: to come, for the connection to be pooled (spec/transports.md section 5).
BODY_END_WAIT_S: Final = 0.05
BODY_END_READS: Final = 8


class ChatStream(StreamView):
    """The chunks of one answer, as they arrive. Iterate it, or use it in ``with``.

    Closing it before the end (``close()``, leaving the ``with`` block, or
    breaking out of the loop and dropping it) cancels the request and closes
    its connection. A failed request raises from the iteration.
    """

    def __init__(self, client: Client, run: RequestRun) -> None:
        super().__init__(client._link, run)
        self._chunks = client._drive(run)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Chunk:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()
        self._cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Client(ClientBase):
    """A load-balanced LLM client for blocking code; safe to share between threads.

    Every request goes through the decision core: which backend, when to
    retry, when to fail over, when to give up. The client carries the core's
    decisions out over HTTP and reports back what happened.
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        trace: TraceTarget | None = None,
        pool_size: int = 100,
        trust_env: bool = False,
        compress: CompressHook | None = None,
        observers: Iterable[Observer] | Observers = (),
    ) -> None:
        """
        Args:
            config: the backends and the routing settings.
            trace: a path or a binary file to record every decision to, as a
                JSON-lines trace that ``python -m lbcore replay`` verifies.
            pool_size: connections kept open per backend. More threads than
                this at once each open a connection of their own and close it
                after their request: keep it at least the threads you run.
            trust_env: let ``requests`` read proxies and ``.netrc`` from the
                environment. Off by default: a ``.netrc`` entry would replace
                a backend's own credential.
            compress: ``compress(request, backend, limit) -> ChatRequest``, called
                when the prompt does not fit ``backend``: the shorter request is
                re-estimated and sent if it fits (spec/behaviour.md section 11.3).
            observers: callables given each decision as it is taken
                (:class:`Observation`); see also :meth:`observe`.
        """
        super().__init__(config, trace, compress=compress, observers=observers)
        self._pool_size = pool_size
        self._trust_env = trust_env
        self._routes: dict[str, Route] = {}
        self._routes_lock = threading.Lock()
        #: Each running request's latest response (closed by then, but for an interrupt).
        self._responses: dict[RequestRun, requests.Response] = {}

    # -- requests ---------------------------------------------------------------

    def chat(
        self,
        request: ChatRequest,
        *,
        request_id: str | None = None,
        attempt_budget: int | None = None,
    ) -> ChatStream:
        """Send ``request`` and stream its answer.

        Nothing is sent before the stream is iterated: the request starts in
        the core then, and its answer streams as it arrives.
        """
        return ChatStream(self, self._start(request, request_id, attempt_budget))

    def complete(
        self,
        request: ChatRequest,
        *,
        request_id: str | None = None,
        attempt_budget: int | None = None,
    ) -> Completion:
        """Send ``request`` and return its whole answer."""
        with self.chat(request, request_id=request_id, attempt_budget=attempt_budget) as stream:
            chunks = list(stream)
        return completion_of(stream, chunks)

    def close(self) -> None:
        """Close every pooled connection and the trace file this client opened.

        Streams still reading keep their connections and may finish (urllib3's
        pools close only their idle ones); spec/transports.md section 5.
        """
        with self._routes_lock:
            self._closed = True
            routes, self._routes = list(self._routes.values()), {}
        for route in routes:
            route.close()
        for inner in list(self._inner.values()):
            assert isinstance(inner, Client)
            inner.close()
        self._close_trace()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the loop ------------------------------------------------------------

    def _drive(self, run: RequestRun) -> Generator[Chunk, None, None]:
        link = self._link
        try:
            link.open(run)
            while True:
                step = link.next_step(run)
                if isinstance(step, Finished):
                    break
                if isinstance(step, Wait):
                    self._sleep_until(step.until)
                    link.tick()
                    continue
                if isinstance(step, Queued):
                    self._wait_in_queue(run, step.until)
                    continue
                if isinstance(step, Compress):
                    self._compress(run, step)
                    continue
                yield from self._attempt(run, step.attempt)
        finally:
            # Closed early, interrupted, or a bug: the core must not keep the request,
            # nor this client the request's connection.
            link.cancel(run)
            response = self._responses.pop(run, None)
            if response is not None:
                response.close()
        if run.error is not None:
            raise self._caller_error(run)

    def _nested_client(self, config: ClientConfig) -> Client:
        return Client(
            config,
            pool_size=self._pool_size,
            trust_env=self._trust_env,
            compress=self._compress_hook,
            observers=self._observers,
        )

    def _nested_attempt(self, run: RequestRun, attempt: Attempt, inner: Client) -> Iterator[Chunk]:
        """``attempt`` on a backend that is a load balancer: through its own client.

        The inner balancer's timers bound its waits; the outer ones act on
        each chunk it yields (spec/transports.md section 11.3).
        """
        link = self._link
        # Only this attempt's inner error may become the caller's (an earlier one is spent).
        run.nested_error = None
        link.sent(run, attempt)
        stream = inner.chat(run.request_for(attempt.backend))
        try:
            for chunk in stream:
                visible = link.deliver(run, attempt, [chunk])
                if not visible:
                    return  # the core gave up on it: closing the stream cancels the inner request
                yield from visible
                link.resumed(attempt)
        except LoadBalancerError as error:
            run.nested_error = error
            link.finish(run, attempt, Failed(nested_failure(error)))
            return
        finally:
            stream.close()
        link.finish(run, attempt, Succeeded(stream.usage or Usage()))

    def _compress(self, run: RequestRun, step: Compress) -> None:
        """Run the hook on the original request (outside the guard) and report the result."""
        hook = self._compress_hook
        assert hook is not None  # the core asks only when the client has one
        ask = step.ask
        try:
            result = hook(run.chat, ask.backend, ask.limit)
        except Exception as error:
            self._hook_failed(run, error)
            return
        self._shrunk(run, ask, result)

    def _wait_in_queue(self, run: RequestRun, until: int | None) -> None:
        """Block until the core dispatches or ends ``run``, or its queue timeout is due.

        Woken by whichever thread frees the slot (under the core's guard); the
        guard is not held while waiting.
        """
        news = threading.Event()
        if not self._link.wait_for_news(run, news.set):
            return
        if until is None:
            news.wait()
            return
        while not news.is_set() and (left := until - self._link.now()) >= 0:
            news.wait((left + 1) / 1000)
        self._link.tick()  # the queue timeout is due: the core ends the request

    def _sleep_until(self, until: int) -> None:
        while (left := until - self._link.now()) > 0:
            time.sleep((left + 1) / 1000)

    def _attempt(self, run: RequestRun, attempt: Attempt) -> Iterator[Chunk]:
        link, config = self._link, self.config
        inner = self._inner_client(attempt.backend)
        if inner is not None:
            assert isinstance(inner, Client)
            yield from self._nested_attempt(run, attempt, inner)
            return
        reader = self._prepare(run, attempt)
        if reader is None:
            return
        http = attempt.http
        assert http is not None
        limit = max(link.wait_limit(run, attempt), 0.001)

        def sent() -> float:
            link.sent(run, attempt)
            return max(link.wait_limit(run, attempt), 0.001)

        #: Once the answer is complete: when reading on to the body's end stops.
        body_end_by: list[float] = []

        def wait_left() -> float:
            left = link.wait_limit(run, attempt)
            return min(left, body_end_by[0] - time.monotonic()) if body_end_by else left

        def progressed() -> None:
            attempt.timer.progressed(link.now())

        response = None
        for last_try in (False, True):
            watch = SendWatch(sent, wait_left, progressed)
            try:
                with watching(watch):
                    # Noted in the same statement: an interrupt landing before
                    # the ``with response`` below must not leave it open.
                    response = self._responses[run] = self._route(attempt.backend).send(
                        http,
                        # Connecting only: sending and reading are bounded by the
                        # attempt's timers, before every piece (_sync_deadline.py).
                        (min(config.connect_timeout_ms / 1000, limit), limit),
                    )
                break
            except REQUESTS_ERRORS as error:
                trouble = trouble_of(REQUESTS_TROUBLES, error)
                if trouble is None:
                    raise
                if trouble is Trouble.LOST and watch.reused and not last_try:
                    # A pooled connection the backend had closed, before any byte
                    # of an answer: not the backend failing. Once more (urllib3
                    # closed that connection, so this opens a new one).
                    continue
                report(link, run, attempt, reported(trouble, error, reused=watch.reused))
                return
        assert response is not None
        with response:
            reader.start(response.status_code, tuple(response.headers.items()))
            body = BodyReader(response)
            while not attempt.over:  # the core may give up on it from another thread
                if attempt.timer.expired(link.now()) is not None:
                    # Bytes arrive (keep-alives), but no chunk came in time.
                    link.expire(run, attempt, TimeoutPhase.READ)
                    break
                try:
                    # Every chunk that came together; every recv underneath is
                    # bounded by the time left.
                    data = body.read()
                except REQUESTS_ERRORS as error:
                    trouble = trouble_of(REQUESTS_TROUBLES, error)
                    if trouble is None:
                        raise
                    if trouble is not Trouble.LOST:
                        link.expire(run, attempt, TimeoutPhase.READ)
                        break
                    reader.broken(stream_failure(error))
                    data = b""
                chunks = reader.feed(data) if data else reader.end()
                visible = link.deliver(run, attempt, chunks)
                if visible:
                    yield from visible
                    link.resumed(attempt)
                if reader.ending is not None:
                    link.finish(run, attempt, reader.ending)
                    break
            if reader.ended_before_body and not body.ended:
                body_end_by.append(time.monotonic() + BODY_END_WAIT_S)
                _read_to_body_end(body, body_end_by[0])
            # Not given back, the connection is closed with the response.
            body.finish()

    def _route(self, backend: str) -> Route:
        with self._routes_lock:
            self._check_open()
            route = self._routes.get(backend)
            if route is None:
                size = self._connections_for(backend, self._pool_size, closing=True)
                route = self._routes[backend] = Route(
                    size, trust_env=self._trust_env, ca_file=self.config.ca_file
                )
            return route


def _read_to_body_end(body: BodyReader, deadline: float) -> None:
    """After the terminator, read on to the body's end if it comes at once.

    The answer is complete and the caller has every chunk; only the connection
    is at stake: it is pooled if the body ends cleanly by ``deadline``
    (monotonic), which the socket's re-aimed timeout also honours (``wait_left``).
    """
    for _ in range(BODY_END_READS):
        left = deadline - time.monotonic()
        if left <= 0 or not body.wait_for_more(left):
            return
        try:
            body.read()
        except (urllib3.exceptions.HTTPError, OSError):
            return
        if body.ended:
            return
