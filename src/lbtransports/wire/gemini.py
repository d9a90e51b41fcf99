"""Google Gemini API (generativelanguage.googleapis.com).

``POST {base}/models/{model}:streamGenerateContent?alt=sse`` (or
``:generateContent``) with ``x-goog-api-key``. Messages become ``contents``
of ``parts`` with roles ``user`` and ``model``; the system prompt is the
``systemInstruction``; generation parameters live in ``generationConfig``.
A stream is plain ``data:`` events, each a whole response; there is no
terminator line, so the stream is complete once a candidate carries a
``finishReason`` (or the prompt was blocked).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any, Final

from lbcore import Failure, FailureKind

from ._common import (
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
    tool_names,
    tool_result_name,
)
from ._decoder import StreamDecoder, chunk_if_any, decode_shape
from ._errors import (
    Headers,
    WireError,
    decode_json,
    failure,
    google_retry_delay,
    http_failure,
    status_from_code,
)
from ._event_shapes import GEMINI_EVENT, GeminiEvent
from ._settings import ResolvedSettings, apply_extras, apply_settings
from ._sse import SseEvent
from ._target import BackendTarget, Provider
from ._types import (
    AssistantMessage,
    ChatRequest,
    ChatResponse,
    Chunk,
    HttpRequest,
    SystemMessage,
    ToolCall,
    ToolCallDelta,
    ToolResultMessage,
    Usage,
    UserMessage,
)

__all__ = (
    "DEFAULT_BASE_URL",
    "PROVIDER",
    "GeminiStreamDecoder",
    "encode_request",
    "parse_error",
    "parse_response",
)

PROVIDER: Final = Provider.GEMINI
DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com/v1beta"

#: Where the caller's generation parameters go in ``generationConfig``.
_PARAM_NAMES: Final = {
    "temperature": "temperature",
    "max_tokens": "maxOutputTokens",
    "top_p": "topP",
    "stop": "stopSequences",
}
RESERVED: Final = frozenset({"contents", "systemInstruction", "tools", "generationConfig"})

_FILTERED: Final = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
)


def _finish(reason: str | None, made_calls: bool) -> str | None:
    if not reason:
        return None
    if reason == "STOP":
        # Gemini says STOP after function calls too; the neutral reason says why it stopped.
        return "tool_calls" if made_calls else "stop"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return reason.lower()


def _tool_response(content: str) -> dict[str, Any]:
    # functionResponse.response must be an object: JSON objects pass as they are.
    value = decode_json(content)
    return value if isinstance(value, dict) else {"content": content}


def _contents(request: ChatRequest) -> list[dict[str, Any]]:
    names = tool_names(request)
    out: list[dict[str, Any]] = []
    for message in request.messages:
        parts: list[dict[str, Any]]
        if isinstance(message, SystemMessage):
            continue
        if isinstance(message, UserMessage):
            role, parts = "user", [{"text": message.content}]
        elif isinstance(message, AssistantMessage):
            role = "model"
            parts = [{"text": message.content}] if message.content else []
            parts += [
                {"functionCall": {"name": call.name, "args": parse_arguments(call)}}
                for call in message.tool_calls
            ]
        else:
            assert isinstance(message, ToolResultMessage)
            role = "user"
            response = {
                "name": tool_result_name(message, names),
                "response": _tool_response(message.content),
            }
            parts = [{"functionResponse": response}]
        # Adjacent turns of one role are merged: the API wants them alternating.
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return out


def _model_path(model: str) -> str:
    bare = model.removeprefix("models/")
    return "models/" + urllib.parse.quote(bare, safe="-._~")


def encode_request(
    target: BackendTarget, request: ChatRequest, settings: ResolvedSettings, key: str | None
) -> HttpRequest:
    """The generateContent request for ``request`` on ``target``."""
    stream = settings.streaming if settings.streaming is not None else request.stream
    body: dict[str, Any] = {"contents": _contents(request)}
    system = "\n\n".join(m.content for m in request.messages if isinstance(m, SystemMessage))
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    if request.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": tool.name,
                        **({"description": tool.description} if tool.description else {}),
                        **({"parameters": tool.parameters} if tool.parameters else {}),
                    }
                    for tool in request.tools
                ]
            }
        ]
    config = generation_params(request, _PARAM_NAMES)
    if config:
        body["generationConfig"] = config
    apply_settings(body, PROVIDER, settings)
    apply_extras(body, request.extras.get(PROVIDER.value, {}), RESERVED)
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return post_json(
        join_url(target.base_url or DEFAULT_BASE_URL, f"{_model_path(target.model)}:{method}"),
        body,
        stream=stream,
        key=key,
        key_header="x-goog-api-key",
    )


def error_fields(value: object) -> tuple[str | None, object, object, int | None, int | None]:
    """(message, status name, reason, code, retry delay ms) from a Google error body.

    The body is ``{"error": {"code", "message", "status", "details"}}``,
    sometimes wrapped in a one-element list. ``details`` may hold an
    ``ErrorInfo`` with a ``reason`` and a ``RetryInfo`` with a ``retryDelay``.
    """
    if isinstance(value, list) and value:
        value = value[0]
    if not isinstance(value, dict):
        return None, None, None, None, None
    error = value.get("error")
    if not isinstance(error, dict):
        message = error if isinstance(error, str) else value.get("message")
        return (message if isinstance(message, str) else None), None, None, None, None
    message = error.get("message")
    code = error.get("code")
    details = error.get("details")
    reason = None
    if isinstance(details, list):
        for detail in details:
            if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("ErrorInfo"):
                reason = detail.get("reason")
    return (
        message if isinstance(message, str) else None,
        error.get("status"),
        reason,
        status_from_code(code),
        google_retry_delay(details),
    )


def parse_error(
    status: int,
    headers: Headers,
    body: bytes,
    *,
    secrets: Sequence[str] = (),
    now: float | None = None,
) -> Failure:
    """The failure for a non-2xx Gemini answer; ``RetryInfo`` stands in for ``Retry-After``."""
    message, kind, reason, _, delay = error_fields(decode_json(body))
    return http_failure(
        status,
        headers,
        body,
        message=message,
        code=reason,
        provider_type=kind,
        retry_after=delay,
        secrets=secrets,
        now=now,
    )


def _reported_error(value: dict[str, Any], secrets: Sequence[str]) -> WireError:
    """An error in a stream, or inside a 2xx body: a provider failure."""
    message, kind, reason, code, delay = error_fields(value)
    return WireError(
        failure(
            FailureKind.PROVIDER,
            message or "the backend reported an error",
            secrets=secrets,
            status=code,
            code=reason,
            provider_type=kind,
            retry_after=delay,
        )
    )


def _parts(candidate: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """A candidate's text, its thought text and its ``functionCall`` objects, in order."""
    text: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    content = opt_obj(candidate, "content") or {}
    for item in opt_list(content, "parts"):
        part = as_obj(item, "a part")
        call = opt_obj(part, "functionCall")
        if call is not None:
            calls.append(call)
        elif (piece := opt_str(part, "text")) is not None:
            (thoughts if part.get("thought") is True else text).append(piece)
    return "".join(text), "".join(thoughts), calls


