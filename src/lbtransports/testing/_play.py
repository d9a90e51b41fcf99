"""Playing one behaviour: the bytes, pauses and closes that answer one request.

Each behaviour has a streamed form (an SSE body) and a form for a request
that asked for one JSON answer; :class:`Exchange` holds what both need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, NoReturn

import anyio
import msgspec

from lbtransports.wire._sse import DEFAULT_MAX_LINE

from ._behaviours import (
    Behaviour,
    ErrorEvent,
    Fail,
    Hang,
    KeepAlive,
    Malformed,
    NoTerminator,
    Reset,
    Stall,
    Stream,
    fill_in,
)
from ._formats import ProviderFormat, Reply
from ._http import Ending, ServerConnection

__all__ = ("Exchange", "play", "play_no_route")

#: The chunks sent before a fault are the ones a default stream sends.
_CHUNKS: Final = Stream()
_KEEP_ALIVE: Final = b": keep-alive\n\n"
_NOT_JSON: Final = b'data: {"choices": [{"delta": {"content": oops\n\n'
#: A line just over the SSE parser's default limit, which it refuses as a protocol error.
_TOO_LONG: Final = b"data: " + b"x" * DEFAULT_MAX_LINE + b"\n\n"
_JSON_TYPE: Final = ("content-type", "application/json")
_SSE_HEADERS: Final = (("content-type", "text/event-stream"), ("cache-control", "no-cache"))
_ENCODER: Final = msgspec.json.Encoder()


class Exchange(msgspec.Struct, frozen=True, kw_only=True):
    """One request being answered."""

    connection: ServerConnection
    format: ProviderFormat
    reply: Reply
    #: Whether the request asked for a streamed answer.
    stream: bool
    #: Headers every response carries (which backend answered).
    headers: tuple[tuple[str, str], ...]


async def play(behaviour: Behaviour, exchange: Exchange) -> Ending:
    """Answer with ``behaviour``. Raises ``ClientGone`` when the client leaves mid-way."""
    match behaviour:
        case Stream():
            return await _stream(behaviour, exchange)
        case Fail():
            return await _fail(behaviour, exchange)
        case Hang():
            await _wait_forever()
        case Stall():
            await _open(exchange, behaviour.after_chunks)
            await _wait_forever()
        case KeepAlive():
            return await _keep_alive(behaviour, exchange)
        case Reset():
            return await _reset(behaviour, exchange)
        case Malformed():
            return await _malformed(behaviour, exchange)
        case NoTerminator():
            return await _no_terminator(behaviour, exchange)
        case ErrorEvent():
            return await _error_event(behaviour, exchange)
    raise AssertionError(f"unknown behaviour {behaviour!r}")  # pragma: no cover


async def play_no_route(exchange: Exchange, method: str, path: str) -> Ending:
    """The provider's 404 for a path it does not serve."""
    body = exchange.format.error_body(404, f"no route for {method} {path}", None, None)
    await _send_json(exchange, 404, body)
    return Ending.KEEP


# ------------------------------------------------------------------ helpers


