"""Small helpers the three providers share: URLs, JSON bodies, reading untrusted JSON, and
the frame of a non-streamed answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import msgspec

from lbcore import Failure, FailureKind

from ._errors import Headers, WireError, decode_json, failure
from ._target import Provider
from ._types import ChatRequest, ChatResponse, Tool, ToolCall, ToolResultMessage

# Internal helpers: nothing here is re-exported.
__all__ = (
    "ErrorParser",
    "ShapeError",
    "as_obj",
    "encode_body",
    "encode_json",
    "join_url",
    "opt_int",
    "opt_list",
    "opt_obj",
    "opt_str",
    "parse_arguments",
    "read_response",
    "tool_names",
    "tool_result_name",
    "tools_json",
)

_ENCODER: Final = msgspec.json.Encoder()


class ShapeError(Exception):
    """A JSON value does not have the shape the provider documents."""


def join_url(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def encode_json(value: object) -> bytes:
    return _ENCODER.encode(value)


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


def read_response(
    provider: Provider,
    status: int,
    headers: Headers,
    body: bytes,
    *,
    secrets: Sequence[str],
    now: float | None,
    parse_error: ErrorParser,
    read: Callable[[dict[str, Any], Sequence[str]], ChatResponse],
) -> ChatResponse:
    """The frame of each provider's ``parse_response``; ``read(body, secrets)`` does the rest.

    A status that is not a 2xx integer goes to ``parse_error`` (which makes
    one outside 100..599, or not an integer, a protocol failure). The body must
    be a JSON object, and a :class:`ShapeError` from ``read`` is a protocol
    failure too.
    """
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 299:
        raise WireError(parse_error(status, headers, body, secrets=secrets, now=now))
    value = decode_json(body)
    try:
        return read(as_obj(value, "the body"), secrets)
    except ShapeError as error:
        raise WireError(
            failure(FailureKind.PROTOCOL, f"{provider.value} response: unexpected shape: {error}")
        ) from None


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
