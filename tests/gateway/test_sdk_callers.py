"""The gateway driven by the official openai and anthropic SDKs, over local fault backends."""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import httpx2 as httpx
import openai
import pytest

from lbtransports.gateway import Gateway
from lbtransports.testing import ErrorEvent, Fail, LocalBackends, Reset, Stream

from .harness import BACKEND_SECRET, KEY, base_url, group, make_config, serving

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def backends() -> Iterator[LocalBackends]:
    backends = LocalBackends()
    backends.add("oa", "openai")
    backends.add("an", "anthropic")
    backends.add("ge", "gemini")
    backends.add("down", "openai", default=Fail(503))
    backends.add("slow", "openai", default=Stream(40, delay_ms=50))
    backends.add("breaks", "anthropic", default=ErrorEvent(after_chunks=2))
    backends.add("resets", "openai", default=Reset(after_chunks=2))
    with backends:
        yield backends
        for backend in backends:
            assert backend.errors == ()


@pytest.fixture
def gateway(backends: LocalBackends) -> Iterator[Gateway]:
    rr = "round-robin"
    groups = {
        "gpt": group(backends["oa"], strategy=rr),
        "claude": group(backends["an"], strategy=rr),
        "gemini": group(backends["ge"], strategy=rr),
        "fallback": group(backends["down"], backends["an"]),
        "slow": group(backends["slow"], strategy=rr),
        "breaks": group(backends["breaks"], strategy=rr),
        "resets": group(backends["resets"], strategy=rr),
    }
    with serving(make_config(groups)) as gateway:
        yield gateway


#: SDK clients a test made, closed after it: an SDK client left to the garbage
#: collector warns about its sockets in whichever test happens to run then.
_OPEN: list[openai.OpenAI | anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def close_sdk_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def oai(gateway: Gateway, key: str = KEY) -> openai.OpenAI:
    client = openai.OpenAI(base_url=base_url(gateway), api_key=key, max_retries=0, timeout=10)
    _OPEN.append(client)
    return client


def ant(gateway: Gateway, key: str = KEY) -> anthropic.Anthropic:
    client = anthropic.Anthropic(
        base_url=base_url(gateway, ""), api_key=key, max_retries=0, timeout=10
    )
    _OPEN.append(client)
    return client


# ------------------------------------------------------------ answers, every format pair


@pytest.mark.parametrize(("model", "backend"), [("gpt", "oa"), ("claude", "an"), ("gemini", "ge")])
def test_openai_caller_whole_answer_from_each_provider(
    gateway: Gateway, model: str, backend: str
) -> None:
    raw = oai(gateway).chat.completions.with_raw_response.create(model=model, messages=HELLO)
    answer = raw.parse()
    assert answer.choices[0].message.content == f"{backend}-0 {backend}-1 {backend}-2 "
    assert answer.choices[0].finish_reason == "stop"
    assert answer.model == model
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 3)
    assert raw.headers["x-lb-backend"] == backend
    assert raw.headers["x-lb-attempts"] == "1"
    assert len(raw.headers["x-request-id"]) == 24


@pytest.mark.parametrize(("model", "backend"), [("gpt", "oa"), ("claude", "an"), ("gemini", "ge")])
def test_openai_caller_streamed_answer_with_usage(
    gateway: Gateway, model: str, backend: str
) -> None:
    stream = oai(gateway).chat.completions.create(
        model=model, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert stream.response.headers["x-lb-backend"] == backend
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"{backend}-0 {backend}-1 {backend}-2 "
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 14


@pytest.mark.parametrize(("model", "backend"), [("gpt", "oa"), ("claude", "an"), ("gemini", "ge")])
def test_anthropic_caller_whole_and_streamed_from_each_provider(
    gateway: Gateway, model: str, backend: str
) -> None:
    client = ant(gateway)
    message = client.messages.create(model=model, max_tokens=50, messages=HELLO)
    expected = f"{backend}-0 {backend}-1 {backend}-2 "
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == expected  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 3)
    with client.messages.stream(model=model, max_tokens=50, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == expected
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3


def test_models_lists_the_groups(gateway: Gateway) -> None:
    names = {model.id for model in oai(gateway).models.list()}
    assert names == {"gpt", "claude", "gemini", "fallback", "slow", "breaks", "resets"}


def test_tools_travel_both_ways(gateway: Gateway, backends: LocalBackends) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Look a word up",
                "parameters": {"type": "object", "properties": {"word": {"type": "string"}}},
            },
        }
    ]
    history = [
        {"role": "user", "content": "define cat"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"word":"cat"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "a small feline"},
    ]
    oai(gateway).chat.completions.create(model="claude", messages=history, tools=tools)  # type: ignore[arg-type]
    sent = backends["an"].received[-1].json()
    assert sent["tools"][0]["name"] == "lookup"
    assert sent["tools"][0]["input_schema"]["properties"]["word"] == {"type": "string"}
    kinds = [
        block["type"]
        for message in sent["messages"]
        for block in message["content"]
        if isinstance(message["content"], list)
    ]
    assert "tool_use" in kinds
    assert "tool_result" in kinds


# ------------------------------------------------------------ failover and failures


