"""Serving one chat request: streamed as the caller's events, or whole.

The answer is taken through the group's :class:`AsyncClient`. A streamed
answer's head is sent with its first chunk, so a request that fails before
any output gets a plain HTTP error in the caller's format; one that fails
after output started ends with the format's error event, never a clean
finish. While answering, the caller's side of the connection is watched: a
caller who leaves cancels the request, which closes the upstream connection.

When the caller's format is the answering backend's, the backend's own
events (or whole body) are forwarded, with the caller's model name
(:mod:`._passthrough`); across formats the answer is rebuilt from the
neutral chunks (spec/gateway.md, "Passthrough and translation").
"""

from __future__ import annotations

import contextlib
import re
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import anyio

from lbcore import StartAttempt
from lbtransports import Upstream
from lbtransports._async import AsyncChatStream, AsyncClient
from lbtransports._errors import (
    AllBackendsUnhealthyError,
    BackendError,
    BudgetExhaustedError,
    ContextLimitError,
    DeadlineExceededError,
    FailoverError,
    LoadBalancerError,
    RetryBudgetError,
)
from lbtransports._stream import completion_of
from lbtransports.wire import Chunk

from ._caller import Answer, CallerFormat, Parsed
from ._http import CallerGone, Connection
from ._metrics import Latencies
from ._outbox import Outbox
from ._passthrough import Passthrough

__all__ = ("answer", "new_request_id", "upstream_status")

_SSE_HEADERS: Final = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
)
_JSON: Final = (("content-type", "application/json"),)
#: What the wire layer adds to a 404's message (cut short, it may lack its ")").
_URL_TRIED: Final = re.compile(r" ?\(url tried: [^)]*\)?")


@dataclass(frozen=True, slots=True)
class _Job:
    conn: Connection
    client: AsyncClient
    caller: CallerFormat
    parsed: Parsed
    group: str
    request_id: str
    latencies: Latencies


def new_request_id() -> str:
    return uuid.uuid4().hex[:24]


def upstream_status(error: LoadBalancerError) -> int:
    """The status a caller gets for a request the backends could not answer."""
    if isinstance(error, ContextLimitError):
        return 400
    if isinstance(error, AllBackendsUnhealthyError | BudgetExhaustedError | RetryBudgetError):
        return 503
    if isinstance(error, DeadlineExceededError):
        return 504
    status = error.status if isinstance(error, FailoverError | BackendError) else None
    # A rate limit or a refusal of the request itself is the caller's news too;
    # anything else the backends did is a bad gateway.
    if status is not None and (
        status == 429 or (400 <= status < 500 and status not in (401, 403, 404, 408))
    ):
        return status
    return 502


def _where(stream: AsyncChatStream) -> tuple[str, int]:
    starts = [d for d in stream.decisions if isinstance(d, StartAttempt)]
    return (starts[-1].backend if starts else ""), len(starts)


def _lb_headers(request_id: str, backend: str, attempts: int) -> list[tuple[str, str]]:
    return [
        ("x-request-id", request_id),
        ("x-lb-backend", backend),
        ("x-lb-attempts", str(attempts)),
    ]


async def _watching(
    conn: Connection, job: Callable[[Outbox], Awaitable[bool]], *, streamed: bool
) -> bool:
    """Run ``job`` while watching for the caller leaving; False if they left.

    A streamed answer writes through the outbox it is given, whose writer
    runs beside it (:mod:`._outbox`); a whole answer writes directly. The job
    runs in this task: one task fewer to start per request.
    """
    result = False
    outbox = Outbox(conn)
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await conn.watch_for_leaving()
            group.cancel_scope.cancel()

        async def write() -> None:
            with contextlib.suppress(CallerGone):
                await outbox.run()
            # Closed (its job is done with it) or the caller is gone: either way
            # nothing more is written; a failure cancels the job.
            if conn.gone:
                group.cancel_scope.cancel()

        group.start_soon(watch)
        if streamed:
            group.start_soon(write)
        try:
            result = await job(outbox)
            if streamed:
                await outbox.close()
        except CallerGone:
            result = False
        group.cancel_scope.cancel()
    return result and not conn.gone


async def answer(
    conn: Connection,
    client: AsyncClient,
    caller: CallerFormat,
    parsed: Parsed,
    *,
    group: str,
    request_id: str,
    latencies: Latencies,
) -> bool:
    """Answer ``parsed``; whether the connection may serve another request."""
    job = _Job(conn, client, caller, parsed, group, request_id, latencies)
    if parsed.stream:
        return await _watching(conn, lambda outbox: _streamed(job, outbox), streamed=True)
    return await _watching(conn, lambda _: _whole(job), streamed=False)


