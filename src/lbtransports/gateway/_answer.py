"""Serving one chat request: streamed as the caller's events, or whole.

The answer is taken through the group's :class:`AsyncClient`. A streamed
answer's head is sent with its first chunk, so a request that fails before
any output gets a plain HTTP error in the caller's format; one that fails
after output started ends with the format's error event, never a clean
finish. While answering, the caller's side of the connection is watched: a
caller who leaves cancels the request, which closes the upstream connection.

The answer is always translated through the neutral chunks, also when the
caller's format is the backend's: the client hands out chunks, not the
upstream bytes (spec/gateway.md, "Translation").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import anyio

from lbcore import StartAttempt
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

__all__ = ("answer", "new_request_id", "upstream_status")

_SSE_HEADERS: Final = (
    ("content-type", "text/event-stream"),
    ("cache-control", "no-cache"),
)
_JSON: Final = (("content-type", "application/json"),)


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


async def _watching(conn: Connection, job: Callable[[], Awaitable[bool]]) -> bool:
    """Run ``job`` while watching for the caller leaving; False if they left."""
    result = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await conn.watch_for_leaving()
            group.cancel_scope.cancel()

        async def run() -> None:
            nonlocal result
            try:
                result = await job()
            except CallerGone:
                result = False
            group.cancel_scope.cancel()

        group.start_soon(watch)
        group.start_soon(run)
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
    return await _watching(conn, lambda: (_streamed if parsed.stream else _whole)(job))


async def _error(
    conn: Connection,
    caller: CallerFormat,
    error: LoadBalancerError,
    rid: str,
    attempts: tuple[str, int],
) -> bool:
    status = upstream_status(error)
    await conn.respond(
        status,
        caller.error_body(status, error.message),
        [*_JSON, *_lb_headers(rid, *attempts)],
    )
    return True


async def _streamed(job: _Job) -> bool:
    conn, client, caller, parsed = job.conn, job.client, job.caller, job.parsed
    group, request_id, latencies = job.group, job.request_id, job.latencies
    started = time.monotonic()
    renderer = caller.stream(request_id, parsed.model, parsed.include_usage)
    async with client.chat(parsed.chat, request_id=request_id) as stream:
        first: Chunk | None
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            first = None
        except LoadBalancerError as error:
            return await _error(conn, caller, error, request_id, _where(stream))
        backend, attempts = _where(stream)
        latencies.started(group, backend)
        try:
            await conn.start_response(
                200, [*_SSE_HEADERS, *_lb_headers(request_id, backend, attempts)]
            )
            await conn.send_body(renderer.start() + (renderer.chunk(first) if first else b""))
            try:
                async for chunk in stream:
                    await conn.send_body(renderer.chunk(chunk))
            except LoadBalancerError as error:
                await conn.send_body(renderer.error(upstream_status(error), error.message))
                await conn.end_response()
                return False  # a failed stream is not followed by another request
            usage = stream.usage
            await conn.send_body(
                renderer.finish(
                    usage.input_tokens if usage else 0, usage.output_tokens if usage else 0
                )
            )
            await conn.end_response()
            latencies.observe(group, backend, time.monotonic() - started)
        finally:
            latencies.ended(group, backend)
    return True


async def _whole(job: _Job) -> bool:
    conn, client, caller, parsed = job.conn, job.client, job.caller, job.parsed
    group, request_id, latencies = job.group, job.request_id, job.latencies
    started = time.monotonic()
    async with client.chat(parsed.chat, request_id=request_id) as stream:
        try:
            chunks = [chunk async for chunk in stream]
        except LoadBalancerError as error:
            return await _error(conn, caller, error, request_id, _where(stream))
        done = completion_of(stream, chunks)
    backend, attempts = _where(stream)
    latencies.observe(group, backend, time.monotonic() - started)
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
