"""OpenAI Chat Completions, the format most self-hosted servers speak too.

``POST {base}/chat/completions`` with ``Authorization: Bearer <key>``. Streams
are requested with ``stream_options.include_usage`` so the last chunk before
``data: [DONE]`` carries the token usage (with ``choices`` empty).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from lbcore import Failure, FailureKind

from ._common import (
    ShapeError,
    as_obj,
    encode_json,
    generation_params,
    join_url,
    opt_int,
    opt_list,
    opt_obj,
    opt_str,
    post_json,
    response_parser,
    tools_json,
)
from ._decoder import StreamDecoder, chunk_if_any, decode_shape
from ._errors import Headers, WireError, decode_json, failure, http_failure, status_from_code
from ._event_shapes import OPENAI_EVENT, OpenAIEvent
from ._settings import ResolvedSettings, apply_extras, apply_settings
from ._sse import SseEvent
from ._target import BackendTarget, Provider
from ._types import (
    AssistantMessage,
    ChatRequest,
    ChatResponse,
    Chunk,
    HttpRequest,
    Message,
    SystemMessage,
    ToolCall,
    ToolCallDelta,
    Usage,
    UserMessage,
)

__all__ = (
    "DEFAULT_BASE_URL",
    "PROVIDER",
    "OpenAIStreamDecoder",
    "encode_request",
    "parse_error",
    "parse_response",
)

PROVIDER: Final = Provider.OPENAI
DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"

#: Where the caller's generation parameters go in a Chat Completions body.
_PARAM_NAMES: Final = {
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "top_p": "top_p",
    "stop": "stop",
}

#: Body fields this module writes itself; extras cannot replace them.
RESERVED: Final = frozenset({"model", "messages", "tools", "stream", "stream_options"})

# The deprecated function-calling reason means the same as tool_calls.
_FINISH: Final = {"function_call": "tool_calls"}


def _message(message: Message) -> dict[str, Any]:
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, UserMessage):
        return {"role": "user", "content": message.content}
    if isinstance(message, AssistantMessage):
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            # Content may be null only when the turn is all tool calls.
            out["content"] = message.content or None
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        return out
    return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}


def encode_request(
    target: BackendTarget, request: ChatRequest, settings: ResolvedSettings, key: str | None
) -> HttpRequest:
    """The Chat Completions request for ``request`` on ``target``."""
    stream = settings.streaming if settings.streaming is not None else request.stream
    body: dict[str, Any] = {
        "model": target.model,
        "messages": [_message(message) for message in request.messages],
    }
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": {k: v for k, v in tool.items() if v}}
            for tool in tools_json(request.tools)
        ]
    body.update(generation_params(request, _PARAM_NAMES))
    apply_settings(body, PROVIDER, settings)
    apply_extras(body, request.extras.get(PROVIDER.value, {}), RESERVED)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return post_json(
        join_url(target.base_url or DEFAULT_BASE_URL, "chat/completions"),
        body,
        stream=stream,
        key=key,
        key_header="authorization",
        key_prefix="Bearer ",
    )


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return encode_json(value).decode()


def error_fields(value: object) -> tuple[str | None, object, object, int | None]:
    """(message, type, code, status) from an OpenAI-style error body.

    Reads ``{"error": {"message", "type", "code"}}`` (OpenAI, Groq, OpenRouter,
    whose numeric ``code`` is an HTTP status; LiteLLM, whose digit-string
    ``code`` is one too), ``{"error": "text"}`` (some
    self-hosted servers) and ``{"detail": ...}`` / ``{"message": ...}`` (vLLM
    and other FastAPI servers). Anything else gives all None.
    """
    if isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, dict):
        return None, None, None, None
    error = value.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        return _text(error.get("message")), error.get("type"), code, status_from_code(code)
    if isinstance(error, str):
        return error, value.get("type"), value.get("code"), None
    message = value.get("message", value.get("detail"))
    return _text(message), value.get("type"), value.get("code"), None


def parse_error(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    now: float | None = None,
) -> Failure:
    """The failure for a non-2xx Chat Completions answer."""
    message, kind, code, _ = error_fields(decode_json(body))
    return http_failure(
        status,
        headers,
        body,
        message=message,
        code=code,
        provider_type=kind,
        secrets=secrets,
        now=now,
    )


def _reported_error(value: object, secrets: Sequence[str]) -> WireError:
    """An error the backend put inside a 2xx answer: a provider failure."""
    message, kind, code, status = error_fields(value)
    return WireError(
        failure(
            FailureKind.PROVIDER,
            message or "the backend reported an error",
            secrets=secrets,
            status=status,
            code=code,
            provider_type=kind,
        )
    )


def _usage(value: dict[str, Any]) -> Usage | None:
    usage = opt_obj(value, "usage")
    if usage is None:
        return None
    return Usage(
        input_tokens=opt_int(usage, "prompt_tokens") or 0,
        output_tokens=opt_int(usage, "completion_tokens") or 0,
    )


def _reasoning(delta: dict[str, Any]) -> str:
    # DeepSeek, z.ai and vLLM's reasoning parsers use reasoning_content; OpenRouter uses reasoning.
    return opt_str(delta, "reasoning_content") or opt_str(delta, "reasoning") or ""


def _finish(choice: dict[str, Any]) -> str | None:
    reason = opt_str(choice, "finish_reason")
    return _FINISH.get(reason, reason) if reason else None


def _first_choice(value: dict[str, Any]) -> dict[str, Any] | None:
    # We never ask for n > 1; other choices, if a server sends them, are ignored.
    for item in opt_list(value, "choices"):
        choice = as_obj(item, "a choice")
        if choice.get("index", 0) == 0:
            return choice
    return None


class OpenAIStreamDecoder(StreamDecoder):
    """Chat Completions chunks; ``data: [DONE]`` is the terminator."""

    provider = PROVIDER
    terminator = "data: [DONE] line"

    def on_event(self, event: SseEvent) -> Chunk | None:
        data = event.data
        if data.strip() == "[DONE]":
            self.finish()
            return None
        shape = decode_shape(OPENAI_EVENT, data)
        if shape is not None and shape.error is None:
            return self._typed(shape)
        return self._general(as_obj(self.json(data), "an event"))

    def _typed(self, value: OpenAIEvent) -> Chunk | None:
        """The fast path: the same reading as :meth:`_general`, over a typed event."""
        usage = None
        if value.usage is not None:
            reported = value.usage
            usage = self.set_usage(
                max(reported.prompt_tokens or 0, 0), max(reported.completion_tokens or 0, 0)
            )
        text = reasoning = ""
        calls: list[ToolCallDelta] = []
        finish = None
        for choice in value.choices or ():
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta is not None:
                text = delta.content or ""
                reasoning = delta.reasoning_content or delta.reasoning or ""
                for position, call in enumerate(delta.tool_calls or ()):
                    function = call.function
                    calls.append(
                        ToolCallDelta(
                            index=position if call.index is None else max(call.index, 0),
                            id=call.id,
                            name=function.name if function is not None else None,
                            arguments=(function.arguments if function is not None else None) or "",
                        )
                    )
            reason = choice.finish_reason
            finish = _FINISH.get(reason, reason) if reason else None
            break
        return chunk_if_any(
            text=text, reasoning=reasoning, tool_calls=calls, finish_reason=finish, usage=usage
        )

    def _general(self, value: dict[str, Any]) -> Chunk | None:
        if value.get("error") is not None:
            raise _reported_error(value, self.secrets)
        reported = _usage(value)
        usage = None
        if reported is not None:
            usage = self.set_usage(reported.input_tokens, reported.output_tokens)
        choice = _first_choice(value)
        text = reasoning = ""
        calls: list[ToolCallDelta] = []
        finish = None
        if choice is not None:
            delta = opt_obj(choice, "delta") or {}
            text = opt_str(delta, "content") or ""
            reasoning = _reasoning(delta)
            for position, item in enumerate(opt_list(delta, "tool_calls")):
                call = as_obj(item, "a tool call")
                function = opt_obj(call, "function") or {}
                index = opt_int(call, "index")
                calls.append(
                    ToolCallDelta(
                        index=position if index is None else index,
                        id=opt_str(call, "id"),
                        name=opt_str(function, "name"),
                        arguments=opt_str(function, "arguments") or "",
                    )
                )
            finish = _finish(choice)
        # The opening chunk that only announces the role gives None.
        return chunk_if_any(
            text=text, reasoning=reasoning, tool_calls=calls, finish_reason=finish, usage=usage
        )


def _read(value: dict[str, Any], secrets: Sequence[str]) -> ChatResponse:
    if value.get("error") is not None:
        raise _reported_error(value, secrets)
    choice = _first_choice(value)
    if choice is None:
        raise ShapeError("choices is empty")
    answer = as_obj(choice.get("message"), "message")
    calls = []
    for item in opt_list(answer, "tool_calls"):
        call = as_obj(item, "a tool call")
        function = opt_obj(call, "function") or {}
        calls.append(
            ToolCall(
                id=opt_str(call, "id") or "",
                name=opt_str(function, "name") or "",
                arguments=opt_str(function, "arguments") or "",
            )
        )
    return ChatResponse(
        text=opt_str(answer, "content") or "",
        reasoning=_reasoning(answer),
        tool_calls=tuple(calls),
        finish_reason=_finish(choice),
        usage=_usage(value) or Usage(),
    )


#: A complete, non-streamed answer. Raises :class:`WireError`.
parse_response: Final = response_parser(PROVIDER, parse_error, _read)