def _tool_call(call: dict[str, Any], number: int) -> ToolCall:
    """A whole ``functionCall``; ids come only from some models, so the others get numbered."""
    return ToolCall(
        id=opt_str(call, "id") or f"gemini_call_{number}",
        name=opt_str(call, "name") or "",
        arguments=encode_json(opt_obj(call, "args") or {}).decode(),
    )


def _usage(value: dict[str, Any]) -> Usage | None:
    meta = opt_obj(value, "usageMetadata")
    if meta is None:
        return None

    # The total is prompt + tool-use prompt + candidates + thoughts. The tool-use
    # prompt (grounding results...) is input the model read; thinking is output
    # reported apart from the candidates. Cached tokens are inside the prompt count.
    # proto3 JSON leaves zero counts out, so an absent count is 0.
    def count(key: str) -> int:
        return opt_int(meta, key) or 0

    return Usage(
        input_tokens=count("promptTokenCount") + count("toolUsePromptTokenCount"),
        output_tokens=count("candidatesTokenCount") + count("thoughtsTokenCount"),
    )


def _blocked(value: dict[str, Any]) -> bool:
    feedback = opt_obj(value, "promptFeedback") or {}
    return opt_str(feedback, "blockReason") is not None


def _typed_fits(value: GeminiEvent) -> bool:
    """Whether the fast path reads all of ``value``: no error, tool call or block reason."""
    if value.error is not None:
        return False
    if not value.candidates:
        return value.promptFeedback is None
    content = value.candidates[0].content
    parts = (content.parts if content is not None else None) or ()
    return all(part.functionCall is None for part in parts)


