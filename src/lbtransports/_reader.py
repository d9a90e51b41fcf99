"""Reading one attempt's response, without I/O: bytes in, chunks and an ending out.

Both clients pump the bytes they receive through an :class:`AttemptReader`,
so what a status, a body or a broken stream *means* is decided once, here,
and the clients only move bytes and map their HTTP library's exceptions.
"""

from __future__ import annotations

from typing import Final

import msgspec

from lbcore import Failure, FailureKind, clean_text

from .wire import (
    Chunk,
    Headers,
    HttpRequest,
    SseEvent,
    StreamDecoder,
    ToolCallDelta,
    Usage,
    WireError,
    header_value,
    parse_error,
    parse_response,
    redact,
    redact_secrets,
    stream_decoder,
    with_url_tried,
)

__all__ = ("AttemptReader", "Ending", "Failed", "Succeeded")

#: Error bodies are read up to this size; the rest cannot change the diagnosis.
ERROR_BODY_LIMIT: Final = 64 * 1024
#: A whole (non-streamed) answer larger than this is refused rather than buffered.
WHOLE_BODY_LIMIT: Final = 32 * 1024 * 1024


class Succeeded(msgspec.Struct, frozen=True):
    usage: Usage


class Failed(msgspec.Struct, frozen=True):
    failure: Failure


Ending = Succeeded | Failed


def _media_type(headers: Headers) -> str:
    return (header_value(headers, "content-type") or "").split(";", 1)[0].strip().lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _protocol(message: str) -> Failure:
    return Failure(kind=FailureKind.PROTOCOL, message=message)


