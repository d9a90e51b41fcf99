"""Every provider's decoder against events a hostile or broken backend could send.

Valid streams with one to three values replaced anywhere (a field of the
wrong type, a missing object, an error member, a count past any model's),
fed in pieces split anywhere: the decoder gives chunks and ends in success
or a classified ``WireError``; no other exception ever escapes, and neither
does one from ``parse_response`` or ``parse_error`` given the same data.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbcore import FailureKind
from lbtransports.wire import WireError, parse_error, parse_response, stream_decoder

OPENAI: list[Any] = [
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": "hi",
                    "reasoning_content": "r",
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a"'},
                        }
                    ],
                },
                "finish_reason": None,
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}},
]
ANTHROPIC: list[Any] = [
    {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    },
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
    {"type": "message_stop"},
]
GEMINI: list[Any] = [
    {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "hi"},
                        {"text": "th", "thought": True},
                        {"functionCall": {"name": "f", "args": {"a": 1}}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
    },
    {"promptFeedback": {"blockReason": "SAFETY"}},
]
STREAMS = {"openai": OPENAI, "anthropic": ANTHROPIC, "gemini": GEMINI}

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.sampled_from([[], {}, [1], {"a": 1}, {"message": "boom", "code": 500}, 10**400]),
)


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    places = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            places += _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            places += _places(item, (*path, index))
    return places


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value = copy.deepcopy(value)
    parent = value
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = new
    return value


@st.composite
def hostile_streams(draw: st.DrawFn) -> tuple[str, list[Any], bytes]:
    provider = draw(st.sampled_from(sorted(STREAMS)))
    events = list(STREAMS[provider])
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(events) - 1))
        path = draw(st.sampled_from(_places(events[index])))
        events[index] = _replaced(events[index], path, draw(HOSTILE))
    body = b""
    for data in events:
        named = isinstance(data, dict) and isinstance(data.get("type"), str)
        if provider == "anthropic" and named:
            body += b"event: " + data["type"].encode() + b"\n"
        body += b"data: " + json.dumps(data).encode() + b"\n\n"
    if provider == "openai":
        body += b"data: [DONE]\n\n"
    return provider, events, body


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_streams(), st.lists(st.integers(1, 60), max_size=6))
def test_a_hostile_stream_is_decoded_or_a_classified_failure(
    case: tuple[str, list[Any], bytes], cuts: list[int]
) -> None:
    provider, events, body = case
    decoder = stream_decoder(provider, secrets=("sk-hostile-secret-0123",))
    try:
        position = 0
        for cut in cuts:
            decoder.feed(body[position : position + cut])
            position += cut
        decoder.feed(body[position:])
        decoder.end()
    except WireError as error:
        assert error.failure.kind in (
            FailureKind.PROTOCOL,
            FailureKind.PROVIDER,
            FailureKind.NETWORK,
        )
    else:
        usage = decoder.usage
        assert 0 <= usage.input_tokens < 2**54 and 0 <= usage.output_tokens < 2**54
    for data in events:
        whole = json.dumps(data).encode()
        try:
            parse_response(provider, 200, (), whole)
        except WireError as error:
            assert error.failure.kind is FailureKind.PROTOCOL
        assert parse_error(provider, 503, (), whole).status == 503


@pytest.mark.parametrize(
    ("provider", "event"),
    [
        ("openai", {"choices": [], "usage": {"prompt_tokens": 2**53}}),
        ("openai", {"choices": [], "usage": {"completion_tokens": 10**400}}),
        ("anthropic", {"type": "message_start", "message": {"usage": {"input_tokens": 2**64}}}),
        ("gemini", {"usageMetadata": {"promptTokenCount": 2**53, "toolUsePromptTokenCount": 1}}),
    ],
)
def test_a_token_count_past_2_53_is_a_protocol_failure(provider: str, event: Any) -> None:
    # Such a count is no count; passed on, it overflowed the core's float token rate.
    decoder = stream_decoder(provider)
    with pytest.raises(WireError) as raised:
        decoder.feed(b"data: " + json.dumps(event).encode() + b"\n\n")
    assert raised.value.failure.kind is FailureKind.PROTOCOL
    assert "out of range" in raised.value.failure.message


def test_the_largest_exact_count_is_still_read() -> None:
    decoder = stream_decoder("openai")
    decoder.feed(b'data: {"choices":[],"usage":{"prompt_tokens":%d}}\n\n' % (2**53 - 1))
    assert decoder.usage.input_tokens == 2**53 - 1