def test_failover_names_the_answering_backend_and_the_attempts(
    gateway: Gateway, backends: LocalBackends
) -> None:
    raw = oai(gateway).chat.completions.with_raw_response.create(model="fallback", messages=HELLO)
    assert raw.parse().choices[0].message.content == "an-0 an-1 an-2 "
    assert raw.headers["x-lb-backend"] == "an"
    # The 503s are retried on "down" before failing over: every attempt is counted.
    tried = backends["down"].requests_total
    assert tried >= 1
    assert raw.headers["x-lb-attempts"] == str(tried + 1)


def test_failure_after_output_ends_with_an_error_event_openai(gateway: Gateway) -> None:
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in oai(gateway).chat.completions.create(
            model="resets", messages=HELLO, stream=True
        ):
            if chunk.choices:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "resets-0 resets-1 "


def test_failure_after_output_ends_with_an_error_event_anthropic(gateway: Gateway) -> None:
    pieces: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError),
        ant(gateway).messages.stream(model="breaks", max_tokens=50, messages=HELLO) as stream,
    ):
        pieces.extend(stream.text_stream)
    assert "".join(pieces) == "breaks-0 breaks-1 "


def test_caller_disconnect_closes_the_upstream_connection(
    gateway: Gateway, backends: LocalBackends
) -> None:
    slow = backends["slow"]
    stream = oai(gateway).chat.completions.create(model="slow", messages=HELLO, stream=True)
    # Passed through as the backend sent it: the role-only opening delta, then text.
    first = next(chunk for chunk in stream if chunk.choices[0].delta.content)
    assert first.choices[0].delta.content == "slow-0 "
    assert slow.open_connections == 1
    stream.close()
    deadline = time.monotonic() + 3  # 40 chunks at 50 ms would take 2 s more
    while slow.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slow.open_connections == 0
    assert slow.requests_total == 1


# ------------------------------------------------------------ bad callers


@pytest.mark.parametrize("key", ["wrong-key", ""])
def test_a_bad_key_gets_401_in_each_format_and_reaches_no_backend(
    gateway: Gateway, backends: LocalBackends, key: str
) -> None:
    with pytest.raises(openai.AuthenticationError) as openai_error:
        oai(gateway, key or "x").chat.completions.create(model="gpt", messages=HELLO)
    assert openai_error.value.status_code == 401
    with pytest.raises(anthropic.AuthenticationError) as anthropic_error:
        ant(gateway, key or "x").messages.create(model="claude", max_tokens=5, messages=HELLO)
    assert anthropic_error.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert all(backend.requests_total == 0 for backend in backends)


def test_no_key_at_all_gets_401(gateway: Gateway) -> None:
    answer = httpx.post(
        base_url(gateway, "/v1/chat/completions"), json={"model": "gpt", "messages": HELLO}
    )
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"


def test_a_schema_violation_gets_400_naming_the_field(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        oai(gateway).chat.completions.create(
            model="gpt",
            messages=[{"role": "user", "content": 7}],  # type: ignore[list-item]
        )
    assert "$.messages[0].content" in error.value.message
    with pytest.raises(anthropic.BadRequestError) as bad:
        ant(gateway).messages.create(model="claude", max_tokens="many", messages=HELLO)  # type: ignore[arg-type]
    assert "$.max_tokens" in bad.value.message


def test_malformed_json_gets_400_in_the_callers_format(gateway: Gateway) -> None:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    openai_answer = httpx.post(
        base_url(gateway, "/v1/chat/completions"), content=b"{nope", headers=headers
    )
    assert openai_answer.status_code == 400
    assert openai_answer.json()["error"]["type"] == "invalid_request_error"
    anthropic_answer = httpx.post(
        base_url(gateway, "/v1/messages"), content=b"[1,", headers={"x-api-key": KEY}
    )
    assert anthropic_answer.status_code == 400
    assert anthropic_answer.json()["type"] == "error"
    assert "Traceback" not in openai_answer.text + anthropic_answer.text


def test_an_unknown_model_is_the_providers_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as error:
        oai(gateway).chat.completions.create(model="gpt-9", messages=HELLO)
    assert error.value.code == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as missing:
        ant(gateway).messages.create(model="gpt-9", max_tokens=5, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


# ------------------------------------------------------------ the credential stays inside


def test_the_backend_key_reaches_the_backend_and_never_the_caller(
    backends: LocalBackends,
) -> None:
    echo = backends["oa"]
    echo.script(Fail(401, message=f"invalid key {BACKEND_SECRET}"), Stream(2))
    groups = {"gpt": group(echo, strategy="round-robin")}
    seen: list[str] = []
    with serving(make_config(groups)) as gateway:
        for path, body in [
            ("/v1/chat/completions", {"model": "gpt", "messages": HELLO}),
            ("/v1/chat/completions", {"model": "gpt", "messages": HELLO, "stream": True}),
            ("/v1/messages", {"model": "gpt", "max_tokens": 5, "messages": HELLO}),
            ("/v1/chat/completions", {"model": "nope", "messages": HELLO}),
        ]:
            answer = httpx.post(
                base_url(gateway, path), json=body, headers={"authorization": f"Bearer {KEY}"}
            )
            seen.append(answer.text)
            seen.extend(f"{name}: {value}" for name, value in answer.headers.items())
        metrics = httpx.get(base_url(gateway, "/metrics"), headers={"x-api-key": KEY})
        seen.append(metrics.text)
    assert echo.received[0].header("authorization") == f"Bearer {BACKEND_SECRET}"
    assert any("invalid key" in text for text in seen)  # the error did come through
    assert not any(BACKEND_SECRET in text for text in seen)
    assert not any(KEY in text for text in seen)
