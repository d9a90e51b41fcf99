"""Run one scripted scenario through the sync client or the async client.

Every run gets fresh local backends (real HTTP on 127.0.0.1, in a background
thread), so what each backend received belongs to that run alone. The async
client runs under ``anyio.run`` on asyncio or trio, the sync client in the
test's own thread: the same scenario can be compared across all three.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec

from lbcore import decode_trace, verify_trace
from lbtransports import AsyncClient, ChatRequest, Client, ClientConfig, LoadBalancerError
from lbtransports.testing import Behaviour, LocalBackends, Received
from lbtransports.wire import UserMessage

MODES = ("sync", "asyncio", "trio")

REQUEST = ChatRequest(messages=(UserMessage(content="Say something short."),))

#: Timers short enough for a quick suite, long enough not to fire on a healthy loopback answer.
FIRST_CHUNK_MS = 300
IDLE_MS = 600


def secret_of(name: str) -> str:
    return f"sk-{name}-do-not-leak-0123456789"


@dataclass(frozen=True)
class BackendPlan:
    """One local backend for a scenario: its provider and what it does per request."""

    name: str
    provider: str = "openai"
    script: Sequence[Behaviour] = ()
    default: Behaviour | None = None
    #: Nothing listens on its port: every connection is refused.
    refused: bool = False


@dataclass
class Outcome:
    """What the caller saw, and what the core decided."""

    texts: list[str] = field(default_factory=list)
    error: BaseException | None = None
    backend: str | None = None
    trace: bytes = b""
    received: dict[str, list[Received]] = field(default_factory=dict)
    stats: Any = None

    @property
    def text(self) -> str:
        return "".join(self.texts)


def start_backends(plans: Sequence[BackendPlan]) -> LocalBackends:
    backends = LocalBackends()
    for plan in plans:
        if plan.refused:
            backends.closed(plan.name, plan.provider)
        elif plan.default is not None:
            backends.add(plan.name, plan.provider, *plan.script, default=plan.default)
        else:
            backends.add(plan.name, plan.provider, *plan.script)
    return backends


def client_config(
    backends: LocalBackends,
    plans: Sequence[BackendPlan],
    *,
    strategy: str = "failover",
    settings: dict[str, Any] | None = None,
    idle_timeout_ms: int = IDLE_MS,
) -> ClientConfig:
    return ClientConfig.from_mapping(
        {
            "strategy": strategy,
            "profile_name": "lb",
            "settings": settings or {},
            "connect_timeout_ms": 2_000,
            "idle_timeout_ms": idle_timeout_ms,
            "backends": [
                {
                    "name": plan.name,
                    "provider": plan.provider,
                    "model": f"model-{plan.name}",
                    "base_url": backends[plan.name].base_url,
                    "credential": {"key": secret_of(plan.name)},
                }
                for plan in plans
            ],
        }
    )


ConfigFor = Callable[[LocalBackends], ClientConfig]


def run_scenario(
    mode: str,
    plans: Sequence[BackendPlan],
    config_for: ConfigFor,
    *,
    requests: int = 1,
    request: ChatRequest = REQUEST,
) -> list[Outcome]:
    """Send ``requests`` requests one after another; one outcome each."""
    with start_backends(plans) as backends:
        config = config_for(backends)
        buffer = io.BytesIO()
        if mode == "sync":
            outcomes = _run_sync(config, buffer, requests, request)
        else:
            outcomes = anyio.run(_run_async, config, buffer, requests, request, backend=mode)
        # Every connection the client abandoned must be closed, not just dropped.
        backends.wait_idle(timeout=3.0)
        received = {plan.name: backends[plan.name].received for plan in plans}
    for outcome in outcomes:
        outcome.trace = buffer.getvalue()
        outcome.received = received
    return outcomes


def _run_sync(
    config: ClientConfig, buffer: io.BytesIO, count: int, request: ChatRequest
) -> list[Outcome]:
    outcomes = []
    with Client(config, trace=buffer) as client:
        for _ in range(count):
            outcome = Outcome()
            try:
                with client.chat(request) as stream:
                    for chunk in stream:
                        outcome.texts.append(chunk.text)
                    outcome.backend = stream.backend
            except LoadBalancerError as error:
                outcome.error = error
            outcomes.append(outcome)
        for outcome in outcomes:
            outcome.stats = client.stats()
    return outcomes


async def _run_async(
    config: ClientConfig, buffer: io.BytesIO, count: int, request: ChatRequest
) -> list[Outcome]:
    outcomes = []
    async with AsyncClient(config, trace=buffer) as client:
        for _ in range(count):
            outcome = Outcome()
            try:
                async with client.chat(request) as stream:
                    async for chunk in stream:
                        outcome.texts.append(chunk.text)
                    outcome.backend = stream.backend
            except LoadBalancerError as error:
                outcome.error = error
            outcomes.append(outcome)
        for outcome in outcomes:
            outcome.stats = client.stats()
    return outcomes


#: Fields that carry clock readings: they differ between runs, the decisions do not.
_CLOCK_FIELDS = frozenset({"at", "first_chunk_deadline", "due", "half_open_after"})


def _without_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if k not in _CLOCK_FIELDS}
    if isinstance(value, list | tuple):
        return [_without_clock(v) for v in value]
    return value


def decisions(trace: bytes) -> list[dict[str, Any]]:
    """The trace's steps with every clock reading removed, after checking it replays."""
    assert verify_trace(trace) is None, "the recorded trace must replay exactly"
    _, steps = decode_trace(trace)
    return [_without_clock(msgspec.to_builtins(step)) for step in steps]


def decision_lines(trace: bytes) -> list[str]:
    """One readable line per step: ``event -> action, action``, for snapshots."""
    lines = []
    for step in decisions(trace):
        event = step["event"]
        detail = ""
        if event["type"] == "AttemptFailed":
            failure = event["failure"]
            detail = f"({failure['kind']}, {failure['status']}, {failure['message']!r})"
        elif event["type"] == "AttemptTimedOut":
            detail = f"({event['phase']})"
        actions = ", ".join(_action_text(action) for action in step["actions"])
        attempt = f"#{event['attempt']}" if "attempt" in event else ""
        lines.append(f"{event['type']}{attempt}{detail} -> {actions or '-'}")
    return lines


def _action_text(action: dict[str, Any]) -> str:
    kind = action["type"]
    if kind == "StartAttempt":
        return f"StartAttempt#{action['attempt']}({action['backend']})"
    if kind == "FailOver":
        return f"FailOver({action['from_backend']}->{action['to_backend']}, {action['reason']})"
    if kind == "CancelAttempt":
        return f"CancelAttempt#{action['attempt']}({action['reason']})"
    if kind == "RequestFailed":
        return f"RequestFailed({action['error']['type']})"
    if kind == "RequestCompleted":
        return f"RequestCompleted({action['backend']})"
    if kind == "SkipBackend":
        return f"SkipBackend({action['backend']}, {action['reason']})"
    if kind == "SelectionChanged":
        return f"Selected({action['backend']})"
    return kind
