"""The two sans-IO layers together: wire-format outcomes drive the core's decisions.

A tiny in-memory driver plays the transport: on each ``StartAttempt`` it
builds the real HTTP request, then "receives" scripted response bytes in
small pieces and reports what the decoder made of them. No sockets: this
checks that the wire layer's failures mean what the core expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lbcore import (
    Action,
    AttemptFailed,
    AttemptSucceeded,
    BackendFailed,
    BackendSpec,
    Balancer,
    BalancerConfig,
    ChunkReceived,
    FailoverExhausted,
    FailureKind,
    RequestCompleted,
    RequestFailed,
    RequestStarted,
    RetryScheduled,
    Settings,
    StartAttempt,
    Tick,
)
from lbtransports.wire import (
    BackendTarget,
    ChatRequest,
    CredentialSource,
    UserMessage,
    WireError,
    build_request,
    estimate_tokens,
    parse_error,
    stream_decoder,
)

from .wire import streams


@dataclass(frozen=True)
class Reply:
    """What a backend sends back for one attempt."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Driver:
    balancer: Balancer
    targets: dict[str, BackendTarget]
    script: dict[str, list[Reply]]
    clock: int = 0
    text: list[str] = field(default_factory=list)
    sent_to: list[str] = field(default_factory=list)

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def run(self, request_id: str, request: ChatRequest) -> Action:
        first = next(iter(self.targets.values()))
        prompt = estimate_tokens(first, request).tokens
        pending = self.balancer.handle(
            RequestStarted(at=self.tick(), request_id=request_id, prompt_tokens=prompt)
        )
        while True:
            terminal = [a for a in pending if isinstance(a, RequestCompleted | RequestFailed)]
            if terminal:
                return terminal[0]
            starts = [a for a in pending if isinstance(a, StartAttempt)]
            if not starts:
                # A retry waits (a 429's Retry-After is honoured): the clock jumps to it.
                (retry,) = [a for a in pending if isinstance(a, RetryScheduled)]
                self.clock = retry.due
                pending = self.balancer.handle(Tick(at=self.clock))
                continue
            (start,) = starts
            pending = self.attempt(start, request)

    def attempt(self, start: StartAttempt, request: ChatRequest) -> list[Action]:
        target = self.targets[start.backend]
        http = build_request(target, request, environ={"KEY_" + start.backend.upper(): "sk-x"})
        self.sent_to.append(f"{start.backend}:{http.url}")
        reply = self.script[start.backend].pop(0)
        at, rid, n = self.tick(), start.request_id, start.attempt
        if not 200 <= reply.status <= 299:
            failure = parse_error(
                target.provider, reply.status, reply.headers, reply.body, secrets=http.secrets
            )
            return self.balancer.handle(
                AttemptFailed(at=at, request_id=rid, attempt=n, failure=failure)
            )
        decoder = stream_decoder(target.provider, secrets=http.secrets)
        actions: list[Action] = []
        try:
            for offset in range(0, len(reply.body), 7):  # network-sized, awkward pieces
                for chunk in decoder.feed(reply.body[offset : offset + 7]):
                    self.text.append(chunk.text)
                    actions += self.balancer.handle(
                        ChunkReceived(at=self.tick(), request_id=rid, attempt=n)
                    )
            for chunk in decoder.end():
                self.text.append(chunk.text)
                actions += self.balancer.handle(
                    ChunkReceived(at=self.tick(), request_id=rid, attempt=n)
                )
        except WireError as error:
            for chunk in error.chunks:
                self.text.append(chunk.text)
                actions += self.balancer.handle(
                    ChunkReceived(at=self.tick(), request_id=rid, attempt=n)
                )
            return actions + self.balancer.handle(
                AttemptFailed(at=self.tick(), request_id=rid, attempt=n, failure=error.failure)
            )
        usage = decoder.usage
        return actions + self.balancer.handle(
            AttemptSucceeded(
                at=self.tick(),
                request_id=rid,
                attempt=n,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
            )
        )


def make_driver(script: dict[str, list[Reply]]) -> Driver:
    providers = {"zai": "openai", "claude": "anthropic", "gem": "gemini"}
    config = BalancerConfig(
        profile_name="lb",
        strategy="failover",
        backends=tuple(
            BackendSpec(name=n, provider=p, model=f"m-{n}") for n, p in providers.items()
        ),
        settings=Settings.from_mapping({"failover_retry_count": 2}),
    )
    targets = {
        name: BackendTarget(
            name=name,
            provider=provider,
            model=f"m-{name}",
            base_url=f"http://127.0.0.1:9/{name}",
            credential=CredentialSource(env="KEY_" + name.upper()),
        )
        for name, provider in providers.items()
    }
    return Driver(Balancer(config, record=True), targets, script)


