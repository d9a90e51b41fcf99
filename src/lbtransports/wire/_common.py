"""Small helpers the three providers share: URLs, JSON bodies, reading untrusted JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from lbcore import FailureKind

from ._errors import WireError, decode_json, failure
from ._types import ChatRequest, Tool, ToolCall, ToolResultMessage

# Internal helpers: nothing here is re-exported.
__all__ = (
    "ShapeError",
    "as_obj",
    "decode_body",
    "encode_json",
    "join_url",
    "opt_int",
    "opt_list",
    "opt_obj",
    "opt_str",
    "parse_arguments",
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


def decode_body(body: bytes, provider: str) -> dict[str, Any]:
    """A 2xx JSON body as an object, or a protocol failure."""
    value = decode_json(body)
    if not isinstance(value, dict):
        raise WireError(
            failure(FailureKind.PROTOCOL, f"{provider} response: the body is not a JSON object")
        )
    return value


def parse_arguments(call: ToolCall) -> dict[str, Any]:
    """A tool call's JSON arguments as an object, for providers that want one.

    Raises:
        WireError: a setup failure; the history holds arguments no provider
            that wants objects could be sent.
    """
    value = decode_json(call.arguments.encode()) if call.arguments.strip() else {}
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
