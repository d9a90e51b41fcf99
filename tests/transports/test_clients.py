"""The clients' promises beyond single faults: what each backend receives, secrets,
cancellation, retry delays, breakers, whole answers, setup failures, closing.

Everything runs over real sockets against local backends on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time

import anyio
import pytest

from lbcore import decode_trace, verify_trace
from lbtransports import (
    AsyncClient,
    BackendError,
    ChatRequest,
    Client,
    ClientClosedError,
    ClientConfig,
    Completion,
    FailoverError,
    LoadBalancerError,
    load_profile,
)
from lbtransports.testing import Fail, Hang, Reset, Stream
from lbtransports.wire import SystemMessage, UserMessage

from .harness import (
    ASYNC_MODES,
    REQUEST,
    BackendPlan,
    client_config,
    decision_lines,
    secret_of,
    start_backends,
)

CANCELLED_IN_FLIGHT = "RequestCancelled -> CancelAttempt#1(cancelled), RequestAborted"


def _trace_types(trace: bytes) -> list[str]:
    _, steps = decode_trace(trace)
    return [step.event.__class__.__name__ for step in steps]


def _all_actions(trace: bytes) -> list[str]:
    _, steps = decode_trace(trace)
    return [type(action).__name__ for step in steps for action in step.actions]


# -- what each backend receives --------------------------------------------------


def test_each_backend_receives_its_own_model_path_credential_and_merged_settings() -> None:
    plans = [
        BackendPlan("a", "openai", default=Fail(500)),
        BackendPlan("b", "anthropic", default=Fail(503)),
        BackendPlan("c", "gemini", default=Stream(2)),
    ]
    with start_backends(plans) as backends:
        mapping = {
            "strategy": "failover",
            "settings": {"failover_retry_count": 1, "temperature": 0.9},
            "model_params": {"top_p": 0.5},
            "backends": [
                {
                    "name": p.name,
                    "provider": p.provider,
                    "model": f"model-{p.name}",
                    "base_url": backends[p.name].base_url,
                    "credential": {"key": secret_of(p.name)},
                    # The member's own values lose to the load balancer's.
                    "settings": {"temperature": 0.1, "max_tokens": 77},
                }
                for p in plans
            ],
        }
        with Client(ClientConfig.from_mapping(mapping)) as client:
            answer = client.complete(REQUEST)
        seen = {name: backends[name].received for name in ("a", "b", "c")}
    assert answer.backend == "c"
    assert answer.text == "c-0 c-1 "
    (a,), (b,), (c,) = seen["a"], seen["b"], seen["c"]
    assert (a.path, a.model, a.header("authorization")) == (
        "/v1/chat/completions",
        "model-a",
        f"Bearer {secret_of('a')}",
    )
    assert (b.path, b.model, b.header("x-api-key")) == ("/v1/messages", "model-b", secret_of("b"))
    assert c.path == "/v1beta/models/model-c:streamGenerateContent"
    assert (c.query, c.model, c.header("x-goog-api-key")) == ("alt=sse", "model-c", secret_of("c"))
    assert a.json()["temperature"] == 0.9 and a.json()["max_tokens"] == 77
    assert a.json()["top_p"] == 0.5
    assert b.json()["temperature"] == 0.9 and b.json()["max_tokens"] == 77
    generation = c.json()["generationConfig"]
    assert generation["temperature"] == 0.9 and generation["maxOutputTokens"] == 77
    # Nobody ever sees another backend's key.
    for name, requests_seen in seen.items():
        for received in requests_seen:
            raw = repr(received.headers) + received.body.decode()
            for other in {"a", "b", "c"} - {name}:
                assert secret_of(other) not in raw


def test_no_credential_in_trace_errors_reprs_or_stats() -> None:
    # The backends echo the caller's key back in their error messages.
    plans = [
        BackendPlan("a", "openai", default=Fail(401, message=f"bad key {secret_of('a')}")),
        BackendPlan("b", "anthropic", default=Fail(403, message=f"no: {secret_of('b')}")),
    ]
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        config = client_config(backends, plans)
        with Client(config, trace=trace) as client:
            with pytest.raises(FailoverError) as caught:
                client.complete(REQUEST)
            shown = [
                repr(config),
                str(config),
                repr(client),
                repr(client.stats()),
                str(caught.value),
                repr(caught.value),
                repr(caught.value.error),
                trace.getvalue().decode(),
            ]
    for text in shown:
        for name in ("a", "b"):
            assert secret_of(name) not in text
    assert "bad key" in str(caught.value)


# -- cancellation ----------------------------------------------------------------


def test_sync_stream_closed_early_cancels_and_closes_the_connection() -> None:
    plans = [BackendPlan("a", default=Stream(20, delay_ms=30)), BackendPlan("b")]
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        with Client(client_config(backends, plans), trace=trace) as client:
            with client.chat(REQUEST) as stream:
                first = next(stream)
            stats = client.stats()
        backends.wait_idle(timeout=3.0)
    assert first.text == "a-0 "
    lines = decision_lines(trace.getvalue())
    assert lines[-1] == CANCELLED_IN_FLIGHT
    assert stats.in_flight == 0
    assert stats.backend_metrics["a"].failures == 0


@pytest.mark.parametrize("mode", ASYNC_MODES)
def test_async_stream_closed_early_cancels_and_closes_the_connection(mode: str) -> None:
    plans = [BackendPlan("a", default=Stream(20, delay_ms=30)), BackendPlan("b")]
    trace = io.BytesIO()

    async def main(config: ClientConfig) -> str:
        async with AsyncClient(config, trace=trace) as client:
            async with client.chat(REQUEST) as stream:
                async for chunk in stream:
                    return chunk.text
        raise AssertionError("no chunk")

    with start_backends(plans) as backends:
        first = anyio.run(main, client_config(backends, plans), backend=mode)
        backends.wait_idle(timeout=3.0)
    assert first == "a-0 "
    assert decision_lines(trace.getvalue())[-1] == CANCELLED_IN_FLIGHT


@pytest.mark.parametrize("mode", ASYNC_MODES)
def test_cancelling_the_task_aborts_the_request_and_leaks_nothing(mode: str) -> None:
    # Round-robin has no first-chunk deadline: only the cancellation ends this wait.
    plans = [BackendPlan("a", default=Hang())]
    trace = io.BytesIO()

    async def main(config: ClientConfig) -> None:
        async with AsyncClient(config, trace=trace) as client:
            with anyio.move_on_after(0.3) as scope:
                await client.complete(REQUEST)
            assert scope.cancelled_caught
            assert client.stats().in_flight == 0

    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin", idle_timeout_ms=60_000)
        anyio.run(main, config, backend=mode)
        backends.wait_idle(timeout=3.0)
    assert decision_lines(trace.getvalue()) == [
        "RequestStarted -> Selected(a), StartAttempt#1(a)",
        CANCELLED_IN_FLIGHT,
    ]


def test_cancelling_while_waiting_for_a_retry_aborts_the_request() -> None:
    plans = [BackendPlan("a", default=Fail(500)), BackendPlan("b")]
    trace = io.BytesIO()

    async def main(config: ClientConfig) -> None:
        async with AsyncClient(config, trace=trace) as client:
            with anyio.move_on_after(0.2):
                await client.complete(REQUEST)

    with start_backends(plans) as backends:
        settings = {"failover_retry_count": 2, "failover_retry_delay_ms": 5_000}
        anyio.run(main, client_config(backends, plans, settings=settings))
    lines = decision_lines(trace.getvalue())
    assert lines[1].endswith("-> RetryScheduled")
    # Nothing is in flight while waiting: there is no attempt to cancel.
    assert lines[-1] == "RequestCancelled -> RequestAborted"


# -- the core's timers and breakers, carried out ---------------------------------


def test_retry_delay_is_waited_out_then_the_same_backend_is_retried(mode: str) -> None:
    plans = [BackendPlan("a", script=[Fail(503)], default=Stream(2)), BackendPlan("b")]
    trace = io.BytesIO()
    settings = {"failover_retry_count": 2, "failover_retry_delay_ms": 150}
    with start_backends(plans) as backends:
        config = client_config(backends, plans, settings=settings)
        if mode == "sync":
            with Client(config, trace=trace) as client:
                answer = client.complete(REQUEST)
        else:

            async def main() -> Completion:
                async with AsyncClient(config, trace=trace) as client:
                    return await client.complete(REQUEST)

            answer = anyio.run(main, backend=mode)
    assert (answer.backend, answer.text) == ("a", "a-0 a-1 ")
    _, steps = decode_trace(trace.getvalue())
    retry = next(a for s in steps for a in s.actions if type(a).__name__ == "RetryScheduled")
    restart = next(s for s in steps if type(s.event).__name__ == "Tick")
    assert restart.event.at >= retry.due  # type: ignore[attr-defined]
    assert [type(a).__name__ for a in restart.actions] == ["StartAttempt"]


def test_an_open_breaker_is_skipped_without_a_connection() -> None:
    # Request 1 trips a's breaker and is served by b; request 2 starts at b (the
    # sticky index), is refused with a 401, and must skip a without dialling it.
    plans = [
        BackendPlan("a", refused=True),
        BackendPlan("b", script=[Stream(1), Fail(401)], default=Stream(1)),
    ]
    settings = {
        "failover_retry_count": 1,
        "circuit_breaker_enabled": True,
        "circuit_breaker_failure_threshold": 1,
    }
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        with Client(client_config(backends, plans, settings=settings), trace=trace) as client:
            assert client.complete(REQUEST).backend == "b"
            with pytest.raises(FailoverError) as caught:
                client.complete(REQUEST)
            stats = client.stats()
    lines = decision_lines(trace.getvalue())
    assert "TripBreaker" in lines[1], lines
    assert "SkipBackend(a, breaker_open)" in lines[-1], lines
    # A skipped backend did not fail this request: only b is in the error.
    assert [f.backend for f in caught.value.failures] == ["b"]
    assert stats.circuit_breaker_states["a"].state == "open"


# -- answers -----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_non_streamed_answer_is_one_chunk(provider: str) -> None:
    plans = [BackendPlan("a", provider, default=Stream(3))]
    with start_backends(plans) as backends:
        config = client_config(
            backends, plans, strategy="round-robin", settings={"streaming": False}
        )
        with Client(config) as client:
            chunks = list(client.chat(REQUEST))
            answer = client.complete(REQUEST)
        received = backends["a"].received
    assert [c.text for c in chunks] == ["a-0 a-1 a-2 "]
    assert answer.text == "a-0 a-1 a-2 "
    assert answer.usage.output_tokens == 3
    assert not any(r.stream for r in received)


def test_complete_returns_the_whole_answer_with_its_backend_and_usage() -> None:
    plans = [BackendPlan("a", "anthropic", default=Stream(3, input_tokens=21))]
    with start_backends(plans) as backends:
        with Client(client_config(backends, plans, strategy="round-robin")) as client:
            answer = client.complete(
                ChatRequest(
                    messages=(SystemMessage(content="Be brief."), UserMessage(content="Hi"))
                )
            )
    assert answer.request_id == "r1"
    assert (answer.backend, answer.model) == ("a", "model-a")
    assert answer.text == "a-0 a-1 a-2 "
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (21, 3)
    assert answer.finish_reason == "stop"


def test_round_robin_takes_turns_across_requests() -> None:
    plans = [BackendPlan(n, default=Stream(1)) for n in ("a", "b", "c")]
    with start_backends(plans) as backends:
        with Client(client_config(backends, plans, strategy="round-robin")) as client:
            served = [client.complete(REQUEST).backend for _ in range(6)]
    assert served == ["a", "b", "c", "a", "b", "c"]


def test_a_mid_stream_failure_keeps_what_was_delivered_and_raises() -> None:
    plans = [BackendPlan("a", default=Reset(after_chunks=2)), BackendPlan("b")]
    texts = []
    with start_backends(plans) as backends:
        with Client(client_config(backends, plans)) as client:
            with pytest.raises(BackendError) as caught, client.chat(REQUEST) as stream:
                texts.extend(chunk.text for chunk in stream)
        assert backends["b"].received == []
    assert texts == ["a-0 ", "a-1 "]
    assert caught.value.chunks_delivered == 2


# -- closing and configuration --------------------------------------------------------


def test_a_closed_client_takes_no_requests() -> None:
    plans = [BackendPlan("a")]
    with start_backends(plans) as backends:
        client = Client(client_config(backends, plans, strategy="round-robin"))
        client.close()
        with pytest.raises(ClientClosedError):
            client.chat(REQUEST)

        async def main() -> None:
            client = AsyncClient(client_config(backends, plans, strategy="round-robin"))
            await client.aclose()
            with pytest.raises(ClientClosedError):
                client.chat(REQUEST)

        anyio.run(main)


def test_the_trace_file_replays_and_names_every_request(tmp_path: os.PathLike[str]) -> None:
    plans = [BackendPlan("a", script=[Fail(429)], default=Stream(1)), BackendPlan("b")]
    path = os.path.join(tmp_path, "trace.jsonl")
    with start_backends(plans) as backends:
        with Client(client_config(backends, plans), trace=path) as client:
            for _ in range(3):
                client.complete(REQUEST)
    with open(path, "rb") as file:
        data = file.read()
    assert verify_trace(data) is None
    started = [s.event for s in decode_trace(data)[1] if type(s.event).__name__ == "RequestStarted"]
    assert [e.request_id for e in started] == ["r1", "r2", "r3"]  # type: ignore[attr-defined]


def test_a_profile_directory_drives_a_client(tmp_path: os.PathLike[str]) -> None:
    plans = [BackendPlan("fast", default=Fail(503)), BackendPlan("steady", "anthropic")]
    folder = str(tmp_path)
    with start_backends(plans) as backends:
        for plan in plans:
            member = {
                "version": 1,
                "provider": plan.provider,
                "model": f"model-{plan.name}",
                "modelParams": {},
                "ephemeralSettings": {
                    "base-url": backends[plan.name].base_url,
                    "auth-key": secret_of(plan.name),
                },
            }
            with open(os.path.join(folder, f"{plan.name}.json"), "w") as file:
                json.dump(member, file)
        balancer = {
            "version": 1,
            "type": "loadbalancer",
            "policy": "failover",
            "profiles": ["fast", "steady"],
            "provider": "",
            "model": "",
            "modelParams": {},
            "ephemeralSettings": {"failover_retry_count": 1, "temperature": 0.3},
        }
        with open(os.path.join(folder, "team.json"), "w") as file:
            json.dump(balancer, file)
        config = load_profile(folder, "team")
        with Client(config) as client:
            answer = client.complete(REQUEST)
        (seen,) = backends["steady"].received
    assert answer.backend == "steady"
    assert seen.header("x-api-key") == secret_of("steady")
    assert seen.json()["temperature"] == 0.3


def test_threads_share_one_client_and_each_gets_its_own_answer() -> None:
    plans = [BackendPlan(n, default=Stream(4, text="{backend}-{i} ")) for n in ("a", "b")]
    results: list[tuple[str, str]] = []
    lock = threading.Lock()
    with start_backends(plans) as backends:
        with Client(client_config(backends, plans, strategy="round-robin")) as client:

            def work() -> None:
                for _ in range(5):
                    answer = client.complete(REQUEST)
                    with lock:
                        results.append((answer.backend, answer.text))

            threads = [threading.Thread(target=work) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=20)
            assert not any(t.is_alive() for t in threads)
    assert len(results) == 20
    for backend, text in results:
        assert text == "".join(f"{backend}-{i} " for i in range(4))


def test_a_stream_never_iterated_sends_nothing_and_leaves_nothing_live() -> None:
    # A request starts in the core when its stream is first iterated: one
    # closed or dropped before that was never there.
    plans = [BackendPlan("a", default=Stream(1))]
    trace = io.BytesIO()
    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin")
        with Client(config, trace=trace) as client:
            with client.chat(REQUEST):
                pass
            client.chat(REQUEST)  # dropped at once
            assert client.stats().in_flight == 0

        async def main() -> None:
            async with AsyncClient(config) as client:
                async with client.chat(REQUEST):
                    pass
                assert client.stats().in_flight == 0

        anyio.run(main)
        assert backends["a"].received == []
    assert decision_lines(trace.getvalue()) == []


def test_the_first_chunk_deadline_runs_from_the_first_iteration() -> None:
    # A caller who starts reading late must not have a healthy backend blamed.
    plans = [BackendPlan("a", default=Stream(2)), BackendPlan("b", default=Stream(2))]
    with start_backends(plans) as backends:
        config = client_config(
            backends, plans, settings={"timeout_ms": 200, "failover_retry_count": 1}
        )
        with Client(config) as client:
            stream = client.chat(REQUEST)
            time.sleep(0.4)  # twice the first-chunk timeout
            texts = [chunk.text for chunk in stream if chunk.text]
            stats = client.stats()
    assert (stream.backend, texts) == ("a", ["a-0 ", "a-1 "])
    assert stats.backend_metrics["a"].timeouts == 0


def test_a_finalizer_running_under_the_guard_does_not_deadlock() -> None:
    # The garbage collector may finalize a dropped stream at any allocation,
    # including one inside the client's own guarded section, on the same thread.
    plans = [BackendPlan("a", default=Stream(1))]
    with start_backends(plans) as backends:
        with Client(client_config(backends, plans, strategy="round-robin")) as client:
            stream = client.chat(REQUEST)

            def finalize_while_guarded() -> None:
                with client._link._guard:
                    stream.__del__()

            worker = threading.Thread(target=finalize_while_guarded, daemon=True)
            worker.start()
            worker.join(timeout=5)
            assert not worker.is_alive(), "the finalizer deadlocked on the guard"
            assert client.stats().in_flight == 0


def test_closing_a_client_under_a_running_request_ends_it_cleanly(
    tmp_path: os.PathLike[str],
) -> None:
    plans = [BackendPlan("a", default=Stream(50, delay_ms=20))]
    raised: list[BaseException] = []
    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin")
        client = Client(config, trace=os.path.join(tmp_path, "trace.jsonl"))
        started = threading.Event()

        def read() -> None:
            try:
                for _ in client.chat(REQUEST):
                    started.set()
            except Exception as error:  # the test inspects what the caller got
                raised.append(error)

        reader = threading.Thread(target=read)
        reader.start()
        assert started.wait(timeout=5)
        client.close()
        reader.join(timeout=10)
        assert not reader.is_alive(), "the request hung after close()"
        backends.wait_idle(timeout=3.0)
    # The request ran on to its end (or was told it could not), never a file error.
    assert all(isinstance(e, LoadBalancerError | ClientClosedError) for e in raised), raised


def test_a_slow_reader_is_not_charged_as_an_idle_backend(mode: str) -> None:
    # The idle timeout measures the backend's silence while the client waits for
    # it, not the time the caller spends on each chunk.
    plans = [BackendPlan("a", default=Stream(3))]
    with start_backends(plans) as backends:
        config = client_config(backends, plans, strategy="round-robin", idle_timeout_ms=200)
        if mode == "sync":
            texts = []
            with Client(config) as client:
                for chunk in client.chat(REQUEST):
                    texts.append(chunk.text)
                    time.sleep(0.3)
        else:

            async def main() -> list[str]:
                texts = []
                async with AsyncClient(config) as client, client.chat(REQUEST) as stream:
                    async for chunk in stream:
                        texts.append(chunk.text)
                        await anyio.sleep(0.3)
                return texts

            texts = anyio.run(main, backend=mode)
    assert [t for t in texts if t] == ["a-0 ", "a-1 ", "a-2 "]