async def _send_json(
    exchange: Exchange,
    status: int,
    body: dict[str, object] | bytes,
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    data = body if isinstance(body, bytes) else _ENCODER.encode(body)
    headers = (_JSON_TYPE, *exchange.headers, *extra)
    await exchange.connection.send_whole(status, headers, data)


def _whole_answer(exchange: Exchange, stream: Stream = _CHUNKS) -> bytes:
    """The JSON body a non-streamed ``stream`` answer would have."""
    text = "".join(stream.texts(exchange.reply.backend))
    return _ENCODER.encode(exchange.format.answer(exchange.reply, text, stream.usage))


async def _open(exchange: Exchange, chunks: int) -> None:
    """Start an answer that a fault will break.

    A stream gets its headers, opening events and ``chunks`` chunks; a JSON
    answer gets headers announcing the length of a whole default answer.
    """
    connection = exchange.connection
    if not exchange.stream:
        length = ("content-length", str(len(_whole_answer(exchange))))
        await connection.start_response(200, (_JSON_TYPE, *exchange.headers, length))
        return
    await connection.start_response(200, (*_SSE_HEADERS, *exchange.headers))
    await connection.send_body(exchange.format.opening(exchange.reply, _CHUNKS.input_tokens))
    await _chunks(exchange, _CHUNKS, chunks)


async def _chunks(exchange: Exchange, stream: Stream, count: int) -> None:
    for i in range(count):
        if stream.delay_ms:
            await anyio.sleep(stream.delay_ms / 1000)
        text = fill_in(stream.text, exchange.reply.backend, i)
        await exchange.connection.send_body(exchange.format.text_event(exchange.reply, text))


async def _wait_forever() -> NoReturn:
    # Only the client leaving or the server stopping ends this (both cancel it).
    while True:
        await anyio.sleep(3600)


async def _half_answer(exchange: Exchange) -> None:
    answer = _whole_answer(exchange)
    await exchange.connection.send_body(answer[: len(answer) // 2])


# ------------------------------------------------------------------ behaviours


async def _stream(behaviour: Stream, exchange: Exchange) -> Ending:
    if not exchange.stream:
        if behaviour.delay_ms and behaviour.chunks:
            await anyio.sleep(behaviour.delay_ms * behaviour.chunks / 1000)
        await _send_json(exchange, 200, _whole_answer(exchange, behaviour))
        return Ending.KEEP
    connection = exchange.connection
    await connection.start_response(200, (*_SSE_HEADERS, *exchange.headers))
    await connection.send_body(exchange.format.opening(exchange.reply, behaviour.input_tokens))
    await _chunks(exchange, behaviour, behaviour.chunks)
    await connection.send_body(exchange.format.closing(exchange.reply, behaviour.usage))
    await connection.end_body()
    return Ending.KEEP


async def _fail(behaviour: Fail, exchange: Exchange) -> Ending:
    message = fill_in(behaviour.message, exchange.reply.backend)
    if behaviour.status < 300:
        body = exchange.format.stream_error(message, behaviour.error_type)
    else:
        body = exchange.format.error_body(
            behaviour.status, message, behaviour.error_type, behaviour.retry_after
        )
    extra = () if behaviour.retry_after is None else (("retry-after", behaviour.retry_after),)
    await _send_json(exchange, behaviour.status, body, extra)
    return Ending.KEEP


async def _keep_alive(behaviour: KeepAlive, exchange: Exchange) -> Ending:
    connection = exchange.connection
    if exchange.stream:
        await _open(exchange, behaviour.after_chunks)
        beat = _KEEP_ALIVE
    else:
        # No content-length: h11 sends a chunked body that can trickle forever.
        await connection.start_response(200, (_JSON_TYPE, *exchange.headers))
        beat = b" "
    while True:
        await anyio.sleep(behaviour.interval_ms / 1000)
        await connection.send_body(beat)


async def _reset(behaviour: Reset, exchange: Exchange) -> Ending:
    if not behaviour.before_headers:
        await _open(exchange, behaviour.after_chunks)
        if not exchange.stream and behaviour.after_chunks:
            await _half_answer(exchange)
    return Ending.ABORT


async def _no_terminator(behaviour: NoTerminator, exchange: Exchange) -> Ending:
    await _open(exchange, behaviour.chunks)
    if not exchange.stream:
        # Fewer bytes than the content-length promised, then a clean close.
        await _half_answer(exchange)
        return Ending.CLOSE
    await exchange.connection.end_body()  # a proper end of the HTTP body, minus the terminator
    return Ending.KEEP


async def _malformed(behaviour: Malformed, exchange: Exchange) -> Ending:
    if not exchange.stream:
        await _send_json(exchange, 200, b'{"id": "not json at all')
        return Ending.KEEP
    await _open(exchange, behaviour.after_chunks)
    await exchange.connection.send_body(_NOT_JSON if behaviour.kind == "json" else _TOO_LONG)
    await exchange.connection.end_body()
    return Ending.KEEP


async def _error_event(behaviour: ErrorEvent, exchange: Exchange) -> Ending:
    message = fill_in(behaviour.message, exchange.reply.backend)
    if not exchange.stream:
        await _send_json(exchange, 200, exchange.format.stream_error(message, behaviour.error_type))
        return Ending.KEEP
    await _open(exchange, behaviour.after_chunks)
    await exchange.connection.send_body(exchange.format.error_event(message, behaviour.error_type))
    await exchange.connection.end_body()
    return Ending.KEEP
