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
