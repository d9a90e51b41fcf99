"""How each provider's answers look on the wire: its routes, SSE events and JSON bodies.

Only bytes are built here, no I/O. Every shape is one ``lbtransports.wire``
reads (the tests decode them with it), modelled on what the real APIs send,
including the events a decoder must skip: OpenAI's role-only opening delta,
Anthropic's ``message_start``, empty ``content_block_start`` and ``ping``.
"""

from __future__ import annotations

import abc
import http
import re
import urllib.parse
from typing import Any, ClassVar, Final

import msgspec

from lbtransports.wire import Provider, Usage

__all__ = (
    "ProviderFormat",
    "Reply",
    "Route",
    "format_for",
    "sse_event",
    "status_phrase",
)

_JSON: Final = msgspec.json.Encoder()


def sse_event(data: object, event: str | None = None) -> bytes:
    """One server-sent event carrying ``data`` as compact (single-line) JSON."""
    named = b"event: " + event.encode() + b"\n" if event else b""
    return named + b"data: " + _JSON.encode(data) + b"\n\n"


def status_phrase(status: int) -> bytes:
    """The reason phrase for a status line; empty for codes HTTP does not name (529)."""
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class Route(msgspec.Struct, frozen=True, kw_only=True):
    """A request the provider serves: the model it names and whether it wants a stream."""

    model: str | None
    stream: bool


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """What the answer to one request echoes: ids and the model."""

    backend: str
    model: str
    #: The request's number on its backend, which makes response ids unique.
    number: int


def _body_route(body: object) -> Route:
    """Model and stream flag from an OpenAI or Anthropic body; a non-JSON body is not streamed."""
    if not isinstance(body, dict):
        return Route(model=None, stream=False)
    model = body.get("model")
    return Route(model=model if isinstance(model, str) else None, stream=body.get("stream") is True)


class ProviderFormat(abc.ABC):
    """The bytes one provider sends. One stateless instance per provider."""

    provider: ClassVar[Provider]
    #: What ``base_url`` adds after ``http://host:port`` so the wire layer's paths match.
    base_path: ClassVar[str]
    #: The error type of an in-stream error event when the test names none.
    stream_error_type: ClassVar[str]

    @abc.abstractmethod
    def route(self, method: str, path: str, body: object) -> Route | None:
        """The route ``path`` reaches, or None when the provider serves nothing there."""

    def opening(self, reply: Reply, input_tokens: int) -> bytes:
        """Events sent with the headers, before any chunk. None of them is a chunk."""
        return b""

    @abc.abstractmethod
    def text_event(self, reply: Reply, text: str) -> bytes:
        """The event carrying one text chunk."""

    @abc.abstractmethod
    def closing(self, reply: Reply, usage: Usage) -> bytes:
        """The finish reason, the usage and the terminator, in the provider's places."""

    @abc.abstractmethod
    def answer(self, reply: Reply, text: str, usage: Usage) -> dict[str, Any]:
        """A whole non-streamed answer."""

    @abc.abstractmethod
    def error_body(
        self, status: int, message: str, error_type: str | None, retry_after: str | None
    ) -> dict[str, Any]:
        """The JSON body of a non-2xx answer."""

    @abc.abstractmethod
    def stream_error(self, message: str, error_type: str | None) -> dict[str, Any]:
        """The error object a provider sends inside a 2xx answer."""

    def error_event(self, message: str, error_type: str | None) -> bytes:
        """The in-stream error event."""
        return sse_event(self.stream_error(message, error_type))


# ------------------------------------------------------------------ openai

_OPENAI_CODES: Final = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def _openai_type(status: int) -> str:
    if status == 429:
        return "rate_limit_exceeded"
    return "server_error" if status >= 500 else "invalid_request_error"


def _openai_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total,
    }


class OpenAIFormat(ProviderFormat):
    """Chat Completions: ``chat.completion.chunk`` events, usage last, then ``[DONE]``."""

    provider = Provider.OPENAI
    base_path = "/v1"
    stream_error_type = "server_error"

    def route(self, method: str, path: str, body: object) -> Route | None:
        if method != "POST" or path != "/v1/chat/completions":
            return None
        return _body_route(body)

    def _chunk(self, reply: Reply, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{reply.backend}-{reply.number}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": reply.model,
            "choices": choices,
        }

    def _delta(
        self, reply: Reply, delta: dict[str, Any], finish: str | None = None
    ) -> dict[str, Any]:
        return self._chunk(reply, [{"index": 0, "delta": delta, "finish_reason": finish}])

    def opening(self, reply: Reply, input_tokens: int) -> bytes:
        return sse_event(self._delta(reply, {"role": "assistant", "content": ""}))

    def text_event(self, reply: Reply, text: str) -> bytes:
        return sse_event(self._delta(reply, {"content": text}))

    def closing(self, reply: Reply, usage: Usage) -> bytes:
        # With stream_options.include_usage the usage rides on a last chunk with no choices.
        return (
            sse_event(self._delta(reply, {}, "stop"))
            + sse_event({**self._chunk(reply, []), "usage": _openai_usage(usage)})
            + b"data: [DONE]\n\n"
        )

    def answer(self, reply: Reply, text: str, usage: Usage) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{reply.backend}-{reply.number}",
            "object": "chat.completion",
            "created": 0,
            "model": reply.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": _openai_usage(usage),
        }

    def error_body(
        self, status: int, message: str, error_type: str | None, retry_after: str | None
    ) -> dict[str, Any]:
        return {
            "error": {
                "message": message,
                "type": error_type or _openai_type(status),
                "param": None,
                "code": _OPENAI_CODES.get(status),
            }
        }

    def stream_error(self, message: str, error_type: str | None) -> dict[str, Any]:
        kind = error_type or self.stream_error_type
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# --------------------------------------------------------------- anthropic