class GeminiStreamDecoder(StreamDecoder):
    """``alt=sse`` events; the first ``finishReason`` completes the stream."""

    provider = PROVIDER
    terminator = "final chunk (no finishReason was received)"
    ends_at_terminator = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._calls = 0

    def on_event(self, event: SseEvent) -> Chunk | None:
        shape = decode_shape(GEMINI_EVENT, event.data)
        if shape is not None and _typed_fits(shape):
            return self._typed(shape)
        return self._general(as_obj(self.json(event.data), "an event"))

    def _typed(self, value: GeminiEvent) -> Chunk | None:
        """The fast path: the same reading as :meth:`_general`, over a typed event."""
        usage = None
        meta = value.usageMetadata
        if meta is not None:
            usage = self.set_usage(
                max(meta.promptTokenCount or 0, 0) + max(meta.toolUsePromptTokenCount or 0, 0),
                max(meta.candidatesTokenCount or 0, 0) + max(meta.thoughtsTokenCount or 0, 0),
            )
        text: list[str] = []
        thoughts: list[str] = []
        finish = None
        if value.candidates:
            candidate = value.candidates[0]
            content = candidate.content
            for part in (content.parts if content is not None else None) or ():
                if part.text is not None:
                    (thoughts if part.thought is True else text).append(part.text)
            finish = _finish(candidate.finishReason, self._calls > 0)
        if finish is not None:
            self.finish()
        return chunk_if_any(
            text="".join(text), reasoning="".join(thoughts), finish_reason=finish, usage=usage
        )

    def _general(self, value: dict[str, Any]) -> Chunk | None:
        if value.get("error") is not None:
            raise _reported_error(value, self.secrets)
        reported = _usage(value)
        usage = None
        if reported is not None:
            usage = self.set_usage(reported.input_tokens, reported.output_tokens)
        text = thoughts = ""
        calls: list[ToolCallDelta] = []
        finish = None
        candidates = opt_list(value, "candidates")
        if candidates:
            # We never ask for several candidates.
            candidate = as_obj(candidates[0], "a candidate")
            text, thoughts, found = _parts(candidate)
            for raw in found:
                call = _tool_call(raw, self._calls)
                calls.append(
                    ToolCallDelta(
                        index=self._calls, id=call.id, name=call.name, arguments=call.arguments
                    )
                )
                self._calls += 1
            finish = _finish(opt_str(candidate, "finishReason"), self._calls > 0)
        elif _blocked(value):
            finish = "content_filter"
        if finish is not None:
            self.finish()
        return chunk_if_any(
            text=text, reasoning=thoughts, tool_calls=calls, finish_reason=finish, usage=usage
        )


def _read(value: dict[str, Any], secrets: Sequence[str]) -> ChatResponse:
    if value.get("error") is not None:
        raise _reported_error(value, secrets)
    text = thoughts = ""
    calls: list[ToolCall] = []
    finish = "content_filter" if _blocked(value) else None
    candidates = opt_list(value, "candidates")
    if candidates:
        candidate = as_obj(candidates[0], "a candidate")
        text, thoughts, found = _parts(candidate)
        calls = [_tool_call(raw, number) for number, raw in enumerate(found)]
        finish = _finish(opt_str(candidate, "finishReason"), bool(calls))
    return ChatResponse(
        text=text,
        reasoning=thoughts,
        tool_calls=tuple(calls),
        finish_reason=finish,
        usage=_usage(value) or Usage(),
    )


#: A complete, non-streamed answer. Raises :class:`WireError`.
parse_response: Final = response_parser(PROVIDER, parse_error, _read)
