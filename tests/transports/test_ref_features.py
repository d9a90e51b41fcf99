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

from lbcore import BreakerState, ConfigError, StartAttempt, verify_trace
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
from lbtransports.testing import Fail, LocalBackends, Reset, Stall, Stream
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


def test_a_failing_hook_never_carries_a_key_into_the_error_or_the_trace(mode: str) -> None:
    inline = "inline-secret-0123456789abcdef"
    shaped = "sk-proj-" + "Q" * 32

    def leaky(request: ChatRequest, backend: str, limit: int) -> ChatRequest:
        raise RuntimeError(f"summariser said no to {inline} and {shaped}")

    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(1))
    with backends:
        config = ClientConfig.from_mapping(
            {
                "strategy": "round-robin",
                "profile_name": "lb",
                "context_limit": 100_000,
                "backends": [
                    {
                        "name": "a",
                        "provider": "openai",
                        "model": "model-a",
                        "base_url": backends["a"].base_url,
                        "context_window": 50,
                        "credential": {"key": inline},
                    }
                ],
            }
        )
        (error,), trace, _ = _complete(mode, config, compress=leaky)
    assert isinstance(error, CompressionError)
    for seen in (str(error), repr(error), trace.decode()):
        assert inline not in seen and shaped not in seen
    assert "summariser said no" in str(error)


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


def test_an_observer_that_raises_breaks_nothing_with_warnings_as_errors() -> None:
    seen: list[str] = []

    def broken(observation: Observation) -> None:
        raise ValueError("observer bug")

    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(1))
    backends.add("b", "openai", default=Stream(1))
    with backends, warnings.catch_warnings():
        warnings.simplefilter("error")
        with Client(_config(backends), observers=[broken, lambda o: seen.append(o.kind)]) as client:
            answers = [client.complete(SHORT) for _ in range(2)]
    assert [a.backend for a in answers] == ["a", "a"]
    # The second observer saw every decision, the first one's included.
    assert seen.count("attempt_start") == 2 and seen.count("terminal") == 2


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


# ------------------------------------------------------------------ nested balancers


def _backend(backends: LocalBackends, name: str) -> dict[str, Any]:
    b = backends[name]
    return {"name": name, "provider": b.provider, "model": f"model-{name}", "base_url": b.base_url}


def _nested_config(backends: LocalBackends, strategy: str = "failover") -> ClientConfig:
    """Outer failover over [team, c]; team is itself a failover balancer over [x, y]."""
    inner = {
        "strategy": strategy,
        "profile_name": "inner",
        "settings": {"failover_retry_count": 1},
        "backends": [_backend(backends, "x"), _backend(backends, "y")],
    }
    return ClientConfig.from_mapping(
        {
            "strategy": "failover",
            "profile_name": "outer",
            "settings": {"failover_retry_count": 1},
            "backends": [
                {"name": "team", "provider": "load-balancer", "balancer": inner},
                _backend(backends, "c"),
            ],
        }
    )


def _serving(x: Any, y: Any, c: Any) -> LocalBackends:
    backends = LocalBackends()
    backends.add("x", "openai", default=x)
    backends.add("y", "anthropic", default=y)
    backends.add("c", "openai", default=c)
    return backends


def test_a_nested_balancer_serves_like_a_backend(mode: str) -> None:
    seen: list[Observation] = []
    with _serving(Fail(503), Stream(2), Stream(1)) as backends:
        config = _nested_config(backends)
        assert config.balancer.backends[0].model == "model-x"
        (answer,), trace, _ = _complete(mode, config, SHORT, observers=[seen.append])
        received_c = len(backends["c"].received)
    assert isinstance(answer, Completion) and answer.backend == "team"
    assert answer.text == "y-0 y-1 " and received_c == 0
    assert verify_trace(trace) is None
    # The observers hear the inner balancer's decisions too, under its own name.
    assert ("inner", "failover") in {(o.profile_name, o.kind) for o in seen}


def test_a_retryable_nested_aggregate_fails_over_in_the_outer(mode: str) -> None:
    with _serving(Fail(503), Fail(429), Stream(1)) as backends:
        (answer,), trace, _ = _complete(mode, _nested_config(backends), SHORT)
    assert isinstance(answer, Completion) and answer.backend == "c"
    assert b'"kind":"nested"' in trace and verify_trace(trace) is None


