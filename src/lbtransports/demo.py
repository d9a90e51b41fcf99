"""``python -m lbtransports.demo``: the load balancer at work, on this machine alone.

Three local backends, one per provider format, each misbehaving its own way:
``openai`` rate-limits every request (429 with ``Retry-After``), ``anthropic``
takes the request and never answers, ``gemini`` streams (and fails twice on
purpose). A failover client with a short first-chunk deadline keeps requests
flowing anyway. The blocking :class:`~lbtransports.Client` streams a few
answers, the :class:`~lbtransports.AsyncClient` sends several at once, and
both record every decision to a trace that ``python -m lbcore`` explains and
replays. No API key and no network beyond 127.0.0.1 is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio

from lbcore import FailOver, StartAttempt, Stats
from lbcore.__main__ import main as lbcore_main

from . import (
    AsyncChatStream,
    AsyncClient,
    BackendError,
    ChatStream,
    Client,
    ClientConfig,
    FailoverError,
    LoadBalancerError,
)
from .testing import Fail, Hang, LocalBackends, Reset, Stream
from .wire import ChatRequest, UserMessage

__all__ = ("main",)

#: The first-chunk deadline: how long a backend may keep a request without answering.
FIRST_CHUNK_MS: Final = 300
#: Every good answer: four chunks, one every 20 ms.
GOOD: Final = Stream(chunks=4, delay_ms=20)
REQUEST: Final = ChatRequest(messages=(UserMessage(content="Say something short."),))
DEFAULT_TRACE: Final = "demo-trace.jsonl"


def start_backends() -> LocalBackends:
    """The embedded scenario: what each local backend does with each request."""
    backends = LocalBackends()
    backends.add(
        "openai",
        "openai",
        default=Fail(429, retry_after="2", message="Rate limit reached, retry in 2s"),
    )
    backends.add("anthropic", "anthropic", default=Hang())
    backends.add(
        "gemini",
        "gemini",
        # Requests reach gemini in a known order: r1, r2, r3 from the blocking
        # client, then a1..a3 and a4 from the async one.
        GOOD,  # r1
        GOOD,  # r2
        Reset(after_chunks=2),  # r3: the connection breaks mid-answer
        GOOD,  # a1
        GOOD,  # a2
        GOOD,  # a3
        Fail(503, message="The model is overloaded"),  # a4
        default=GOOD,
    )
    return backends


def client_config(backends: LocalBackends) -> ClientConfig:
    return ClientConfig.from_mapping(
        {
            "strategy": "failover",
            "profile_name": "demo",
            "settings": {"timeout_ms": FIRST_CHUNK_MS, "failover_retry_count": 1},
            "connect_timeout_ms": 2_000,
            "idle_timeout_ms": 2_000,
            "backends": [
                {
                    "name": backend.name,
                    "provider": backend.provider.value,
                    "model": f"{backend.name}-demo-model",
                    "base_url": backend.base_url,
                    # The local backends accept any key; no real one is needed.
                    "credential": {"key": "sk-demo-not-a-real-key"},
                }
                for backend in backends
            ],
        }
    )


# -- what the caller sees ------------------------------------------------------------


def route(decisions: Sequence[Any]) -> str:
    """How the request got to the backend serving it, from the core's decisions."""
    hops = []
    for action in decisions:
        if isinstance(action, FailOver):
            why = str(action.status) if action.status is not None else action.failure_kind
            if action.failure_kind == "timeout":
                why = f"no first chunk in {FIRST_CHUNK_MS} ms"
            hops.append(f"{action.from_backend} ({why})")
    return " -> ".join(hops)


def serving(decisions: Sequence[Any]) -> str:
    """The backend of the attempt the core is waiting on."""
    starts = [action for action in decisions if isinstance(action, StartAttempt)]
    return starts[-1].backend if starts else "?"


