"""The OpenAI chat-completions format, as callers speak it to the gateway.

Requests are decoded with msgspec into the shapes below (unknown fields are
allowed: OpenAI has many the gateway does not act on), then turned into the
neutral :class:`ChatRequest`. Answers are rendered from neutral chunks.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from lbtransports.wire import (
    AssistantMessage,
    ChatRequest,
    Chunk,
    Message,
    SystemMessage,
    Tool,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)

from ._caller import Answer, InvalidRequest, Parsed, decode_body

__all__ = ("OpenAIFormat",)

_encode = msgspec.json.encode


class _TextPart(msgspec.Struct, kw_only=True):
    type: str
    text: str = ""


class _FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str = "{}"


class _ToolCall(msgspec.Struct, kw_only=True):
    id: str
    function: _FunctionCall
    type: str = "function"


class _Message(msgspec.Struct, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_TextPart] | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class _Function(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class _Tool(msgspec.Struct, kw_only=True):
    type: Literal["function"]
    function: _Function


class _StreamOptions(msgspec.Struct, kw_only=True):
    include_usage: bool = False


class _Request(msgspec.Struct, kw_only=True):
    model: str
    messages: list[_Message]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None


def _text(content: str | list[_TextPart] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    for index, part in enumerate(content):
        if part.type != "text":
            raise InvalidRequest(
                f"invalid request body: only text content parts are supported - "
                f"at `{where}.content[{index}].type`"
            )
    return "".join(part.text for part in content)


def _message(message: _Message, index: int) -> Message:
    where = f"$.messages[{index}]"
    text = _text(message.content, where)
    if message.role in ("system", "developer"):
        return SystemMessage(content=text)
    if message.role == "user":
        return UserMessage(content=text)
    if message.role == "assistant":
        calls = tuple(
            ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
            for call in message.tool_calls or ()
        )
        return AssistantMessage(content=text, tool_calls=calls)
    if not message.tool_call_id:
        raise InvalidRequest(
            f"invalid request body: a tool message needs tool_call_id - at `{where}`"
        )
    return ToolResultMessage(
        tool_call_id=message.tool_call_id, content=text, name=message.name or ""
    )


class OpenAIFormat:
    """``POST /v1/chat/completions``."""

    name = "openai"

    def parse(self, body: bytes) -> Parsed:
        shape = decode_body(body, _Request)
        if not shape.messages:
            raise InvalidRequest("invalid request body: must not be empty - at `$.messages`")
        stop = (shape.stop,) if isinstance(shape.stop, str) else tuple(shape.stop or ())
        chat = ChatRequest(
            messages=tuple(_message(m, i) for i, m in enumerate(shape.messages)),
            tools=tuple(
                Tool(
                    name=t.function.name,
                    description=t.function.description,
                    parameters=t.function.parameters,
                )
                for t in shape.tools or ()
            ),
            temperature=shape.temperature,
            max_tokens=shape.max_completion_tokens or shape.max_tokens,
            top_p=shape.top_p,
            stop=stop,
            stream=shape.stream,
        )
        include = bool(shape.stream_options and shape.stream_options.include_usage)
        return Parsed(model=shape.model, chat=chat, stream=shape.stream, include_usage=include)

    def whole(self, answer: Answer) -> bytes:
        message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
        if answer.tool_calls:
            message["tool_calls"] = [
                {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                for i, n, a in answer.tool_calls
            ]
        return _encode(
            {
                "id": f"chatcmpl-{answer.request_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": answer.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": answer.finish_reason or "stop",
                    }
                ],
                "usage": _usage(answer.input_tokens, answer.output_tokens),
            }
        )

    def stream(self, request_id: str, model: str, include_usage: bool) -> OpenAIStream:
        return OpenAIStream(request_id, model, include_usage)

    def error_body(self, status: int, message: str) -> bytes:
        return _encode({"error": _error(status, message)})


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("invalid_request_error", "timeout"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    431: ("invalid_request_error", "headers_too_large"),
}


def _error(status: int, message: str) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return {"message": message, "type": kind, "param": None, "code": code}


class OpenAIStream:
    """Neutral chunks as ``chat.completion.chunk`` server-sent events."""

    def __init__(self, request_id: str, model: str, include_usage: bool) -> None:
        self._head = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        self._include_usage = include_usage
        self._finish: str | None = None
        self._first = True

    def _event(self, choices: list[dict[str, Any]], **more: Any) -> bytes:
        return b"data: " + _encode({**self._head, "choices": choices, **more}) + b"\n\n"

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: Chunk) -> bytes:
        delta: dict[str, Any] = {}
        if self._first:
            delta["role"] = "assistant"
            self._first = False
        if chunk.text:
            delta["content"] = chunk.text
        if chunk.reasoning:
            delta["reasoning_content"] = chunk.reasoning
        if chunk.tool_calls:
            calls = []
            for call in chunk.tool_calls:
                entry: dict[str, Any] = {"index": call.index}
                function: dict[str, str] = {"arguments": call.arguments}
                if call.id is not None:
                    entry["id"] = call.id
                    entry["type"] = "function"
                if call.name is not None:
                    function["name"] = call.name
                entry["function"] = function
                calls.append(entry)
            delta["tool_calls"] = calls
        if chunk.finish_reason:
            # Sent last, once: the usage of the whole answer follows it.
            self._finish = chunk.finish_reason
        if not delta:
            return b""
        return self._event([{"index": 0, "delta": delta, "finish_reason": None}])

    def finish(self, input_tokens: int, output_tokens: int) -> bytes:
        out = self._event([{"index": 0, "delta": {}, "finish_reason": self._finish or "stop"}])
        if self._include_usage:
            out += self._event([], usage=_usage(input_tokens, output_tokens))
        return out + b"data: [DONE]\n\n"

    def error(self, status: int, message: str) -> bytes:
        # The SDKs raise on a data event holding "error"; no [DONE] follows.
        return b"data: " + _encode({"error": _error(status, message)}) + b"\n\n"
