"""Review regressions: a request no HTTP library can send is a setup failure, sent nowhere."""

from __future__ import annotations

import io

import anyio
import pytest

from lbtransports import AsyncClient, Client, ClientConfig, Completion
from lbtransports.testing import Stream

from .harness import REQUEST, BackendPlan, client_config, decision_lines, start_backends

#: A key pasted with a typographic ellipsis: HTTP headers are Latin-1, so no
#: library can send it, and its error would carry the whole header value.
PASTED_KEY = "sk-pasted\u2026-do-not-leak-0123456789"


@pytest.mark.parametrize("mode", ["sync", "asyncio", "trio"])
def test_a_key_no_header_can_carry_is_a_setup_failure_and_fails_over(mode: str) -> None:
    plans = [BackendPlan("a", default=Stream(1)), BackendPlan("b", default=Stream(2))]
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        base = client_config(backends, plans)
        config = ClientConfig.from_mapping(
            {
                "strategy": "failover",
                "backends": [
                    {
                        "name": target.name,
                        "provider": target.provider,
                        "model": target.model,
                        "base_url": target.base_url,
                        "credential": {
                            "key": PASTED_KEY if target.name == "a" else target.credential.key
                        },
                    }
                    for target in base.targets
                ],
            }
        )
        if mode == "sync":
            with Client(config, trace=trace) as client:
                answer = client.complete(REQUEST)
        else:

            async def main() -> Completion:
                async with AsyncClient(config, trace=trace) as client:
                    return await client.complete(REQUEST)

            answer = anyio.run(main, backend=mode)
        assert backends["a"].received == []
        backends.wait_idle(timeout=3.0)
    assert (answer.backend, answer.text) == ("b", "b-0 b-1 ")
    lines = decision_lines(trace.getvalue())
    assert "FailOver(a->b, setup)" in lines[1], lines
    assert "authorization" in lines[1]
    assert PASTED_KEY not in trace.getvalue().decode()