def describe_error(error: LoadBalancerError) -> str:
    """The exception as a caller would print and inspect it."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, BackendError):
        text += f"\n      .backend={error.backend!r} .chunks_delivered={error.chunks_delivered}"
    elif isinstance(error, FailoverError):
        tried = ", ".join(f"{f.backend}" for f in error.failures)
        text += f"\n      .failures from {tried}; .retryable={error.retryable}"
    return text


def heading(title: str) -> None:
    print(f"\n== {title}")


# -- the blocking client ---------------------------------------------------------------


def stream_one(client: Client) -> None:
    began = time.perf_counter()
    stream: ChatStream = client.chat(REQUEST)
    with stream:
        try:
            for count, chunk in enumerate(stream):
                if count == 0:
                    hops = route(stream.decisions)
                    via = f"after {hops} -> " if hops else ""
                    print(f"{stream.request_id}  {via}{serving(stream.decisions)}: ", end="")
                print(chunk.text, end="", flush=True)
        except LoadBalancerError as error:
            print(f"\n    raised {describe_error(error)}")
            return
    print(
        f" ({stream.usage.output_tokens if stream.usage else 0} tokens, "
        f"{time.perf_counter() - began:.2f} s)"
    )


def run_sync(config: ClientConfig, trace: Path) -> Stats:
    heading("Client (blocking): three requests, each answer streamed as it arrives")
    with Client(config, trace=trace) as client:
        for _ in range(3):
            stream_one(client)
        return client.stats()


# -- the async client ------------------------------------------------------------------


async def collect(stream: AsyncChatStream, began: float) -> None:
    texts = []
    try:
        async with stream:
            async for chunk in stream:
                texts.append(chunk.text)
    except LoadBalancerError as error:
        print(f"{stream.request_id}  raised {describe_error(error)}")
        return
    hops = route(stream.decisions)
    via = f"after {hops} -> " if hops else ""
    print(
        f"{stream.request_id}  {via}{stream.backend}: {''.join(texts)}"
        f"(done at {time.perf_counter() - began:.2f} s)"
    )


async def run_async(config: ClientConfig, trace: Path) -> Stats:
    heading("AsyncClient: three requests at once, then one more")
    async with AsyncClient(config, trace=trace) as client:
        began = time.perf_counter()
        async with anyio.create_task_group() as group:
            for n in (1, 2, 3):
                # chat() hands the request to the core at once; the tasks read the answers.
                group.start_soon(collect, client.chat(REQUEST, request_id=f"a{n}"), began)
        print(
            f"    all three done in {time.perf_counter() - began:.2f} s: "
            f"they waited on anthropic side by side"
        )
        await collect(client.chat(REQUEST, request_id="a4"), time.perf_counter())
        return client.stats()


# -- the gateway -----------------------------------------------------------------------


def run_gateway(config: ClientConfig) -> int:
    """The same backends behind ``lb serve``, with the official openai SDK as the caller."""
    heading("Gateway: the openai SDK streams through `lb serve` over the same backends")
    try:
        import openai
    except ImportError:
        print("    (skipped: the openai SDK is not installed; pip install openai)")
        return 0
    from .gateway import GatewayConfig, Group, serve_in_thread

    gateway_config = GatewayConfig(
        port=0, no_auth=True, groups=(Group(name="demo", client=config),)
    )
    with serve_in_thread(gateway_config) as gateway:
        caller = openai.OpenAI(
            base_url=f"http://127.0.0.1:{gateway.port}/v1", api_key="unused", max_retries=0
        )
        began = time.perf_counter()
        response = caller.chat.completions.with_raw_response.create(
            model="demo", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        backend = response.headers.get("x-lb-backend", "?")
        attempts = response.headers.get("x-lb-attempts", "?")
        text = "".join(
            event.choices[0].delta.content or "" for event in response.parse() if event.choices
        )
        print(
            f"openai.OpenAI(base_url=gateway) got {text!r} from {backend} "
            f"after {attempts} attempts ({time.perf_counter() - began:.2f} s)"
        )
    return 0


# -- afterwards -----------------------------------------------------------------------


def print_stats(title: str, stats: Stats) -> None:
    print(f"{title}: {stats.total_requests} requests completed, {stats.in_flight} in flight")
    for name, metrics in stats.backend_metrics.items():
        print(
            f"    {name:<10} attempts {metrics.requests}  ok {metrics.successes}  "
            f"failed {metrics.failures}  timeouts {metrics.timeouts}  "
            f"avg {metrics.avg_latency_ms:.0f} ms"
        )


def lbcore_command(*args: str) -> int:
    """Run ``python -m lbcore ARGS`` in this process; print what it prints, trimmed."""
    print(f"$ python -m lbcore {' '.join(args)}")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = lbcore_main(args)
    print(output.getvalue().strip("\n"))
    return status


def explain(sync_trace: Path, async_trace: Path) -> int:
    """Explain and replay the traces with ``python -m lbcore``, as a user would."""
    heading("Why did r1 end on gemini?")
    status = lbcore_command("show", str(sync_trace), "--request", "r1")
    heading("Why did a4 fail?")
    status |= lbcore_command("show", str(async_trace), "--request", "a4")
    heading("Do the traces replay byte for byte?")
    return status | lbcore_command("replay", str(sync_trace), str(async_trace))


def async_trace_for(trace: Path) -> Path:
    """Where the async client's trace goes: next to the blocking client's."""
    return trace.with_name(f"{trace.stem}-async{trace.suffix or '.jsonl'}")


def main(argv: Sequence[str] | None = None, prog: str = "python -m lbtransports.demo") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument(
        "--trace",
        default=DEFAULT_TRACE,
        help=f"where the blocking client's trace goes (default {DEFAULT_TRACE}); "
        "the async client's goes next to it, with -async in its name",
    )
    parser.add_argument(
        "--async-backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop the AsyncClient runs on",
    )
    args = parser.parse_args(argv)
    sync_trace = Path(args.trace)
    async_trace = async_trace_for(sync_trace)
    sync_trace.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with start_backends() as backends:
        config = client_config(backends)
        print(
            f"3 local backends on 127.0.0.1; failover in this order, first chunk due within "
            f"{FIRST_CHUNK_MS} ms:"
        )
        print("    openai     answers 429 Too Many Requests, Retry-After: 2")
        print("    anthropic  takes the request and never answers")
        print(
            f"    gemini     streams {GOOD.chunks} chunks (but resets r3 mid-answer, "
            "and answers a4 with 503)"
        )
        sync_stats = run_sync(config, sync_trace)
        async_stats = anyio.run(run_async, config, async_trace, backend=args.async_backend)
        gateway_status = run_gateway(config)
    elapsed = time.perf_counter() - began
    status = explain(sync_trace, async_trace) | gateway_status
    heading(f"Stats (7 requests through local HTTP backends in {elapsed:.1f} s)")
    print_stats("Client", sync_stats)
    print_stats("AsyncClient", async_stats)
    return status


if __name__ == "__main__":
    sys.exit(main())
