"""Properties of both clients over random scenarios, on real sockets (127.0.0.1).

Hypothesis draws a scenario: two or three local backends (openai, anthropic or
gemini), each playing a short random script of behaviours then a default, a
strategy, small settings, and one to four sequential requests, some of which
the caller abandons after a few chunks. The scenario runs through the blocking
client and through the async client (asyncio or trio, drawn), each against
fresh backends. Every run must keep what spec/transports.md promises a caller:

- every request ends, and what the caller saw is what its one terminal action
  says: one backend's whole answer (that backend is ``stream.backend``), a
  prefix of the failing backend's stream as long as ``chunks_delivered``,
  nothing at all, or an abort when the caller walked away;
- every attempt the core started was sent exactly once (no retry underneath the
  core but the one resend after a pooled connection's reset before the answer,
  spec/transports.md section 5), to the backend it named, and the core heard
  what that backend did;
- after the client closed: no connection is left open, nothing is in flight,
  the trace replays, and the stats are exactly those the trace produces;
- when no timer decides anything, both clients take the same decisions.

``test_faults.py`` pins one fault at a time; here the faults come in random
sequences, across retries, failovers, breakers, pooled connections and
abandoned streams.
"""

from __future__ import annotations

import gc
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from lbcore import (
    Action,
    AllBackendsUnhealthy,
    AllContextLimitsExceeded,
    AttemptFailed,
    AttemptSucceeded,
    AttemptTimedOut,
    BackendFailed,
    Balancer,
    CancelAttempt,
    CancelReason,
    ChunkReceived,
    FailoverExhausted,
    FailureKind,
    RequestAborted,
    RequestCompleted,
    RequestFailed,
    RequestStarted,
    StartAttempt,
    Stats,
    TimeoutPhase,
    decode_trace,
    verify_trace,
)
from lbtransports import (
    AllBackendsUnhealthyError,
    BackendError,
    FailoverError,
)
from lbtransports.testing import (
    Behaviour,
    ErrorEvent,
    Fail,
    Hang,
    KeepAlive,
    Malformed,
    NoTerminator,
    Received,
    Reset,
    Stall,
    Stream,
)

from .harness import BackendPlan, Outcome, client_config, run_scenario, without_clock

T = TypeVar("T")

NAMES: Final = ("a", "b", "c")
PROVIDERS: Final = ("openai", "anthropic", "gemini")
#: Small, so that a stall ends quickly; above every first-chunk deadline drawn,
#: so that which timer fires first never depends on scheduling.
IDLE_MS: Final = 350
#: A run that takes longer than this has hung: every timer drawn is far shorter.
WATCHDOG_S: Final = 15.0
#: Behaviours that end only when a timer fires.
SLOW: Final = (Hang, Stall, KeepAlive)

# ------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    plans: tuple[BackendPlan, ...]
    strategy: str
    settings: dict[str, Any]
    #: One entry per request, sent in order: None reads the answer to its end,
    #: ``k`` closes the stream once ``k`` chunks arrived (0: before reading).
    requests: tuple[int | None, ...]
    #: The event loop the async client runs on.
    async_mode: str

    @property
    def first_chunk_deadline(self) -> bool:
        return self.strategy == "failover" and self.settings["timeout_ms"] is not None

    @property
    def timed(self) -> bool:
        """Whether a timer may decide something, so that two runs can differ."""
        steps = [s for p in self.plans if not p.refused for s in (*p.script, p.default)]
        return self.settings["timeout_ms"] is not None or any(isinstance(s, SLOW) for s in steps)


def _stream(position: str) -> st.SearchStrategy[Behaviour]:
    # Every Stream step has its own text: an answer names the step that produced it.
    return st.builds(
        Stream,
        st.integers(0, 4),
        delay_ms=st.sampled_from([0, 0, 2]),
        text=st.just(f"{{backend}}.{position}-{{i}} "),
    )


