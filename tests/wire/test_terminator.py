"""The terminator ends an answer: bytes after [DONE] / message_stop are ignored."""

from __future__ import annotations

import pytest

from lbtransports.wire import Chunk, stream_decoder

from . import streams as s

AFTER = {
    "openai": s.sse(s.js({"choices": [{"index": 0, "delta": {"content": "late"}}]})),
    "anthropic": s.sse(
        (
            "content_block_delta",
            s.js(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "late"},
                }
            ),
        )
    ),
}
ERROR_AFTER = {
    "openai": s.sse(s.js({"error": {"message": "boom", "type": "server_error"}})),
    "anthropic": s.sse(("error", s.js({"type": "error", "error": {"type": "x", "message": "b"}}))),
}
COMPLETE = {"openai": s.OPENAI_TEXT, "anthropic": s.ANTHROPIC_TEXT}


def _text(chunks: list[Chunk]) -> str:
    return "".join(chunk.text for chunk in chunks)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("tail", [AFTER, ERROR_AFTER], ids=["text", "error"])
@pytest.mark.parametrize("together", [True, False], ids=["same-piece", "later-piece"])
def test_what_follows_the_terminator_is_ignored(
    provider: str, tail: dict[str, bytes], together: bool
) -> None:
    expected = s.decode(provider, COMPLETE[provider])
    decoder = stream_decoder(provider)
    assert not decoder.finished
    if together:
        chunks = decoder.feed(COMPLETE[provider] + tail[provider])
    else:
        chunks = decoder.feed(COMPLETE[provider])
        assert decoder.finished
        chunks += decoder.feed(tail[provider])
    chunks += decoder.end()
    assert decoder.finished
    assert tuple(chunks) == expected.chunks
    assert "late" not in _text(chunks)
    assert decoder.usage == expected.usage


def test_gemini_is_not_finished_before_the_body_ends() -> None:
    # Gemini has no terminator event: usage may follow the first finishReason.
    decoder = stream_decoder("gemini")
    decoder.feed(s.GEMINI_TEXT)
    assert decoder.done and not decoder.finished


def _longest_line(stream: bytes) -> int:
    return max(len(line) for line in stream.splitlines())


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("complete_line", [True, False], ids=["complete-line", "partial-line"])
def test_an_overlong_line_after_the_terminator_in_the_same_piece_is_ignored(
    provider: str, complete_line: bool
) -> None:
    # The limit guards our memory while an answer is being read; once the
    # terminator ended it, what follows in the same read is not read at all.
    expected = s.decode(provider, COMPLETE[provider])
    limit = _longest_line(COMPLETE[provider])
    decoder = stream_decoder(provider, max_line=limit)
    tail = b"data: " + b"x" * limit + (b"\n\n" if complete_line else b"")
    chunks = decoder.feed(COMPLETE[provider] + tail)
    assert decoder.finished
    chunks += decoder.end()
    assert tuple(chunks) == expected.chunks
    assert decoder.usage == expected.usage


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_oversize_event_after_the_terminator_in_the_same_piece_is_ignored(
    provider: str,
) -> None:
    expected = s.decode(provider, COMPLETE[provider])
    limit = _longest_line(COMPLETE[provider])
    decoder = stream_decoder(provider, max_line=limit, max_event=limit)
    tail = b"".join(b"data: " + b"y" * (limit // 2) + b"\n" for _ in range(4))
    chunks = decoder.feed(COMPLETE[provider] + tail)
    assert decoder.finished
    assert tuple(chunks + decoder.end()) == expected.chunks
