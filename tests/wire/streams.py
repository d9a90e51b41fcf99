"""Stream fixtures, written from the shapes in each provider's public API docs.

The wording and numbers are ours; the event names, field names and framing
are the documented ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from lbcore import Failure
from lbtransports.wire import Chunk, Usage, WireError, stream_decoder

from .splits import pieces


def sse(*events: str | tuple[str, str]) -> bytes:
    """``data:`` events; a pair is (event name, data)."""
    out = []
    for event in events:
        if isinstance(event, tuple):
            out.append(f"event: {event[0]}\ndata: {event[1]}\n\n")
        else:
            out.append(f"data: {event}\n\n")
    return "".join(out).encode()


def js(value: object) -> str:
    return msgspec.json.encode(value).decode()


class Decoded(msgspec.Struct, frozen=True, kw_only=True):
    chunks: tuple[Chunk, ...]
    failure: Failure | None
    usage: Usage


def decode(provider: str, data: bytes, points: Sequence[int] = (), **limits: int) -> Decoded:
    """Feed ``data`` cut at ``points``, then end; collect chunks and the failure."""
    decoder = stream_decoder(provider, **limits)
    chunks: list[Chunk] = []
    try:
        for piece in pieces(data, points):
            chunks += decoder.feed(piece)
        chunks += decoder.end()
    except WireError as error:
        return Decoded(chunks=(*chunks, *error.chunks), failure=error.failure, usage=decoder.usage)
    return Decoded(chunks=tuple(chunks), failure=None, usage=decoder.usage)


def _oa(delta: dict[str, object], finish: str | None = None) -> str:
    return js(
        {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": None,
        }
    )


def _oa_usage(prompt: int, completion: int) -> str:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return js(
        {"id": "chatcmpl-7", "object": "chat.completion.chunk", "choices": [], "usage": usage}
    )


OPENAI_TEXT = sse(
    _oa({"role": "assistant", "content": ""}),
    _oa({"content": "Bonjour"}),
    _oa({"content": ", monde"}),
    _oa({}, "stop"),
    _oa_usage(12, 3),
    "[DONE]",
)

OPENAI_TOOLS = sse(
    _oa(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_k1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": ""},
                }
            ],
        }
    ),
    _oa({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    _oa({"tool_calls": [{"index": 0, "function": {"arguments": ' "Lyon"}'}}]}),
    _oa(
        {
            "tool_calls": [
                {"index": 1, "id": "call_k2", "type": "function", "function": {"name": "clock"}}
            ]
        }
    ),
    _oa({}, "tool_calls"),
    _oa_usage(80, 21),
    "[DONE]",
)

OPENAI_ERROR = sse(
    _oa({"content": "Par"}),
    js({"error": {"message": "The server had an error", "type": "server_error", "code": None}}),
)

OPENAI_CUT = sse(_oa({"content": "Bonjour"}), _oa({}, "stop"), _oa_usage(12, 3))


def _an(name: str, payload: dict[str, object]) -> tuple[str, str]:
    return name, js({"type": name, **payload})


_MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "content": [],
    "model": "claude-sonnet-4-5",
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1},
}

ANTHROPIC_TEXT = sse(
    _an("message_start", {"message": _MESSAGE}),
    _an("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    _an("ping", {}),
    _an("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    _an("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": " there"}}),
    _an("content_block_stop", {"index": 0}),
    _an(
        "message_delta",
        {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
    ),
    _an("message_stop", {}),
)

ANTHROPIC_TOOLS = sse(
    _an("message_start", {"message": _MESSAGE}),
    _an("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
    _an("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": "Hm"}}),
    _an(
        "content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "x"}}
    ),
    _an("content_block_stop", {"index": 0}),
    _an("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
    _an("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": "Checking."}}),
    _an("content_block_stop", {"index": 1}),
    _an(
        "content_block_start",
        {
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {}},
        },
    ),
    _an(
        "content_block_delta",
        {"index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
    ),
    _an(
        "content_block_delta",
        {"index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"city": "Ly'}},
    ),
    _an(
        "content_block_delta",
        {"index": 2, "delta": {"type": "input_json_delta", "partial_json": 'on"}'}},
    ),
    _an("content_block_stop", {"index": 2}),
    _an(
        "message_delta",
        {
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 40},
        },
    ),
    _an("message_stop", {}),
)

ANTHROPIC_OVERLOADED = sse(
    _an("message_start", {"message": _MESSAGE}),
    _an("ping", {}),
    _an("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}),
)

ANTHROPIC_CUT = ANTHROPIC_TEXT[: ANTHROPIC_TEXT.index(b"event: message_stop")]


def _gm(parts: list[dict[str, object]], finish: str | None = None, **usage: int) -> str:
    candidate: dict[str, object] = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return js(
        {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash"}
    )


GEMINI_TEXT = sse(
    _gm([{"text": "Salut"}], promptTokenCount=7, totalTokenCount=7),
    _gm([{"text": "thinking...", "thought": True}], promptTokenCount=7),
    _gm(
        [{"text": " toi"}],
        "STOP",
        promptTokenCount=7,
        candidatesTokenCount=4,
        thoughtsTokenCount=6,
        totalTokenCount=17,
    ),
)

GEMINI_TOOLS = sse(
    _gm(
        [
            {"functionCall": {"name": "lookup", "args": {"city": "Lyon"}}},
            {"functionCall": {"name": "clock", "args": {}}},
        ],
        "STOP",
        promptTokenCount=30,
        candidatesTokenCount=12,
    ),
)

GEMINI_ERROR = sse(
    _gm([{"text": "Sal"}], promptTokenCount=7),
    js({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}),
)

GEMINI_CUT = sse(_gm([{"text": "Salut"}], promptTokenCount=7))

#: provider -> fixtures that decode without a failure.
COMPLETE = {
    "openai": (OPENAI_TEXT, OPENAI_TOOLS),
    "anthropic": (ANTHROPIC_TEXT, ANTHROPIC_TOOLS),
    "gemini": (GEMINI_TEXT, GEMINI_TOOLS),
}
ALL = [
    (provider, stream)
    for provider, streams in {
        "openai": (OPENAI_TEXT, OPENAI_TOOLS, OPENAI_ERROR, OPENAI_CUT),
        "anthropic": (ANTHROPIC_TEXT, ANTHROPIC_TOOLS, ANTHROPIC_OVERLOADED, ANTHROPIC_CUT),
        "gemini": (GEMINI_TEXT, GEMINI_TOOLS, GEMINI_ERROR, GEMINI_CUT),
    }.items()
    for stream in streams
]
