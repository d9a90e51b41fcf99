"""Anthropic Messages API.

``POST {base}/v1/messages`` with ``x-api-key`` and ``anthropic-version``. The
system prompt travels apart from the messages, content is a list of typed
blocks, tool results are user-turn blocks, and ``max_tokens`` is required.
A stream is a sequence of named events ending with ``message_stop``; usage is
split between ``message_start`` (input) and ``message_delta`` (output).
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
    parse_arguments,
    post_json,
    response_parser,
)
from ._decoder import StreamDecoder, chunk_if_any, decode_shape
from ._errors import Headers, WireError, decode_json, failure, http_failure, status_from_code
from ._event_shapes import ANTHROPIC_EVENT, AnthropicDelta
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
    "API_VERSION",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_TOKENS",
    "PROVIDER",
    "AnthropicStreamDecoder",
    "encode_request",
    "parse_error",
    "parse_response",
)

PROVIDER: Final = Provider.ANTHROPIC
DEFAULT_BASE_URL: Final = "https://api.anthropic.com"

#: Where the caller's generation parameters go; ``max_tokens`` is always written, above.
_PARAM_NAMES: Final = {"temperature": "temperature", "top_p": "top_p", "stop": "stop_sequences"}
API_VERSION: Final = "2023-06-01"

#: The Messages API refuses a request without max_tokens; this fills the gap.
DEFAULT_MAX_TOKENS: Final = 4096
RESERVED: Final = frozenset({"model", "messages", "system", "tools", "stream"})

_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if isinstance(message, UserMessage):
        return "user", [{"type": "text", "text": message.content}]
    if isinstance(message, AssistantMessage):
        # The API refuses empty text blocks, which a tool-only turn would make.
        blocks: list[dict[str, Any]] = (
            [{"type": "text", "text": message.content}] if message.content else []
        )
        blocks += [
            {"type": "tool_use", "id": call.id, "name": call.name, "input": parse_arguments(call)}
            for call in message.tool_calls
        ]
        return "assistant", blocks
    assert not isinstance(message, SystemMessage)
    block: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": message.tool_call_id,
        "content": message.content,
    }
    if message.is_error:
        block["is_error"] = True
    return "user", [block]


def _messages(request: ChatRequest) -> list[dict[str, Any]]:
    # Turns must alternate, and all results of one tool-using turn belong to a
    # single user turn, so neighbours with the same role are merged.
    out: list[dict[str, Any]] = []
    for message in request.messages:
        if isinstance(message, SystemMessage):
            continue
        role, blocks = _blocks(message)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _api_root(base_url: str) -> str:
    """The base URL without a final ``/v1``, which the path adds again.

    Anthropic's documented base URL has no version, but the OpenAI habit of
    ending it with ``/v1`` is common; no Messages API lives at ``/v1/v1``, so
    a single trailing ``/v1`` segment can only mean the API's own.
    """
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def encode_request(
    target: BackendTarget, request: ChatRequest, settings: ResolvedSettings, key: str | None
) -> HttpRequest:
    """The Messages API request for ``request`` on ``target``."""
    stream = settings.streaming if settings.streaming is not None else request.stream
    body: dict[str, Any] = {
        "model": target.model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _messages(request),
    }
    system = "\n\n".join(m.content for m in request.messages if isinstance(m, SystemMessage))
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {
                "name": tool.name,
                **({"description": tool.description} if tool.description else {}),
                "input_schema": tool.parameters or {"type": "object", "properties": {}},
            }
            for tool in request.tools
        ]
    body.update(generation_params(request, _PARAM_NAMES))
    apply_settings(body, PROVIDER, settings)
    apply_extras(body, request.extras.get(PROVIDER.value, {}), RESERVED)
    body["stream"] = stream
    return post_json(
        join_url(_api_root(target.base_url or DEFAULT_BASE_URL), "v1/messages"),
        body,
        stream=stream,
        key=key,
        key_header="x-api-key",
        extra_headers=(("anthropic-version", API_VERSION),),
    )


def error_fields(value: object) -> tuple[str | None, object, int | None]:
    """(message, type, status) from ``{"type": "error", "error": {"type", "message"}}``.

    Anthropic itself sends no status in the body; a proxy in front of it
    (LiteLLM) may add ``error.code``, a number or digit string that is one.
    """
    if not isinstance(value, dict):
        return None, None, None
    error = value.get("error")
    if isinstance(error, dict):
        message = error.get("message")
        status = status_from_code(error.get("code"))
        return (message if isinstance(message, str) else None), error.get("type"), status
    if isinstance(error, str):
        return error, None, None
    message = value.get("message")
    return (message if isinstance(message, str) else None), None, None


def parse_error(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    now: float | None = None,
) -> Failure:
    """The failure for a non-2xx Messages API answer (529 is ``overloaded_error``)."""
    message, kind, _ = error_fields(decode_json(body))
    return http_failure(
        status,
        headers,
        body,
        message=message,
        code=None,
        provider_type=kind,
        secrets=secrets,
        now=now,
    )


def _reported_error(value: object, secrets: Sequence[str]) -> WireError:
    """An error event in a stream, or an error inside a 2xx body: a provider failure."""
    message, error_type, status = error_fields(value)
    return WireError(
        failure(
            FailureKind.PROVIDER,
            message or "the backend reported an error",
            secrets=secrets,
            status=status,
            provider_type=error_type,
        )
    )


#: Cached prompt tokens are reported apart from input_tokens but are still
#: prompt tokens (the API's total input is the sum), so the count includes them.
_INPUT_FIELDS: Final = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _input_tokens(usage: dict[str, Any]) -> int | None:
    parts = [opt_int(usage, key) for key in _INPUT_FIELDS]
    if all(part is None for part in parts):
        return None
    return sum(part or 0 for part in parts)


_NO_DELTA: Final = AnthropicDelta()


def _finish(reason: str | None) -> str | None:
    return _FINISH.get(reason, reason) if reason else None


class AnthropicStreamDecoder(StreamDecoder):
    """Messages API stream events; ``message_stop`` is the terminator."""

    provider = PROVIDER
    terminator = "message_stop event"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Block index -> tool call number: text and thinking blocks share the
        # provider's numbering, our tool-call indexes count tool calls only.
        self._tools: dict[int, int] = {}
        # Blocks of tools the API runs itself (server_tool_use, mcp_tool_use): their
        # input streams like a tool call's, but there is nothing for us to call.
        self._server_tools: set[int] = set()
        # The latest value of each input field: message_delta may repeat some of them.
        self._inputs: dict[str, int] = {}

    def on_event(self, event: SseEvent) -> Chunk | None:
        # The fast path reads the one event that comes once per chunk.
        shape = decode_shape(ANTHROPIC_EVENT, event.data)
        if (
            shape is not None
            and shape.index is not None
            and (shape.type or event.event) == "content_block_delta"
        ):
            return self._typed_delta(max(shape.index, 0), shape.delta or _NO_DELTA)
        value = as_obj(self.json(event.data), "an event")
        kind = opt_str(value, "type") or event.event
        if kind == "message_start":
            header = opt_obj(value, "message") or {}
            self._report(opt_obj(header, "usage") or {})
            return None  # a header, not content: it must not count as the first chunk
        if kind == "content_block_start":
            return self._block_start(value)
        if kind == "content_block_delta":
            return self._block_delta(value)
        if kind == "message_delta":
            delta = opt_obj(value, "delta") or {}
            usage = opt_obj(value, "usage")
            total = self._report(usage) if usage is not None else None
            return chunk_if_any(finish_reason=_finish(opt_str(delta, "stop_reason")), usage=total)
        if kind == "message_stop":
            self.finish()
            return None
        if kind == "error":
            raise _reported_error(value, self.secrets)
        # ping, content_block_stop, and event types added after this was written.
        return None

    def _report(self, usage: dict[str, Any]) -> Usage:
        # Every count is cumulative on its own, as the SDKs read them: a field
        # that is absent or null keeps its last value, one that is present
        # replaces it, so nothing is dropped or counted twice.
        for key in _INPUT_FIELDS:
            count = opt_int(usage, key)
            if count is not None:
                self._inputs[key] = count
        inputs = sum(self._inputs.values()) if self._inputs else None
        return self.set_usage(inputs, opt_int(usage, "output_tokens"))

    def _index(self, value: dict[str, Any]) -> int:
        index = opt_int(value, "index")
        if index is None:
            raise ShapeError("index is missing")
        return index

    def _block_start(self, value: dict[str, Any]) -> Chunk | None:
        index = self._index(value)
        block = opt_obj(value, "content_block") or {}
        kind = opt_str(block, "type")
        if kind == "tool_use":
            number = self._tools.setdefault(index, len(self._tools))
            call = ToolCallDelta(index=number, id=opt_str(block, "id"), name=opt_str(block, "name"))
            return Chunk(tool_calls=(call,))
        if kind is not None and kind.endswith("_tool_use"):
            self._server_tools.add(index)
            return None
        if kind == "text" and (text := opt_str(block, "text")):
            return Chunk(text=text)
        if kind == "thinking" and (thought := opt_str(block, "thinking")):
            return Chunk(reasoning=thought)
        return None

    def _typed_delta(self, index: int, delta: AnthropicDelta) -> Chunk | None:
        """:meth:`_block_delta` over a typed event."""
        kind = delta.type
        if kind == "text_delta":
            return Chunk(text=delta.text) if delta.text else None
        if kind == "thinking_delta":
            return Chunk(reasoning=delta.thinking) if delta.thinking else None
        if kind == "input_json_delta":
            return self._arguments(index, delta.partial_json or "")
        return None

    def _arguments(self, index: int, fragment: str) -> Chunk | None:
        """An ``input_json_delta``: a fragment of a tool call's arguments."""
        number = self._tools.get(index)
        if number is None:
            if index in self._server_tools:
                return None
            raise ShapeError("input_json_delta for a block that is not a tool call")
        if not fragment:
            return None
        return Chunk(tool_calls=(ToolCallDelta(index=number, arguments=fragment),))

    def _block_delta(self, value: dict[str, Any]) -> Chunk | None:
        index = self._index(value)
        delta = opt_obj(value, "delta") or {}
        kind = opt_str(delta, "type")
        if kind == "text_delta":
            text = opt_str(delta, "text") or ""
            return Chunk(text=text) if text else None
        if kind == "thinking_delta":
            thought = opt_str(delta, "thinking") or ""
            return Chunk(reasoning=thought) if thought else None
        if kind == "input_json_delta":
            return self._arguments(index, opt_str(delta, "partial_json") or "")
        return None  # signature_delta, citations_delta...


def _read(value: dict[str, Any], secrets: Sequence[str]) -> ChatResponse:
    if opt_str(value, "type") == "error":
        raise _reported_error(value, secrets)
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for item in opt_list(value, "content"):
        block = as_obj(item, "a content block")
        kind = opt_str(block, "type")
        if kind == "text":
            text.append(opt_str(block, "text") or "")
        elif kind == "thinking":
            thoughts.append(opt_str(block, "thinking") or "")
        elif kind == "tool_use":
            calls.append(
                ToolCall(
                    id=opt_str(block, "id") or "",
                    name=opt_str(block, "name") or "",
                    arguments=encode_json(block.get("input") or {}).decode(),
                )
            )
    usage = opt_obj(value, "usage") or {}
    return ChatResponse(
        text="".join(text),
        reasoning="".join(thoughts),
        tool_calls=tuple(calls),
        finish_reason=_finish(opt_str(value, "stop_reason")),
        usage=Usage(
            input_tokens=_input_tokens(usage) or 0,
            output_tokens=opt_int(usage, "output_tokens") or 0,
        ),
    )


#: A complete, non-streamed answer. Raises :class:`WireError`.
parse_response: Final = response_parser(PROVIDER, parse_error, _read)
