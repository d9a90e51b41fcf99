"""Typed shapes of the streamed events, for decoding them faster than into dicts.

Each provider reads its events in two ways. The fast one decodes the event's
JSON straight into these structs (no dict per object, fields checked in C).
The general one, over plain JSON values, stays the definition: whenever a
struct does not fit (a field of an unexpected type, an error member, a part
the fast path does not read) the provider decodes the event again that way,
which gives the same chunk or the classified failure. The structs are
stricter than the general path, never looser, so the fast path can only
agree with it or step aside. Unknown fields are ignored, as there.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

# Internal: nothing here is re-exported.
__all__ = (
    "ANTHROPIC_EVENT",
    "GEMINI_EVENT",
    "OPENAI_EVENT",
    "AnthropicEvent",
    "GeminiEvent",
    "OpenAIEvent",
)


# -- OpenAI Chat Completions chunk ------------------------------------------------


class OpenAIFunction(msgspec.Struct, frozen=True):
    name: str | None = None
    arguments: str | None = None


class OpenAIToolCall(msgspec.Struct, frozen=True):
    index: int | None = None
    id: str | None = None
    function: OpenAIFunction | None = None


class OpenAIDelta(msgspec.Struct, frozen=True):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    tool_calls: list[OpenAIToolCall] | None = None


class OpenAIChoice(msgspec.Struct, frozen=True):
    index: int = 0
    delta: OpenAIDelta | None = None
    finish_reason: str | None = None


class OpenAIUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class OpenAIEvent(msgspec.Struct, frozen=True):
    choices: list[OpenAIChoice] | None = None
    usage: OpenAIUsage | None = None
    #: Any value but null means an error event: the general path reads it.
    error: Any = None


# -- Anthropic content_block_delta --------------------------------------------------


class AnthropicDelta(msgspec.Struct, frozen=True):
    type: str | None = None
    text: str | None = None
    thinking: str | None = None
    partial_json: str | None = None


class AnthropicEvent(msgspec.Struct, frozen=True):
    """Only ``content_block_delta`` (one per chunk) is read this way."""

    type: str | None = None
    index: int | None = None
    delta: AnthropicDelta | None = None


# -- Gemini response ------------------------------------------------------------------


class GeminiPart(msgspec.Struct, frozen=True):
    text: str | None = None
    thought: Any = None
    #: Tool calls are rare: a part that has one goes to the general path.
    #: (Field names are the API's own, camelCase.)
    functionCall: Any = None


class GeminiContent(msgspec.Struct, frozen=True):
    parts: list[GeminiPart] | None = None


class GeminiCandidate(msgspec.Struct, frozen=True):
    content: GeminiContent | None = None
    finishReason: str | None = None


class GeminiUsage(msgspec.Struct, frozen=True):
    promptTokenCount: int | None = None
    toolUsePromptTokenCount: int | None = None
    candidatesTokenCount: int | None = None
    thoughtsTokenCount: int | None = None


class GeminiEvent(msgspec.Struct, frozen=True):
    candidates: list[GeminiCandidate] | None = None
    usageMetadata: GeminiUsage | None = None
    #: Read only when there is no candidate; any value sends the event to the general path.
    promptFeedback: Any = None
    error: Any = None


OPENAI_EVENT: Final = msgspec.json.Decoder(OpenAIEvent)
ANTHROPIC_EVENT: Final = msgspec.json.Decoder(AnthropicEvent)
GEMINI_EVENT: Final = msgspec.json.Decoder(GeminiEvent)
