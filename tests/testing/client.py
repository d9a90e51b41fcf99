"""A small test client: send what the wire layer builds, decode what comes back with it.

The sync and async collectors only gather the response's pieces; one shared
function then decodes them, so both modes are judged by the same rules.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import httpcore

from lbcore import Failure
from lbtransports.testing import LocalBackend
from lbtransports.wire import (
    BackendTarget,
    ChatRequest,
    ChatResponse,
    Chunk,
    CredentialSource,
    HttpRequest,
    Usage,
    UserMessage,
    WireError,
    build_request,
    parse_error,
    parse_response,
    stream_decoder,
)

PROVIDERS = ("openai", "anthropic", "gemini")
#: Every client read in these tests gives up after this long unless a test says otherwise.
READ_TIMEOUT = 2.0
#: What the transport raises when the connection breaks or times out.
TRANSPORT_ERRORS = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError)


def wire_request(
    backend: LocalBackend, *, stream: bool = True, model: str = "m1", key: str | None = None
) -> HttpRequest:
    """The request our wire layer sends to ``backend``."""
    target = BackendTarget(
        name=backend.name,
        provider=backend.provider.value,
        model=model,
        base_url=backend.base_url,
        credential=CredentialSource(key=key) if key else CredentialSource(),
    )
    request = ChatRequest(messages=(UserMessage(content="Say hi"),), stream=stream)
    return build_request(target, request)


def timeouts(read: float = READ_TIMEOUT) -> dict[str, dict[str, float]]:
    return {"timeout": {"connect": 2.0, "read": read, "write": 2.0, "pool": 5.0}}


@dataclass
class Outcome:
    """What a request got: status, raw pieces, and what the wire layer made of them."""

    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    pieces: list[bytes] = field(default_factory=list)
    #: The transport's exception (a reset, a timeout...), None when the body ended cleanly.
    error: Exception | None = None
    chunks: list[Chunk] = field(default_factory=list)
    failure: Failure | None = None
    usage: Usage | None = None
    response: ChatResponse | None = None
    elapsed: float = 0.0
    #: The client stopped reading on its own (``stop_after``), so the stream is unfinished.
    cut_short: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.decode().lower() == name:
                return value.decode()
        return None


def interpret(provider: str, http: HttpRequest, outcome: Outcome) -> Outcome:
    """Decode the gathered pieces as a transport would; a broken body still ends the decoder."""
    if outcome.status is None:
        return outcome
    if outcome.status != 200:
        outcome.failure = parse_error(provider, outcome.status, outcome.headers, outcome.body)
        return outcome
    if not http.stream:
        if outcome.error is None:
            try:
                outcome.response = parse_response(
                    provider, outcome.status, outcome.headers, outcome.body
                )
            except WireError as error:
                outcome.failure = error.failure
        return outcome
    decoder = stream_decoder(provider, secrets=http.secrets)
    try:
        for piece in outcome.pieces:
            outcome.chunks += decoder.feed(piece)
        # A reset or early close ends the body; a timeout or a client that
        # stopped reading does not, so the stream is left unfinished.
        unfinished = outcome.cut_short or isinstance(outcome.error, httpcore.TimeoutException)
        if not unfinished:
            outcome.chunks += decoder.end()
    except WireError as error:
        outcome.chunks += error.chunks
        outcome.failure = error.failure
    outcome.usage = decoder.usage
    return outcome


def fetch(
    pool: httpcore.ConnectionPool,
    backend: LocalBackend,
    *,
    stream: bool = True,
    read_timeout: float = READ_TIMEOUT,
    stop_after: float | None = None,
    http: HttpRequest | None = None,
) -> Outcome:
    """Send one request and gather the answer; ``stop_after`` seconds cuts a long body short."""
    http = http or wire_request(backend, stream=stream)
    outcome = Outcome()
    started = time.monotonic()
    try:
        with pool.stream(
            http.method,
            http.url,
            headers=list(http.headers),
            content=http.body,
            extensions=timeouts(read_timeout),
        ) as response:
            outcome.status = response.status
            outcome.headers = list(response.headers)
            for piece in response.iter_stream():
                outcome.pieces.append(piece)
                if stop_after is not None and time.monotonic() - started > stop_after:
                    outcome.cut_short = True
                    break
    except TRANSPORT_ERRORS as error:
        outcome.error = error
    outcome.elapsed = time.monotonic() - started
    return interpret(backend.provider.value, http, outcome)


async def afetch(
    pool: httpcore.AsyncConnectionPool,
    backend: LocalBackend,
    *,
    stream: bool = True,
    read_timeout: float = READ_TIMEOUT,
    stop_after: float | None = None,
) -> Outcome:
    """:func:`fetch` for async code."""
    http = wire_request(backend, stream=stream)
    outcome = Outcome()
    started = time.monotonic()
    try:
        async with pool.stream(
            http.method,
            http.url,
            headers=list(http.headers),
            content=http.body,
            extensions=timeouts(read_timeout),
        ) as response:
            outcome.status = response.status
            outcome.headers = list(response.headers)
            # Stopped by cancelling, not by breaking out of the loop: the
            # cancellation runs through httpcore's nested async generators and
            # finishes them, where a break would leave them to the garbage
            # collector (and trio warns about that).
            with anyio.move_on_after(math.inf if stop_after is None else stop_after) as cut:
                async for piece in response.aiter_stream():
                    outcome.pieces.append(piece)
            outcome.cut_short = cut.cancelled_caught
    except TRANSPORT_ERRORS as error:
        outcome.error = error
    outcome.elapsed = time.monotonic() - started
    return interpret(backend.provider.value, http, outcome)


def text_chunks(texts: Sequence[str]) -> list[Chunk]:
    return [Chunk(text=text) for text in texts]


def ending_chunks(provider: str, usage: Usage) -> list[Chunk]:
    """The chunks after the text: OpenAI reports usage on its own last chunk."""
    if provider == "openai":
        return [Chunk(finish_reason="stop"), Chunk(usage=usage)]
    return [Chunk(finish_reason="stop", usage=usage)]
