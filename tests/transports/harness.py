"""Run one scripted scenario through the sync client or the async client.

Every run gets fresh local backends (real HTTP on 127.0.0.1, in a background
thread), so what each backend received belongs to that run alone. The async
client runs under ``anyio.run`` on asyncio or trio, the sync client in the
test's own thread: the same scenario can be compared across all three.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import anyio
import msgspec

from lbcore import decode_trace, verify_trace
from lbtransports import AsyncClient, ChatRequest, Client, ClientConfig, LoadBalancerError
from lbtransports.testing import Behaviour, LocalBackends, Received
from lbtransports.wire import Chunk, UserMessage

MODES = ("sync", "asyncio", "trio")
ASYNC_MODES = ("asyncio", "trio")
#: The longest a whole scenario may run before the test fails instead of hanging.
WATCHDOG_S = 60.0

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
    """What the caller saw of one request, and what the core decided for the run."""

    request_id: str = ""
    chunks: list[Chunk] = field(default_factory=list)
    error: LoadBalancerError | None = None
    backend: str | None = None
    #: The caller closed the stream before its iteration ended.
    abandoned: bool = False
    trace: bytes = b""
    received: dict[str, list[Received]] = field(default_factory=dict)
    stats: Any = None

    @property
    def texts(self) -> list[str]:
        """Every chunk's text, empty ones included."""
        return [chunk.text for chunk in self.chunks]

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
T = TypeVar("T")


def run_scenario(
    mode: str,
    plans: Sequence[BackendPlan],
    config_for: ConfigFor,
    *,
    requests: int = 1,
    abandon_after: Sequence[int | None] | None = None,
    request: ChatRequest = REQUEST,
    watchdog_s: float = WATCHDOG_S,
) -> list[Outcome]:
    """Send requests one after another through ``mode``'s client; one outcome each.

    ``abandon_after`` gives, per request, after how many chunks the caller closes
    the stream (0: before iterating; None: read to the end); it replaces
    ``requests``. A run that does not end within ``watchdog_s`` fails the test
    instead of hanging the suite.
    """
    plan: list[int | None] = list(abandon_after) if abandon_after is not None else [None] * requests
    with start_backends(plans) as backends:
        config = config_for(backends)
        buffer = io.BytesIO()
        if mode == "sync":
            outcomes = _bounded(lambda: _run_sync(config, buffer, plan, request), watchdog_s)
        else:
            outcomes = anyio.run(
                _run_async, config, buffer, plan, request, watchdog_s, backend=mode
            )
        # Every connection the client abandoned must be closed, not just dropped.
        backends.wait_idle(timeout=3.0)
        received = {plan.name: backends[plan.name].received for plan in plans}
    for outcome in outcomes:
        outcome.trace = buffer.getvalue()
        outcome.received = received
    return outcomes


def _bounded(work: Callable[[], T], watchdog_s: float) -> T:
    """``work()`` on a thread, failing (rather than hanging the suite) if it never ends."""
    results: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(work())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(watchdog_s)
    assert not thread.is_alive(), f"the sync client was still running after {watchdog_s} s"
    if errors:
        raise errors[0]
    return results[0]


def _run_sync(
    config: ClientConfig, trace: io.BytesIO, plan: list[int | None], request: ChatRequest
) -> list[Outcome]:
    with Client(config, trace=trace) as client:
        outcomes = [_one_sync(client, request, abandon) for abandon in plan]
        stats = client.stats()
    for outcome in outcomes:
        outcome.stats = stats
    return outcomes


def _one_sync(client: Client, request: ChatRequest, abandon_after: int | None) -> Outcome:
    outcome = Outcome()
    try:
        with client.chat(request) as stream:
            outcome.request_id = stream.request_id
            outcome.abandoned = abandon_after == 0
            if not outcome.abandoned:
                for chunk in stream:
                    outcome.chunks.append(chunk)
                    if len(outcome.chunks) == abandon_after:
                        outcome.abandoned = True
                        break
            outcome.backend = stream.backend
    except LoadBalancerError as error:
        outcome.error = error
    return outcome


async def _run_async(
    config: ClientConfig,
    trace: io.BytesIO,
    plan: list[int | None],
    request: ChatRequest,
    watchdog_s: float,
) -> list[Outcome]:
    async with AsyncClient(config, trace=trace) as client:
        with anyio.fail_after(watchdog_s):
            outcomes = [await _one_async(client, request, abandon) for abandon in plan]
        stats = client.stats()
    for outcome in outcomes:
        outcome.stats = stats
    return outcomes


async def _one_async(
    client: AsyncClient, request: ChatRequest, abandon_after: int | None
) -> Outcome:
    outcome = Outcome()
    try:
        async with client.chat(request) as stream:
            outcome.request_id = stream.request_id
            outcome.abandoned = abandon_after == 0
            if not outcome.abandoned:
                async for chunk in stream:
                    outcome.chunks.append(chunk)
                    if len(outcome.chunks) == abandon_after:
                        outcome.abandoned = True
                        break
            outcome.backend = stream.backend
    except LoadBalancerError as error:
        outcome.error = error
    return outcome


#: Fields that carry clock readings: they differ between runs, the decisions do not.
CLOCK_FIELDS: Final = frozenset({"at", "first_chunk_deadline", "due", "half_open_after"})


def without_clock(value: Any) -> Any:
    """``value`` (plain data from a trace) without its clock readings."""
    if isinstance(value, dict):
        return {k: without_clock(v) for k, v in value.items() if k not in CLOCK_FIELDS}
    if isinstance(value, list | tuple):
        return [without_clock(v) for v in value]
    return value


def decisions(trace: bytes) -> list[dict[str, Any]]:
    """The trace's steps with every clock reading removed, after checking it replays."""
    assert verify_trace(trace) is None, "the recorded trace must replay exactly"
    _, steps = decode_trace(trace)
    return [without_clock(msgspec.to_builtins(step)) for step in steps]


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