#: Faults that end by themselves, at once.
FAULTS: st.SearchStrategy[Behaviour] = st.one_of(
    st.sampled_from([400, 401, 403, 429, 500, 503]).map(Fail),
    st.integers(0, 2).map(lambda k: Reset(after_chunks=k)),
    st.just(Reset(before_headers=True)),
    st.builds(Malformed, after_chunks=st.integers(0, 2), kind=st.sampled_from(["json", "sse"])),
    st.integers(0, 2).map(NoTerminator),
    st.integers(0, 2).map(ErrorEvent),
)
#: Faults that only a timer ends: at most one per scenario, so that it stays quick.
SLOW_FAULTS: st.SearchStrategy[Behaviour] = st.one_of(
    st.just(Hang()),
    st.integers(0, 1).map(Stall),
    st.integers(0, 1).map(lambda k: KeepAlive(after_chunks=k)),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    strategy = draw(st.sampled_from(["failover", "round-robin"]))
    plans: list[BackendPlan] = []
    for name in NAMES[: draw(st.integers(2, 3))]:
        provider = draw(st.sampled_from(PROVIDERS))
        if draw(st.sampled_from([False] * 7 + [True])):
            plans.append(BackendPlan(name, provider, refused=True))
            continue
        script = [draw(st.one_of(_stream(str(j)), FAULTS)) for j in range(draw(st.integers(1, 4)))]
        healthy = draw(st.sampled_from([True, True, False]))
        default = draw(_stream("d") if healthy else FAULTS)
        plans.append(BackendPlan(name, provider, script=tuple(script), default=default))
    serving = [i for i, plan in enumerate(plans) if not plan.refused]
    if serving and draw(st.sampled_from([False, False, False, True])):
        i = draw(st.sampled_from(serving))
        script = list(plans[i].script)
        script[draw(st.integers(0, len(script) - 1))] = draw(SLOW_FAULTS)
        plans[i] = BackendPlan(
            plans[i].name, plans[i].provider, script=tuple(script), default=plans[i].default
        )
    config_settings = {
        "failover_retry_count": draw(st.integers(1, 3)),
        "timeout_ms": draw(st.sampled_from([None, None, 150, 200, 300])),
        "failover_retry_delay_ms": draw(st.sampled_from([0, 0, 20, 50])),
        "circuit_breaker_enabled": draw(st.booleans()),
        "circuit_breaker_failure_threshold": draw(st.integers(1, 2)),
        # 0: an open breaker is half-open again at its next check, so probes happen too.
        "circuit_breaker_recovery_timeout_ms": draw(st.sampled_from([60_000, 0])),
    }
    requests = draw(
        st.lists(st.sampled_from([None, None, None, 0, 1, 2, 3]), min_size=1, max_size=4)
    )
    return Scenario(
        plans=tuple(plans),
        strategy=strategy,
        settings=config_settings,
        requests=tuple(requests),
        async_mode=draw(st.sampled_from(["asyncio", "trio"])),
    )


# ------------------------------------------------------------------ running one


@dataclass
class Run:
    seen: list[Outcome]
    stats: Stats
    trace: bytes
    received: dict[str, list[Received]]


def run(mode: str, scenario: Scenario) -> Run:
    # Closing a client must close its connections itself. With the cyclic garbage
    # collector paused, a connection that only a collection would close (its pool
    # kept alive by a reference cycle, say) is found every time, not by chance.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        outcomes = run_scenario(
            mode,
            scenario.plans,
            lambda backends: client_config(
                backends,
                scenario.plans,
                strategy=scenario.strategy,
                settings=scenario.settings,
                idle_timeout_ms=IDLE_MS,
            ),
            abandon_after=scenario.requests,
            watchdog_s=WATCHDOG_S,
        )
    finally:
        if was_enabled:
            gc.enable()
    first = outcomes[0]
    return Run(outcomes, first.stats, first.trace, first.received)


def _spoken(outcome: Outcome) -> list[str]:
    """The texts of the chunks that carried text."""
    return [text for text in outcome.texts if text]


# ------------------------------------------------------------------ reading the trace

AttemptEnd = AttemptSucceeded | AttemptFailed | AttemptTimedOut | CancelAttempt


@dataclass(eq=False)
class AttemptLog:
    start: StartAttempt
    chunks: int = 0
    end: AttemptEnd | None = None
    #: What the backend played for it; None when nothing was played (refused, never sent).
    behaviour: Behaviour | None = None

    @property
    def backend(self) -> str:
        return self.start.backend


@dataclass
class RequestLog:
    #: The actions of its RequestStarted step.
    opening: list[Action]
    attempts: list[AttemptLog] = field(default_factory=list)
    terminals: list[Action] = field(default_factory=list)


