"""Same-format passthrough: an OpenAI caller answered by an openai backend, an
Anthropic caller by an anthropic one, gets the backend's own events and bodies
(fields the translator would drop arrive intact), with the group's model name,
without the backend's key, and with the failure rules of translated answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import msgspec
import openai
import pytest

from lbtransports import Upstream
from lbtransports.gateway import Gateway
from lbtransports.gateway._passthrough import Passthrough
from lbtransports.testing import ErrorEvent, LocalBackends
from lbtransports.wire import SseEvent
from tests.raw_backend import ECHO_KEY, RawBackend, RawReply, sse

from .harness import BACKEND_SECRET, KEY, base_url, group, make_config, serving

HELLO = [{"role": "user", "content": "hello"}]
BACKEND_MODEL = "backend-model-x"


def _openai_chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-raw-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": BACKEND_MODEL,
        "system_fingerprint": "fp_raw",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _openai_stream(*texts: bytes) -> bytes:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return (
        sse(_openai_chunk({"role": "assistant", "content": ""}))
        + b"".join(sse(_openai_chunk({"content": text.decode()})) for text in texts)
        + sse(_openai_chunk({}, "stop"))
        + sse({**_openai_chunk({}), "choices": [], "usage": usage})
        + b"data: [DONE]\n\n"
    )


# Pretty-printed, as some servers send it: the model is rewritten all the same.
OPENAI_WHOLE = b"""{
  "id": "chatcmpl-raw-2",
  "object": "chat.completion",
  "created": 1,
  "model" : "backend-model-x",
  "system_fingerprint": "fp_raw",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole \\"model\\": raw"},
               "logprobs": null, "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
}"""


def _anthropic_stream(text: bytes) -> bytes:
    message = {
        "id": "msg_raw_1",
        "type": "message",
        "role": "assistant",
        "model": BACKEND_MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 0, "service_tier": "raw-tier"},
        "x_backend_field": "kept",
    }
    return (
        sse({"type": "message_start", "message": message}, "message_start")
        + sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            "content_block_start",
        )
        + sse({"type": "ping"}, "ping")
        + sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text.decode()},
            },
            "content_block_delta",
        )
        + sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        + sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 2},
            },
            "message_delta",
        )
        + sse({"type": "message_stop"}, "message_stop")
    )


ANTHROPIC_WHOLE = (
    b'{"id":"msg_raw_2","type":"message","role":"assistant","model":"backend-model-x",'
    b'"content":[{"type":"text","text":"whole raw"}],"stop_reason":"end_turn",'
    b'"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":2,'
    b'"service_tier":"raw-tier"},"x_backend_field":"kept"}'
)


def _raw_group(raw: RawBackend, provider: str) -> dict[str, Any]:
    return {
        "strategy": "round-robin",
        "backends": [
            {
                "name": "raw",
                "provider": provider,
                "model": BACKEND_MODEL,
                "base_url": raw.base_url + ("/v1" if provider == "openai" else ""),
                "credential": {"env": "GW_TEST_BACKEND_KEY"},
            }
        ],
    }


@pytest.fixture
def raw_openai() -> Iterator[RawBackend]:
    replies = [
        RawReply(_openai_stream(b"raw-0 ", b"key=" + ECHO_KEY + b" ")),
        RawReply(OPENAI_WHOLE, content_type="application/json"),
    ]
    with RawBackend(replies) as raw:
        yield raw


@pytest.fixture
def raw_anthropic() -> Iterator[RawBackend]:
    replies = [
        RawReply(_anthropic_stream(b"raw key=" + ECHO_KEY)),
        RawReply(ANTHROPIC_WHOLE, content_type="application/json"),
    ]
    with RawBackend(replies) as raw:
        yield raw


def _oai(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url(gateway), api_key=KEY, max_retries=0, timeout=10)


def _ant(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=base_url(gateway, ""), api_key=KEY, max_retries=0, timeout=10
    )


# ------------------------------------------------------------------ openai


@pytest.mark.parametrize("include_usage", [False, True])
def test_openai_stream_is_the_backends_own_with_the_group_model(
    raw_openai: RawBackend, include_usage: bool
) -> None:
    with serving(make_config({"gpt": _raw_group(raw_openai, "openai")})) as gateway:
        with _oai(gateway) as client:
            options: Any = {"include_usage": True} if include_usage else openai.NOT_GIVEN
            stream = client.chat.completions.create(
                model="gpt", messages=HELLO, stream=True, stream_options=options
            )
            chunks = list(stream)
    # The translator drops system_fingerprint and rebuilds ids: here they are the backend's.
    assert {c.system_fingerprint for c in chunks} == {"fp_raw"}
    assert {c.id for c in chunks} == {"chatcmpl-raw-1"}
    assert {c.model for c in chunks} == {"gpt"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "raw-0 key=[redacted] "
    assert chunks[0].choices[0].delta.role == "assistant"
    if include_usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7
    else:
        # Asked for upstream by the gateway, never by this caller: not forwarded.
        assert all(c.choices for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_whole_answer_is_the_backends_body_with_the_group_model(
    raw_openai: RawBackend,
) -> None:
    raw_openai.requests = 1  # straight to the whole reply
    with serving(make_config({"gpt": _raw_group(raw_openai, "openai")})) as gateway:
        with _oai(gateway) as client:
            response = client.chat.completions.with_raw_response.create(model="gpt", messages=HELLO)
    answer = response.parse()
    assert answer.system_fingerprint == "fp_raw"
    assert answer.id == "chatcmpl-raw-2"
    assert answer.model == "gpt"
    # Content that mentions "model" is not a model member: left alone.
    assert answer.choices[0].message.content == 'whole "model": raw'
    assert response.headers["x-lb-backend"] == "raw"
    assert BACKEND_MODEL not in response.text and BACKEND_SECRET not in response.text


# ------------------------------------------------------------------ anthropic


def test_anthropic_stream_is_the_backends_own_with_the_group_model(
    raw_anthropic: RawBackend,
) -> None:
    with serving(make_config({"claude": _raw_group(raw_anthropic, "anthropic")})) as gateway:
        with _ant(gateway) as client:
            events = list(
                client.messages.create(model="claude", max_tokens=50, messages=HELLO, stream=True)
            )
    kinds = [event.type for event in events]
    # (The backend's ping is forwarded too; the SDK skips it.)
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0].to_dict()
    assert start["message"]["model"] == "claude"
    assert start["message"]["id"] == "msg_raw_1"
    assert start["message"]["x_backend_field"] == "kept"
    assert start["message"]["usage"]["service_tier"] == "raw-tier"
    delta = events[2].to_dict()
    assert delta["delta"]["text"] == "raw key=[redacted]"


def test_anthropic_whole_answer_is_the_backends_body(raw_anthropic: RawBackend) -> None:
    raw_anthropic.requests = 1
    with serving(make_config({"claude": _raw_group(raw_anthropic, "anthropic")})) as gateway:
        with _ant(gateway) as client:
            message = client.messages.create(model="claude", max_tokens=50, messages=HELLO)
    body = message.to_dict()
    assert body["model"] == "claude"
    assert body["id"] == "msg_raw_2"
    assert body["x_backend_field"] == "kept"
    assert body["usage"]["service_tier"] == "raw-tier"


# ------------------------------------------------------------------ failover


@pytest.fixture
def backends() -> Iterator[LocalBackends]:
    backends = LocalBackends()
    # message_start and an empty block go out, then an error before any text.
    backends.add("early", "anthropic", default=ErrorEvent(after_chunks=0))
    backends.add("an", "anthropic")
    with backends:
        yield backends


def test_a_failover_before_output_is_invisible_to_the_caller(backends: LocalBackends) -> None:
    config = make_config({"claude": group(backends["early"], backends["an"])})
    with serving(config) as gateway:
        with _ant(gateway) as client:
            response = client.messages.with_raw_response.create(
                model="claude", max_tokens=50, messages=HELLO, stream=True
            )
            events = list(response.parse())
    assert backends["early"].requests_total >= 1
    assert response.headers["x-lb-backend"] == "an"
    starts = [event.to_dict() for event in events if event.type == "message_start"]
    # One answer only, the second backend's: the first one's opening never reached the caller.
    assert len(starts) == 1
    assert starts[0]["message"]["id"].startswith("msg_an_")
    assert starts[0]["message"]["model"] == "claude"
    assert [event.type for event in events][-1] == "message_stop"


# ------------------------------------------------------------------ what never leaks


def test_a_backend_error_names_neither_its_url_nor_its_key() -> None:
    # The wire layer names the URL tried in a 404's message (for the library's
    # own user); a gateway's caller must not learn where its backends live.
    body = b'{"error": {"message": "no such route, key ' + ECHO_KEY + b'", "type": "not_found"}}'
    with RawBackend([RawReply(body, content_type="application/json", status=404)]) as raw:
        with serving(make_config({"gpt": _raw_group(raw, "openai")})) as gateway:
            with _oai(gateway) as client:
                for stream in (False, True):
                    with pytest.raises(openai.APIStatusError) as caught:
                        client.chat.completions.create(model="gpt", messages=HELLO, stream=stream)
                    text = caught.value.response.text
                    assert caught.value.status_code == 502
                    assert raw.base_url.removeprefix("http://") not in text
                    assert "127.0.0.1" not in text
                    assert BACKEND_SECRET not in text


def test_an_echoed_key_is_redacted_in_a_translated_answer_too(raw_anthropic: RawBackend) -> None:
    # An OpenAI caller answered by an anthropic backend: rebuilt from chunks.
    with serving(make_config({"claude": _raw_group(raw_anthropic, "anthropic")})) as gateway:
        with _oai(gateway) as client:
            stream = client.chat.completions.create(model="claude", messages=HELLO, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "raw key=[redacted]"


# ------------------------------------------------------------------ the renderer, stepwise


def test_passthrough_rewrites_only_model_members_and_reframes_events() -> None:
    upstream = Upstream()
    group_name = 'we"ird\\group'
    passing = Passthrough(upstream, group_name, drop_usage_only=True)
    upstream.receive(
        "openai",
        [
            SseEvent(
                data='{"model": "b", "choices": [{"delta": {"content": "the \\"model\\": b"}}]}'
            ),
            SseEvent(data='{"model":"b","choices":[],"usage":{"total_tokens":3}}'),
            SseEvent(event="named", data="line one\nline two"),
            SseEvent(data="[DONE]"),
        ],
    )
    out = passing.take()
    first, *rest = out.split(b"\n\n")
    assert msgspec.json.decode(first.removeprefix(b"data: "))["model"] == group_name
    assert b'the \\"model\\": b' in first  # content is not a member
    assert b'"usage"' not in out  # the usage-only chunk, not asked for
    assert rest == [b"event: named\ndata: line one\ndata: line two", b"data: [DONE]", b""]
    assert passing.take() == b""  # taken once
