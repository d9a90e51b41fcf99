"""The Anthropic messages format, as callers speak it to the gateway."""

from __future__ import annotations

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

__all__ = ("AnthropicFormat",)

_encode = msgspec.json.encode


class _TextBlock(msgspec.Struct, kw_only=True):
    type: str
    text: str = ""


class _Block(msgspec.Struct, kw_only=True):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[_TextBlock] | None = None
    is_error: bool = False


class _Message(msgspec.Struct, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _Tool(msgspec.Struct, kw_only=True):
    name: str
    description: str = ""
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)


class _Request(msgspec.Struct, kw_only=True):
    model: str
    max_tokens: int
    messages: list[_Message]
    system: str | list[_TextBlock] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    tools: list[_Tool] | None = None


def _blocks_text(blocks: str | list[_TextBlock] | None) -> str:
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    return "".join(block.text for block in blocks if block.type == "text")


def _messages(message: _Message, index: int) -> list[Message]:
    if isinstance(message.content, str):
        text = message.content
        return [
            UserMessage(content=text) if message.role == "user" else AssistantMessage(content=text)
        ]
    where = f"$.messages[{index}].content"
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for number, block in enumerate(message.content):
        if block.type == "text":
            texts.append(block.text or "")
        elif block.type == "tool_use" and message.role == "assistant":
            if not block.id or not block.name:
                raise InvalidRequest(
                    "invalid request body: a tool_use block needs id and name - "
                    f"at `{where}[{number}]`"
                )
            arguments = _encode(block.input or {}).decode()
            calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
        elif block.type == "tool_result" and message.role == "user":
            if not block.tool_use_id:
                raise InvalidRequest(
                    "invalid request body: a tool_result block needs tool_use_id - "
                    f"at `{where}[{number}]`"
                )
            results.append(
                ToolResultMessage(
                    tool_call_id=block.tool_use_id,
                    content=_blocks_text(block.content),
                    is_error=block.is_error,
                )
            )
        elif block.type in ("thinking", "redacted_thinking"):
            continue  # earlier reasoning is not sent back to any backend
        else:
            raise InvalidRequest(
                f"invalid request body: unsupported block type for a {message.role} message "
                f"- at `{where}[{number}].type`"
            )
    text = "".join(texts)
    if message.role == "assistant":
        return [AssistantMessage(content=text, tool_calls=tuple(calls))]
    return [*results, *([UserMessage(content=text)] if texts or not results else [])]


_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def _stop_reason(finish: str | None) -> str:
    return _STOP_REASONS.get(finish or "stop", "end_turn")


class AnthropicFormat:
    """``POST /v1/messages``."""

    name = "anthropic"

    def parse(self, body: bytes) -> Parsed:
        shape = decode_body(body, _Request)
        if not shape.messages:
            raise InvalidRequest("invalid request body: must not be empty - at `$.messages`")
        messages: list[Message] = []
        system = _blocks_text(shape.system)
        if system:
            messages.append(SystemMessage(content=system))
        for index, message in enumerate(shape.messages):
            messages.extend(_messages(message, index))
        chat = ChatRequest(
            messages=tuple(messages),
            tools=tuple(
                Tool(name=t.name, description=t.description, parameters=t.input_schema)
                for t in shape.tools or ()
            ),
            temperature=shape.temperature,
            max_tokens=shape.max_tokens,
            top_p=shape.top_p,
            stop=tuple(shape.stop_sequences or ()),
            stream=shape.stream,
        )
        return Parsed(model=shape.model, chat=chat, stream=shape.stream)

    def whole(self, answer: Answer) -> bytes:
        content: list[dict[str, Any]] = []
        if answer.reasoning:
            content.append({"type": "thinking", "thinking": answer.reasoning, "signature": ""})
        if answer.text or not answer.tool_calls:
            content.append({"type": "text", "text": answer.text})
        for call_id, name, arguments in answer.tool_calls:
            content.append(
                {"type": "tool_use", "id": call_id, "name": name, "input": _input(arguments)}
            )
        return _encode(
            {
                "id": f"msg_{answer.request_id}",
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": content,
                "stop_reason": _stop_reason(answer.finish_reason),
                "stop_sequence": None,
                "usage": {
                    "input_tokens": answer.input_tokens,
                    "output_tokens": answer.output_tokens,
                },
            }
        )

    def stream(self, request_id: str, model: str, include_usage: bool) -> AnthropicStream:
        return AnthropicStream(request_id, model)

    def error_body(self, status: int, message: str) -> bytes:
        return _encode({"type": "error", "error": _error(status, message)})


def _input(arguments: str) -> Any:
    try:
        return msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        return {}


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    431: "invalid_request_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _error(status: int, message: str) -> dict[str, str]:
    return {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encode({"type": kind, **data}) + b"\n\n"


class AnthropicStream:
    """Neutral chunks as Anthropic's message events, one content block at a time."""

    def __init__(self, request_id: str, model: str) -> None:
        self._id = f"msg_{request_id}"
        self._model = model
        self._index = -1
        #: The open content block: ("text",), ("thinking",) or ("tool", neutral index).
        self._open: tuple[str, int] | None = None
        self._finish: str | None = None

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _sse("message_start", {"message": message})

    def _switch(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        if self._open == key:
            return b""
        out = self._close()
        self._index += 1
        self._open = key
        return out + _sse("content_block_start", {"index": self._index, "content_block": block})

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return _sse("content_block_stop", {"index": self._index})

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _sse("content_block_delta", {"index": self._index, "delta": delta})

    def chunk(self, chunk: Chunk) -> bytes:
        out = b""
        if chunk.reasoning:
            out += self._switch(("thinking", 0), {"type": "thinking", "thinking": ""})
            out += self._delta({"type": "thinking_delta", "thinking": chunk.reasoning})
        if chunk.text:
            out += self._switch(("text", 0), {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": chunk.text})
        for call in chunk.tool_calls:
            block = {"type": "tool_use", "id": call.id or "", "name": call.name or "", "input": {}}
            out += self._switch(("tool", call.index), block)
            if call.arguments:
                out += self._delta({"type": "input_json_delta", "partial_json": call.arguments})
        if chunk.finish_reason:
            self._finish = chunk.finish_reason
        return out

    def finish(self, input_tokens: int, output_tokens: int) -> bytes:
        out = self._close()
        usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        delta = {"stop_reason": _stop_reason(self._finish), "stop_sequence": None}
        out += _sse("message_delta", {"delta": delta, "usage": usage})
        return out + _sse("message_stop", {})

    def error(self, status: int, message: str) -> bytes:
        return _sse("error", {"error": _error(status, message)})
