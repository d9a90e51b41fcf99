"""The reference's last features over real sockets: the compress hook, observers,
the operator read-outs and nested balancers, through both clients.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from lbcore import BreakerState, FailureKind, StartAttempt, verify_trace
from lbtransports import (
    AsyncClient,
    ChatRequest,
    Client,
    ClientConfig,
    Completion,
    CompressionError,
    FailoverError,
    LoadBalancerError,
    Observation,
    ObserverWarning,
)
from lbtransports.testing import Fail, LocalBackends, Stream
from lbtransports.wire import UserMessage

LONG = ChatRequest(messages=(UserMessage(content="word " * 400),))
SHORT = ChatRequest(messages=(UserMessage(content="hi"),))


def _config(
    backends: LocalBackends,
    strategy: str = "failover",
    windows: dict[str, int] | None = None,
    **settings: Any,
) -> ClientConfig:
    windows = windows or {}
    return ClientConfig.from_mapping(
        {
            "strategy": strategy,
            "profile_name": "lb",
            "context_limit": 100_000,
            "settings": {"failover_retry_count": 1, **settings},
            "backends": [
                {
                    "name": b.name,
                    "provider": b.provider,
                    "model": f"model-{b.name}",
                    "base_url": b.base_url,
                    "context_window": windows.get(b.name),
                }
                for b in backends
            ],
        }
    )


def _complete(
    mode: str, config: ClientConfig, request: ChatRequest = LONG, *, calls: int = 1, **kwargs: Any
) -> tuple[list[Completion | LoadBalancerError], bytes, Any]:
    """``calls`` requests through ``mode``'s client; their outcomes, the trace, the client."""
    trace = io.BytesIO()
    outcomes: list[Completion | LoadBalancerError] = []
    if mode == "sync":
        client: Any = Client(config, trace=trace, **kwargs)
        with client:
            for _ in range(calls):
                try:
                    outcomes.append(client.complete(request))
                except LoadBalancerError as error:
                    outcomes.append(error)
            trace_bytes = trace.getvalue()
        return outcomes, trace_bytes, client

    async def main() -> Any:
        with anyio.fail_after(20):
            return await inner()

    async def inner() -> Any:
        async with AsyncClient(config, trace=trace, **kwargs) as client:
            for _ in range(calls):
                try:
                    outcomes.append(await client.complete(request))
                except LoadBalancerError as error:
                    outcomes.append(error)
            return client, trace.getvalue()

    client, trace_bytes = anyio.run(main, backend=mode)
    return outcomes, trace_bytes, client


def _shrinker(calls: list[tuple[ChatRequest, str, int]], text: str = "short") -> Callable[..., Any]:
    def shrink(request: ChatRequest, backend: str, limit: int) -> ChatRequest:
        calls.append((request, backend, limit))
        return ChatRequest(messages=(UserMessage(content=text),))

    return shrink


# ------------------------------------------------------------------ compression


def test_the_hook_shrinks_the_request_for_the_small_backend_and_it_is_sent(mode: str) -> None:
    calls: list[tuple[ChatRequest, str, int]] = []
    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(2))
    backends.add("b", "anthropic", default=Stream(2))
    with backends:
        config = _config(backends, windows={"a": 50})
        (answer,), trace, _ = _complete(mode, config, compress=_shrinker(calls))
        body = backends["a"].received[0].body
    assert isinstance(answer, Completion) and answer.backend == "a"
    assert calls == [(LONG, "a", 50)]
    assert b"short" in body and b"word word" not in body
    assert verify_trace(trace) is None
    assert b'"context_compression":true' in trace.splitlines()[0]


def test_each_failover_target_starts_again_from_the_original(mode: str) -> None:
    calls: list[tuple[ChatRequest, str, int]] = []
    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(1))
    backends.add("b", "openai", default=Stream(1))
    with backends:
        config = _config(backends, windows={"a": 3, "b": 60})
        # "a bit shorter" still overflows a's 3 tokens; b is asked from LONG again.
        (answer,), trace, _ = _complete(mode, config, compress=_shrinker(calls, "a bit shorter"))
    assert isinstance(answer, Completion) and answer.backend == "b"
    assert [(c[0], c[1]) for c in calls] == [(LONG, "a"), (LONG, "b")]
    assert verify_trace(trace) is None


def test_a_failing_hook_moves_failover_on_and_is_compression_error_in_round_robin(
    mode: str,
) -> None:
    def broken(request: ChatRequest, backend: str, limit: int) -> ChatRequest:
        raise RuntimeError("summariser offline")

    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(1))
    backends.add("b", "openai", default=Stream(1))
    with backends:
        failover = _config(backends, windows={"a": 50})
        (answer,), _, _ = _complete(mode, failover, compress=broken)
        assert isinstance(answer, Completion) and answer.backend == "b"
        rr = _config(backends, "round-robin", windows={"a": 50})
        (error,), trace, _ = _complete(mode, rr, compress=broken)
    assert isinstance(error, CompressionError) and not error.retryable
    assert str(error) == (
        'Load balancer profile "lb" sub-profile "a" compression callback failed: summariser offline'
    )
    assert verify_trace(trace) is None