def _read_trace(trace: bytes) -> tuple[dict[str, RequestLog], list[AttemptLog]]:
    """Every request and every attempt of the trace, in order, and how each ended."""
    _, steps = decode_trace(trace)
    requests: dict[str, RequestLog] = {}
    attempts: dict[tuple[str, int], AttemptLog] = {}
    in_order: list[AttemptLog] = []

    def end(log: AttemptLog, how: AttemptEnd) -> None:
        assert log.end is None, f"attempt {log.start} ended twice: {log.end} and {how}"
        log.end = how

    for step in steps:
        event = step.event
        if isinstance(event, RequestStarted):
            requests[event.request_id] = RequestLog(opening=list(step.actions))
        elif isinstance(event, ChunkReceived):
            log = attempts[event.request_id, event.attempt]
            assert log.end is None, f"a chunk after the end of {log.start}"
            log.chunks += 1
        elif isinstance(event, AttemptSucceeded | AttemptFailed | AttemptTimedOut):
            end(attempts[event.request_id, event.attempt], event)
        for action in step.actions:
            if isinstance(action, StartAttempt):
                log = attempts[action.request_id, action.attempt] = AttemptLog(action)
                requests[action.request_id].attempts.append(log)
                in_order.append(log)
            elif isinstance(action, CancelAttempt):
                end(attempts[action.request_id, action.attempt], action)
            elif isinstance(action, RequestCompleted | RequestFailed | RequestAborted):
                requests[action.request_id].terminals.append(action)
    return requests, in_order


# ------------------------------------------------------------------ the checks


def _chunks_of(behaviour: Behaviour | None) -> int:
    """How many chunks a behaviour sends before its fault (or its end)."""
    if isinstance(behaviour, Stream):
        return behaviour.chunks
    if isinstance(behaviour, NoTerminator):
        return behaviour.chunks
    if isinstance(behaviour, Reset | Malformed | ErrorEvent | Stall | KeepAlive):
        return behaviour.after_chunks
    return 0


def _texts_of(behaviour: Behaviour | None, backend: str) -> list[str]:
    """The texts a behaviour sends: a Stream's own, the usual ones before a fault."""
    if isinstance(behaviour, Stream):
        return list(behaviour.texts(backend))
    return list(Stream(_chunks_of(behaviour)).texts(backend))


def _check_attempt(scenario: Scenario, log: AttemptLog, abandoned_here: bool) -> None:
    """The core heard what the backend did with this attempt, and nothing else."""
    end, behaviour = log.end, log.behaviour
    where = f"{log.start} played {behaviour!r}"
    if isinstance(end, CancelAttempt) and end.reason is CancelReason.CANCELLED:
        # The caller walked away from it; the core heard no more than was sent.
        assert abandoned_here, f"{where}: cancelled, but its caller did not close the stream"
        if not isinstance(behaviour, Stream):
            assert log.chunks <= _chunks_of(behaviour), where
        return
    if isinstance(behaviour, Stream):
        assert isinstance(end, AttemptSucceeded), f"{where}: ended with {end}"
        usage = behaviour.usage
        assert (end.input_tokens, end.output_tokens) == (usage.input_tokens, usage.output_tokens)
        assert log.chunks >= behaviour.chunks, where
        return
    assert log.chunks == _chunks_of(behaviour), f"{where}: {log.chunks} chunks reached the core"
    if isinstance(behaviour, SLOW):
        if scenario.first_chunk_deadline and log.chunks == 0:
            assert isinstance(end, CancelAttempt), f"{where}: ended with {end}"
            assert end.reason is CancelReason.FIRST_CHUNK_TIMEOUT
        else:
            assert isinstance(end, AttemptTimedOut), f"{where}: ended with {end}"
            assert end.phase is TimeoutPhase.READ
        return
    assert isinstance(end, AttemptFailed), f"{where}: ended with {end}"
    failure = end.failure
    if isinstance(behaviour, Fail):
        assert (failure.kind, failure.status) == (FailureKind.HTTP, behaviour.status), where
    elif isinstance(behaviour, Reset | NoTerminator) or behaviour is None:
        assert failure.kind is FailureKind.NETWORK, f"{where}: {failure}"
        if behaviour is None:
            assert failure.code == "ECONNREFUSED", f"{where}: {failure}"
    elif isinstance(behaviour, Malformed):
        assert failure.kind is FailureKind.PROTOCOL, f"{where}: {failure}"
    else:
        assert isinstance(behaviour, ErrorEvent)
        assert failure.kind is FailureKind.PROVIDER, f"{where}: {failure}"


