"""Building the HTTP request for a backend (reference section 9), per provider."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import msgspec
import pytest

from lbcore import FailureKind
from lbtransports.wire import (
    AssistantMessage,
    BackendTarget,
    ChatRequest,
    CredentialSource,
    HttpRequest,
    SystemMessage,
    Tool,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    WireError,
    build_request,
    merge_settings,
)

KEY = "sk-test-0123456789abcdef"
WEATHER = Tool(
    name="lookup",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)
CONVERSATION = ChatRequest(
    messages=(
        SystemMessage(content="Be brief."),
        UserMessage(content="Weather in Lyon?"),
        AssistantMessage(
            content="",
            tool_calls=(ToolCall(id="call_1", name="lookup", arguments='{"city": "Lyon"}'),),
        ),
        ToolResultMessage(tool_call_id="call_1", content='{"celsius": 21}'),
        UserMessage(content="Thanks"),
    ),
    tools=(WEATHER,),
    temperature=0.2,
    max_tokens=300,
    stop=("END",),
)


def target(provider: str, **fields: Any) -> BackendTarget:
    fields.setdefault("credential", CredentialSource(key=KEY))
    fields.setdefault("model", "m-1")
    return BackendTarget(name=f"{provider}-1", provider=provider, **fields)


def body(request: HttpRequest) -> Any:
    return msgspec.json.decode(request.body)


# ----------------------------------------------------------------- openai


def test_openai_request() -> None:
    built = build_request(target("openai"), CONVERSATION)
    assert (built.method, built.url, built.stream) == (
        "POST",
        "https://api.openai.com/v1/chat/completions",
        True,
    )
    assert built.header("Authorization") == f"Bearer {KEY}"
    assert built.header("accept") == "text/event-stream"
    assert body(built) == {
        "model": "m-1",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Lyon?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"city": "Lyon"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": "Weather for a city",
                    "parameters": WEATHER.parameters,
                },
            }
        ],
        "temperature": 0.2,
        "max_tokens": 300,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_openai_base_url_override_and_no_key() -> None:
    local = target("openai", base_url="http://127.0.0.1:8080/v1/", credential=CredentialSource())
    built = build_request(local, ChatRequest(messages=(UserMessage(content="hi"),), stream=False))
    assert built.url == "http://127.0.0.1:8080/v1/chat/completions"
    assert built.header("authorization") is None
    assert built.header("accept") == "application/json"
    assert body(built)["stream"] is False
    assert "stream_options" not in body(built)


# -------------------------------------------------------------- anthropic


def test_anthropic_request() -> None:
    built = build_request(target("anthropic"), CONVERSATION)
    assert built.url == "https://api.anthropic.com/v1/messages"
    assert built.header("x-api-key") == KEY
    assert built.header("anthropic-version") == "2023-06-01"
    assert built.header("authorization") is None
    assert body(built) == {
        "model": "m-1",
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Lyon?"}]},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "call_1",
                        "name": "lookup",
                        "input": {"city": "Lyon"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": '{"celsius": 21}'},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "tools": [
            {
                "name": "lookup",
                "description": "Weather for a city",
                "input_schema": WEATHER.parameters,
            }
        ],
        "temperature": 0.2,
        "stop_sequences": ["END"],
        "stream": True,
    }


def test_anthropic_max_tokens_has_a_default() -> None:
    built = build_request(target("anthropic"), ChatRequest(messages=(UserMessage(content="hi"),)))
    assert body(built)["max_tokens"] == 4096
    assert "system" not in body(built)


def test_anthropic_tool_result_error_flag() -> None:
    request = ChatRequest(
        messages=(ToolResultMessage(tool_call_id="t", content="boom", is_error=True),)
    )
    (message,) = body(build_request(target("anthropic"), request))["messages"]
    assert message["content"][0]["is_error"] is True


def test_non_object_tool_arguments_are_a_setup_failure() -> None:
    request = ChatRequest(
        messages=(AssistantMessage(tool_calls=(ToolCall(id="c", name="f", arguments="[1]"),)),)
    )
    with pytest.raises(WireError) as caught:
        build_request(target("anthropic"), request)
    assert caught.value.failure.kind is FailureKind.SETUP


# ----------------------------------------------------------------- gemini


def test_gemini_request() -> None:
    built = build_request(target("gemini"), CONVERSATION)
    assert built.url == (
        "https://generativelanguage.googleapis.com/v1beta/models/m-1:streamGenerateContent?alt=sse"
    )
    assert built.header("x-goog-api-key") == KEY
    assert body(built) == {
        "contents": [
            {"role": "user", "parts": [{"text": "Weather in Lyon?"}]},
            {
                "role": "model",
                "parts": [{"functionCall": {"name": "lookup", "args": {"city": "Lyon"}}}],
            },
            {
                "role": "user",
                "parts": [
                    {"functionResponse": {"name": "lookup", "response": {"celsius": 21}}},
                    {"text": "Thanks"},
                ],
            },
        ],
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "lookup",
                        "description": "Weather for a city",
                        "parameters": WEATHER.parameters,
                    }
                ]
            }
        ],
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 300, "stopSequences": ["END"]},
    }


def test_gemini_non_streaming_url_and_model_prefix() -> None:
    request = ChatRequest(messages=(UserMessage(content="hi"),), stream=False)
    built = build_request(target("gemini", model="models/gemini-2.5-flash"), request)
    assert built.url.endswith("/models/gemini-2.5-flash:generateContent")
    assert not built.stream


def test_gemini_plain_text_tool_result_is_wrapped() -> None:
    request = ChatRequest(messages=(ToolResultMessage(tool_call_id="x", name="f", content="ok"),))
    (content,) = body(build_request(target("gemini"), request))["contents"]
    assert content["parts"][0]["functionResponse"] == {"name": "f", "response": {"content": "ok"}}


# ------------------------------------------------------ settings (section 9)


def test_lb_settings_win_over_the_backends() -> None:
    backend = target(
        "openai",
        ephemeral_settings={"temperature": 0.5, "maxTokens": 100, "streaming": True},
        model_params={"top_p": 0.8, "seed": 1},
    )
    merged = merge_settings(
        backend, {"temperature": 0.9, "maxTokens": 500, "streaming": False}, {"seed": 2}
    )
    assert (merged.temperature, merged.max_tokens, merged.streaming) == (0.9, 500, False)
    assert merged.model_params == {"top_p": 0.8, "seed": 2}


def test_model_params_beat_ephemerals_for_the_lifted_values() -> None:
    backend = target("openai", ephemeral_settings={"temperature": 0.1, "stream": False})
    merged = merge_settings(backend, None, {"temperature": 0.7, "max_tokens": 64})
    assert (merged.temperature, merged.max_tokens, merged.streaming) == (0.7, 64, False)


@pytest.mark.parametrize("bad", ["0.5", True, None, [1]])
def test_lifted_values_of_the_wrong_type_are_ignored(bad: object) -> None:
    backend = target("openai", ephemeral_settings={"temperature": bad, "streaming": "yes"})
    merged = merge_settings(backend)
    assert (merged.temperature, merged.streaming) == (None, None)


def test_settings_override_the_callers_values_in_the_body() -> None:
    backend = target("gemini", ephemeral_settings={"streaming": False})
    built = build_request(
        backend, CONVERSATION, lb_settings={"temperature": 0.9}, lb_model_params={"topK": 40}
    )
    config = body(built)["generationConfig"]
    assert (config["temperature"], config["topK"]) == (0.9, 40)
    assert not built.stream
    assert ":generateContent" in built.url


@pytest.mark.parametrize(
    ("provider", "kept", "dropped"),
    [
        ("openai", {"reasoning_effort": "low", "seed": 3}, ["thinking", "top_k", "safetySettings"]),
        ("anthropic", {"thinking": {"type": "enabled"}, "top_k": 5}, ["reasoning_effort", "seed"]),
    ],
)
def test_keys_of_one_provider_never_reach_another(
    provider: str, kept: dict[str, Any], dropped: list[str]
) -> None:
    params = {
        "reasoning_effort": "low",
        "seed": 3,
        "thinking": {"type": "enabled"},
        "top_k": 5,
        "safetySettings": [],
        "failover_retry_count": 3,
        "base-url": "http://evil",
    }
    sent = body(build_request(target(provider), CONVERSATION, lb_model_params=params))
    for key, value in kept.items():
        assert sent[key] == value
    for key in [*dropped, "failover_retry_count", "base-url"]:
        assert key not in sent


def test_gemini_renames_allowed_params_into_generation_config() -> None:
    params = {"top_k": 5, "presence_penalty": 0.1, "reasoning_effort": "low", "stop": "X"}
    sent = body(build_request(target("gemini"), CONVERSATION, lb_model_params=params))
    assert sent["generationConfig"]["topK"] == 5
    assert sent["generationConfig"]["presencePenalty"] == 0.1
    assert sent["generationConfig"]["stopSequences"] == ["X"]
    assert "reasoning_effort" not in str(sent)


def test_extras_are_keyed_by_provider_and_cannot_replace_our_fields() -> None:
    request = ChatRequest(
        messages=(UserMessage(content="hi"),),
        extras={"openai": {"seed": 9, "model": "other", "stream": False}, "gemini": {"x": 1}},
    )
    sent = body(build_request(target("openai"), request))
    assert sent["seed"] == 9
    assert (sent["model"], sent["stream"]) == ("m-1", True)
    assert "x" not in sent
    assert "seed" not in body(build_request(target("gemini"), request))


def test_the_callers_request_and_settings_are_not_mutated() -> None:
    lb_settings = {"temperature": 0.9, "nested": {"a": 1}}
    lb_params = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    backend = target("anthropic", ephemeral_settings={"maxTokens": 10}, model_params={"top_k": 2})
    before = (copy.deepcopy(lb_settings), copy.deepcopy(lb_params), msgspec.to_builtins(backend))
    request_before = msgspec.json.encode(CONVERSATION)
    build_request(backend, CONVERSATION, lb_settings=lb_settings, lb_model_params=lb_params)
    assert (lb_settings, lb_params, msgspec.to_builtins(backend)) == before
    assert msgspec.json.encode(CONVERSATION) == request_before


# ------------------------------------------------------------ credentials


def test_the_credential_comes_from_the_backend_only() -> None:
    # An auth key in the LB's settings (a stale parent token, #2132) is never used.
    backend = target("openai", credential=CredentialSource())
    built = build_request(
        backend, CONVERSATION, lb_settings={"auth-key": "sk-stale-parent-token-1234"}
    )
    assert built.header("authorization") is None
    assert b"sk-stale" not in built.body


def test_key_from_environment() -> None:
    backend = target("gemini", credential=CredentialSource(env="GEMINI_KEY"))
    built = build_request(backend, CONVERSATION, environ={"GEMINI_KEY": "  AIzaSecret123  "})
    assert built.header("x-goog-api-key") == "AIzaSecret123"
    assert built.secrets == ("AIzaSecret123",)


def test_key_from_a_file_with_home_expanded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "key.txt").write_text("  sk-from-file-123456\n")
    backend = target("openai", credential=CredentialSource(key_file="~/key.txt"))
    assert build_request(backend, CONVERSATION).header("authorization") == (
        "Bearer sk-from-file-123456"
    )


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        (CredentialSource(env="NOPE_KEY"), "NOPE_KEY"),
        (CredentialSource(key_file="/definitely/missing/key"), "/definitely/missing/key"),
        (CredentialSource(key="   "), "empty"),
    ],
)
def test_a_missing_credential_is_a_setup_failure_naming_the_backend(
    source: CredentialSource, needle: str
) -> None:
    with pytest.raises(WireError) as caught:
        build_request(target("anthropic", credential=source), CONVERSATION, environ={})
    failure = caught.value.failure
    assert failure.kind is FailureKind.SETUP
    assert 'Backend "anthropic-1"' in failure.message
    assert needle in failure.message


def test_an_empty_key_file_is_a_setup_failure(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("\n\n")
    source = CredentialSource(key_file=str(tmp_path / "k"))
    with pytest.raises(WireError) as caught:
        build_request(target("openai", credential=source), CONVERSATION)
    assert caught.value.failure.kind is FailureKind.SETUP


def test_unknown_provider_is_a_setup_failure_naming_the_backend() -> None:
    with pytest.raises(WireError) as caught:
        build_request(target("cohere"), CONVERSATION)
    assert caught.value.failure.kind is FailureKind.SETUP
    assert 'Backend "cohere-1"' in caught.value.failure.message


def test_keys_never_appear_in_reprs() -> None:
    backend = target("openai")
    built = build_request(backend, CONVERSATION)
    for shown in (repr(backend), repr(backend.credential), repr(built), str(built)):
        assert KEY not in shown
    assert "<redacted>" in repr(built)


def test_backend_target_repr_hides_credentials_kept_in_settings() -> None:
    # Profiles carry their key as the `auth-key` ephemeral setting: a repr of the
    # target (in a log line, a traceback) must show that it is there, not what it is.
    target = BackendTarget(
        name="zai",
        provider="openai",
        model="glm",
        ephemeral_settings={"auth-key": "sk-live-0123456789", "temperature": 0.2},
        model_params={"api_key": "sk-other-0123456789", "max_tokens": 64},
    )
    shown = repr(target)
    assert "sk-live" not in shown
    assert "sk-other" not in shown
    assert "'temperature': 0.2" in shown
    assert "'max_tokens': 64" in shown


# ------------------------------------------------------- unsendable input

_HI = (UserMessage(content="hi"),)


@pytest.mark.parametrize(
    ("request_", "lb_model_params"),
    [
        (ChatRequest(messages=_HI, extras={"openai": {"x": object()}}), None),
        (ChatRequest(messages=_HI), {"seed": object()}),
        # A lone surrogate, as badly decoded tool output can carry: not UTF-8 encodable.
        (ChatRequest(messages=(UserMessage(content="bad \ud800 text"),)), None),
    ],
)
def test_a_body_that_cannot_be_encoded_is_a_setup_failure_naming_the_backend(
    request_: ChatRequest, lb_model_params: dict[str, Any] | None
) -> None:
    with pytest.raises(WireError) as caught:
        build_request(target("openai"), request_, lb_model_params=lb_model_params)
    assert caught.value.failure.kind is FailureKind.SETUP
    assert caught.value.failure.message.startswith('Backend "openai-1": ')


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize(
    "message",
    [
        ToolResultMessage(tool_call_id="c", name="f", content="out \ud800"),
        AssistantMessage(tool_calls=(ToolCall(id="c", name="f", arguments='{"a": "\ud800"}'),)),
    ],
)
def test_a_lone_surrogate_in_tool_traffic_is_a_setup_failure(
    provider: str, message: ToolResultMessage | AssistantMessage
) -> None:
    with pytest.raises(WireError) as caught:
        build_request(target(provider), ChatRequest(messages=(message,)))
    assert caught.value.failure.kind is FailureKind.SETUP
    assert caught.value.failure.message.startswith(f'Backend "{provider}-1": ')


def test_unsendable_tool_arguments_name_the_backend() -> None:
    request = ChatRequest(
        messages=(AssistantMessage(tool_calls=(ToolCall(id="c", name="f", arguments="[1]"),)),)
    )
    with pytest.raises(WireError) as caught:
        build_request(target("gemini"), request)
    assert caught.value.failure.message.startswith('Backend "gemini-1": tool call c')


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), -float("inf"), 10**400], ids=["nan", "inf", "-inf", "huge"]
)
def test_lifted_numbers_that_are_not_finite_are_ignored(bad: object) -> None:
    backend = target("openai", ephemeral_settings={"temperature": bad, "maxTokens": bad})
    merged = merge_settings(backend)
    assert merged.temperature is None
    assert merged.max_tokens in (None, bad)  # a huge integer is still an integer
    sent = body(build_request(backend, ChatRequest(messages=_HI)))
    assert "temperature" not in sent


@pytest.mark.parametrize("key", ["sk-abc\nsk-def", "key\r\nX-Injected: 1", "tab\x00key"])
def test_a_key_with_control_characters_is_a_setup_failure(key: str) -> None:
    # It would end up in a header, where a line break splits or injects headers.
    with pytest.raises(WireError) as caught:
        build_request(target("openai", credential=CredentialSource(key=key)), CONVERSATION)
    failure = caught.value.failure
    assert failure.kind is FailureKind.SETUP
    assert 'Backend "openai-1"' in failure.message
    assert "sk-abc" not in failure.message and "key\r" not in failure.message
