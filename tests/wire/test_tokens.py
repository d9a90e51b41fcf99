"""The prompt-token estimate: the heuristic, and tiktoken only where it fits."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from lbtransports.wire import (
    AssistantMessage,
    BackendTarget,
    ChatRequest,
    TokenMethod,
    Tool,
    ToolCall,
    UserMessage,
    _tokens,
    estimate_tokens,
)


@pytest.fixture(autouse=True)
def _fresh_tokenizer_cache() -> Any:
    _tokens._tiktoken.cache_clear()
    _tokens._encoding.cache_clear()
    yield
    _tokens._tiktoken.cache_clear()
    _tokens._encoding.cache_clear()


def _target(provider: str = "openai", model: str = "gpt-4o") -> BackendTarget:
    return BackendTarget(name="b", provider=provider, model=model)


def _ask(text: str) -> ChatRequest:
    return ChatRequest(messages=(UserMessage(content=text),))


def test_heuristic_is_three_bytes_per_token_plus_framing() -> None:
    estimate = estimate_tokens(_target("anthropic", "claude"), _ask("x" * 300))
    assert estimate.method is TokenMethod.HEURISTIC
    assert estimate.tokens == 100 + 4 + 3


def test_heuristic_counts_utf8_bytes_so_cjk_is_not_underestimated() -> None:
    cjk = estimate_tokens(_target("gemini"), _ask("\u4e2d" * 90)).tokens
    ascii_ = estimate_tokens(_target("gemini"), _ask("x" * 90)).tokens
    assert cjk - 7 == 90
    assert ascii_ - 7 == 30


def test_tools_and_tool_calls_count() -> None:
    bare = estimate_tokens(_target("gemini"), _ask("hi")).tokens
    rich = ChatRequest(
        messages=(
            UserMessage(content="hi"),
            AssistantMessage(tool_calls=(ToolCall(id="c", name="f", arguments='{"a": 1}'),)),
        ),
        tools=(Tool(name="f", description="does f", parameters={"type": "object"}),),
    )
    assert estimate_tokens(_target("gemini"), rich).tokens > bare


def test_empty_prompt_costs_only_the_framing() -> None:
    assert estimate_tokens(_target(), ChatRequest(messages=())).tokens == 3


class _FakeEncoding:
    def encode(self, text: str, disallowed_special: tuple[str, ...] = ()) -> list[int]:
        return [0] * len(text.split())


def _fake_tiktoken(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[str]:
    asked: list[str] = []
    module = types.ModuleType("tiktoken")

    def encoding_for_model(model: str) -> _FakeEncoding:
        asked.append(model)
        if fail:
            raise KeyError(model)
        return _FakeEncoding()

    module.encoding_for_model = encoding_for_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", module)
    return asked


def test_tiktoken_is_used_for_openai_families_when_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked = _fake_tiktoken(monkeypatch)
    estimate = estimate_tokens(
        _target("openai", "openai/gpt-4o-mini"), _ask("one two three"), exact=True
    )
    assert estimate.method is TokenMethod.TIKTOKEN
    assert estimate.tokens == 3 + 4 + 3
    assert asked == ["gpt-4o-mini"]


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "llama-3.1-8b"), ("anthropic", "gpt-4o"), ("gemini", "gemini-2.5-flash")],
)
def test_tiktoken_is_not_used_for_other_families(
    monkeypatch: pytest.MonkeyPatch, provider: str, model: str
) -> None:
    asked = _fake_tiktoken(monkeypatch)
    estimate = estimate_tokens(_target(provider, model), _ask("hi"), exact=True)
    assert estimate.method is TokenMethod.HEURISTIC
    assert asked == []


def test_a_failing_tokenizer_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_tiktoken(monkeypatch, fail=True)
    assert estimate_tokens(_target(), _ask("hi"), exact=True).method is TokenMethod.HEURISTIC


def test_exact_false_never_asks_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _fake_tiktoken(monkeypatch)
    assert estimate_tokens(_target(), _ask("hi"), exact=False).method is TokenMethod.HEURISTIC
    assert asked == []


def test_by_default_tiktoken_is_not_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    # tiktoken may download its vocabulary: a sans-IO layer only does that when told to.
    asked = _fake_tiktoken(monkeypatch)
    assert estimate_tokens(_target(), _ask("hi")).method is TokenMethod.HEURISTIC
    assert asked == []


def test_without_tiktoken_installed_the_heuristic_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    assert estimate_tokens(_target(), _ask("hi"), exact=True).method is TokenMethod.HEURISTIC
