"""Small helpers the three providers share: URLs, JSON bodies, reading untrusted JSON, and
the frame of a non-streamed answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

import msgspec

from lbcore import Failure, FailureKind

from ._errors import Headers, WireError, decode_json, failure
from ._target import Provider
from ._types import ChatRequest, ChatResponse, HttpRequest, Tool, ToolCall, ToolResultMessage

# Internal helpers: nothing here is re-exported.
__all__ = (
    "MAX_COUNT",
    "ErrorParser",
    "ResponseParser",
    "ShapeError",
    "as_obj",
    "encode_body",
    "encode_json",
    "generation_params",
    "join_url",
    "opt_int",
    "opt_list",
    "opt_obj",
    "opt_str",
    "parse_arguments",
    "post_json",
    "response_parser",
    "tool_names",
    "tool_result_name",
    "tools_json",
)

_ENCODER: Final = msgspec.json.Encoder()

#: The largest token count or index read from a backend (2**53 - 1, the largest integer
#: JSON numbers carry exactly): a larger one is a broken answer, not a count (10**400
#: tokens would overflow the core's float token rates).
MAX_COUNT: Final = 2**53 - 1


class ShapeError(Exception):
    """A JSON value does not have the shape the provider documents."""


def generation_params(request: ChatRequest, names: Mapping[str, str]) -> dict[str, Any]:
    """The caller's generation parameters that are set, under the provider's field names.

    ``names`` maps ``temperature``, ``max_tokens``, ``top_p`` and ``stop`` to
    the provider's field; a parameter the map leaves out is not written.
    """
    values = {
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "top_p": request.top_p,
        "stop": list(request.stop) or None,
    }
    return {
        names[key]: value for key, value in values.items() if key in names and value is not None
    }


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def encode_json(value: object) -> bytes:
    return _ENCODER.encode(value)


def post_json(
    url: str,
    body: dict[str, Any],
    *,
    stream: bool,
    key: str | None,
    key_header: str,
    key_prefix: str = "",
    extra_headers: Sequence[tuple[str, str]] = (),
) -> HttpRequest:
    """The POST every provider sends: a JSON body, the key in ``key_header`` when there is one."""
    headers = [
        ("content-type", "application/json"),
        ("accept", "text/event-stream" if stream else "application/json"),
        *extra_headers,
    ]
    if key:
        headers.append((key_header, key_prefix + key))
    return HttpRequest(
        method="POST",
        url=url,
        headers=tuple(headers),
        body=encode_body(body),
        stream=stream,
        secrets=(key,) if key else (),
    )


def encode_body(body: dict[str, Any]) -> bytes:
    """A request body as JSON; a value JSON cannot carry is a setup failure.

    Extras and model parameters are the caller's arbitrary values, and text may
    hold a lone surrogate (badly decoded tool output) that UTF-8 cannot encode.
    """
    try:
        return _ENCODER.encode(body)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as error:
        raise WireError(
            failure(FailureKind.SETUP, f"the request body cannot be encoded as JSON ({error})")
        ) from None


def opt_obj(parent: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = parent.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise ShapeError(f"{key} is not an object")


def opt_list(parent: dict[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise ShapeError(f"{key} is not a list")


def opt_str(parent: dict[str, Any], key: str) -> str | None:
    value = parent.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ShapeError(f"{key} is not a string")


def opt_int(parent: dict[str, Any], key: str) -> int | None:
    """A non-negative integer field; token counts below zero are read as zero."""
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ShapeError(f"{key} is not an integer")
    if value > MAX_COUNT:
        raise ShapeError(f"{key} is out of range")
    return max(value, 0)


def as_obj(value: object, what: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise ShapeError(f"{what} is not an object")


class ErrorParser(Protocol):
    """A provider's ``parse_error``."""

    def __call__(
        self,
        status: int,
        headers: Headers,
        body: bytes,
        *,
        secrets: Sequence[str] = (),
        now: float | None = None,
    ) -> Failure: ...


class ResponseParser(Protocol):
    """A provider's ``parse_response``."""

    def __call__(
        self,
        status: int,
        headers: Headers,
        body: bytes,
        *,
        secrets: Sequence[str] = (),
        now: float | None = None,
    ) -> ChatResponse: ...


def response_parser(
    provider: Provider,
    parse_error: ErrorParser,
    read: Callable[[dict[str, Any], Sequence[str]], ChatResponse],
) -> ResponseParser:
    """A provider's ``parse_response``, from its ``parse_error`` and ``read(body, secrets)``.

    The frame is the same for every provider: a status that is not a 2xx
    integer goes to ``parse_error`` (which makes one outside 100..599, or not
    an integer, a protocol failure); the body must be a JSON object; a
    :class:`ShapeError` from ``read`` is a protocol failure too.
    """

    def parse_response(
        status: int,
        headers: Headers,
        body: bytes,
        *,
        secrets: Sequence[str] = (),
        now: float | None = None,
    ) -> ChatResponse:
        """A complete, non-streamed answer. Raises :class:`WireError`."""
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 299:
            raise WireError(parse_error(status, headers, body, secrets=secrets, now=now))
        try:
            return read(as_obj(decode_json(body), "the body"), secrets)
        except ShapeError as error:
            message = f"{provider.value} response: unexpected shape: {error}"
            raise WireError(failure(FailureKind.PROTOCOL, message)) from None

    return parse_response


def parse_arguments(call: ToolCall) -> dict[str, Any]:
    """A tool call's JSON arguments as an object, for providers that want one.

    Raises:
        WireError: a setup failure; the history holds arguments no provider
            that wants objects could be sent.
    """
    value = decode_json(call.arguments) if call.arguments.strip() else {}
    if not isinstance(value, dict):
        raise WireError(
            failure(
                FailureKind.SETUP,
                f"tool call {call.id}: arguments must be a JSON object for this provider",
            )
        )
    return value


def tool_names(request: ChatRequest) -> dict[str, str]:
    """Tool call id -> tool name, from the assistant messages of the history."""
    names: dict[str, str] = {}
    for message in request.messages:
        for call in getattr(message, "tool_calls", ()):
            names[call.id] = call.name
    return names


def tool_result_name(message: ToolResultMessage, names: dict[str, str]) -> str:
    return message.name or names.get(message.tool_call_id, "")


def tools_json(tools: Sequence[Tool]) -> list[dict[str, Any]]:
    return [
        {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        for tool in tools
    ]
