"""Each provider's streams decode into neutral chunks, usage and typed failures."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbcore import FailureKind
from lbtransports.wire import Chunk, ToolCallDelta, Usage, WireError, stream_decoder

from . import streams as s
from .splits import one_byte_at_a_time, split_points


def _text(chunks: tuple[Chunk, ...]) -> str:
    return "".join(chunk.text for chunk in chunks)


def _arguments(chunks: tuple[Chunk, ...], index: int) -> str:
    return "".join(
        call.arguments for chunk in chunks for call in chunk.tool_calls if call.index == index
    )


# ----------------------------------------------------------------- openai


def test_openai_text_stream() -> None:
    out = s.decode("openai", s.OPENAI_TEXT)
    assert out.failure is None
    assert out.chunks == (
        Chunk(text="Bonjour"),
        Chunk(text=", monde"),
        Chunk(finish_reason="stop"),
        Chunk(usage=Usage(input_tokens=12, output_tokens=3)),
    )
    assert out.usage == Usage(input_tokens=12, output_tokens=3)


def test_openai_tool_call_stream() -> None:
    out = s.decode("openai", s.OPENAI_TOOLS)
    assert out.failure is None
    assert out.chunks[0].tool_calls == (ToolCallDelta(index=0, id="call_k1", name="lookup"),)
    assert _arguments(out.chunks, 0) == '{"city": "Lyon"}'
    assert out.chunks[3].tool_calls == (ToolCallDelta(index=1, id="call_k2", name="clock"),)
    assert out.chunks[4].finish_reason == "tool_calls"
    assert out.usage == Usage(input_tokens=80, output_tokens=21)


def test_openai_error_event_is_a_provider_failure() -> None:
    out = s.decode("openai", s.OPENAI_ERROR)
    assert out.chunks == (Chunk(text="Par"),)
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROVIDER
    assert out.failure.provider_type == "server_error"
    assert out.failure.message == "The server had an error"
    assert out.failure.status is None


def test_openrouter_numeric_error_code_is_the_status() -> None:
    data = s.sse(s.js({"error": {"code": 502, "message": "Upstream error"}}))
    out = s.decode("openai", data)
    assert out.failure is not None
    assert (out.failure.kind, out.failure.status, out.failure.code) == (
        FailureKind.PROVIDER,
        502,
        "502",
    )


def test_openai_reasoning_content_is_reasoning() -> None:
    data = s.sse(
        s.js({"choices": [{"index": 0, "delta": {"reasoning_content": "so..."}}]}), "[DONE]"
    )
    assert s.decode("openai", data).chunks == (Chunk(reasoning="so..."),)


def test_openai_usage_on_every_chunk_keeps_the_last() -> None:
    first = {"choices": [{"index": 0, "delta": {"content": "a"}}], "usage": {"prompt_tokens": 5}}
    last = {
        "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2},
    }
    out = s.decode("openai", s.sse(s.js(first), s.js(last), "[DONE]"))
    assert out.usage == Usage(input_tokens=5, output_tokens=2)
    assert out.chunks[-1].finish_reason == "length"


# -------------------------------------------------------------- anthropic


def test_anthropic_text_stream_counts_input_and_output() -> None:
    out = s.decode("anthropic", s.ANTHROPIC_TEXT)
    assert out.failure is None
    usage = Usage(input_tokens=30, output_tokens=9)
    assert out.chunks == (
        Chunk(text="Hi"),
        Chunk(text=" there"),
        Chunk(finish_reason="stop", usage=usage),
    )
    assert out.usage == usage


def test_anthropic_tool_stream_numbers_tool_calls_from_zero() -> None:
    out = s.decode("anthropic", s.ANTHROPIC_TOOLS)
    assert out.failure is None
    assert out.chunks[0] == Chunk(reasoning="Hm")
    assert _text(out.chunks) == "Checking."
    assert out.chunks[2].tool_calls == (ToolCallDelta(index=0, id="toolu_9", name="lookup"),)
    assert _arguments(out.chunks, 0) == '{"city": "Lyon"}'
    assert out.chunks[-1].finish_reason == "tool_calls"
    assert out.usage == Usage(input_tokens=30, output_tokens=40)


def test_anthropic_error_event_before_content_gives_no_chunk() -> None:
    # message_start and ping are not content: the core may still fail over.
    out = s.decode("anthropic", s.ANTHROPIC_OVERLOADED)
    assert out.chunks == ()
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROVIDER
    assert out.failure.provider_type == "overloaded_error"
    assert out.failure.message == "Overloaded"
    assert out.failure.status is None


def test_anthropic_event_type_falls_back_to_the_sse_event_name() -> None:
    data = s.sse(("message_stop", "{}"))
    assert s.decode("anthropic", data).failure is None


def test_anthropic_json_delta_for_a_text_block_is_a_protocol_failure() -> None:
    data = s.sse(
        s.js({"type": "content_block_start", "index": 0, "content_block": {"type": "text"}}),
        s.js(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            }
        ),
    )
    out = s.decode("anthropic", data)
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROTOCOL


# ----------------------------------------------------------------- gemini


def test_gemini_text_stream_with_thoughts() -> None:
    out = s.decode("gemini", s.GEMINI_TEXT)
    assert out.failure is None
    assert out.chunks == (
        Chunk(text="Salut", usage=Usage(input_tokens=7)),
        Chunk(reasoning="thinking...", usage=Usage(input_tokens=7)),
        Chunk(text=" toi", finish_reason="stop", usage=Usage(input_tokens=7, output_tokens=10)),
    )


def test_gemini_function_calls_come_whole_with_stable_ids() -> None:
    out = s.decode("gemini", s.GEMINI_TOOLS)
    assert out.failure is None
    (chunk,) = out.chunks
    assert chunk.tool_calls == (
        ToolCallDelta(index=0, id="gemini_call_0", name="lookup", arguments='{"city":"Lyon"}'),
        ToolCallDelta(index=1, id="gemini_call_1", name="clock", arguments="{}"),
    )
    assert chunk.finish_reason == "tool_calls"
    assert out.usage == Usage(input_tokens=30, output_tokens=12)


def test_gemini_error_in_stream_keeps_its_status() -> None:
    out = s.decode("gemini", s.GEMINI_ERROR)
    assert _text(out.chunks) == "Sal"
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROVIDER
    assert (out.failure.status, out.failure.provider_type) == (503, "UNAVAILABLE")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "malformed_function_call"),
    ],
)
def test_gemini_finish_reasons(reason: str, expected: str) -> None:
    out = s.decode("gemini", s.sse(s._gm([], reason)))
    assert out.failure is None
    assert out.chunks[-1].finish_reason == expected


def test_gemini_blocked_prompt_ends_the_stream() -> None:
    data = s.sse(s.js({"promptFeedback": {"blockReason": "SAFETY"}}))
    out = s.decode("gemini", data)
    assert out.failure is None
    assert out.chunks == (Chunk(finish_reason="content_filter"),)


# ----------------------------------------------------------- all providers


@pytest.mark.parametrize(
    ("provider", "stream"),
    [("openai", s.OPENAI_CUT), ("anthropic", s.ANTHROPIC_CUT), ("gemini", s.GEMINI_CUT)],
)
def test_a_stream_without_its_terminator_ended_early(provider: str, stream: bytes) -> None:
    out = s.decode(provider, stream)
    assert out.chunks  # what did arrive is still delivered
    assert out.failure is not None
    assert out.failure.kind is FailureKind.NETWORK
    assert out.failure.message.startswith("stream ended early")


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_an_empty_body_ended_early(provider: str) -> None:
    out = s.decode(provider, b"")
    assert out.failure is not None
    assert out.failure.kind is FailureKind.NETWORK


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_keep_alives_are_never_chunks(provider: str) -> None:
    decoder = stream_decoder(provider)
    assert decoder.feed(b": keep-alive\n\n: still here\r\n\r\n") == []
    if provider == "anthropic":
        assert decoder.feed(s.sse(("ping", '{"type": "ping"}'))) == []


@pytest.mark.parametrize(
    ("provider", "data"),
    [
        ("openai", b"data: {not json\n\n"),
        ("openai", b"data: [1, 2]\n\n"),
        ("openai", b'data: {"choices": {"0": 1}}\n\n'),
        ("openai", b'data: {"choices": [{"delta": {"content": 5}}]}\n\n'),
        ("anthropic", b'data: {"type": "content_block_delta"}\n\n'),
        ("anthropic", b"data: nope\n\n"),
        ("gemini", b'data: {"candidates": [{"content": {"parts": "x"}}]}\n\n'),
        ("gemini", b'data: {"usageMetadata": {"promptTokenCount": "7"}}\n\n'),
        (
            "gemini",
            b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"args": 1}}]}}]}\n\n',
        ),
    ],
)
def test_malformed_events_are_protocol_failures(provider: str, data: bytes) -> None:
    out = s.decode(provider, data)
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROTOCOL
    assert out.failure.message.startswith(f"{provider} stream:")


@pytest.mark.parametrize(("provider", "stream"), s.ALL)
def test_oversize_line_is_a_protocol_failure(provider: str, stream: bytes) -> None:
    out = s.decode(provider, stream, max_line=40)
    assert out.failure is not None
    assert out.failure.kind is FailureKind.PROTOCOL


def test_a_failure_is_sticky() -> None:
    decoder = stream_decoder("openai")
    with pytest.raises(WireError) as first:
        decoder.feed(b"data: {bad\n\n")
    with pytest.raises(WireError) as again:
        decoder.feed(s.sse("[DONE]"))
    assert again.value.failure == first.value.failure
    with pytest.raises(WireError):
        decoder.end()


def test_secrets_are_redacted_from_stream_errors() -> None:
    data = s.sse(s.js({"error": {"message": "bad key my-very-secret-key", "type": "auth"}}))
    decoder = stream_decoder("openai", secrets=("my-very-secret-key",))
    with pytest.raises(WireError) as caught:
        decoder.feed(data)
    assert "my-very-secret-key" not in caught.value.failure.message
    assert "[redacted]" in caught.value.failure.message


def test_unknown_provider_is_a_setup_failure() -> None:
    with pytest.raises(WireError) as caught:
        stream_decoder("cohere")
    assert caught.value.failure.kind is FailureKind.SETUP


@pytest.mark.parametrize(("provider", "stream"), s.ALL)
def test_one_byte_at_a_time_matches_whole(provider: str, stream: bytes) -> None:
    points = list(range(1, len(stream)))
    assert s.decode(provider, stream, points) == s.decode(provider, stream)
    assert len(one_byte_at_a_time(stream)) == len(stream)


@pytest.mark.parametrize(("provider", "stream"), s.ALL)
def test_every_single_cut_matches_whole(provider: str, stream: bytes) -> None:
    # Exhaustive over one cut point: the boundary can fall on any byte,
    # including inside a CRLF, a UTF-8 sequence or the "data:" field name.
    whole = s.decode(provider, stream)
    for cut in range(1, len(stream)):
        assert s.decode(provider, stream, [cut]) == whole, f"cut at byte {cut}"


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(s.ALL), st.data())
def test_every_split_gives_the_same_result(case: tuple[str, bytes], data: st.DataObject) -> None:
    provider, stream = case
    points = data.draw(split_points(len(stream)))
    assert s.decode(provider, stream, points) == s.decode(provider, stream)


@settings(max_examples=60)
@given(
    st.sampled_from(["openai", "anthropic", "gemini"]),
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(
                [b"data: ", b"\n\n", b"\r\n", b"event: error\n", b"[DONE]", b"{", b"}", b'"'],
            ),
            st.sampled_from([stream[:80] for _, stream in s.ALL]),
        ),
        max_size=12,
    ),
)
def test_arbitrary_bytes_only_fail_with_wire_error(provider: str, parts: list[bytes]) -> None:
    # decode() catches WireError only; anything else would fail the test.
    out = s.decode(provider, b"".join(parts), max_line=256)
    if out.failure is not None:
        assert out.failure.kind is not FailureKind.CONTEXT_LIMIT


def _anthropic_usage_stream(opening: dict[str, int], closing: dict[str, int | None]) -> bytes:
    message = {**s._MESSAGE, "usage": opening}
    return s.sse(
        s._an("message_start", {"message": message}),
        s._an("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": closing}),
        s._an("message_stop", {}),
    )


@pytest.mark.parametrize(
    ("closing", "expected"),
    [
        # Only output: the input counted at message_start stands.
        ({"output_tokens": 9}, Usage(input_tokens=30, output_tokens=9)),
        # input_tokens again, cache fields absent or null: the cached 5 still count.
        ({"input_tokens": 25, "output_tokens": 9}, Usage(input_tokens=30, output_tokens=9)),
        (
            {"input_tokens": 25, "cache_read_input_tokens": None, "output_tokens": 9},
            Usage(input_tokens=30, output_tokens=9),
        ),
        # Every field again (server tools): each replaces its own, nothing is added twice.
        (
            {
                "input_tokens": 40,
                "cache_creation_input_tokens": 2,
                "cache_read_input_tokens": 5,
                "output_tokens": 9,
            },
            Usage(input_tokens=47, output_tokens=9),
        ),
    ],
)
def test_anthropic_usage_fields_are_cumulative_one_by_one(
    closing: dict[str, int | None], expected: Usage
) -> None:
    opening = {"input_tokens": 25, "cache_read_input_tokens": 5, "output_tokens": 1}
    out = s.decode("anthropic", _anthropic_usage_stream(opening, closing))
    assert out.failure is None
    assert out.usage == expected
    assert out.chunks[-1].usage == expected


def test_anthropic_server_tool_blocks_are_not_tool_calls_and_do_not_fail() -> None:
    # Server tools (web search...) stream their input as input_json_delta too;
    # the API runs them itself, so they are neither our tool calls nor an error.
    data = s.sse(
        s._an("message_start", {"message": s._MESSAGE}),
        s._an(
            "content_block_start",
            {
                "index": 0,
                "content_block": {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {},
                },
            },
        ),
        s._an(
            "content_block_delta",
            {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"query": "x"}'}},
        ),
        s._an("content_block_stop", {"index": 0}),
        s._an(
            "content_block_start",
            {
                "index": 1,
                "content_block": {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_1",
                    "content": [],
                },
            },
        ),
        s._an("content_block_stop", {"index": 1}),
        s._an("content_block_start", {"index": 2, "content_block": {"type": "text", "text": ""}}),
        s._an(
            "content_block_delta", {"index": 2, "delta": {"type": "text_delta", "text": "Found"}}
        ),
        s._an("content_block_stop", {"index": 2}),
        s._an(
            "message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}
        ),
        s._an("message_stop", {}),
    )
    out = s.decode("anthropic", data)
    assert out.failure is None
    assert _text(out.chunks) == "Found"
    assert not any(chunk.tool_calls for chunk in out.chunks)


def test_gemini_usage_adds_up_to_its_total() -> None:
    # totalTokenCount = prompt + tool-use prompt + candidates + thoughts: the
    # tool-use prompt (grounding, code execution) is input the model read.
    usage = {
        "promptTokenCount": 10,
        "toolUsePromptTokenCount": 5,
        "cachedContentTokenCount": 4,  # already inside promptTokenCount
        "candidatesTokenCount": 3,
        "thoughtsTokenCount": 2,
        "totalTokenCount": 20,
    }
    out = s.decode("gemini", s.sse(s._gm([{"text": "ok"}], "STOP", **usage)))
    assert out.failure is None
    assert out.usage == Usage(input_tokens=15, output_tokens=5)
    assert out.usage.total == usage["totalTokenCount"]