def _check_request(seen: Outcome, abandon_after: int | None, log: RequestLog) -> None:
    """What the caller saw is what the request's one terminal action says."""
    assert len(log.terminals) == 1, f"{seen.request_id}: terminal actions {log.terminals}"
    (terminal,) = log.terminals
    last = log.attempts[-1] if log.attempts else None
    # The first chunk commits an attempt: no earlier attempt delivered anything.
    assert all(attempt.chunks == 0 for attempt in log.attempts[:-1]), log.attempts
    if seen.abandoned:
        assert seen.error is None
        assert seen.backend is None
        if abandon_after == 0 and terminal in log.opening:
            # The core ended it before the caller could read (every breaker open).
            assert isinstance(terminal, RequestFailed), terminal
            assert isinstance(terminal.error, AllBackendsUnhealthy), terminal
            assert last is None
            return
        assert isinstance(terminal, RequestAborted), f"{seen.request_id}: {terminal}"
        assert last is not None
        assert len(seen.chunks) == abandon_after
        # The core heard of every chunk the caller got (maybe of more, read in the same batch).
        assert last.chunks >= len(seen.chunks)
        assert _spoken(seen) == _texts_of(last.behaviour, last.backend)[: len(_spoken(seen))]
        return
    if seen.error is None:
        assert isinstance(terminal, RequestCompleted), f"{seen.request_id}: {terminal}"
        assert last is not None
        assert terminal.attempt == last.start.attempt
        assert seen.backend == terminal.backend == last.backend
        assert isinstance(last.behaviour, Stream), last.behaviour
        # Exactly that backend's whole answer: nothing missing, repeated or mixed in.
        assert _spoken(seen) == list(last.behaviour.texts(last.backend))
        assert len(seen.chunks) == last.chunks
        return
    error = seen.error
    assert isinstance(terminal, RequestFailed), f"{seen.request_id}: {terminal}"
    assert error.error == terminal.error
    assert error.request_id == seen.request_id
    if isinstance(error, BackendError):
        assert isinstance(terminal.error, BackendFailed)
        assert last is not None
        assert error.backend == last.backend
        # A prefix of exactly that backend's stream, as long as chunks_delivered.
        assert error.chunks_delivered == len(seen.chunks) == last.chunks
        assert _spoken(seen) == _texts_of(last.behaviour, last.backend)
    elif isinstance(error, FailoverError):
        assert isinstance(terminal.error, FailoverExhausted | AllContextLimitsExceeded)
        assert seen.chunks == []
        assert all(attempt.chunks == 0 for attempt in log.attempts)
    else:
        assert isinstance(error, AllBackendsUnhealthyError), repr(error)
        assert isinstance(terminal.error, AllBackendsUnhealthy)
        assert seen.chunks == []
        assert last is None


_RESET_BEFORE_HEADERS: Final = Reset(before_headers=True)


def _lost(attempt: AttemptLog) -> bool:
    end = attempt.end
    return isinstance(end, AttemptFailed) and end.failure.kind is FailureKind.NETWORK


def _paired(
    backend: str, sent: list[AttemptLog], received: list[Received]
) -> list[tuple[AttemptLog, Received]]:
    """Each attempt sent with the request its backend received for it, in order.

    The one resend underneath the core: a request on a pooled connection
    that the backend resets before its answer's head is sent once more on a
    new connection, within the same attempt (spec/transports.md section 5).
    So the extra requests are such resets, each followed by its resend; the
    ones to skip are those that leave every reset paired with an attempt
    that ended lost (an attempt that did not was answered by its resend).
    """
    extra = len(received) - len(sent)
    resets = [
        index
        for index, request in enumerate(received[:-1])
        if request.behaviour == _RESET_BEFORE_HEADERS
    ]
    for skipped in itertools.combinations(resets, extra):
        kept = [request for index, request in enumerate(received) if index not in skipped]
        pairs = list(zip(sent, kept, strict=True))
        if all(
            _lost(attempt) or request.behaviour != _RESET_BEFORE_HEADERS
            for attempt, request in pairs
        ):
            return pairs
    raise AssertionError((backend, received, sent))