class AttemptReader:
    """Turns one response (status, headers, body pieces) into chunks and an ending.

    Call :meth:`start` once with the status line, then :meth:`feed` for each
    piece and :meth:`end` at end of body. Once :attr:`ending` is set the
    attempt is over: the client reports it and closes the connection, even if
    more bytes could be read.
    """

    def __init__(self, provider: str, request: HttpRequest, *, keep_events: bool = False) -> None:
        self._provider = provider
        self._request = request
        self._keep_events = keep_events
        self._status = 0
        self._headers: Headers = ()
        self._body = bytearray()
        self._decoder: StreamDecoder | None = None
        #: A 2xx whose body is a web page (a proxy's or a captive portal's), not an answer.
        self._html = False
        self.ending: Ending | None = None
        #: The answer ended at its terminator, before the body's own end: the
        #: client may read on to that end, to keep the connection (spec/transports.md §5).
        self.ended_before_body: bool = False

    @property
    def _secrets(self) -> tuple[str, ...]:
        return self._request.secrets

    def start(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        self._status, self._headers = status, headers
        media = _media_type(headers)
        self._html = 200 <= status <= 299 and media == "text/html"
        if 200 <= status <= 299 and self._request.stream and not (_is_json(media) or self._html):
            # A JSON body answering a stream request (an error object sent
            # with 200, or a server that ignored stream) is read whole; so is
            # a web page, to say what it was instead of "the stream ended early".
            self._decoder = stream_decoder(
                self._provider, secrets=self._secrets, keep_events=self._keep_events
            )

    def feed(self, data: bytes) -> list[Chunk]:
        return self._without_secrets(self._feed(data))

    def end(self) -> list[Chunk]:
        """The body is complete (the server ended it cleanly)."""
        return self._without_secrets(self._end())

    def _without_secrets(self, chunks: list[Chunk]) -> list[Chunk]:
        # A backend that echoes the key in its answer must not pass it on: the
        # answer may be shown, logged, or (through the gateway) sent to others.
        # A key cut across two chunks is not caught; one in a chunk is.
        if not chunks or not self._secrets:
            return chunks
        return [_redacted(chunk, self._secrets) for chunk in chunks]

    def _feed(self, data: bytes) -> list[Chunk]:
        if self.ending is not None:
            return []
        if self._decoder is not None:
            try:
                chunks = self._decoder.feed(data)
            except WireError as error:
                return self._decoder_failed(error)
            if self._decoder.finished:  # the terminator: the answer is complete
                self.ending = Succeeded(self._decoder.usage)
                self.ended_before_body = True
            return chunks
        self._body += data
        if self._html and len(self._body) >= ERROR_BODY_LIMIT:
            self.ending = Failed(self._html_failure())
        elif not self._ok and len(self._body) >= ERROR_BODY_LIMIT:
            # Enough to read the error; the rest is not worth waiting for.
            self.ending = Failed(self._error_failure())
        elif self._ok and len(self._body) > WHOLE_BODY_LIMIT:
            self.ending = Failed(_protocol(f"answer larger than {WHOLE_BODY_LIMIT} bytes"))
        return []

    def _end(self) -> list[Chunk]:
        if self.ending is not None:
            return []
        if self._decoder is not None:
            try:
                chunks = self._decoder.end()
            except WireError as error:
                return self._decoder_failed(error)
            self.ending = Succeeded(self._decoder.usage)
            return chunks
        if not self._ok:
            self.ending = Failed(self._error_failure())
            return []
        if self._html:
            self.ending = Failed(self._html_failure())
            return []
        try:
            answer = parse_response(
                self._provider,
                self._status,
                self._headers,
                bytes(self._body),
                secrets=self._secrets,
            )
        except WireError as error:
            self.ending = Failed(error.failure)
            return []
        self.ending = Succeeded(answer.usage)
        calls = [
            ToolCallDelta(index=i, id=call.id, name=call.name, arguments=call.arguments)
            for i, call in enumerate(answer.tool_calls)
        ]
        if not (answer.text or answer.reasoning or calls):
            return []
        return [
            Chunk(
                text=answer.text,
                reasoning=answer.reasoning,
                tool_calls=tuple(calls),
                finish_reason=answer.finish_reason,
                usage=answer.usage,
            )
        ]

    def take_events(self) -> list[SseEvent]:
        """The backend's events read since the last call (with ``keep_events``)."""
        return self._decoder.take_events() if self._decoder is not None else []

    @property
    def whole_body(self) -> bytes | None:
        """A whole answer's body as the backend sent it, once it succeeded."""
        if self._decoder is None and isinstance(self.ending, Succeeded):
            body = bytes(self._body)
            if any(secret.encode() in body for secret in self._secrets):
                # The backend's own key must not travel on, even inside an answer.
                body = redact_secrets(body.decode("utf-8", "replace"), self._secrets).encode()
            return body
        return None

    def broken(self, failure: Failure) -> None:
        """The transport lost the response (reset, closed early, undecodable framing).

        An error status keeps its own diagnosis from what was read of the body:
        the status says more than the broken connection that carried it.
        """
        if self.ending is None:
            self.ending = Failed(failure if self._ok or not self._status else self._error_failure())

    @property
    def _ok(self) -> bool:
        return 200 <= self._status <= 299

    def _error_failure(self) -> Failure:
        failure = parse_error(
            self._provider,
            self._status,
            self._headers,
            bytes(self._body[:ERROR_BODY_LIMIT]),
            secrets=self._secrets,
        )
        # A 404 from a wrong base_url must say where the request went.
        return with_url_tried(failure, self._request.url, self._secrets)

    def _html_failure(self) -> Failure:
        start = bytes(self._body[:200]).decode("utf-8", "replace")
        message = f"HTTP {self._status} with a text/html body, not an answer: {start}"
        return _protocol(clean_text(redact(message, self._secrets)))

    def _decoder_failed(self, error: WireError) -> list[Chunk]:
        # Chunks completed before the failure still belong to the answer.
        self.ending = Failed(error.failure)
        return list(error.chunks)


def _redacted(chunk: Chunk, secrets: tuple[str, ...]) -> Chunk:
    """``chunk`` with every known secret in its text replaced (itself if none is)."""
    # Once per chunk: the plain loop, without a generator, for the usual miss.
    for secret in secrets:
        if secret in chunk.text or secret in chunk.reasoning:
            break
        if any(secret in call.arguments for call in chunk.tool_calls):
            break
    else:
        return chunk
    return msgspec.structs.replace(
        chunk,
        text=redact_secrets(chunk.text, secrets),
        reasoning=redact_secrets(chunk.reasoning, secrets),
        tool_calls=tuple(
            msgspec.structs.replace(call, arguments=redact_secrets(call.arguments, secrets))
            for call in chunk.tool_calls
        ),
    )