def test_a_non_retryable_nested_aggregate_is_final_and_raised_as_it_is(mode: str) -> None:
    with _serving(Fail(401), Fail(403), Stream(1)) as backends:
        (error,), trace, _ = _complete(mode, _nested_config(backends), SHORT)
        received_c = len(backends["c"].received)
    assert isinstance(error, FailoverError) and not error.retryable
    assert str(error).startswith('Load balancer "inner" failover exhausted after 2 backend')
    assert received_c == 0
    assert b'"kind":"terminal"' in trace and verify_trace(trace) is None


def test_the_outer_aggregate_names_the_nested_balancer_and_its_status(mode: str) -> None:
    with _serving(Fail(503), Fail(503), Fail(503)) as backends:
        (error,), _, _ = _complete(mode, _nested_config(backends), SHORT)
    assert isinstance(error, FailoverError) and error.retryable and error.status == 503
    assert str(error).startswith(
        'Load balancer "outer" failover exhausted after 2 backend failures (tried: team, c): '
        'team: Load balancer "inner" failover exhausted after 2 backend failures'
    )
    assert [f.backend for f in error.failures] == ["team", "c"]


def test_a_nested_failure_after_output_reaches_the_caller_raw(mode: str) -> None:
    with _serving(Reset(after_chunks=1), Stream(1), Stream(1)) as backends:
        config = _nested_config(backends, strategy="round-robin")
        (error,), trace, _ = _complete(mode, config, SHORT)
        received_c = len(backends["c"].received)
    # The inner round-robin's raw BackendError, after its chunk: no failover anywhere.
    assert type(error).__name__ == "BackendError" and error.backend == "x"
    assert received_c == 0 and verify_trace(trace) is None


def test_a_provider_load_balancer_backend_needs_its_balancer() -> None:
    with pytest.raises(ConfigError, match='needs a "balancer"'):
        ClientConfig.from_mapping(
            {
                "strategy": "failover",
                "backends": [
                    {"name": "team", "provider": "load-balancer"},
                    {"name": "c", "provider": "openai"},
                ],
            }
        )


def test_context_compression_without_a_hook_is_refused() -> None:
    backends = LocalBackends()
    backends.add("a", "openai", default=Stream(1))
    backends.add("b", "openai", default=Stream(1))
    with backends:
        config = _config(backends, context_compression=True)
    with pytest.raises(ConfigError, match=r"settings\.context_compression: needs a compress hook"):
        Client(config)
    with pytest.raises(ConfigError, match="needs a compress hook"):
        AsyncClient(config)


def test_an_earlier_nested_error_never_becomes_the_callers(mode: str) -> None:
    # Attempt 1 on "team": the inner balancer is exhausted (a retryable aggregate the
    # outer retries). Attempt 2 on "team": a chunk, then silence past the outer
    # idle timeout. The caller must get that timeout, not attempt 1's spent aggregate.
    # Async clients bound the wait by the outer timer ("team" times out); the sync
    # client's wait is the inner balancer's own (spec/transports.md §11.3): "x" does.
    then_stall = (Fail(503), Stall(after_chunks=1))
    backends = LocalBackends()
    backends.add("x", "openai", *then_stall)
    backends.add("y", "anthropic", *then_stall)
    backends.add("c", "openai")
    with backends:
        inner = {
            "strategy": "failover",
            "profile_name": "inner",
            "settings": {"failover_retry_count": 1},
            "idle_timeout_ms": 1_000,
            "backends": [_backend(backends, "x"), _backend(backends, "y")],
        }
        config = ClientConfig.from_mapping(
            {
                "strategy": "failover",
                "profile_name": "outer",
                "settings": {"failover_retry_count": 2, "failover_retry_delay_ms": 0},
                "idle_timeout_ms": 300,
                "backends": [
                    {"name": "team", "provider": "load-balancer", "balancer": inner},
                    _backend(backends, "c"),
                ],
            }
        )
        (error,), trace, _ = _complete(mode, config, SHORT)
        received_c = len(backends["c"].received)
    assert type(error).__name__ == "BackendError"
    assert error.backend == ("x" if mode == "sync" else "team")  # type: ignore[attr-defined]
    assert "exhausted" not in str(error) and received_c == 0
    assert b'"kind":"nested"' in trace and verify_trace(trace) is None
