"""What both caller formats share: the request as the gateway routes it, and its errors."""

from __future__ import annotations

from typing import Protocol, TypeVar

import msgspec

from lbtransports.wire import ChatRequest, Chunk

__all__ = (
    "Answer",
    "CallerFormat",
    "InvalidRequest",
    "Parsed",
    "StreamRenderer",
    "decode_body",
)


class InvalidRequest(Exception):
    """A body the caller's format does not allow; the message names the field."""


class Parsed(msgspec.Struct, frozen=True, kw_only=True):
    """A caller's request: the group it names and what to send its backends."""

    model: str
    chat: ChatRequest
    stream: bool
    #: OpenAI's ``stream_options.include_usage``: a last chunk carrying the usage.
    include_usage: bool = False


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """A whole answer, as the caller's format needs it."""

    request_id: str
    model: str
    text: str
    reasoning: str
    tool_calls: tuple[tuple[str, str, str], ...]  # (id, name, arguments JSON)
    finish_reason: str | None
    input_tokens: int
    output_tokens: int


class StreamRenderer(Protocol):
    def start(self) -> bytes: ...
    def chunk(self, chunk: Chunk) -> bytes: ...
    def finish(self, input_tokens: int, output_tokens: int) -> bytes: ...
    def error(self, status: int, message: str) -> bytes: ...


class CallerFormat(Protocol):
    """One API callers speak (OpenAI chat completions, Anthropic messages)."""

    #: The backend provider that speaks this format too (same-format passthrough).
    name: str

    def parse(self, body: bytes) -> Parsed: ...
    def whole(self, answer: Answer) -> bytes: ...
    def stream(self, request_id: str, model: str, include_usage: bool) -> StreamRenderer: ...
    def error_body(self, status: int, message: str) -> bytes: ...


_T = TypeVar("_T")


def decode_body(body: bytes, shape: type[_T]) -> _T:
    """``body`` as ``shape``, or :class:`InvalidRequest` naming what is wrong and where."""
    try:
        return msgspec.json.decode(body, type=shape)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"invalid request body: {error}") from None
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        # msgspec stops at its depth limit (about 1000 levels) this way, not as a DecodeError.
        raise InvalidRequest("the body is not valid JSON: nested too deeply") from None