@pytest.mark.parametrize("mode", ["asyncio", "trio"])
def test_the_async_client_awaits_a_coroutine_hook(mode: str) -> None:
    seen: list[str] = []

    async def shrink(request: ChatRequest, backend: str, limit: int) -> ChatRequest:
        await anyio.sleep(0)
        seen.append(backend)
        return SHORT

    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(1))
    backends.add("b", "openai", default=Stream(1))
    with backends:
        (answer,), _, _ = _complete(mode, _config(backends, windows={"a": 50}), compress=shrink)
    assert isinstance(answer, Completion) and answer.backend == "a" and seen == ["a"]


def test_without_a_hook_every_too_small_backend_is_rejected(mode: str) -> None:
    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(1))
    backends.add("b", "openai", default=Stream(1))
    with backends:
        (error,), _, _ = _complete(mode, _config(backends, windows={"a": 50, "b": 50}))
    assert isinstance(error, FailoverError) and "context limit exceeded" in str(error)


# ------------------------------------------------------------------ observers


def test_observers_see_each_decision_once_in_order(mode: str) -> None:
    seen: list[Observation] = []
    backends = LocalBackends()
    backends.add("a", "openai", default=Fail(503))
    backends.add("b", "openai", default=Stream(2))
    with backends:
        outcomes, _, _ = _complete(
            mode, _config(backends), SHORT, calls=2, observers=[seen.append, seen.append]
        )
    assert all(isinstance(o, Completion) for o in outcomes)
    kinds = [(o.kind, o.request_id) for o in seen]
    assert kinds == [
        ("selection", "r1"),
        ("attempt_start", "r1"),
        ("failover", "r1"),
        ("selection", "r1"),
        ("attempt_start", "r1"),
        ("terminal", "r1"),
        # b is sticky: no selection change, one start, one end.
        ("attempt_start", "r2"),
        ("terminal", "r2"),
    ]
    assert {o.profile_name for o in seen} == {"lb"}
    assert isinstance(seen[1].action, StartAttempt)


def test_an_observer_that_raises_is_reported_once_and_breaks_nothing(mode: str) -> None:
    def broken(observation: Observation) -> None:
        raise ValueError("observer bug")

    reads: list[int] = []

    def reader(observation: Observation) -> None:
        # Calling back into the client from a callback must not deadlock.
        reads.append(client_box[0].stats().in_flight if client_box else -1)

    client_box: list[Any] = []
    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(1))
    backends.add("b", "openai", default=Stream(1))
    with backends:
        config = _config(backends)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if mode == "sync":
                with Client(config, observers=[broken]) as client:
                    client_box.append(client)
                    client.observe(reader)
                    answers = [client.complete(SHORT) for _ in range(2)]
            else:

                async def main() -> list[Completion]:
                    async with AsyncClient(config, observers=[broken]) as client:
                        client_box.append(client)
                        client.observe(reader)
                        return [await client.complete(SHORT) for _ in range(2)]

                answers = anyio.run(main, backend=mode)
    assert [a.backend for a in answers] == ["a", "a"]
    observer_warnings = [w for w in caught if issubclass(w.category, ObserverWarning)]
    assert len(observer_warnings) == 1
    assert "ValueError: observer bug" in str(observer_warnings[0].message)
    assert len(reads) >= 4


# ------------------------------------------------------------------ read-outs


def test_the_clients_read_out_the_index_the_selection_and_each_backend(mode: str) -> None:
    backends = LocalBackends()
    backends.add("a", "openai", Fail(503), default=Stream(1))
    backends.add("b", "openai", default=Stream(1))
    with backends:
        config = _config(
            backends, circuit_breaker_enabled=True, circuit_breaker_failure_threshold=1
        )
        if mode == "sync":
            trace = io.BytesIO()
            with Client(config, trace=trace) as client:
                client.complete(SHORT)
                before = (client.current_failover_index(), client.last_selected())
                client.reset_failover_index()
                after = client.current_failover_index()
                states = client.backend_states()
            recorded = trace.getvalue()
        else:

            async def main() -> tuple[Any, ...]:
                trace = io.BytesIO()
                async with AsyncClient(config, trace=trace) as client:
                    await client.complete(SHORT)
                    before = (client.current_failover_index(), client.last_selected())
                    client.reset_failover_index()
                    return (
                        before,
                        client.current_failover_index(),
                        client.backend_states(),
                        (trace.getvalue()),
                    )

            before, after, states, recorded = anyio.run(main, backend=mode)
    assert before == (1, "b") and after == 0
    assert [s.name for s in states] == ["a", "b"]
    assert states[0].breaker is BreakerState.OPEN and states[0].half_open_after is not None
    assert states[1].breaker is BreakerState.CLOSED and states[1].tpm >= 0
    assert b"FailoverIndexReset" in recorded and verify_trace(recorded) is None
    assert FailureKind.NESTED  # the nested tests below use the same module's helpers