REQUEST = ChatRequest(messages=(UserMessage(content="Hello"),))
RATE_LIMITED = Reply(
    429,
    b'{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}',
    (("retry-after", "2"),),
)


#: The opening role-only delta is not a chunk; the stream then just stops.
CUT_BEFORE_ANY_CHUNK = b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'


def test_a_stream_cut_before_any_chunk_is_retried_then_a_429_fails_over() -> None:
    driver = make_driver(
        {
            "zai": [Reply(200, CUT_BEFORE_ANY_CHUNK), RATE_LIMITED],
            "claude": [Reply(200, streams.ANTHROPIC_TEXT)],
        }
    )
    terminal = driver.run("r1", REQUEST)
    assert isinstance(terminal, RequestCompleted)
    assert terminal.backend == "claude"
    steps = driver.balancer.take_steps()
    failures = [s.event.failure for s in steps if isinstance(s.event, AttemptFailed)]
    assert [(f.kind, f.status) for f in failures] == [
        (FailureKind.NETWORK, None),  # "stream ended early": retried on zai
        (FailureKind.HTTP, 429),  # retries used up: on to claude
    ]
    assert failures[1].retry_after_ms == 2000
    assert driver.sent_to == [
        "zai:http://127.0.0.1:9/zai/chat/completions",
        "zai:http://127.0.0.1:9/zai/chat/completions",
        "claude:http://127.0.0.1:9/claude/v1/messages",
    ]
    claude = driver.balancer.stats().backend_metrics["claude"]
    assert claude.tokens == terminal.input_tokens + terminal.output_tokens > 0


def test_a_stream_cut_after_text_is_a_raw_failure_never_a_success() -> None:
    driver = make_driver({"zai": [Reply(200, streams.OPENAI_CUT)]})
    terminal = driver.run("r1", REQUEST)
    assert isinstance(terminal, RequestFailed)
    assert isinstance(terminal.error, BackendFailed)
    assert terminal.error.failure.kind is FailureKind.NETWORK
    assert terminal.error.chunks_delivered >= 1
    assert len(driver.sent_to) == 1  # no second backend: that would mix two answers


def test_a_429_then_an_overloaded_stream_then_gemini_serves() -> None:
    driver = make_driver(
        {
            "zai": [RATE_LIMITED, RATE_LIMITED],
            "claude": [Reply(200, streams.ANTHROPIC_OVERLOADED)] * 2,
            "gem": [Reply(200, streams.GEMINI_TEXT)],
        }
    )
    terminal = driver.run("r1", REQUEST)
    assert isinstance(terminal, RequestCompleted)
    assert terminal.backend == "gem"
    assert [s.split(":")[0] for s in driver.sent_to] == ["zai", "zai", "claude", "claude", "gem"]
    assert "".join(driver.text)  # the caller saw only gemini's answer
    assert driver.balancer.current_failover_index() == 2


def test_every_backend_rate_limited_gives_a_retryable_aggregate() -> None:
    driver = make_driver(
        {
            "zai": [RATE_LIMITED] * 2,
            "claude": [
                Reply(
                    429,
                    b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}',
                )
            ]
            * 2,
            "gem": [
                Reply(
                    429,
                    b'{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}',
                )
            ]
            * 2,
        }
    )
    terminal = driver.run("r1", REQUEST)
    assert isinstance(terminal, RequestFailed)
    error = terminal.error
    assert isinstance(error, FailoverExhausted)
    assert (error.status, error.category, error.retryable) == (429, "rate_limit", True)
    assert error.failures[0].failure.retry_after_ms == 2000
    assert "sk-x" not in error.message


def test_an_error_event_after_text_is_the_callers_answer() -> None:
    driver = make_driver({"zai": [Reply(200, streams.OPENAI_ERROR)]})
    terminal = driver.run("r1", REQUEST)
    assert isinstance(terminal, RequestFailed)
    assert isinstance(terminal.error, BackendFailed)
    assert terminal.error.failure.kind is FailureKind.PROVIDER
    assert terminal.error.failure.provider_type == "server_error"
    assert driver.text == ["Par"]
    assert driver.sent_to == ["zai:http://127.0.0.1:9/zai/chat/completions"]
