"""The stream decoder every provider shares: SSE in, neutral chunks out.

A provider subclass only says what one server-sent event means (a chunk, the
terminator, an error, nothing). This base class owns the rest: the parser and
its limits, the running token usage, the sticky failure, and the rule that a
stream which ends without its terminator failed.

Failures are raised as :class:`WireError`. Chunks that the same piece of input
produced before the failure ride along in :attr:`WireError.chunks`, so a
transport loop loses nothing and still needs one ``except`` clause.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Final, TypeVar

import msgspec

from lbcore import Failure, FailureKind

from ._common import MAX_COUNT, ShapeError
from ._errors import WireError, failure, redact_secrets
from ._sse import DEFAULT_MAX_EVENT, DEFAULT_MAX_LINE, SseEvent, SseParser
from ._target import Provider
from ._types import Chunk, ToolCallDelta, Usage

# Everything in __all__ is re-exported by lbtransports.wire.
__all__ = ("StreamDecoder",)

#: The message of the failure for a stream cut before its terminator. "stream
#: prematurely closed" is what the reference's network-transient test matches.
ENDED_EARLY: Final = "stream ended early: the connection closed before the {terminator}"

_JSON: Final = msgspec.json.Decoder()

_Shape = TypeVar("_Shape")


def decode_shape(decoder: msgspec.json.Decoder[_Shape], data: str) -> _Shape | None:
    """``data`` decoded into a typed event shape, or None when it does not fit.

    None sends the event to the provider's general path, which is the one that
    classifies malformed data (see ``_event_shapes``).
    """
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None


def chunk_if_any(
    *,
    text: str = "",
    reasoning: str = "",
    tool_calls: Sequence[ToolCallDelta] = (),
    finish_reason: str | None = None,
    usage: Usage | None = None,
) -> Chunk | None:
    """A chunk only when it carries something.

    Role announcements, headers and keep-alives must not pass for the first
    chunk: the core still fails over until one arrives.
    """
    if not (text or reasoning or tool_calls or finish_reason or usage):
        return None
    return Chunk(
        text=text,
        reasoning=reasoning,
        tool_calls=tuple(tool_calls),
        finish_reason=finish_reason,
        usage=usage,
    )


class StreamDecoder(abc.ABC):
    """Decodes one streamed response. Create one per attempt.

    Call :meth:`feed` with each piece of the body as it arrives, then
    :meth:`end` when the connection closes. Both return the chunks they
    completed and raise :class:`WireError` on failure; after a failure every
    later call raises the same failure again.
    """

    provider: ClassVar[Provider]
    #: How the terminator is named in the "stream ended early" message.
    terminator: ClassVar[str]
    #: Whether the terminator is the stream's last event, so that anything after
    #: it is ignored. Gemini has none: usage may follow its first finishReason.
    ends_at_terminator: ClassVar[bool] = True

    def __init__(
        self,
        *,
        secrets: Sequence[str] = (),
        max_line: int = DEFAULT_MAX_LINE,
        max_event: int = DEFAULT_MAX_EVENT,
        keep_events: bool = False,
    ) -> None:
        self._parser = SseParser(max_line=max_line, max_event=max_event)
        #: With ``keep_events``, every event decoded without failure (the
        #: terminator included, an error event not), for a caller that forwards
        #: the backend's own events: see :meth:`take_events`.
        self._kept: list[SseEvent] | None = [] if keep_events else None
        self._secrets = tuple(secrets)
        self._done = False
        self._failure: Failure | None = None
        self._input_tokens = 0
        self._output_tokens = 0

    @property
    def done(self) -> bool:
        """Whether the stream's terminator has been seen."""
        return self._done

    @property
    def finished(self) -> bool:
        """Whether the answer is complete and later input is ignored.

        True once a terminator that ends the stream (``[DONE]``,
        ``message_stop``) was seen: a transport can stop reading, and must not
        reuse the connection, whose remaining bytes belong to no answer.
        """
        return self._done and self.ends_at_terminator

    @property
    def usage(self) -> Usage:
        """The tokens reported so far; final once the stream is done."""
        return Usage(input_tokens=self._input_tokens, output_tokens=self._output_tokens)

    def feed(self, data: bytes) -> list[Chunk]:
        """Decode another piece of the body. Raises :class:`WireError`."""
        chunks: list[Chunk] = []
        self._check()
        if self.finished:
            return chunks
        # A limit the parser found passed counts only if the answer had not
        # ended before it: what follows the terminator is never read.
        events, limit_passed = self._parser.parse(data)
        try:
            for event in events:
                self._decode(event, chunks)
                if self.finished:
                    return chunks  # the terminator ends the answer; what follows is ignored
            if limit_passed is not None:
                raise limit_passed
        except WireError as error:
            raise self._fail(error, chunks) from None
        return chunks

    def end(self) -> list[Chunk]:
        """The body is complete. Raises :class:`WireError` if the terminator never came."""
        chunks: list[Chunk] = []
        self._check()
        if self.finished:
            return chunks
        try:
            for event in self._parser.end():
                self._decode(event, chunks)
            if not self._done:
                raise WireError(
                    failure(FailureKind.NETWORK, ENDED_EARLY.format(terminator=self.terminator))
                )
        except WireError as error:
            raise self._fail(error, chunks) from None
        return chunks

    def _check(self) -> None:
        if self._failure is not None:
            raise WireError(self._failure)

    def _fail(self, error: WireError, chunks: list[Chunk]) -> WireError:
        self._failure = error.failure
        return WireError(error.failure, chunks)

    def _decode(self, event: SseEvent, chunks: list[Chunk]) -> None:
        try:
            chunk = self.on_event(event)
        except ShapeError as error:
            raise self.protocol(f"unexpected shape: {error}") from None
        if chunk is not None:
            chunks.append(chunk)
        if self._kept is not None:
            # The backend's own key must not travel on, even inside an answer.
            if self._secrets:
                data = redact_secrets(event.data, self._secrets)
                if data is not event.data:
                    event = SseEvent(event=event.event, data=data, id=event.id)
            self._kept.append(event)

    def take_events(self) -> list[SseEvent]:
        """The events kept since the last call (none unless ``keep_events``)."""
        kept = self._kept
        if not kept:
            return []
        self._kept = []
        return kept

    def json(self, data: str) -> Any:
        """The JSON value of an event's data; invalid JSON is a protocol failure."""
        try:
            return _JSON.decode(data)
        except (msgspec.DecodeError, RecursionError):
            raise self.protocol("an event's data is not valid JSON") from None

    def protocol(self, message: str) -> WireError:
        return WireError(
            failure(FailureKind.PROTOCOL, f"{self.provider.value} stream: {message}", secrets=())
        )

    def set_usage(self, input_tokens: int | None = None, output_tokens: int | None = None) -> Usage:
        """Record the latest cumulative counts the backend reported and return the total."""
        if (input_tokens or 0) > MAX_COUNT or (output_tokens or 0) > MAX_COUNT:
            raise ShapeError("a token count is out of range")
        if input_tokens is not None:
            self._input_tokens = input_tokens
        if output_tokens is not None:
            self._output_tokens = output_tokens
        return self.usage

    def finish(self) -> None:
        """The terminator was seen: ending the stream now is a success."""
        self._done = True

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    @abc.abstractmethod
    def on_event(self, event: SseEvent) -> Chunk | None:
        """What one event means: a chunk, or None for keep-alives and headers.

        Raises :class:`WireError` for an error event or malformed data.
        """
