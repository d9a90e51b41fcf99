"""Properties of the balancer over random interleavings of events.

A hypothesis state machine drives one balancer with random but valid events
(plus deliberately invalid ones), keeps a model of every request and attempt
built only from the actions the balancer returned, and checks after every
step that the core is deterministic, replayable, inert under misuse, and
never breaks its safety rules (breakers, attempt caps, one terminal action,
stats that add up, timers that fire).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import event as observe
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from lbcore import (
    Action,
    AllBackendsUnhealthy,
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    AttemptTimedOut,
    BackendFailed,
    BackendSpec,
    Balancer,
    BalancerConfig,
    BreakerState,
    CancelAttempt,
    CancelReason,
    ChunkReceived,
    CloseBreaker,
    CoolDown,
    DeadlineExceeded,
    Event,
    FailOver,
    Failure,
    FailureKind,
    FirstChunkDue,
    HalfOpenBreaker,
    InvalidEvent,
    QueueFull,
    QueueTimedOut,
    RequestAborted,
    RequestCancelled,
    RequestCompleted,
    RequestDequeued,
    RequestFailed,
    RequestQueued,
    RequestStarted,
    RetryScheduled,
    SelectionChanged,
    Settings,
    SkipBackend,
    SkipReason,
    SlotTimedOut,
    StartAttempt,
    StatsReset,
    Step,
    Tick,
    TimeoutPhase,
    TripBreaker,
    decode_trace,
    encode_line,
    encode_trace,
    replay,
    verify_trace,
)
from lbcore._capacity import _holds

from .long_way import VisitByVisit

NAMES = ("a", "b", "c", "d", "e")
STATUSES = (400, 401, 402, 403, 404, 408, 429, 500, 502, 503, 504, None)
PROVIDER_TYPES = ("rate_limit_error", "overloaded_error", "api_error", None)
# context_limit failures are the core's own verdict; a transport may not report one.
REPORTABLE_KINDS = tuple(k for k in FailureKind if k is not FailureKind.CONTEXT_LIMIT)
ATTEMPT_EVENT_KINDS = ("chunk", "success", "failure", "timeout")

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN

# ------------------------------------------------------------------ strategies


#: Concurrency limits: mostly none, often tight enough to queue.
limits = st.sampled_from([None, None, 1, 1, 2])


STRATEGIES = ["round-robin", "failover", "weighted-round-robin", "least-busy", "latency"]


def nginx_pick(current: list[int], weights: list[int]) -> int:
    """One step of nginx's smooth weighted round-robin, plainly, as the oracle (spec §23)."""
    best = -1
    for index, weight in enumerate(weights):
        if weight:
            current[index] += weight
            if best < 0 or current[index] > current[best]:
                best = index
    current[best] -= sum(weights)
    return best


@st.composite
def configs(draw: st.DrawFn) -> BalancerConfig:
    strategy = draw(st.sampled_from(STRATEGIES))
    count = draw(st.integers(2 if strategy == "failover" else 1, 5))
    weighted = strategy == "weighted-round-robin"
    weights = [draw(st.integers(0, 3)) if weighted else 1 for _ in range(count)]
    if not any(weights):
        weights[draw(st.integers(0, count - 1))] = draw(st.integers(1, 3))
    backends = tuple(
        BackendSpec(
            name=name,
            provider="openai",
            model=draw(st.sampled_from(["", f"model-{name}"])),
            context_window=draw(st.sampled_from([None, None, 50, 200, 1000])),
            max_concurrent=draw(limits),
            weight=weight,
        )
        for name, weight in zip(NAMES[:count], weights, strict=True)
    )
    codes = st.lists(st.sampled_from([408, 429, 500, 502, 503]), max_size=3, unique=True)
    config_settings = Settings(
        failover_retry_count=draw(st.integers(1, 3)),
        failover_retry_delay_ms=draw(st.sampled_from([0, 0, 1, 7, 40])),
        failover_on_network_errors=draw(st.booleans()),
        failover_status_codes=draw(st.none() | codes.map(tuple)),
        tpm_threshold=draw(st.sampled_from([None, None, 1, 50, 5000])),
        timeout_ms=draw(st.sampled_from([None, None, 1, 10, 35])),
        circuit_breaker_enabled=draw(st.booleans()),
        circuit_breaker_failure_threshold=draw(st.integers(1, 3)),
        circuit_breaker_failure_window_ms=draw(st.sampled_from([1, 20, 100, 60_000])),
        circuit_breaker_recovery_timeout_ms=draw(st.sampled_from([0, 0, 10, 50, 1000])),
        max_concurrent=draw(limits),
        max_queued=draw(st.sampled_from([0, 1, 3, 1024])),
        queue_timeout_ms=draw(st.sampled_from([None, 1, 5, 30])),
        honour_retry_after=draw(st.booleans()),
        max_retry_after_ms=draw(st.sampled_from([0, 30, 60_000])),
        retry_backoff=draw(st.sampled_from(["fixed", "exponential"])),
        retry_backoff_base_ms=draw(st.sampled_from([1, 10])),
        retry_backoff_cap_ms=draw(st.sampled_from([10, 50])),
        seed=draw(st.integers(0, 2**64 - 1)),
        retry_budget_percent=draw(st.sampled_from([None, None, 0, 20, 100])),
        retry_budget_min=draw(st.sampled_from([0, 1, 3])),
        deadline_ms=draw(st.sampled_from([None, None, 5, 50, 2000])),
        idle_timeout_ms=draw(st.sampled_from([None, None, 3, 40])),
        latency_explore_percent=draw(st.sampled_from([0, 0, 5, 50])),
    )
    return BalancerConfig(
        strategy=strategy,
        backends=backends,
        settings=config_settings,
        context_limit=draw(st.sampled_from([None, None, 100, 500])),
    )


failures = st.builds(
    Failure,
    kind=st.sampled_from(REPORTABLE_KINDS),
    message=st.sampled_from(["boom", "Stream timeout after 5s", "ECONNRESET", "bad\nrequest"]),
    status=st.sampled_from(STATUSES),
    code=st.sampled_from([None, "ECONNRESET", "insufficient_quota"]),
    provider_type=st.sampled_from(PROVIDER_TYPES),
    retry_after_ms=st.sampled_from([None, None, 0, 20, 1000]),
)
small_delays = st.sampled_from([0, 0, 0, 1, 3, 10])
tick_jumps = st.integers(0, 60) | st.sampled_from([1_000, 30_000, 60_000, 120_000])
token_counts = st.integers(0, 300)
# Mostly prompts that fit, sometimes one that exceeds a window or the shared limit.
prompt_sizes = st.one_of(
    st.none(), st.none(), st.integers(0, 40), st.sampled_from([150, 400, 900, 1200])
)


