"""Answers in a shape other than the one asked for.

Some servers answer ``stream: true`` with one JSON object (an error object with
status 200, or the whole answer). Read as SSE it holds no event at all and
would look like a stream that ended early, its own diagnosis lost.
"""

from __future__ import annotations

import anyio
import pytest

from lbcore import FailureKind
from lbtransports import AsyncClient, BackendError, Client, ClientConfig, Completion
from lbtransports._reader import AttemptReader, Succeeded
from lbtransports.testing import Fail
from lbtransports.wire import BackendTarget, build_request

from .harness import REQUEST, BackendPlan, client_config, start_backends


def _complete(mode: str, config: ClientConfig) -> Completion:
    if mode == "sync":
        with Client(config) as client:
            return client.complete(REQUEST)

    async def main() -> Completion:
        async with AsyncClient(config) as client:
            return await client.complete(REQUEST)

    return anyio.run(main, backend=mode)


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_json_error_object_answering_a_stream_is_the_providers_failure(
    provider: str, mode: str
) -> None:
    plans = [BackendPlan("a", provider, default=Fail(200, message="quota exceeded"))]
    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin")
        with pytest.raises(BackendError) as caught:
            _complete(mode, config)
        assert backends["a"].received[0].stream
        backends.wait_idle(timeout=3.0)
    assert caught.value.failure.kind == FailureKind.PROVIDER
    assert caught.value.failure.message == "quota exceeded"


def test_a_whole_json_answer_to_a_stream_request_is_one_chunk() -> None:
    # Sans-IO: a server that ignored "stream": true and sent the whole answer.
    target = BackendTarget(name="a", provider="openai", model="m", base_url="http://x/v1")
    http = build_request(target, REQUEST)
    assert http.stream
    reader = AttemptReader("openai", http)
    reader.start(200, (("Content-Type", "application/json; charset=utf-8"),))
    body = (
        b'{"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,'
        b'"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
    )
    assert reader.feed(body) == []
    (chunk,) = reader.end()
    assert (chunk.text, chunk.finish_reason) == ("whole", "stop")
    assert isinstance(reader.ending, Succeeded)
    assert reader.ending.usage.output_tokens == 1