def check(scenario: Scenario, result: Run) -> list[dict[str, Any]]:
    """Every invariant of one run; returns its decisions, clock readings removed."""
    assert verify_trace(result.trace) is None, "the recorded trace must replay exactly"
    requests, attempts = _read_trace(result.trace)
    # A stream closed before it was read may never reach the core; every other
    # request is in the trace, in the order it was sent.
    assert list(requests) == [
        seen.request_id for seen in result.seen if seen.request_id in requests
    ]
    unsent: set[AttemptLog] = set()
    for abandon_after, seen in zip(scenario.requests, result.seen, strict=True):
        log = requests.get(seen.request_id)
        assert log is not None or abandon_after == 0, f"{seen.request_id} is not in the trace"
        if abandon_after == 0 and log is not None:
            # Closed before reading: its attempt, if any, was cancelled without being sent.
            assert len(log.attempts) <= 1
            for attempt in log.attempts:
                assert attempt.chunks == 0
                assert isinstance(attempt.end, CancelAttempt), attempt.end
                assert attempt.end.reason is CancelReason.CANCELLED
                unsent.add(attempt)
    for attempt in attempts:
        assert attempt.end is not None, f"{attempt.start} never ended"
    # Each attempt sent reached its backend once, in order: nothing retried underneath.
    for plan in scenario.plans:
        sent = [a for a in attempts if a.backend == plan.name and a not in unsent]
        received = result.received[plan.name]
        if plan.refused:
            # Nothing listens: every attempt was refused (checked with the others below).
            assert received == []
            continue
        for attempt, request in _paired(plan.name, sent, received):
            attempt.behaviour = request.behaviour
    for abandon_after, seen in zip(scenario.requests, result.seen, strict=True):
        log = requests.get(seen.request_id)
        if log is None:
            assert seen.abandoned
            assert (seen.chunks, seen.error, seen.backend) == ([], None, None)
            continue
        for attempt in log.attempts:
            if attempt not in unsent:
                abandoned_here = seen.abandoned and attempt is log.attempts[-1]
                _check_attempt(scenario, attempt, abandoned_here)
        _check_request(seen, abandon_after, log)
    # Stats after close: nothing in flight, and exactly what the trace makes of them.
    stats = result.stats
    assert stats.in_flight == 0
    starts = Counter(attempt.backend for attempt in attempts)
    assert {name: m.requests for name, m in stats.backend_metrics.items()} == dict(starts)
    header, recorded = decode_trace(result.trace)
    balancer = Balancer(header.config)
    for step in recorded:
        balancer.handle(step.event)
    assert balancer.stats() == stats
    return [without_clock(msgspec.to_builtins(step)) for step in recorded]


# ------------------------------------------------------------------ the property


# Each example runs two clients against fresh backends (about 0.13 s): 100 of them
# take about 13 s on two cores. No health check needs suppressing.
@settings(max_examples=100, deadline=None, derandomize=True)
@given(scenario=scenarios())
def test_every_request_ends_as_its_trace_says(scenario: Scenario) -> None:
    sync_run = run("sync", scenario)
    async_run = run(scenario.async_mode, scenario)
    sync_decisions = check(scenario, sync_run)
    async_decisions = check(scenario, async_run)
    if not scenario.timed:
        # Both clients hand the core every chunk that one network read brought
        # (transports §5), so a caller who stops reading may leave one client's
        # core a chunk or two ahead of the other's: those chunks decide nothing.
        stopped = {
            seen.request_id
            for abandon_after, seen in zip(scenario.requests, sync_run.seen, strict=True)
            if abandon_after is not None
        }
        assert _deciding(async_decisions, stopped) == _deciding(sync_decisions, stopped)


def _deciding(decisions: list[dict[str, Any]], stopped: set[str]) -> list[dict[str, Any]]:
    """The steps that decide something, numbered afresh: chunks that emitted
    nothing, of requests whose caller stopped reading, are left out."""
    kept = [
        step
        for step in decisions
        if not (
            step["event"]["type"] == "ChunkReceived"
            and step["event"]["request_id"] in stopped
            and not step["actions"]
        )
    ]
    return [{**step, "seq": None} for step in kept]
