"""A gateway group whose first backend is a load balancer itself (spec §5.10), via the SDKs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from lbtransports.gateway import Gateway
from lbtransports.testing import Fail, LocalBackend, LocalBackends, Reset

from .harness import BACKEND_SECRET, KEY, base_url, group, make_config, serving

HELLO = [{"role": "user", "content": "hello"}]


def _member(backend: LocalBackend) -> dict[str, Any]:
    return group(backend)["backends"][0]  # type: ignore[no-any-return]


def _nested_group(inner: list[LocalBackend], outer_tail: LocalBackend) -> dict[str, Any]:
    """Outer failover over [team, tail]; team is a failover balancer over ``inner``."""
    team = {
        "strategy": "failover",
        "profile_name": "team",
        "settings": {"failover_retry_count": 1},
        "backends": [_member(b) for b in inner],
    }
    return {
        "strategy": "failover",
        "settings": {"failover_retry_count": 1},
        "backends": [
            {"name": "team", "provider": "load-balancer", "balancer": team},
            _member(outer_tail),
        ],
    }


@pytest.fixture
def backends() -> Iterator[LocalBackends]:
    backends = LocalBackends()
    backends.add("down", "openai", default=Fail(503))
    backends.add("also-down", "anthropic", default=Fail(429))
    backends.add("oa", "openai")
    backends.add("an", "anthropic")
    backends.add("resets", "openai", default=Reset(after_chunks=1))
    backends.add("tail", "openai")
    with backends:
        yield backends


@pytest.fixture
def gateway(backends: LocalBackends) -> Iterator[Gateway]:
    b = backends
    groups = {
        # The inner balancer fails over from a 503 to an openai backend.
        "team-oa": _nested_group([b["down"], b["oa"]], b["tail"]),
        # ... to an anthropic backend, so an openai caller needs translation.
        "team-an": _nested_group([b["down"], b["an"]], b["tail"]),
        # Every inner backend fails before output: the outer fails over to its tail.
        "team-out": _nested_group([b["down"], b["also-down"]], b["tail"]),
        # The inner one breaks after output: nobody may fail over, the stream ends in error.
        "team-breaks": _nested_group([b["resets"], b["oa"]], b["tail"]),
    }
    with serving(make_config(groups)) as gateway:
        yield gateway


def _oai(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url(gateway), api_key=KEY, max_retries=0, timeout=10)


@pytest.mark.parametrize(("model", "answering"), [("team-oa", "oa"), ("team-an", "an")])
def test_an_openai_caller_is_served_through_the_nested_balancer(
    gateway: Gateway, backends: LocalBackends, model: str, answering: str
) -> None:
    with _oai(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO)
        stream = client.chat.completions.create(model=model, messages=HELLO, stream=True)
        chunks = list(stream)
    answer = raw.parse()
    expected = f"{answering}-0 {answering}-1 {answering}-2 "
    assert answer.choices[0].message.content == expected
    assert answer.model == model
    # The outer balancer sees one backend, "team", that answered.
    assert raw.headers["x-lb-backend"] == "team"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.model == model for c in chunks)
    assert backends["tail"].requests_total == 0
    # The backends' key went upstream, and never came back to the caller.
    sent = backends[answering].received[-1]
    assert BACKEND_SECRET in (sent.header("authorization") or sent.header("x-api-key") or "")
    assert BACKEND_SECRET not in raw.http_response.text


def test_an_anthropic_caller_is_served_through_the_nested_balancer(gateway: Gateway) -> None:
    with anthropic.Anthropic(
        base_url=base_url(gateway, ""), api_key=KEY, max_retries=0, timeout=10
    ) as client:
        message = client.messages.create(model="team-oa", max_tokens=50, messages=HELLO)
        with client.messages.stream(model="team-an", max_tokens=50, messages=HELLO) as stream:
            text = "".join(stream.text_stream)
    assert message.content[0].text == "oa-0 oa-1 oa-2 "  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert text == "an-0 an-1 an-2 "


def test_an_exhausted_nested_balancer_is_failed_over_by_the_outer_one(
    gateway: Gateway, backends: LocalBackends
) -> None:
    with _oai(gateway) as client:
        raw = client.chat.completions.with_raw_response.create(model="team-out", messages=HELLO)
    assert raw.parse().choices[0].message.content == "tail-0 tail-1 tail-2 "
    assert raw.headers["x-lb-backend"] == "tail"
    assert backends["down"].requests_total >= 1 and backends["also-down"].requests_total >= 1


def test_a_nested_failure_after_output_ends_the_stream_in_error(
    gateway: Gateway, backends: LocalBackends
) -> None:
    received: list[str] = []
    with _oai(gateway) as client, pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="team-breaks", messages=HELLO, stream=True
        ):
            received.extend(c.delta.content or "" for c in chunk.choices)
    # One chunk from "resets", then the error event: nothing from any other backend.
    assert "".join(received) == "resets-0 "
    assert backends["oa"].requests_total == 0 and backends["tail"].requests_total == 0
