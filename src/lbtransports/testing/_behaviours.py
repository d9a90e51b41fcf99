"""What a local backend does with one request: the steps a script is made of.

Each behaviour is a frozen msgspec Struct. The first field may be given by
position (``Stream(3)``, ``Fail(429)``), every other one by keyword only. msgspec
makes a whole Struct keyword-only or not, so the keyword-only fields live in a
private base class and the positional one is declared by the public subclass.

Behaviours that stream ``k`` chunks before their fault send the chunks that
``Stream()`` would send, so a test knows their text in advance.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from lbtransports.wire import Usage

__all__ = (
    "BEHAVIOURS",
    "Behaviour",
    "ErrorEvent",
    "Fail",
    "Hang",
    "KeepAlive",
    "Malformed",
    "NoTerminator",
    "Reset",
    "Stall",
    "Stream",
    "fill_in",
)

#: Placeholders a text or message may hold.
_BACKEND = "{backend}"
_INDEX = "{i}"


def fill_in(template: str, backend: str, index: int | None = None) -> str:
    """``template`` with ``{backend}`` (and ``{i}``) replaced.

    Plain replacement rather than ``str.format``: any other brace in a test's
    text is kept as it is instead of raising.
    """
    text = template.replace(_BACKEND, backend)
    return text if index is None else text.replace(_INDEX, str(index))


def _not_negative(**values: int | None) -> None:
    for name, value in values.items():
        if value is not None and value < 0:
            raise ValueError(f"{name} must be 0 or more, not {value}")


class _StreamOptions(msgspec.Struct, frozen=True, kw_only=True):
    delay_ms: int = 0
    text: str = "{backend}-{i} "
    input_tokens: int = 11
    output_tokens: int | None = None


class Stream(_StreamOptions, frozen=True, tag="stream"):
    """A successful answer: ``chunks`` text chunks, then usage and the terminator.

    Chunk ``i`` carries ``text`` with ``{backend}`` and ``{i}`` filled in. The
    backend waits ``delay_ms`` before each chunk (so the first one arrives
    after ``delay_ms`` too). Usage is reported where the provider reports it;
    ``output_tokens`` defaults to ``chunks``. A request that does not ask for a
    stream gets the same text as one JSON body, after ``delay_ms * chunks``.
    """

    chunks: int = 3

    def __post_init__(self) -> None:
        _not_negative(
            chunks=self.chunks,
            delay_ms=self.delay_ms,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
        )

    def texts(self, backend: str) -> tuple[str, ...]:
        """The text of every chunk, as backend ``backend`` sends it."""
        return tuple(fill_in(self.text, backend, i) for i in range(self.chunks))

    @property
    def usage(self) -> Usage:
        """The token usage the stream reports (what a decoder should end with)."""
        output = self.chunks if self.output_tokens is None else self.output_tokens
        return Usage(input_tokens=self.input_tokens, output_tokens=output)


class _FailOptions(msgspec.Struct, frozen=True, kw_only=True):
    retry_after: str | None = None
    message: str = "injected failure"
    error_type: str | None = None


class Fail(_FailOptions, frozen=True, tag="fail"):
    """Answer ``status`` with the provider's JSON error body.

    ``message`` (``{backend}`` filled in) and ``error_type`` (the provider's
    error type, or Gemini's status name; a per-status default when None) go in
    the body; ``retry_after`` is sent verbatim as a ``Retry-After`` header.
    A 2xx status sends the error object as the body of a successful answer.
    """

    status: int = 500

    def __post_init__(self) -> None:
        # 1xx cannot carry a body, nor can 204 and 304.
        if not 200 <= self.status <= 599 or self.status in (204, 304):
            raise ValueError(f"status must be 200..599 and able to carry a body, not {self.status}")


class Hang(msgspec.Struct, frozen=True, kw_only=True, tag="hang"):
    """Read the request and never answer, until the client leaves or the server stops."""


class Stall(msgspec.Struct, frozen=True, tag="stall"):
    """Send the stream's headers and ``after_chunks`` chunks, then nothing more.

    For a non-streamed request: the headers of a JSON answer, then nothing.
    """

    after_chunks: int = 0

    def __post_init__(self) -> None:
        _not_negative(after_chunks=self.after_chunks)


class _KeepAliveOptions(msgspec.Struct, frozen=True, kw_only=True):
    after_chunks: int = 0


class KeepAlive(_KeepAliveOptions, frozen=True, tag="keepalive"):
    """Headers, ``after_chunks`` chunks, then an SSE comment every ``interval_ms``, forever.

    The comment is ``": keep-alive"``: bytes keep arriving but no chunk ever
    does. For a non-streamed request: a single space (whitespace JSON allows
    before a value) every interval, in a chunked body.
    """

    interval_ms: int = 20

    def __post_init__(self) -> None:
        _not_negative(after_chunks=self.after_chunks)
        if self.interval_ms < 1:
            raise ValueError(f"interval_ms must be 1 or more, not {self.interval_ms}")


class _ResetOptions(msgspec.Struct, frozen=True, kw_only=True):
    before_headers: bool = False


class Reset(_ResetOptions, frozen=True, tag="reset"):
    """Headers and ``after_chunks`` chunks, then an abortive close (a TCP RST).

    ``before_headers=True`` resets right after reading the request. For a
    non-streamed request: the JSON headers, and half the body when
    ``after_chunks`` is not 0, then the reset.
    """

    after_chunks: int = 0

    def __post_init__(self) -> None:
        _not_negative(after_chunks=self.after_chunks)
        if self.before_headers and self.after_chunks:
            raise ValueError("a reset before the headers cannot follow chunks")


class _MalformedOptions(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["json", "sse"] = "json"


class Malformed(_MalformedOptions, frozen=True, tag="malformed"):
    """``after_chunks`` good chunks, one bad event, then a cleanly ended body.

    ``kind="json"``: a ``data:`` line that is not JSON. ``kind="sse"``: a line
    longer than the SSE parser accepts (1 MiB). Either is a protocol failure.
    For a non-streamed request: a 200 body that is not JSON.
    """

    after_chunks: int = 0

    def __post_init__(self) -> None:
        _not_negative(after_chunks=self.after_chunks)


class NoTerminator(msgspec.Struct, frozen=True, tag="noterminator"):
    """``chunks`` chunks, then a cleanly ended body without the provider's terminator.

    No ``[DONE]``, no ``message_stop``, no Gemini ``finishReason``: the decoder
    reports a network failure, "stream ended early". For a non-streamed
    request: half of a JSON body that announced its full length, then a close.
    """

    chunks: int = 2

    def __post_init__(self) -> None:
        _not_negative(chunks=self.chunks)


class _ErrorEventOptions(msgspec.Struct, frozen=True, kw_only=True):
    message: str = "injected failure"
    error_type: str | None = None


class ErrorEvent(_ErrorEventOptions, frozen=True, tag="errorevent"):
    """``after_chunks`` chunks, then the provider's in-stream error event, then the end.

    The decoder reports a provider failure with ``error_type`` as its
    ``provider_type`` (a per-provider default when None: ``server_error``,
    ``overloaded_error``, ``UNAVAILABLE``). For a non-streamed request: the
    error object as the body of a 200 answer.
    """

    after_chunks: int = 0

    def __post_init__(self) -> None:
        _not_negative(after_chunks=self.after_chunks)


#: Any step of a script.
Behaviour: TypeAlias = (
    Stream | Fail | Hang | Stall | KeepAlive | Reset | Malformed | NoTerminator | ErrorEvent
)

#: Every behaviour class, in the order the documentation lists them.
BEHAVIOURS: tuple[type[Behaviour], ...] = (
    Stream,
    Fail,
    Hang,
    Stall,
    KeepAlive,
    Reset,
    Malformed,
    NoTerminator,
    ErrorEvent,
)