# ------------------------------------------------------------------ the model


@dataclass
class Attempt:
    number: int
    backend: str
    probe: bool
    #: The backend's half-open period when the attempt started.
    epoch: int
    #: How far it got in leaving the process: "started", "held" or "sent".
    sending: str = "started"


@dataclass
class ModelRequest:
    prompt_tokens: int | None
    budget: int | None
    attempts: int = 0
    last_number: int = 0
    last_backend: str | None = None
    current: Attempt | None = None
    waiting: bool = False
    streaming: bool = False
    failing_over_to: str | None = None
    #: Round-robin counted this request in stats that a StatsReset has since cleared.
    counted_before_reset: bool = False
    #: Attempts that cost budget: a setup failure (nothing was sent) is refunded.
    charged: int = 0
    #: Waiting in the queue: when it entered (queue order), and for which backends.
    queued_at: int | None = None
    queue_ticket: int = 0
    waiting_for: tuple[str, ...] = ()
    started_at: int = 0
    #: When the last chunk arrived.
    last_chunk_at: int = 0

    def holds(self, name: str) -> bool:
        """Whether it holds a slot of ``name``: an attempt there, or a retry wait there."""
        if self.current is not None:
            return self.current.backend == name
        return self.waiting and self.last_backend == name


def _attempt_event(kind: str, request_id: str, attempt: int, at: int, failure: Failure) -> Event:
    if kind == "chunk":
        return ChunkReceived(at=at, request_id=request_id, attempt=attempt)
    if kind == "success":
        return AttemptSucceeded(at=at, request_id=request_id, attempt=attempt)
    if kind == "failure":
        return AttemptFailed(at=at, request_id=request_id, attempt=attempt, failure=failure)
    return AttemptTimedOut(at=at, request_id=request_id, attempt=attempt, phase=TimeoutPhase.READ)


class BalancerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.now = 0
        self.serial = 0
        self.live: dict[str, ModelRequest] = {}
        self.finished: list[str] = []
        self.steps: list[Step] = []
        self.refusals = 0

    # -------------------------------------------------------------- set-up

    @initialize(config=configs())
    def create(self, config: BalancerConfig) -> None:
        self.config = config
        # Every strategy but round-robin runs failover's rotation (spec §23).
        self.failover = config.strategy != "round-robin"
        self.weights = [b.weight for b in config.backends]
        self.wrr_current = [0] * len(config.backends)
        self.max_attempts = (
            len(config.backends) * config.settings.attempts_per_backend if self.failover else 1
        )
        self.specs = {b.name: b for b in config.backends}
        self.balancer = Balancer(config, record=True)
        # The twin sees the same valid events and never the invalid ones. It
        # takes no shortcut through a full pool: equal steps prove the short
        # path decides what the visit-by-visit one does.
        self.twin = VisitByVisit(config, record=True)
        # A backend's breaker period: it moves on every breaker transition, so a
        # probe granted in one half-open period is told apart from the next one's.
        self.epoch = dict.fromkeys(self.specs, 0)
        self.requests = dict.fromkeys(self.specs, 0)
        self.successes = dict.fromkeys(self.specs, 0)
        self.tokens = dict.fromkeys(self.specs, 0)
        self.profile_counts: dict[str, int] = {}
        self.limit = {
            b.name: b.max_concurrent
            if b.max_concurrent is not None
            else config.settings.max_concurrent
            for b in config.backends
        }
        self.tickets = 0
        self.terminals: dict[str, int] = {}
        #: backend -> when the Retry-After pause its CoolDown announced ends.
        self.cooling: dict[str, int] = {}
        self.ready = True

    # -------------------------------------------------------------- helpers

    def _at(self, delay: int) -> int:
        """A time for a non-tick event that does not jump over a pending timer."""
        at = self.now + delay
        deadline = self.balancer.next_deadline()
        return min(at, deadline) if deadline is not None else at

    def _pick(self, data: st.DataObject, ids: list[str]) -> str:
        return data.draw(st.sampled_from(sorted(ids)), label="request")

    def _in_flight(self) -> list[str]:
        return [rid for rid, r in self.live.items() if r.current is not None]

    def _answerable(self) -> list[str]:
        """Requests whose attempt may hear back: anything but a held attempt."""
        return [
            rid
            for rid, r in self.live.items()
            if r.current is not None and r.current.sending != "held"
        ]

    def _sending(self, *stages: str) -> list[str]:
        return [
            rid
            for rid, r in self.live.items()
            if r.current is not None and not r.streaming and r.current.sending in stages
        ]

    def _fingerprint(self) -> tuple[object, ...]:
        b = self.balancer
        return (
            msgspec.json.encode(b.stats()),
            b.next_deadline(),
            repr(b),
            b.current_failover_index(),
            b.now,
            b.current_model(),
        )

    def _refuse(self, event: Event) -> None:
        """The event must be refused, and the refusal must change nothing."""
        self.refusals += 1
        before = self._fingerprint()
        with pytest.raises(InvalidEvent):
            self.balancer.handle(event)
        assert self._fingerprint() == before
        assert self.balancer.take_steps() == []

    def _apply(self, event: Event) -> list[Action]:
        balancer = self.balancer
        before = balancer.stats().circuit_breaker_states
        failures_before = {n: m.failures for n, m in balancer.stats().backend_metrics.items()}
        sources = self._failure_sources(event)
        deadline = balancer.next_deadline()
        failing = self._may_record_a_failure(event)
        expected_first = self._expected_pick() if isinstance(event, RequestStarted) else None
        actions = balancer.handle(event)
        if isinstance(event, RequestStarted):
            self._check_pick(event.request_id, actions, expected_first)
        failing |= {
            a.backend
            for a in actions
            if isinstance(a, CancelAttempt)
            and a.reason in (CancelReason.FIRST_CHUNK_TIMEOUT, CancelReason.IDLE_TIMEOUT)
        }
        for action in actions:
            # Shown by --hypothesis-show-statistics: how often the rarer decisions are reached.
            if isinstance(action, RequestFailed):
                observe(f"failed: {type(action.error).__name__}")
            elif isinstance(action, CoolDown | SkipBackend | CancelAttempt):
                observe(f"{type(action).__name__}: {getattr(action, 'reason', '')}")
            if isinstance(action, TripBreaker):
                # No breaker opens without a failure of that backend in this very step.
                assert action.backend in failing, (action, event, failing)
        (step,) = balancer.take_steps()
        self.twin.handle(event)
        (twin_step,) = self.twin.take_steps()
        # Determinism: equal inputs, equal bytes (the twin never saw refused events).
        assert encode_line(step) == encode_line(twin_step)
        assert step.seq == len(self.steps) + 1
        assert step.actions == tuple(actions)
        self.steps.append(step)
        self.now = event.at
        states = {name: snapshot.state for name, snapshot in before.items()}
        self._follow(event, actions, states)
        self._check_charges(event, actions, failures_before, sources)
        if isinstance(event, Tick) and deadline is not None and event.at >= deadline:
            # A tick at or past the next deadline always fires some timer.
            assert actions, f"tick at {event.at} passed deadline {deadline} and did nothing"
            after = balancer.next_deadline()
            assert after is None or after > event.at
        return actions

    # -------------------------------------------------------------- the model

    def _failure_sources(self, event: Event) -> set[str]:
        """Backends that may be charged a failure by ``event``: an attempt there ended
        badly, or a retry waiting there may give up. Waiting in the queue is never one."""
        sources: set[str] = set()
        if isinstance(event, AttemptFailed | AttemptTimedOut):
            current = self.live[event.request_id].current
            assert current is not None
            sources.add(current.backend)
        elif isinstance(event, Tick):
            for request in self.live.values():
                if request.current is not None:  # a first-chunk deadline may pass
                    sources.add(request.current.backend)
                elif request.waiting and request.last_backend is not None:
                    sources.add(request.last_backend)
        return sources

    def _check_charges(
        self, event: Event, actions: list[Action], before: dict[str, int], sources: set[str]
    ) -> None:
        """No failure is charged, and no breaker opens, without a backend failure."""
        after = self.balancer.stats().backend_metrics
        for name, metrics in after.items():
            if metrics.failures != before.get(name, 0):
                assert name in sources, f"{name} charged a failure by {event!r}"
        for action in actions:
            if isinstance(action, TripBreaker):
                assert action.backend in sources, f"{action.backend} tripped by {event!r}"

    def _expected_pick(self) -> str | None:
        """Where the strategy must start the rotation of a request starting now, if known."""
        names = list(self.specs)
        strategy = self.config.strategy
        if strategy == "least-busy":
            counts = [self._in_use(name) for name in names]
            return names[counts.index(min(counts))]
        if strategy == "weighted-round-robin":
            # Taken on a copy: a request the all-unhealthy check refuses takes no pick.
            return names[nginx_pick(list(self.wrr_current), self.weights)]
        picker = self.balancer._latency
        if picker is not None and not self.config.settings.latency_explore_percent:
            estimates = picker.estimates
            return names[estimates.index(min(estimates))]
        return None

    def _check_pick(self, rid: str, actions: list[Action], expected: str | None) -> None:
        """The first backend a new request's rotation names is the strategy's pick."""
        # A HalfOpenBreaker names no request: in this step it can only come from a visit.
        named = [
            a.backend
            for a in actions
            if isinstance(a, HalfOpenBreaker)
            or (isinstance(a, StartAttempt | SkipBackend) and a.request_id == rid)
        ]
        refused = (
            len(actions) == 1
            and isinstance(actions[0], RequestFailed)
            and isinstance(actions[0].error, AllBackendsUnhealthy)
        )
        if self.config.strategy == "weighted-round-robin" and not refused:
            nginx_pick(self.wrr_current, self.weights)
        if expected is not None and named:
            assert named[0] == expected, (self.config.strategy, named, expected)
            observe(f"pick checked: {self.config.strategy}")

    def _in_use(self, name: str) -> int:
        return sum(r.holds(name) for r in self.live.values())

    def _may_record_a_failure(self, event: Event) -> set[str]:
        """Backends a failure could be recorded for on ``event``, before the core sees it.

        An attempt's own failure; on a tick, also the backends a retry waits on
        (a retry given up records the failure that caused it). Cancels for a
        timeout are added from the actions.
        """
        if isinstance(event, AttemptFailed | AttemptTimedOut):
            current = self.live[event.request_id].current
            return {current.backend} if current is not None else set()
        if isinstance(event, Tick):
            return {
                r.last_backend
                for r in self.live.values()
                if r.waiting and r.last_backend is not None
            }
        return set()

    def _follow(self, event: Event, actions: list[Action], states: dict[str, BreakerState]) -> None:
        """Advance the model by the event and the actions, checking each action."""
        if isinstance(event, RequestStarted):
            self.live[event.request_id] = ModelRequest(
                event.prompt_tokens, event.attempt_budget, started_at=event.at
            )
        elif isinstance(event, ChunkReceived):
            self.live[event.request_id].streaming = True
            self.live[event.request_id].last_chunk_at = event.at
        elif isinstance(event, AttemptHeld | AttemptSent):
            current = self.live[event.request_id].current
            assert current is not None
            current.sending = "held" if isinstance(event, AttemptHeld) else "sent"
        elif isinstance(event, AttemptSucceeded | AttemptFailed | AttemptTimedOut | SlotTimedOut):
            request = self.live[event.request_id]
            attempt = request.current
            assert attempt is not None
            request.current = None  # the attempt is over, whatever comes next
            setup_undone = isinstance(event, SlotTimedOut) or (
                isinstance(event, AttemptFailed)
                and event.failure.kind is FailureKind.SETUP
                and not request.streaming
            )
            if setup_undone:
                # Nothing was sent: the attempt costs no budget, metrics or stats.
                request.charged -= 1
                self.requests[attempt.backend] -= 1
                if not self.failover and not request.counted_before_reset:
                    self.profile_counts[attempt.backend] -= 1
                    if not self.profile_counts[attempt.backend]:
                        del self.profile_counts[attempt.backend]
        elif isinstance(event, StatsReset):
            self.profile_counts = {}
            for request in self.live.values():
                # Round-robin counts at dispatch: one still queued was not counted yet.
                request.counted_before_reset = request.queued_at is None

        for action in actions:
            self._follow_action(event, action, states)

        for rid, request in self.live.items():
            # A live request has an attempt in flight, a retry coming or a place in the
            # queue: exactly one of them.
            states_of = (
                request.current is not None,
                request.waiting,
                request.queued_at is not None,
            )
            assert sum(states_of) == 1, (rid, request)
            assert request.failing_over_to is None, f"{rid}: FailOver without a StartAttempt"
        if isinstance(event, RequestCancelled):
            assert event.request_id not in self.live
        if isinstance(event, AttemptSucceeded):
            assert event.request_id not in self.live

        # The breaker states the actions announced are the states the stats report.
        reported = self.balancer.stats().circuit_breaker_states
        for name in self.specs:
            shown = reported[name].state if name in reported else CLOSED
            assert states.get(name, CLOSED) == shown, (name, states, shown)
        for name, state in states.items():
            if state is not HALF_OPEN:
                continue
            probes = [
                r.current
                for r in self.live.values()
                if r.current is not None
                and r.current.backend == name
                and r.current.probe
                and r.current.epoch == self.epoch[name]
            ]
            assert len(probes) <= 1, f"{name} is half-open with {len(probes)} probes in flight"

    def _follow_action(self, event: Event, action: Action, states: dict[str, BreakerState]) -> None:
        if isinstance(action, TripBreaker):
            assert self.failover and self.config.settings.circuit_breaker_enabled
            states[action.backend] = OPEN
            self.epoch[action.backend] += 1
            recovery = self.config.settings.circuit_breaker_recovery_timeout_ms
            assert action.half_open_after == self.now + recovery
            return
        if isinstance(action, HalfOpenBreaker):
            assert states.get(action.backend) is OPEN, "half-open only from open"
            states[action.backend] = HALF_OPEN
            self.epoch[action.backend] += 1
            return
        if isinstance(action, CloseBreaker):
            assert states.get(action.backend) is HALF_OPEN, "close only from half-open"
            states[action.backend] = CLOSED
            self.epoch[action.backend] += 1
            return
        if isinstance(action, SelectionChanged):
            assert action.backend in self.specs
            return
        if isinstance(action, CoolDown):
            assert self.failover and self.config.settings.honour_retry_after
            assert isinstance(event, AttemptFailed) and event.failure.retry_after_ms
            # A pause only ever grows, and never past the cap.
            assert self.now < action.until <= self.now + self.config.settings.max_retry_after_ms
            assert action.until > self.cooling.get(action.backend, 0)
            self.cooling[action.backend] = action.until
            return
        request = self.live.get(action.request_id)
        assert request is not None, f"{action!r} for a request that is not live"
        if isinstance(action, RequestQueued | RequestDequeued):
            self._follow_queue(action, request)
        elif isinstance(action, StartAttempt):
            self._follow_start(action, request, states)
        elif isinstance(action, CancelAttempt):
            current = request.current
            assert current is not None, "cancelled an attempt that is not in flight"
            # A held attempt never times out: waiting for a local slot is not the backend's.
            assert (
                current.sending != "held"
                or isinstance(event, RequestCancelled)
                or action.reason is CancelReason.DEADLINE
            ), current
            assert (current.number, current.backend) == (action.attempt, action.backend)
            request.current = None
        elif isinstance(action, FirstChunkDue):
            # Only a send restarts the deadline, from the send, and only where one runs.
            assert isinstance(event, AttemptSent) and event.request_id == action.request_id
            assert self.failover and self.config.settings.timeout_ms is not None
            assert action.due == self.now + self.config.settings.timeout_ms
        elif isinstance(action, RetryScheduled):
            assert self.failover
            assert request.current is None and not request.streaming
            assert action.backend == request.last_backend
            assert action.due > self.now
            request.waiting = True
        elif isinstance(action, FailOver):
            # Never fail over once output reached the caller: it would splice two answers.
            assert self.failover and not request.streaming
            assert action.from_backend == request.last_backend
            assert request.current is None
            request.failing_over_to = action.to_backend
        elif isinstance(action, SkipBackend):
            assert self.specs[action.backend].weight > 0, f"{action.backend} is drained"
            assert self.failover
            if request.queued_at is not None:
                # Served from the queue but passed over for another reason: it stops
                # waiting for that backend.
                assert action.reason is not SkipReason.AT_CAPACITY
                request.waiting_for = tuple(n for n in request.waiting_for if n != action.backend)
            if action.reason is SkipReason.AT_CAPACITY:
                # Full, or others wait for it (they go first).
                name, limit = action.backend, self.limit[action.backend]
                assert limit is not None
                assert self._in_use(name) == limit or self._waiters(name), (name, limit)
            if action.reason is SkipReason.COOLING_DOWN:
                assert self.cooling.get(action.backend, 0) > self.now
            if action.reason is SkipReason.CONTEXT_LIMIT:
                limit = self.config.target_context_limit(self.specs[action.backend])
                assert request.prompt_tokens is not None and limit is not None
                assert request.prompt_tokens > limit
        else:
            self._follow_terminal(event, action, request)

    def _waiters(self, name: str) -> list[ModelRequest]:
        """The requests waiting for ``name``, oldest first."""
        waiting = [r for r in self.live.values() if r.queued_at is not None]
        return sorted((r for r in waiting if name in r.waiting_for), key=lambda r: r.queue_ticket)

    def _follow_queue(self, action: RequestQueued | RequestDequeued, request: ModelRequest) -> None:
        if isinstance(action, RequestQueued):
            assert request.current is None and not request.waiting and not request.streaming
            assert request.queued_at is None
            assert request.failing_over_to is None
            # It waits only for backends that are full (or that others wait for).
            for name in action.waiting_for:
                limit = self.limit[name]
                assert limit is not None
                assert self._in_use(name) == limit or self._waiters(name), (name, action)
            assert len(set(action.waiting_for)) == len(action.waiting_for) > 0
            self.tickets += 1
            request.queued_at, request.queue_ticket = self.now, self.tickets
            request.waiting_for = action.waiting_for
            queued = sum(r.queued_at is not None for r in self.live.values())
            assert action.queued == queued <= self.config.settings.max_queued
            # It gives up at its queue timeout or its total deadline, whichever is first.
            settings = self.config.settings
            timeout, total = settings.queue_timeout_ms, settings.deadline_ms
            dues = [self.now + timeout] if timeout is not None else []
            if total is not None:
                dues.append(request.started_at + total)
            assert action.due == (min(dues) if dues else None)
            return
        # FIFO: the slot goes to the oldest request still waiting for that backend.
        assert request.queued_at is not None, "dequeued a request that is not queued"
        oldest = self._waiters(action.backend)
        assert oldest and oldest[0] is request, (action, [r.queue_ticket for r in oldest])
        assert action.waited_ms == self.now - request.queued_at
        request.queued_at, request.waiting_for = None, ()
        # Its attempt follows in the same step (announced with a FailOver if it left one).
        request.failing_over_to = action.backend if request.last_backend is not None else None
        if request.failing_over_to is not None and not self.failover:
            request.failing_over_to = None

    def _follow_start(
        self, action: StartAttempt, request: ModelRequest, states: dict[str, BreakerState]
    ) -> None:
        name = action.backend
        assert self.specs[name].weight > 0, f"attempt on {name}, which is drained"
        assert request.current is None, "a second attempt while one is in flight"
        assert request.queued_at is None, "an attempt for a request still in the queue"
        assert not request.streaming, "a new attempt after output reached the caller"
        assert action.attempt == request.last_number + 1
        if request.failing_over_to is not None:
            assert name == request.failing_over_to
            request.failing_over_to = None
        # Never through an open breaker; through a half-open one only as its probe.
        state = states.get(name, CLOSED)
        assert state is not OPEN, f"attempt on {name} while its breaker is open"
        # A backend that asked for a pause gets no attempt until it ends.
        assert self.cooling.get(name, 0) <= self.now, f"attempt on {name} while it cools down"
        assert action.probe == (state is HALF_OPEN), (name, state, action)
        # The context guard runs before every attempt.
        limit = self.config.target_context_limit(self.specs[name])
        if request.prompt_tokens is not None and limit is not None:
            assert request.prompt_tokens <= limit
        timeout = self.config.settings.timeout_ms
        expected_deadline = self.now + timeout if self.failover and timeout else None
        assert action.first_chunk_deadline == expected_deadline
        request.attempts += 1
        request.charged += 1
        assert request.attempts <= self.max_attempts
        assert request.budget is None or request.charged <= request.budget
        request.last_number = action.attempt
        request.last_backend = name
        request.waiting = False
        request.current = Attempt(action.attempt, name, action.probe, self.epoch[name])
        # The concurrency limit holds at every attempt, held and sent ones included.
        limit = self.limit[name]
        assert limit is None or self._in_use(name) <= limit, (name, self._in_use(name), limit)
        self.requests[name] += 1
        if not self.failover:
            # Round-robin counts a request when it is dispatched.
            self.profile_counts[name] = self.profile_counts.get(name, 0) + 1

    def _follow_terminal(self, event: Event, action: Action, request: ModelRequest) -> None:
        assert isinstance(action, RequestCompleted | RequestFailed | RequestAborted), action
        rid = action.request_id
        self.terminals[rid] = self.terminals.get(rid, 0) + 1
        queued = request.queued_at is not None
        if isinstance(action, RequestFailed) and isinstance(action.error, QueueTimedOut):
            timeout = self.config.settings.queue_timeout_ms
            assert isinstance(event, Tick) and queued and timeout is not None
            assert action.error.waited_ms == self.now - request.queued_at >= timeout  # type: ignore[operator]
        if isinstance(action, RequestFailed) and isinstance(action.error, QueueFull):
            assert not queued
            waiting = sum(r.queued_at is not None for r in self.live.values())
            assert waiting == self.config.settings.max_queued
        # Every attempt is over when the request ends: none is left dangling.
        assert request.current is None, f"{rid} ended with attempt {request.current} in flight"
        if isinstance(action, RequestCompleted):
            assert isinstance(event, AttemptSucceeded) and event.request_id == rid
            assert (action.attempt, action.backend) == (request.last_number, request.last_backend)
            self.successes[action.backend] += 1
            self.tokens[action.backend] += action.input_tokens + action.output_tokens
            if self.failover:
                # Failover counts a request once it succeeded.
                self.profile_counts[action.backend] = self.profile_counts.get(action.backend, 0) + 1
        elif isinstance(action, RequestAborted):
            assert isinstance(event, RequestCancelled) and event.request_id == rid
        elif isinstance(action.error, DeadlineExceeded):
            # Only the clock ends a request on its deadline, and never early.
            total = self.config.settings.deadline_ms
            assert isinstance(event, Tick) and total is not None
            assert self.now >= request.started_at + total
        elif (
            isinstance(action.error, BackendFailed) and action.error.failure.code == "idle_timeout"
        ):
            idle = self.config.settings.idle_timeout_ms
            assert isinstance(event, Tick) and idle is not None and request.streaming
            assert self.now >= request.last_chunk_at + idle
        del self.live[rid]
        self.finished.append(rid)

    # -------------------------------------------------------------- invariants

    @invariant()
    def stats_add_up(self) -> None:
        if not self.ready:
            return
        stats = self.balancer.stats()
        assert stats.in_flight == len(self.live)
        assert sum(stats.profile_counts.values()) == stats.total_requests
        assert stats.profile_counts == self.profile_counts
        for name in self.specs:
            metrics = stats.backend_metrics.get(name)
            if metrics is None:
                assert self.requests[name] == 0 and self.successes[name] == 0
                continue
            assert metrics.requests == self.requests[name]
            assert metrics.successes == self.successes[name]
            assert metrics.tokens == self.tokens[name]
            assert metrics.successes + metrics.failures <= metrics.requests
            assert metrics.timeouts <= metrics.failures
        # Same state as the twin, which never saw a refused event.
        assert msgspec.json.encode(stats) == msgspec.json.encode(self.twin.stats())
        assert repr(self.balancer) == repr(self.twin)

    @invariant()
    def capacity_holds(self) -> None:
        if not self.ready:
            return
        for name, limit in self.limit.items():
            # Never more in flight than the limit; never a free slot left idle while
            # someone waits for it.
            in_use = self._in_use(name)
            assert limit is None or in_use <= limit, (name, in_use, limit)
            if self._waiters(name):
                assert limit is not None and in_use == limit, (name, in_use, limit)
        stats = self.balancer.stats()
        assert stats.backend_slots_used == {name: self._in_use(name) for name in self.specs}
        # An attempt under way always holds its backend's slot (a held one holds it too).
        for name, under_way in stats.backend_in_flight.items():
            assert under_way <= stats.backend_slots_used[name], (name, stats)
        assert stats.backend_queued == {name: len(self._waiters(name)) for name in self.specs}
        assert stats.queued == sum(r.queued_at is not None for r in self.live.values())
        # Each backend's count of waiters is exactly the live entries of its line: a
        # slot freed while the count is 0 is given to nobody (Balancer._release_slot).
        capacity = self.balancer._capacity
        for index, line in enumerate(capacity._lines):
            holding = sum(_holds(ticket, request) for ticket, request in line)
            assert capacity.waiting[index] == holding, (index, capacity.waiting, holding)

    @invariant()
    def deadline_is_not_in_the_past(self) -> None:
        if not self.ready:
            return
        deadline = self.balancer.next_deadline()
        assert deadline is None or deadline >= self.now
        assert deadline == self.twin.next_deadline()
        waiting = any(r.waiting for r in self.live.values())
        if waiting:
            assert deadline is not None, "a retry waits but no timer runs"
        if self.config.settings.queue_timeout_ms is not None and any(
            r.queued_at is not None for r in self.live.values()
        ):
            assert deadline is not None, "a request waits in the queue but no timer runs"
        for rid in self._sending("held"):
            assert self.balancer._live[rid].deadline is None, (
                f"{rid} is held, yet its deadline runs"
            )
        # The timer heap answers exactly what a scan of every live request would.
        armed = [
            due
            for request in self.balancer._live.values()
            for due in (
                request.deadline,
                request.retry_due,
                request.queue_due,
                request.expires_at,
                request.idle_due,
            )
            if due is not None
        ]
        assert deadline == (min(armed) if armed else None)

    def teardown(self) -> None:
        if not self.ready:
            return
        # Every request that ended did so with exactly one terminal action.
        assert set(self.terminals) == set(self.finished)
        assert all(count == 1 for count in self.terminals.values()), self.terminals
        header = self.balancer.trace_header()
        data = encode_trace(header, self.steps)
        assert verify_trace(data) is None
        decoded_header, decoded_steps = decode_trace(data)
        assert decoded_header == header
        assert decoded_steps == self.steps
        assert [encode_line(s) for s in replay(header, self.steps)] == [
            encode_line(s) for s in self.steps
        ]

    # -------------------------------------------------------------- valid events

    @precondition(lambda self: self.ready)
    @rule(
        delay=small_delays,
        prompt_tokens=prompt_sizes,
        budget=st.sampled_from([None, None, None, 0, 1, 2, 4]),
    )
    def start_request(self, delay: int, prompt_tokens: int | None, budget: int | None) -> None:
        self.serial += 1
        event = RequestStarted(
            at=self._at(delay),
            request_id=f"r{self.serial}",
            prompt_tokens=prompt_tokens,
            attempt_budget=budget,
        )
        self._apply(event)

    @precondition(lambda self: self.ready and self._answerable())
    @rule(data=st.data(), delay=small_delays)
    def chunk(self, data: st.DataObject, delay: int) -> None:
        rid = self._pick(data, self._answerable())
        attempt = self.live[rid].last_number
        self._apply(ChunkReceived(at=self._at(delay), request_id=rid, attempt=attempt))

    @precondition(lambda self: self.ready and self._answerable())
    @rule(data=st.data(), delay=small_delays, input_tokens=token_counts, output_tokens=token_counts)
    def succeed(
        self, data: st.DataObject, delay: int, input_tokens: int, output_tokens: int
    ) -> None:
        rid = self._pick(data, self._answerable())
        event = AttemptSucceeded(
            at=self._at(delay),
            request_id=rid,
            attempt=self.live[rid].last_number,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        self._apply(event)

    @precondition(lambda self: self.ready and self._in_flight())
    @rule(data=st.data(), delay=small_delays, failure=failures)
    def fail(self, data: st.DataObject, delay: int, failure: Failure) -> None:
        rid = self._pick(data, self._in_flight())
        attempt = self.live[rid].last_number
        self._apply(
            AttemptFailed(at=self._at(delay), request_id=rid, attempt=attempt, failure=failure)
        )

    @precondition(lambda self: self.ready and self._in_flight())
    @rule(
        data=st.data(),
        delay=small_delays,
        status=st.sampled_from([429, 503]),
        wait=st.sampled_from([1, 15, 45, 2000]),
    )
    def rate_limited(self, data: st.DataObject, delay: int, status: int, wait: int) -> None:
        """A 429 or 503 asking for a pause: cooldowns, waits for them, and their deadlines."""
        rid = self._pick(data, self._in_flight())
        failure = Failure(
            kind=FailureKind.HTTP, message="slow down", status=status, retry_after_ms=wait
        )
        attempt = self.live[rid].last_number
        self._apply(
            AttemptFailed(at=self._at(delay), request_id=rid, attempt=attempt, failure=failure)
        )

    @precondition(lambda self: self.ready and self._in_flight())
    @rule(data=st.data(), delay=small_delays, phase=st.sampled_from(TimeoutPhase))
    def transport_times_out(self, data: st.DataObject, delay: int, phase: TimeoutPhase) -> None:
        rid = self._pick(data, self._in_flight())
        attempt = self.live[rid].last_number
        self._apply(
            AttemptTimedOut(at=self._at(delay), request_id=rid, attempt=attempt, phase=phase)
        )

    @precondition(lambda self: self.ready and self._sending("started"))
    @rule(data=st.data(), delay=small_delays)
    def hold(self, data: st.DataObject, delay: int) -> None:
        rid = self._pick(data, self._sending("started"))
        attempt = self.live[rid].last_number
        assert self._apply(AttemptHeld(at=self._at(delay), request_id=rid, attempt=attempt)) == []

    @precondition(lambda self: self.ready and self._sending("started", "held"))
    @rule(data=st.data(), delay=small_delays)
    def send(self, data: st.DataObject, delay: int) -> None:
        rid = self._pick(data, self._sending("started", "held"))
        attempt = self.live[rid].last_number
        self._apply(AttemptSent(at=self._at(delay), request_id=rid, attempt=attempt))

    @precondition(lambda self: self.ready and self._sending("held"))
    @rule(data=st.data(), delay=small_delays, limit=st.integers(1, 1000))
    def no_slot(self, data: st.DataObject, delay: int, limit: int) -> None:
        rid = self._pick(data, self._sending("held"))
        attempt = self.live[rid].last_number
        event = SlotTimedOut(at=self._at(delay), request_id=rid, attempt=attempt, limit=limit)
        # Its slot frees, so requests waiting for it may follow in the same step.
        action = self._apply(event)[0]
        assert isinstance(action, RequestFailed) and action.error.limit == limit  # type: ignore[union-attr]

    @precondition(lambda self: self.ready and self.live)
    @rule(data=st.data(), delay=small_delays)
    def cancel(self, data: st.DataObject, delay: int) -> None:
        rid = self._pick(data, list(self.live))
        actions = self._apply(RequestCancelled(at=self._at(delay), request_id=rid))
        # Requests waiting for the slot it frees may follow in the same step.
        assert [a.request_id for a in actions if isinstance(a, RequestAborted)] == [rid]

    # Idle ticks still matter (breakers recover, TPM decays) but should not crowd out traffic.
    @precondition(lambda self: self.ready and (self.live or len(self.steps) % 3 == 0))
    @rule(to_deadline=st.booleans(), jump=tick_jumps)
    def tick(self, to_deadline: bool, jump: int) -> None:
        deadline = self.balancer.next_deadline()
        at = deadline if to_deadline and deadline is not None else self.now + jump
        self._apply(Tick(at=at))

    # Enabled on some steps only: a reset every step would hide the counters' drift.
    @precondition(lambda self: self.ready and len(self.steps) % 5 == 4)
    @rule(delay=small_delays)
    def reset_stats(self, delay: int) -> None:
        assert self._apply(StatsReset(at=self._at(delay))) == []

    # -------------------------------------------------------------- invalid events

    # At most one refusal per three accepted steps, so valid traffic keeps most steps.
    @precondition(lambda self: self.ready and 3 * self.refusals <= len(self.steps))
    @rule(data=st.data())
    def refuse_invalid_event(self, data: st.DataObject) -> None:
        # One rule for every kind of misuse, drawn among those possible right now.
        kinds = ["unknown", "malformed"]
        if self.live or self.finished:
            kinds.append("duplicate")
        if self.finished:
            kinds.append("finished")
        if self._in_flight():
            kinds.append("stale")
        if self.now > 0:
            kinds.append("backwards")
        if any(r.waiting or r.queued_at is not None for r in self.live.values()):
            kinds.append("waiting")
        if self._sending("held", "sent") or any(r.streaming for r in self.live.values()):
            kinds.append("sending")
        kind = data.draw(st.sampled_from(kinds), label="misuse")
        failure = data.draw(failures, label="failure")
        news = data.draw(st.sampled_from(ATTEMPT_EVENT_KINDS), label="news")
        self._refuse(getattr(self, f"_{kind}_event")(data, news, failure))

    def _unknown_event(self, data: st.DataObject, news: str, failure: Failure) -> Event:
        rid = f"unknown{self.serial + 1}"
        if data.draw(st.booleans(), label="cancel"):
            return RequestCancelled(at=self.now, request_id=rid)
        return _attempt_event(news, rid, 1, self.now, failure)

    def _finished_event(self, data: st.DataObject, news: str, failure: Failure) -> Event:
        rid = self._pick(data, self.finished)
        if data.draw(st.booleans(), label="cancel"):
            return RequestCancelled(at=self.now, request_id=rid)
        attempt = data.draw(st.integers(0, 4), label="attempt")
        return _attempt_event(news, rid, attempt, self.now, failure)

    def _duplicate_event(self, data: st.DataObject, news: str, failure: Failure) -> Event:
        rid = self._pick(data, [*self.live, *self.finished])
        return RequestStarted(at=self.now, request_id=rid)

    def _stale_event(self, data: st.DataObject, news: str, failure: Failure) -> Event:
        rid = self._pick(data, self._in_flight())
        offset = data.draw(st.sampled_from([-2, -1, 1, 5]), label="offset")
        return _attempt_event(news, rid, self.live[rid].last_number + offset, self.now, failure)

    def _backwards_event(self, data: st.DataObject, news: str, failure: Failure) -> Event:
        at = self.now - data.draw(st.integers(1, self.now), label="back")
        kind = data.draw(st.sampled_from(["tick", "reset", "start", "cancel", "news"]))
        in_flight = self._in_flight()
        if kind == "reset":
            return StatsReset(at=at)
        if kind == "start":
            return RequestStarted(at=at, request_id=f"r{self.serial + 1}")
        if kind == "cancel" and self.live:
            return RequestCancelled(at=at, request_id=self._pick(data, list(self.live)))
        if kind == "news" and in_flight:
            rid = self._pick(data, in_flight)
            return _attempt_event(news, rid, self.live[rid].last_number, at, failure)
        return Tick(at=at)

    def _waiting_event(self, data: st.DataObject, news: str, failure: Failure) -> Event:
        # Nothing is in flight while a retry waits, so no attempt news is acceptable.
        idle = [rid for rid, r in self.live.items() if r.waiting or r.queued_at is not None]
        rid = self._pick(data, idle)
        return _attempt_event(news, rid, self.live[rid].last_number, self.now, failure)

    def _sending_event(self, data: st.DataObject, news: str, failure: Failure) -> Event:
        # Each sending event comes at most once per attempt, in order, before any
        # answer; nothing answers a held attempt.
        candidates: list[Event] = []
        for rid, request in self.live.items():
            current = request.current
            if current is None:
                continue
            number, at = current.number, self.now
            if request.streaming or current.sending == "sent":
                candidates += [
                    AttemptHeld(at=at, request_id=rid, attempt=number),
                    AttemptSent(at=at, request_id=rid, attempt=number),
                    SlotTimedOut(at=at, request_id=rid, attempt=number, limit=1),
                ]
            elif current.sending == "held":
                candidates += [
                    AttemptHeld(at=at, request_id=rid, attempt=number),
                    ChunkReceived(at=at, request_id=rid, attempt=number),
                    AttemptSucceeded(at=at, request_id=rid, attempt=number),
                    SlotTimedOut(at=at, request_id=rid, attempt=number, limit=0),
                ]
        return data.draw(st.sampled_from(candidates), label="sending")

    def _malformed_event(self, data: st.DataObject, news: str, failure: Failure) -> Event:
        in_flight = self._in_flight()
        rid = self._pick(data, in_flight) if in_flight else "nobody"
        attempt = self.live[rid].last_number if in_flight else 1
        fresh = f"r{self.serial + 1}"
        too_long = Failure(kind=FailureKind.CONTEXT_LIMIT, message="too long")
        malformed: list[Event] = [
            Tick(at=-1),
            RequestStarted(at=self.now, request_id=""),
            RequestStarted(at=self.now, request_id=fresh, prompt_tokens=-1),
            RequestStarted(at=self.now, request_id=fresh, attempt_budget=True),  # type: ignore[arg-type]
            AttemptSucceeded(at=self.now, request_id=rid, attempt=attempt, output_tokens=-1),
            AttemptFailed(at=self.now, request_id=rid, attempt=attempt, failure=too_long),
            ChunkReceived(at=self.now, request_id=rid, attempt=True),  # type: ignore[arg-type]
        ]
        return data.draw(st.sampled_from(malformed), label="malformed")


BalancerMachine.TestCase.settings = settings(
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestBalancerProperties = BalancerMachine.TestCase


# ------------------------------------------------------------------ found by the machine
#
# Regressions for what the machine found in the core as of 4532c5c: a request
# kept its claim on a half-open probe after the breaker period that granted it
# was over (the breaker re-opened or closed), so its later same-backend retry
# or its cancellation acted on the probe of a newer half-open period. Reference
# section 5: exactly one probe is allowed per half-open period.

PROBE_CONFIG = BalancerConfig(
    strategy="failover",
    backends=(BackendSpec(name="x", provider="p"), BackendSpec(name="y", provider="p")),
    settings=Settings(
        circuit_breaker_enabled=True,
        circuit_breaker_failure_threshold=1,
        circuit_breaker_recovery_timeout_ms=10,
    ),
)
BAD_REQUEST = Failure(kind=FailureKind.HTTP, message="bad request", status=400)
UNAVAILABLE = Failure(kind=FailureKind.HTTP, message="unavailable", status=503)


def _probe_on_x_then_x_reopens() -> Balancer:
    """p holds x's probe; then a request started before the trip re-opens x."""
    balancer = Balancer(PROBE_CONFIG)
    for event in [
        RequestStarted(at=0, request_id="old", attempt_budget=None),  # old#1 on x, closed
        RequestStarted(at=0, request_id="tripper"),  # tripper#1 on x
        AttemptFailed(at=0, request_id="tripper", attempt=1, failure=BAD_REQUEST),  # x opens
        AttemptFailed(at=0, request_id="tripper", attempt=2, failure=BAD_REQUEST),  # y opens
        RequestStarted(at=10, request_id="p"),  # x half-open, p#1 is its probe
        AttemptFailed(at=10, request_id="old", attempt=1, failure=BAD_REQUEST),  # x re-opens
    ]:
        balancer.handle(event)
    actions = balancer.handle(RequestStarted(at=20, request_id="q"))  # x half-open again
    assert (
        StartAttempt(
            request_id="q", attempt=1, backend="x", model="", first_chunk_deadline=None, probe=True
        )
        in actions
    )
    return balancer


def _attempts_on_x(actions: list[Action]) -> list[StartAttempt]:
    return [a for a in actions if isinstance(a, StartAttempt) and a.backend == "x"]


def test_stale_probe_holder_does_not_retry_into_a_newer_half_open_period() -> None:
    balancer = _probe_on_x_then_x_reopens()
    # q holds x's probe; p's claim is from the period that already ended.
    actions = balancer.handle(AttemptFailed(at=20, request_id="p", attempt=1, failure=UNAVAILABLE))
    assert _attempts_on_x(actions) == []


def test_cancelling_a_stale_probe_holder_keeps_the_newer_probe_taken() -> None:
    balancer = _probe_on_x_then_x_reopens()
    balancer.handle(RequestCancelled(at=20, request_id="p"))
    actions = balancer.handle(RequestStarted(at=20, request_id="r"))
    assert _attempts_on_x(actions) == []


def test_retry_after_the_breaker_closed_is_not_a_probe() -> None:
    balancer = Balancer(PROBE_CONFIG)
    for event in [
        RequestStarted(at=0, request_id="old"),
        RequestStarted(at=0, request_id="tripper"),
        AttemptFailed(at=0, request_id="tripper", attempt=1, failure=BAD_REQUEST),
        AttemptFailed(at=0, request_id="tripper", attempt=2, failure=BAD_REQUEST),
        RequestStarted(at=10, request_id="p"),  # p#1 is x's probe
        AttemptSucceeded(at=10, request_id="old", attempt=1),  # closes x
    ]:
        balancer.handle(event)
    assert balancer.stats().circuit_breaker_states["x"].state is CLOSED
    actions = balancer.handle(AttemptFailed(at=10, request_id="p", attempt=1, failure=UNAVAILABLE))
    assert [a.probe for a in _attempts_on_x(actions)] == [False]


# Regressions for what the machine found in daed23c (fixed in eb6e3c9): a
# round-robin setup failure took its dispatch back out of the stats even when a
# StatsReset had already cleared it, so handle() raised KeyError halfway
# through (total_requests -1, the backend's metrics gone, the request still
# live), or silently uncounted a later request's dispatch.

ROUND_ROBIN_ONE = BalancerConfig(
    strategy="round-robin", backends=(BackendSpec(name="a", provider="p"),)
)
NO_CREDENTIAL = Failure(kind=FailureKind.SETUP, message="no credential")


def test_round_robin_setup_failure_after_stats_reset_ends_the_request() -> None:
    balancer = Balancer(ROUND_ROBIN_ONE)
    balancer.handle(RequestStarted(at=0, request_id="r1"))
    balancer.handle(StatsReset(at=0))
    actions = balancer.handle(
        AttemptFailed(at=0, request_id="r1", attempt=1, failure=NO_CREDENTIAL)
    )
    assert isinstance(actions[-1], RequestFailed)
    stats = balancer.stats()
    assert (stats.total_requests, stats.profile_counts, stats.in_flight) == (0, {}, 0)


def test_round_robin_setup_failure_after_stats_reset_keeps_newer_dispatches() -> None:
    balancer = Balancer(ROUND_ROBIN_ONE)
    balancer.handle(RequestStarted(at=0, request_id="r1"))
    balancer.handle(StatsReset(at=0))
    balancer.handle(RequestStarted(at=0, request_id="r2"))
    balancer.handle(AttemptFailed(at=0, request_id="r1", attempt=1, failure=NO_CREDENTIAL))
    stats = balancer.stats()
    assert (stats.total_requests, stats.profile_counts) == (1, {"a": 1})  # actual: (0, {})