_ANTHROPIC_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


class AnthropicFormat(ProviderFormat):
    """Messages API: named events from ``message_start`` to ``message_stop``."""

    provider = Provider.ANTHROPIC
    base_path = ""
    stream_error_type = "overloaded_error"

    def route(self, method: str, path: str, body: object) -> Route | None:
        if method != "POST" or path != "/v1/messages":
            return None
        return _body_route(body)

    def opening(self, reply: Reply, input_tokens: int) -> bytes:
        message: dict[str, Any] = {
            "id": f"msg_{reply.backend}_{reply.number}",
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0},
        }
        block = {"type": "text", "text": ""}
        return (
            sse_event({"type": "message_start", "message": message}, "message_start")
            + sse_event(
                {"type": "content_block_start", "index": 0, "content_block": block},
                "content_block_start",
            )
            + sse_event({"type": "ping"}, "ping")
        )

    def text_event(self, reply: Reply, text: str) -> bytes:
        delta = {"type": "text_delta", "text": text}
        return sse_event(
            {"type": "content_block_delta", "index": 0, "delta": delta}, "content_block_delta"
        )

    def closing(self, reply: Reply, usage: Usage) -> bytes:
        delta = {"stop_reason": "end_turn", "stop_sequence": None}
        return (
            sse_event({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + sse_event(
                {
                    "type": "message_delta",
                    "delta": delta,
                    "usage": {"output_tokens": usage.output_tokens},
                },
                "message_delta",
            )
            + sse_event({"type": "message_stop"}, "message_stop")
        )

    def answer(self, reply: Reply, text: str, usage: Usage) -> dict[str, Any]:
        return {
            "id": f"msg_{reply.backend}_{reply.number}",
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }

    def error_body(
        self, status: int, message: str, error_type: str | None, retry_after: str | None
    ) -> dict[str, Any]:
        default = "api_error" if status >= 500 else "invalid_request_error"
        kind = error_type or _ANTHROPIC_TYPES.get(status, default)
        return {"type": "error", "error": {"type": kind, "message": message}}

    def stream_error(self, message: str, error_type: str | None) -> dict[str, Any]:
        kind = error_type or self.stream_error_type
        return {"type": "error", "error": {"type": kind, "message": message}}

    def error_event(self, message: str, error_type: str | None) -> bytes:
        return sse_event(self.stream_error(message, error_type), "error")


# ------------------------------------------------------------------ gemini

_GOOGLE_STATUS: Final = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GOOGLE_CODE: Final = {name: code for code, name in _GOOGLE_STATUS.items()}
_GEMINI_PATH: Final = re.compile(r"/v1beta/models/([^/]+):(streamGenerateContent|generateContent)")
_SECONDS: Final = re.compile(r"\d+(?:\.\d+)?")


def _gemini_usage(usage: Usage) -> dict[str, int]:
    return {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens,
        "totalTokenCount": usage.total,
    }


class GeminiFormat(ProviderFormat):
    """``alt=sse`` events, each a whole response; the one with ``finishReason`` ends it."""

    provider = Provider.GEMINI
    base_path = "/v1beta"
    stream_error_type = "UNAVAILABLE"

    def route(self, method: str, path: str, body: object) -> Route | None:
        match = _GEMINI_PATH.fullmatch(path)
        if method != "POST" or match is None:
            return None
        model = urllib.parse.unquote(match.group(1))
        return Route(model=model, stream=match.group(2) == "streamGenerateContent")

    def _response(
        self, reply: Reply, text: str, finish: str | None = None, usage: Usage | None = None
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {
            "content": {"parts": [{"text": text}], "role": "model"},
            "index": 0,
        }
        if finish is not None:
            candidate["finishReason"] = finish
        response: dict[str, Any] = {"candidates": [candidate]}
        if usage is not None:
            response["usageMetadata"] = _gemini_usage(usage)
        response["modelVersion"] = reply.model
        response["responseId"] = f"{reply.backend}-{reply.number}"
        return response

    def text_event(self, reply: Reply, text: str) -> bytes:
        return sse_event(self._response(reply, text))

    def closing(self, reply: Reply, usage: Usage) -> bytes:
        # No terminator line: the finish reason on the last response is the end.
        return sse_event(self._response(reply, "", "STOP", usage))

    def answer(self, reply: Reply, text: str, usage: Usage) -> dict[str, Any]:
        return self._response(reply, text, "STOP", usage)

    def error_body(
        self, status: int, message: str, error_type: str | None, retry_after: str | None
    ) -> dict[str, Any]:
        default = "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"
        error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": error_type or _GOOGLE_STATUS.get(status, default),
        }
        if retry_after is not None and _SECONDS.fullmatch(retry_after.strip()):
            # Google says when to retry in the body; the header is sent too.
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": f"{retry_after.strip()}s",
                }
            ]
        return {"error": error}

    def stream_error(self, message: str, error_type: str | None) -> dict[str, Any]:
        status = error_type or self.stream_error_type
        code = _GOOGLE_CODE.get(status, 500)
        return {"error": {"code": code, "message": message, "status": status}}


_FORMATS: Final[dict[str, ProviderFormat]] = {
    Provider.OPENAI.value: OpenAIFormat(),
    Provider.ANTHROPIC.value: AnthropicFormat(),
    Provider.GEMINI.value: GeminiFormat(),
}


def format_for(provider: str) -> ProviderFormat:
    """The format of ``provider``. Raises ``ValueError`` for a provider we do not speak."""
    found = _FORMATS.get(provider)
    if found is None:
        known = ", ".join(_FORMATS)
        raise ValueError(f"unknown provider {provider!r} (known: {known})")
    return found