def _caller_message(error: LoadBalancerError, client: AsyncClient) -> str:
    """``error``'s message as a gateway caller may read it: without the backends'
    URLs, which the library names for its own user (a 404's "url tried")."""
    message = _URL_TRIED.sub("", error.message)
    for target in client.config.targets:
        netloc = urllib.parse.urlsplit(target.base_url or "").netloc
        if netloc and netloc in message:
            message = message.replace(netloc, "[backend]")
    return message


async def _error(job: _Job, error: LoadBalancerError, attempts: tuple[str, int]) -> bool:
    status = upstream_status(error)
    await job.conn.respond(
        status,
        job.caller.error_body(status, _caller_message(error, job.client)),
        [*_JSON, *_lb_headers(job.request_id, *attempts)],
    )
    return True


def _keeps_upstream(job: _Job) -> bool:
    """Whether a backend of the group speaks the caller's format (passthrough may happen)."""
    return any(target.provider == job.caller.name for target in job.client.config.targets)


def _passthrough(job: _Job, upstream: Upstream | None, *, streamed: bool) -> Passthrough | None:
    """The passthrough renderer when the answering backend spoke the caller's format."""
    if upstream is None or upstream.provider != job.caller.name:
        return None
    if not (upstream.events if streamed else upstream.body is not None):
        return None  # the backend answered in the other shape (a forced stream setting)
    drop = job.caller.name == "openai" and not job.parsed.include_usage
    return Passthrough(upstream, job.group, drop_usage_only=drop)


async def _streamed(job: _Job, outbox: Outbox) -> bool:
    conn, client, caller, parsed = job.conn, job.client, job.caller, job.parsed
    group, request_id, latencies = job.group, job.request_id, job.latencies
    started = time.monotonic()
    renderer = caller.stream(request_id, parsed.model, parsed.include_usage)
    chat = client.chat(parsed.chat, request_id=request_id, keep_upstream=_keeps_upstream(job))
    async with chat as stream:
        first: Chunk | None
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = None
        except LoadBalancerError as error:
            return await _error(job, error, _where(stream))
        backend, attempts = _where(stream)
        upstream = stream.upstream
        passing = _passthrough(job, upstream, streamed=True)
        outbox.start(conn.head(200, [*_SSE_HEADERS, *_lb_headers(request_id, backend, attempts)]))
        if passing is not None:
            assert upstream is not None
            outbox.put(passing.take())

            def forward() -> None:
                # At each hand-over, before the client reads on: the terminator
                # and the response's end leave without waiting for the client to
                # finish with the upstream connection.
                outbox.put(passing.take())
                if passing.ended:
                    outbox.end()

            upstream.on_receive = forward
        else:
            outbox.put(renderer.start() + (renderer.chunk(first) if first else b""))
        try:
            async for chunk in stream:
                if passing is not None:
                    # Several chunks of one event share it: it goes with the first.
                    outbox.put(passing.take())
                else:
                    if upstream is not None:
                        upstream.take_events()  # another format's events: not kept
                    outbox.put(renderer.chunk(chunk))
                await outbox.room()
        except LoadBalancerError as error:
            message = _caller_message(error, client)
            outbox.put(renderer.error(upstream_status(error), message))
            outbox.end()
            return False  # a failed stream is not followed by another request
        if passing is not None:
            # What followed the last chunk, the terminator included.
            outbox.put(passing.take())
        else:
            usage = stream.usage
            outbox.put(
                renderer.finish(
                    usage.input_tokens if usage else 0, usage.output_tokens if usage else 0
                )
            )
        outbox.end()
        latencies.observe(group, backend, time.monotonic() - started)
    return True


async def _whole(job: _Job) -> bool:
    conn, client, caller, parsed = job.conn, job.client, job.caller, job.parsed
    group, request_id, latencies = job.group, job.request_id, job.latencies
    started = time.monotonic()
    chat = client.chat(parsed.chat, request_id=request_id, keep_upstream=_keeps_upstream(job))
    async with chat as stream:
        try:
            chunks = [chunk async for chunk in stream]
        except LoadBalancerError as error:
            return await _error(job, error, _where(stream))
        done = completion_of(stream, chunks)
    backend, attempts = _where(stream)
    latencies.observe(group, backend, time.monotonic() - started)
    passing = _passthrough(job, stream.upstream, streamed=False)
    if passing is not None:
        body = passing.whole()
        await conn.respond(200, body, [*_JSON, *_lb_headers(request_id, backend, attempts)])
        return True
    body = caller.whole(
        Answer(
            request_id=request_id,
            model=parsed.model,
            text=done.text,
            reasoning=done.reasoning,
            tool_calls=tuple((c.id, c.name, c.arguments) for c in done.tool_calls),
            finish_reason=done.finish_reason,
            input_tokens=done.usage.input_tokens,
            output_tokens=done.usage.output_tokens,
        )
    )
    await conn.respond(200, body, [*_JSON, *_lb_headers(request_id, backend, attempts)])
    return True
