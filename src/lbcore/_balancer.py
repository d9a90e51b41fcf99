"""The Balancer: the one stateful object of the core.

Rules that keep it honest:

1. ``handle`` is the only way to change it. It checks the event completely
   before touching anything, so a refused event (:class:`InvalidEvent`)
   leaves the balancer exactly as it was.
2. Time comes from events. Clock-driven decisions (a retry coming due, a
   first-chunk deadline passing) happen on :class:`Tick`, never on the side.
3. No I/O, no randomness, no iteration over unordered collections: equal
   inputs give equal outputs, which is what makes traces replay.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from ._actions import (
    Action,
    CancelAttempt,
    CancelReason,
    CloseBreaker,
    CompressPrompt,
    CoolDown,
    FailOver,
    FailoverReason,
    FirstChunkDue,
    HalfOpenBreaker,
    RequestAborted,
    RequestCompleted,
    RequestDequeued,
    RequestFailed,
    RequestQueued,
    RetryScheduled,
    SelectionChanged,
    SkipBackend,
    SkipReason,
    StartAttempt,
    TripBreaker,
)
from ._aggregate import all_context_limits_error, context_limit_message, failover_error
from ._backend_state import BackendState, breaker_fields
from ._backoff import RetryDelays
from ._breaker import Breaker, BreakerState
from ._capacity import Capacity
from ._classify import allows_same_backend_retry, is_immediate_failover, is_transient
from ._compression import compression_failed_message, compression_failure
from ._config import BackendSpec, BalancerConfig, Strategy
from ._cooldown import Cooldowns
from ._errors import InvalidEvent, LBError
from ._events import (
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    AttemptTimedOut,
    ChunkReceived,
    Event,
    FailoverIndexReset,
    PromptCompressed,
    RequestCancelled,
    RequestStarted,
    SlotTimedOut,
    StatsReset,
    Tick,
    TimeoutPhase,
)
from ._failure import Failure, FailureKind
from ._full_rotation import Rotation, skips_when_all_full
from ._metrics import MetricsCounter, ModelInfo, Stats
from ._outcomes import (
    AllBackendsUnhealthy,
    BackendFailed,
    BackendFailure,
    BudgetExhausted,
    CompressionFailed,
    ContextLimitExceeded,
    DeadlineExceeded,
    LocalSaturation,
    QueueFull,
    QueueTimedOut,
    RequestError,
    RetryBudgetExhausted,
)
from ._retry_budget import RetryBudget
from ._shared import PEER_EVENTS, Sharing
from ._state import LiveRequest, Phase, Sending
from ._strategies import FastestFirst, picker_for
from ._text import truncate
from ._timers import Timers
from ._tpm import TokenRate
from ._trace import TRACE_FORMAT, Step, TraceHeader
from ._validate import check_event, check_start, check_time

#: The phases in which a request's current attempt is under way at its backend.
_ATTEMPT_PHASES: Final = frozenset({Phase.CONNECTING, Phase.STREAMING})
# Enum members read on every event, as module constants: several times faster
# to read than the class attribute (EnumType defines __getattr__).
_CONNECTING: Final = Phase.CONNECTING
_STREAMING: Final = Phase.STREAMING
_STARTED: Final = Sending.STARTED
_AT_CAPACITY: Final = SkipReason.AT_CAPACITY
_CLOSED: Final = BreakerState.CLOSED

# Everything in __all__ is re-exported by lbcore.
__all__ = ("Balancer", "UnsupportedServerTool")

ALL_UNHEALTHY_MESSAGE: Final = (
    "All backends are currently unhealthy (circuit breakers open). "
    "Please wait for recovery or check backend configurations."
)
BUDGET_EXHAUSTED_MESSAGE: Final = "Transport attempt budget exhausted"
#: How many finished request ids are remembered to report reuse and late events clearly.
FINISHED_MEMORY: Final = 4096
_PHASE_VERBS: Final = {TimeoutPhase.CONNECT: "connecting", TimeoutPhase.READ: "reading"}


class UnsupportedServerTool(LBError):
    """The balancer has no server-side tools of its own."""


class Balancer:
    """Decides where each request goes. Feed it events; do what its actions say.

    >>> from lbcore import Balancer, BalancerConfig, BackendSpec, RequestStarted
    >>> lb = Balancer(BalancerConfig(strategy="failover", backends=(
    ...     BackendSpec(name="a", provider="openai"), BackendSpec(name="b", provider="openai"))))
    >>> [type(a).__name__ for a in lb.handle(RequestStarted(at=0, request_id="r1"))]
    ['SelectionChanged', 'StartAttempt']
    """

    def __init__(self, config: BalancerConfig, *, record: bool = False) -> None:
        if not isinstance(config, BalancerConfig):
            raise TypeError(f"config must be a BalancerConfig, got {type(config).__name__}")
        self._config = config
        self._settings = config.settings
        self._backends: tuple[BackendSpec, ...] = tuple(config.backends)
        # Every strategy but round-robin runs failover's rotation (spec §5, §23-§25).
        self._failover = config.strategy != Strategy.ROUND_ROBIN
        self._sticky = config.strategy == Strategy.FAILOVER
        self._breakers_on = self._failover and self._settings.circuit_breaker_enabled
        self._now = 0
        self._seq = 0
        self._arrivals = 0
        self._rr_index = 0
        self._sticky_index = 0
        self._sticky_owner = 0
        self._claims = 0
        self._live: dict[str, LiveRequest] = {}
        #: Where each live request's deadlines stand, soonest first (see _timers).
        self._timers = Timers(self._live)
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._breakers: dict[str, Breaker] = {}
        self._metrics: dict[str, MetricsCounter] = {}
        self._tpm = TokenRate()
        self._profile_counts: dict[str, int] = {}
        self._total_requests = 0
        self._last_selected: str | None = None
        # Bumped by every StatsReset, so a dispatch counted before a reset is
        # never taken back from the counts that came after it.
        self._stats_epoch = 0
        self._journal: list[Step] | None = [] if record else None
        # The limit a prompt must fit on each backend, worked out once: the
        # config is frozen, and the shared limit is a scan of every backend.
        self._context_limits = tuple(config.target_context_limit(b) for b in self._backends)
        #: A prompt of at most this many tokens fits every backend (None: no limit anywhere).
        self._tightest_limit = min(
            (limit for limit in self._context_limits if limit is not None), default=None
        )
        self._capacity = Capacity(self._backends, self._settings)
        # Strategy hooks: where a rotation starts, which backends it leaves out
        # (weight 0 drains), and the latency estimates' samples.
        self._picker = picker_for(config, self._capacity)
        self._latency = self._picker if isinstance(self._picker, FastestFirst) else None
        drained = tuple(b.weight == 0 for b in self._backends)
        self._drained = drained if any(drained) else None
        #: The backends a rotation may visit, for the all-unhealthy check.
        self._rotating = tuple(b for b in self._backends if b.weight > 0)
        self._cooldowns = Cooldowns(len(self._backends))
        self._honour_retry_after = self._failover and self._settings.honour_retry_after
        self._delays = RetryDelays(self._settings)
        self._retry_budget = RetryBudget(self._settings)
        #: Backends whose slot freed during this event; their queues move at its end.
        self._freed: list[int] = []
        #: Shared state (spec §26), only with peer_sharing: peer rules and the outbox.
        self._sharing = (
            Sharing(
                self._backends,
                self._settings,
                breakers=self._breakers,
                breakers_on=self._breakers_on,
                tpm=self._tpm,
                cooldowns=self._cooldowns,
                honour_retry_after=self._honour_retry_after,
            )
            if self._settings.peer_sharing
            else None
        )
        # Settings read on every request, kept at hand.
        self._idle_timeout_ms = self._settings.idle_timeout_ms
        self._tpm_threshold = self._settings.tpm_threshold
        self._deadline_ms = self._settings.deadline_ms
        self._names = tuple(b.name for b in self._backends)
        #: Per backend index: the detail of its at-capacity skip (its limit is fixed).
        self._full_details = tuple(
            f"all {limit} slots are taken" for limit in self._capacity.limits
        )
        self._first_chunk_ms = self._settings.timeout_ms if self._failover else None
        self._rotation = Rotation(self._names, self._full_details)
        self._max_queued = self._settings.max_queued
        self._queue_timeout_ms = self._settings.queue_timeout_ms

    # ------------------------------------------------------------------ public

    @property
    def config(self) -> BalancerConfig:
        return self._config

    @property
    def now(self) -> int:
        """The latest time seen in an event; the next event may not be earlier."""
        return self._now

    def trace_header(self) -> TraceHeader:
        return TraceHeader(format=TRACE_FORMAT, config=self._config)

    def take_steps(self) -> list[Step]:
        """The steps recorded since the last call (only with ``record=True``)."""
        if self._journal is None:
            raise LBError("this balancer does not record: create it with record=True")
        steps, self._journal = self._journal, []
        return steps

    def handle(self, event: Event) -> list[Action]:
        """Apply one event and return the actions it calls for, in order.

        Raises :class:`InvalidEvent` (changing nothing) when the event cannot
        be accepted: unknown or finished request, reused request id, stale
        attempt number, time going backwards, malformed fields.
        """
        kind = type(event)
        if kind is ChunkReceived:
            # The most common event by far: a chunk of a stream under way only
            # counts and moves the idle deadline on, emits nothing and frees no
            # slot. It is applied here when every check of check_event plainly
            # passes (exact types, time not going back, the current attempt of
            # a live request in the streaming phase); anything else takes the
            # general path below, which checks it in full and raises where due.
            at, request_id = event.at, event.request_id  # type: ignore[union-attr]
            if type(at) is int and at >= self._now and type(request_id) is str:
                request = self._live.get(request_id)
                attempt = event.attempt  # type: ignore[union-attr]
                if (
                    request is not None
                    and request.phase is _STREAMING
                    and type(attempt) is int
                    and attempt == request.attempt
                ):
                    self._now = at
                    request.chunks += 1
                    idle = self._idle_timeout_ms
                    if idle is not None:
                        # Its one heap entry was armed at the first chunk (see _chunk).
                        request.idle_due = at + idle
                    self._seq += 1
                    if self._journal is not None:
                        self._journal.append(Step(seq=self._seq, event=event, actions=()))
                    return []
        sharing = self._sharing
        actions: list[Action] = []
        if kind is RequestStarted:
            # The other common event: its checks without check_event's
            # dispatch, and its handler without the chain below.
            at = event.at
            if type(at) is not int or at < self._now:
                check_time("RequestStarted", at, self._now)  # raises
            check_start(event, self._live, self._finished)  # type: ignore[arg-type]
            self._now = at
            self._start(event, actions)  # type: ignore[arg-type]
        else:
            if kind in PEER_EVENTS:
                if sharing is None:
                    raise InvalidEvent(f"{kind.__name__} needs settings.peer_sharing")
                sharing.check(event, self._now)  # type: ignore[arg-type]
            else:
                check_event(kind, event, self._now, self._live, self._finished)
            self._now = event.at
            # Dispatch on the exact type: events are final, and `is` keeps the
            # per-chunk path cheap.
            if kind is ChunkReceived:
                self._chunk(self._live[event.request_id])  # type: ignore[union-attr]
            elif kind is AttemptSucceeded:
                self._succeed(self._live[event.request_id], event, actions)  # type: ignore[union-attr,arg-type]
            elif kind is AttemptFailed:
                self._fail(self._live[event.request_id], event.failure, actions)  # type: ignore[union-attr]
            elif kind is AttemptTimedOut:
                failure = self._transport_timeout(event)  # type: ignore[arg-type]
                self._fail(self._live[event.request_id], failure, actions)  # type: ignore[union-attr]
            elif kind is AttemptSent:
                self._sent(self._live[event.request_id], actions)  # type: ignore[union-attr]
            elif kind is AttemptHeld:
                self._held(self._live[event.request_id])  # type: ignore[union-attr]
            elif kind is SlotTimedOut:
                self._slot_timed_out(self._live[event.request_id], event.limit, actions)  # type: ignore[union-attr]
            elif kind is RequestCancelled:
                self._cancel(self._live[event.request_id], actions)  # type: ignore[union-attr]
            elif kind is Tick:
                self._tick(actions)
            elif kind is PromptCompressed:
                self._compressed(self._live[event.request_id], event, actions)  # type: ignore[union-attr,arg-type]
            elif kind is FailoverIndexReset:
                self._sticky_index = 0
            elif kind is StatsReset:
                self._reset_stats()
            else:
                sharing.apply(event, self._now, actions)  # type: ignore[union-attr,arg-type]
        if self._freed:
            self._dispatch_freed(actions)
        if sharing is not None and sharing.outbox:
            sharing.flush(actions)
        self._seq += 1
        if self._journal is not None:
            self._journal.append(Step(seq=self._seq, event=event, actions=tuple(actions)))
        return actions

    def next_deadline(self) -> int | None:
        """When the core next needs a :class:`Tick`, or None if no timer runs."""
        return self._timers.next_due()

    def reset_stats(self) -> list[Action]:
        """Shorthand for ``handle(StatsReset(at=self.now))``."""
        return self.handle(StatsReset(at=self._now))

    def stats(self) -> Stats:
        last = self._last_selected
        names = [b.name for b in self._backends]
        return Stats(
            profile_name=self._config.profile_name,
            strategy=self._config.strategy,
            members=tuple(b.name for b in self._backends),
            total_requests=self._total_requests,
            last_selected=last,
            last_selected_model=self._model_of(last) or None,
            profile_counts=dict(self._profile_counts),
            backend_metrics={name: m.snapshot() for name, m in self._metrics.items()},
            circuit_breaker_states={name: b.snapshot() for name, b in self._breakers.items()},
            current_tpm={b.name: self._tpm.rate(b.name, self._now) for b in self._backends},
            in_flight=len(self._live),
            queued=self._capacity.queued,
            backend_slots_used=dict(zip(names, self._capacity.in_flight, strict=True)),
            backend_queued=dict(zip(names, self._capacity.waiting, strict=True)),
            backend_in_flight=self._attempts_under_way(),
            retry_budget_used=self._retry_budget.used,
            cooldown_until={
                b.name: until
                for i, b in enumerate(self._backends)
                if (until := self._cooling_until(i)) is not None
            },
        )

    def _attempts_under_way(self) -> dict[str, int]:
        counts = {backend.name: 0 for backend in self._backends}
        for request in self._live.values():
            # An attempt under way: not waiting to retry, not queued after
            # leaving its backend, not held for a local connection slot.
            if (
                request.attempt > 0
                and request.phase in _ATTEMPT_PHASES
                and request.sending is not Sending.HELD
            ):
                counts[self._backends[request.backend_index].name] += 1
        return counts

    def current_failover_index(self) -> int:
        """Where the next failover request starts its rotation."""
        return self._sticky_index

    def reset_failover_index(self) -> list[Action]:
        """Shorthand for ``handle(FailoverIndexReset(at=self.now))``: start again at the first."""
        return self.handle(FailoverIndexReset(at=self._now))

    def last_selected(self) -> str | None:
        """The backend of the latest attempt (None before any, or after a stats reset)."""
        return self._last_selected

    def backend_states(self) -> tuple[BackendState, ...]:
        """Every backend's breaker, cooldown, rate and slots at ``now``, in config order."""
        settings, now = self._settings, self._now
        states = []
        for index, backend in enumerate(self._backends):
            breaker, in_window, reopens = breaker_fields(
                self._breakers.get(backend.name),
                now,
                settings.circuit_breaker_failure_window_ms,
                settings.circuit_breaker_recovery_timeout_ms,
            )
            states.append(
                BackendState(
                    name=backend.name,
                    breaker=breaker,
                    failures_in_window=in_window,
                    half_open_after=reopens,
                    cooldown_until=self._cooling_until(index),
                    tpm=self._tpm.rate(backend.name, now),
                    slots_used=self._capacity.in_flight[index],
                    max_concurrent=self._capacity.limits[index],
                )
            )
        return tuple(states)

    def default_model(self) -> str:
        return self._backends[0].model

    def current_model(self) -> str:
        """The model of the last selected backend, else the default model."""
        model = self._model_of(self._last_selected)
        return model if model is not None else self.default_model()

    def context_limit(self) -> int | None:
        return self._config.shared_context_limit()

    def models(self) -> tuple[ModelInfo, ...]:
        name = self._config.profile_name
        return (
            ModelInfo(
                id=name,
                name=name,
                provider="load-balancer",
                supported_tool_formats=(),
                context_window=self.context_limit(),
            ),
        )

    def server_tools(self) -> tuple[str, ...]:
        return ()

    def invoke_server_tool(self, name: str) -> None:
        raise UnsupportedServerTool(f"Server tool '{name}' not supported by load balancer")

    def __repr__(self) -> str:
        breakers = " ".join(
            f"{b.name}:{self._breakers[b.name].state}"
            for b in self._backends
            if b.name in self._breakers
        )
        tail = f" {breakers}" if breakers else ""
        return (
            f"<Balancer {self._config.strategy} t={self._now} in_flight={len(self._live)}"
            f" next={self._sticky_index if self._failover else self._rr_index}{tail}>"
        )

    # ---------------------------------------------------------------- helpers

    def _model_of(self, name: str | None) -> str | None:
        for backend in self._backends:
            if backend.name == name:
                return backend.model
        return None

    def _metrics_for(self, name: str) -> MetricsCounter:
        counter = self._metrics.get(name)
        if counter is None:
            counter = self._metrics[name] = MetricsCounter()
        return counter

    def _budget_left(self, request: LiveRequest) -> bool:
        return request.budget is None or request.used < request.budget

    def _set_sticky(self, request: LiveRequest, index: int) -> None:
        # Only the newest claimant may move the sticky index: an older request
        # that overlaps a newer one must not undo what the newer one learned.
        if self._sticky and request.owner == self._sticky_owner:
            self._sticky_index = index

    def _advance_sticky_past(self, request: LiveRequest, index: int) -> None:
        self._set_sticky(request, (index + 1) % len(self._backends))

    def _mark_selection(self, backend: BackendSpec, actions: list[Action]) -> None:
        if self._last_selected != backend.name:
            self._last_selected = backend.name
            actions.append(
                SelectionChanged(
                    profile_name=self._config.profile_name,
                    backend=backend.name,
                    model=backend.model,
                )
            )

    def _finish(self, request: LiveRequest, terminal: Action, actions: list[Action]) -> None:
        if request.retrying:
            self._retry_budget.give_back(request)
        if request.ticket:
            self._capacity.leave(request)
        self._release_slot(request)
        if request.expires_at is not None:
            self._timers.expiry.forget_front(request)
        if request.queue_due is not None:
            self._timers.queue.forget_front(request)
        # The timers' lines read these to tell a spent entry (see _timers).
        request.expires_at = request.deadline = request.queue_due = None
        del self._live[request.request_id]
        self._finished[request.request_id] = None
        if len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
        actions.append(terminal)

    def _fail_request(
        self, request: LiveRequest, error: RequestError, actions: list[Action]
    ) -> None:
        self._finish(request, RequestFailed(request_id=request.request_id, error=error), actions)

    def _hand_back_probe(self, request: LiveRequest) -> None:
        # Only the holder can hand a probe back, so asking the current backend's
        # breaker is enough: it knows whether this request holds its probe.
        breaker = self._breakers.get(self._backends[request.backend_index].name)
        if breaker is not None:
            breaker.hand_back_probe(request.request_id)

    def _holds_probe(self, request: LiveRequest, name: str) -> bool:
        breaker = self._breakers.get(name)
        return breaker is not None and breaker.holds_probe(request.request_id)

    def _release_slot(self, request: LiveRequest) -> None:
        capacity = self._capacity
        freed = capacity.release(request)
        # A slot nobody waits for has no one to go to. Nobody can start waiting
        # for it later in this event either while it has room (requests wait
        # only for full backends), and if it fills and frees again, that
        # release is noted then.
        if freed >= 0 and capacity.waiting[freed] and capacity.limits[freed] is not None:
            self._freed.append(freed)

    def _cool_down(self, index: int, failure: Failure, actions: list[Action]) -> None:
        until = self._cooldowns.note(index, failure, self._now, self._settings.max_retry_after_ms)
        if until is not None:
            actions.append(CoolDown(backend=self._backends[index].name, until=until))
            if self._sharing is not None:
                self._sharing.cooled(self._backends[index].name, until - self._now, failure)

    def _cooling_until(self, index: int) -> int | None:
        return self._cooldowns.until(index, self._now)

    def _cooling_failure(self, index: int, until: int) -> Failure:
        """What a request skipping a cooling backend reports for it: the pause it was asked for."""
        cause = self._cooldowns.cause(index)
        assert cause is not None
        left = until - self._now
        return Failure(
            kind=cause.kind,
            message=f"cooling down for {left}ms more (Retry-After): {cause.message}",
            status=cause.status,
            code="cooling_down",
            provider_type=cause.provider_type,
            retry_after_ms=left,
        )

    def _context_rejection(self, request: LiveRequest, index: int) -> int | None:
        """The limit the prompt exceeds on backend ``index``, or None when it fits."""
        limit = self._context_limits[index]
        tokens = request.prompt_tokens
        compressed = request.compressed
        if compressed is not None and index in compressed:
            tokens = compressed[index]
        if limit is not None and tokens is not None and tokens > limit:
            return limit
        return None

    def _transport_timeout(self, event: AttemptTimedOut) -> Failure:
        return Failure(
            kind=FailureKind.TIMEOUT,
            message=f"Transport timeout while {_PHASE_VERBS[event.phase]}",
            code="transport_timeout",
        )

    # --------------------------------------------------------------- starting

    def _start(self, event: RequestStarted, actions: list[Action]) -> None:
        self._arrivals += 1
        total = self._deadline_ms
        expires_at = None if total is None else self._now + total
        request_id = event.request_id
        request = self._live[request_id] = LiveRequest(
            request_id, self._arrivals, event.prompt_tokens, event.attempt_budget, expires_at
        )
        if expires_at is not None:
            self._timers.arm_in(self._timers.expiry, request, expires_at)
        if self._failover:
            self._start_failover(request, actions)
        else:
            self._start_round_robin(request, actions)

    def _start_round_robin(self, request: LiveRequest, actions: list[Action]) -> None:
        index = self._rr_index
        # The index moves before anything can go wrong, as in the reference:
        # a rejected request still uses up its turn.
        self._rr_index = (index + 1) % len(self._backends)
        self._round_robin_turn(request, index, actions)

    def _round_robin_turn(self, request: LiveRequest, index: int, actions: list[Action]) -> None:
        """Round-robin's checks on its backend, then the dispatch (again after a compression)."""
        backend = self._backends[index]
        limit = self._context_rejection(request, index)
        if limit is not None:
            if self._offer_compression(request, index, limit, actions):
                return
            tokens = request.prompt_tokens or 0
            message = context_limit_message(self._config.profile_name, backend.name, tokens, limit)
            error = ContextLimitExceeded(
                profile_name=self._config.profile_name,
                backend=backend.name,
                tokens=tokens,
                limit=limit,
                message=message,
            )
            self._fail_request(request, error, actions)
            return
        if not self._budget_left(request):
            self._fail_request(request, BudgetExhausted(message=BUDGET_EXHAUSTED_MESSAGE), actions)
            return
        if not self._capacity.open(index):
            # Round-robin's turn is fixed: the request waits for that backend only.
            request.note_full(index)
            self._queue(request, actions)
            return
        self._dispatch_round_robin(request, index, actions)

    def _dispatch_round_robin(
        self, request: LiveRequest, index: int, actions: list[Action]
    ) -> None:
        backend = self._backends[index]
        self._mark_selection(backend, actions)
        self._profile_counts[backend.name] = self._profile_counts.get(backend.name, 0) + 1
        self._total_requests += 1
        request.counted_epoch = self._stats_epoch
        self._launch(request, index, actions)

    def _start_failover(self, request: LiveRequest, actions: list[Action]) -> None:
        claim = self._claims = self._claims + 1
        request.owner = self._sticky_owner = claim
        # No breaker exists until a backend fails (or a peer reports one open).
        if self._breakers:
            if self._sharing is not None:
                self._sharing.claims(self._now, actions)
            if self._breakers_on and not self._any_can_attempt():
                self._fail_request(
                    request, AllBackendsUnhealthy(message=ALL_UNHEALTHY_MESSAGE), actions
                )
                return
        picker = self._picker
        request.next_index = self._sticky_index if picker is None else picker.pick()
        if not self._skip_a_full_pool(request, actions):
            self._advance(request, actions)

    def _any_can_attempt(self) -> bool:
        """Whether some backend still in rotation has a breaker that lets a request through."""
        breakers, now, settings = self._breakers, self._now, self._settings
        for backend in self._rotating:
            breaker = breakers.get(backend.name)
            if breaker is None or breaker.can_attempt(now, settings):
                return True
        return False

    def _launch(self, request: LiveRequest, index: int, actions: list[Action]) -> None:
        """Start the next attempt of ``request`` on backend ``index``."""
        backend = self._backends[index]
        request.backend_index = index
        request.attempt += 1
        request.attempts_here += 1
        request.used += 1
        request.phase = _CONNECTING
        now = request.attempt_started_at = request.sending_since = self._now
        request.chunks = 0
        request.sending = _STARTED
        request.retry_due = None
        request.retry_failure = None
        self._capacity.acquire(request, index)
        timeout = self._first_chunk_ms
        if timeout is None:
            request.deadline = None
        else:
            request.deadline = now + timeout
            self._timers.arm_in(self._timers.first_chunk, request, request.deadline)
        counter = self._metrics.get(backend.name)
        if counter is None:
            counter = self._metrics[backend.name] = MetricsCounter()
        counter.requests += 1
        if self._last_selected != backend.name:
            self._mark_selection(backend, actions)
        actions.append(
            StartAttempt(
                request_id=request.request_id,
                attempt=request.attempt,
                backend=backend.name,
                model=backend.model,
                first_chunk_deadline=request.deadline,
                # No breaker exists until a backend fails, and with it no probe.
                probe=bool(self._breakers) and self._holds_probe(request, backend.name),
            )
        )

    def _advance(self, request: LiveRequest, actions: list[Action]) -> None:
        """Visit the next backends in the rotation until one can be attempted.

        Each backend is visited at most once per request. When the rotation
        runs out, the request fails with the aggregate of what went wrong.
        """
        count = len(self._backends)
        drained = self._drained
        while request.visited < count and (request.budget is None or request.used < request.budget):
            index = request.next_index
            request.visited += 1
            request.next_index = (index + 1) % count
            if drained is not None and drained[index]:
                continue  # weight 0: not in the rotation at all (§23)
            if self._admit(request, index, actions):
                self._move_to(request, index, actions)
                return
            if request.phase is Phase.COMPRESSING:
                return
        self._end_rotation(request, actions)

    def _skip_a_full_pool(self, request: LiveRequest, actions: list[Action]) -> bool:
        """Queue a new request at once when only capacity stands in its way everywhere.

        The whole rotation's visits in one loop (``_full_rotation``), when
        nothing but the token rate and capacity could skip a backend: no
        breaker other than closed, no cooldown running, no backend drained,
        a prompt that fits every backend and an attempt budget that allows a
        visit. Otherwise, or when some backend has room, False: the visits
        run one by one in ``_advance``.
        """
        capacity, start = self._capacity, request.next_index
        # The first backend decides most requests: a free slot there means no burst.
        if not capacity.waiting[start]:
            limit = capacity.limits[start]
            if limit is None or capacity.in_flight[start] < limit:
                return False
        if (
            self._drained is not None
            or self._cooldowns.latest > self._now
            or (request.budget is not None and request.used >= request.budget)
        ):
            return False
        tokens, tightest = request.prompt_tokens, self._tightest_limit
        if tokens is not None and tightest is not None and tokens > tightest:
            return False
        for breaker in self._breakers.values():
            if breaker.state is not _CLOSED:
                return False
        order, names, visits = self._rotation.starting_at(start)
        skips = skips_when_all_full(
            request.request_id,
            visits,
            capacity,
            self._names,
            tpm=self._tpm,
            threshold=self._tpm_threshold,
            now=self._now,
        )
        if skips is None:
            return False
        request.visited = len(order)
        request.full = [*order]  # a newcomer's: it met no full backend before
        actions.extend(skips)
        # What _end_rotation would do: every backend is still full, so there is
        # nothing to revisit, and the budget allowed this visit.
        self._queue(request, actions, names)
        return True

    def _admit(
        self, request: LiveRequest, index: int, actions: list[Action], *, its_turn: bool = False
    ) -> bool:
        """The checks of one visit: breaker, TPM, the context limit, then capacity.

        Emits a ``SkipBackend`` and returns False when the backend is passed
        over. A probe taken by the breaker check is handed back in that case,
        and otherwise stays with the request. ``its_turn``: the request was
        taken out of the backend's queue for a freed slot, so the others still
        waiting are behind it; anyone else must not pass them.
        """
        backend = self._backends[index]
        healthy, probe = True, False
        # No breaker exists until a backend fails (and only with breakers on).
        breaker = self._breakers.get(backend.name) if self._breakers else None
        if breaker is not None:
            healthy, became_half_open = breaker.take(self._now, self._settings, request.request_id)
            if became_half_open:
                actions.append(HalfOpenBreaker(backend=backend.name))
            probe = healthy and breaker.holds_probe(request.request_id)
        # Both checks always run, as in the reference: the breaker's has side effects.
        threshold = self._tpm_threshold
        slow_rate = (
            None
            if threshold is None
            else self._tpm.below_threshold(backend.name, self._now, threshold)
        )
        # The context limit; the call is skipped when the backend has none (every visit runs this).
        limit = (
            None if self._context_limits[index] is None else self._context_rejection(request, index)
        )
        if not healthy:
            state = breaker.state if breaker is not None else "open"
            reason, detail = SkipReason.BREAKER_OPEN, f"circuit breaker is {state}"
        elif slow_rate is not None:
            reason = SkipReason.TPM_BELOW_THRESHOLD
            detail = f"{slow_rate:.1f} tokens/min is below the threshold {threshold}"
        elif limit is not None and self._offer_compression(request, index, limit, actions):
            # Paused until PromptCompressed; the visit's checks run again then.
            if probe and breaker is not None:
                breaker.hand_back_probe(request.request_id)
            return False
        elif limit is not None:
            tokens = request.prompt_tokens or 0
            reason = SkipReason.CONTEXT_LIMIT
            detail = f"estimated {tokens} tokens exceeds the limit {limit}"
            if request.compressed is not None and index in request.compressed:
                detail += f" ({request.compressed[index]} after compression)"
            message = context_limit_message(self._config.profile_name, backend.name, tokens, limit)
            failure = Failure(kind=FailureKind.CONTEXT_LIMIT, message=message)
            request.note_context_failure(backend.name, failure)
            self._advance_sticky_past(request, index)
        elif (until := self._cooldowns.ends[index]) > self._now:
            reason = SkipReason.COOLING_DOWN
            detail = f"asked for a pause (Retry-After) until {until}, {until - self._now}ms more"
            request.note_failure(backend.name, self._cooling_failure(index, until))
        elif not (self._capacity.has_room(index) if its_turn else self._capacity.open(index)):
            # Not a failure: the request may wait for this backend (§18).
            reason = _AT_CAPACITY
            detail = self._full_details[index]
            request.note_full(index)
        else:
            return True
        if probe and breaker is not None:
            breaker.hand_back_probe(request.request_id)
        actions.append(
            SkipBackend(
                request_id=request.request_id, backend=backend.name, reason=reason, detail=detail
            )
        )
        return False

    def _offer_compression(
        self, request: LiveRequest, index: int, limit: int, actions: list[Action]
    ) -> bool:
        """Ask the transport to shrink the prompt for backend ``index``, once per visit.

        True when the request now waits for ``PromptCompressed`` (section 11.3).
        """
        compressed = request.compressed
        if not self._settings.context_compression or (
            compressed is not None and index in compressed
        ):
            return False
        if compressed is None:
            compressed = request.compressed = {}
        compressed[-1] = index
        request.phase = Phase.COMPRESSING
        actions.append(
            CompressPrompt(
                request_id=request.request_id,
                backend=self._backends[index].name,
                tokens=request.prompt_tokens or 0,
                limit=limit,
            )
        )
        return True

    def _compressed(
        self, request: LiveRequest, event: PromptCompressed, actions: list[Action]
    ) -> None:
        """The transport's answer to ``CompressPrompt``: resume the paused visit."""
        compressed = request.compressed
        assert compressed is not None
        index = compressed.pop(-1)
        request.phase = Phase.CONNECTING
        name = self._backends[index].name
        profile = self._config.profile_name
        if event.error is not None:
            if not self._failover:
                message = compression_failed_message(profile, name, event.error)
                error = CompressionFailed(profile_name=profile, backend=name, message=message)
                self._fail_request(request, error, actions)
                return
            request.note_context_failure(name, compression_failure(profile, name, event.error))
            self._advance_sticky_past(request, index)
            actions.append(
                SkipBackend(
                    request_id=request.request_id,
                    backend=name,
                    reason=SkipReason.CONTEXT_LIMIT,
                    detail=f"compression failed: {truncate(event.error, 200)}",
                )
            )
            self._advance(request, actions)
            return
        assert event.prompt_tokens is not None
        compressed[index] = event.prompt_tokens
        if not self._failover:
            self._round_robin_turn(request, index, actions)
        elif self._admit(request, index, actions):
            self._move_to(request, index, actions)
        else:
            self._advance(request, actions)

    def _move_to(self, request: LiveRequest, index: int, actions: list[Action]) -> None:
        """Start the request on backend ``index``, which its checks admitted.

        A fresh visit has its own count of attempts. Moving on after an
        attempt was sent is a failover, which needs a unit of the retry
        budget; an attempt taken back (a setup failure) was not.
        """
        if request.used > 0 and not self._retry_budget.take(request, len(self._live)):
            breaker = self._breakers.get(self._backends[index].name)
            if breaker is not None:  # the admission may have handed it the probe
                breaker.hand_back_probe(request.request_id)
            self._refuse_retry(request, actions)
            return
        request.attempts_here = 0
        if request.pending_failover is not None:
            self._announce_failover(request, index, actions)
        self._launch(request, index, actions)

    def _refuse_retry(self, request: LiveRequest, actions: list[Action]) -> None:
        in_flight = len(self._live)
        message = (
            f"Retry budget exhausted: {self._retry_budget.used} retries and failovers already "
            f"in flight (limit {self._retry_budget.limit(in_flight)} "
            f"with {in_flight} requests in flight)"
        )
        failures = tuple(BackendFailure(backend=n, failure=f) for n, f in request.failures)
        self._fail_request(
            request, RetryBudgetExhausted(message=message, failures=failures), actions
        )

    def _announce_failover(self, request: LiveRequest, index: int, actions: list[Action]) -> None:
        """Say which backend the request left, and why, now that the next one is known."""
        if request.pending_failover is None:
            return
        left, why, failure = request.pending_failover
        request.pending_failover = None
        actions.append(
            FailOver(
                request_id=request.request_id,
                from_backend=left,
                to_backend=self._backends[index].name,
                reason=why,
                failure_kind=failure.kind,
                status=failure.status,
            )
        )

    def _end_rotation(self, request: LiveRequest, actions: list[Action]) -> None:
        if request.full and self._budget_left(request):
            # Some backend was skipped only because it was full: wait for it.
            if self._revisit_full(request, actions):
                return
            if request.full:
                self._queue(request, actions)
                return
        # The rotation ended without a success: start the next request from the
        # preferred first backend rather than stay pinned to a failing one.
        self._set_sticky(request, 0)
        ordinary = [BackendFailure(backend=n, failure=f) for n, f in request.failures]
        by_limit = [BackendFailure(backend=n, failure=f) for n, f in request.context_failures]
        if by_limit and not ordinary:
            error: RequestError = all_context_limits_error(self._config.profile_name, by_limit)
        else:
            error = failover_error(self._config.profile_name, ordinary + by_limit)
        self._fail_request(request, error, actions)

    # ------------------------------------------------------------------ queue

    def _revisit_full(self, request: LiveRequest, actions: list[Action]) -> bool:
        """Try again the backends found full earlier in this request that have room now.

        A request that was dispatched from the queue, then failed, may come back
        to backends it skipped for capacity long ago; they may have room by now.
        """
        for index in tuple(request.full):
            if self._capacity.open(index):
                request.full.remove(index)  # type: ignore[union-attr]  # not empty: a list
                if self._admit(request, index, actions):
                    self._move_to(request, index, actions)
                    return True
        return False

    def _queue(
        self, request: LiveRequest, actions: list[Action], waiting_for: tuple[str, ...] = ()
    ) -> None:
        """Queue ``request`` for the backends in ``request.full`` (named by ``waiting_for``
        when the caller has their names at hand), or fail it when the queue is full."""
        capacity = self._capacity
        limit = self._max_queued
        if capacity.queued >= limit:
            message = f"Every usable backend is full and {limit} requests already wait"
            failures = tuple(BackendFailure(backend=n, failure=f) for n, f in request.failures)
            self._fail_request(
                request, QueueFull(message=message, max_queued=limit, failures=failures), actions
            )
            return
        capacity.enqueue(request)
        now = request.queued_at = self._now
        timeout = self._queue_timeout_ms
        expires = request.expires_at
        if timeout is None:
            request.queue_due = None
            due = expires
        else:
            due = request.queue_due = now + timeout
            self._timers.arm_in(self._timers.queue, request, due)
            if expires is not None and expires < due:
                due = expires
        if not waiting_for:
            names = self._names
            waiting_for = tuple([names[i] for i in request.full])
        actions.append(
            RequestQueued(
                request_id=request.request_id,
                waiting_for=waiting_for,
                queued=capacity.queued,
                due=due,
            )
        )

    def _unqueue(self, request: LiveRequest) -> None:
        self._capacity.leave(request)
        if request.queue_due is not None:
            self._timers.queue.forget_front(request)
            request.queue_due = None

    def _dispatch_freed(self, actions: list[Action]) -> None:
        """Hand each slot freed during this event to the oldest request waiting for it."""
        freed, capacity = self._freed, self._capacity
        while freed:
            index = freed.pop(0)
            while capacity.has_room(index):
                request = capacity.next_waiter(index)
                if request is None:
                    break
                self._dispatch(request, index, actions)

    def _dispatch(self, request: LiveRequest, index: int, actions: list[Action]) -> None:
        """Give a queued request the slot that freed on backend ``index``."""
        if self._failover and not self._admit(request, index, actions, its_turn=True):
            if not request.full:  # nothing left to wait for
                self._unqueue(request)
                self._end_rotation(request, actions)
            return
        self._unqueue(request)
        actions.append(
            RequestDequeued(
                request_id=request.request_id,
                backend=self._backends[index].name,
                waited_ms=self._now - request.queued_at,
            )
        )
        if self._failover:
            self._move_to(request, index, actions)
        else:
            self._dispatch_round_robin(request, index, actions)

    def _time_out_in_queue(self, request: LiveRequest, actions: list[Action]) -> None:
        waited = self._now - request.queued_at
        self._unqueue(request)
        failures = tuple(BackendFailure(backend=n, failure=f) for n, f in request.failures)
        message = f"No backend slot freed within {waited}ms in the queue"
        self._fail_request(
            request, QueueTimedOut(message=message, waited_ms=waited, failures=failures), actions
        )

    # ------------------------------------------------------------ attempt news

    def _held(self, request: LiveRequest) -> None:
        # Waiting for one of the transport's own connections keeps nobody at
        # the backend waiting: its deadline stops until the attempt is sent.
        request.sending = Sending.HELD
        request.sending_since = self._now
        request.deadline = None

    def _sent(self, request: LiveRequest, actions: list[Action]) -> None:
        request.sending = Sending.SENT
        request.sending_since = self._now
        timeout = self._settings.timeout_ms
        if not self._failover or timeout is None:
            return
        request.deadline = self._now + timeout
        self._timers.arm_in(self._timers.first_chunk, request, request.deadline)
        actions.append(
            FirstChunkDue(
                request_id=request.request_id, attempt=request.attempt, due=request.deadline
            )
        )

    def _slot_timed_out(self, request: LiveRequest, limit: int, actions: list[Action]) -> None:
        """End a request that never got a local connection: the backend saw nothing."""
        name = self._backends[request.backend_index].name
        waited = self._now - request.sending_since
        self._undo_dispatch(request)
        self._hand_back_probe(request)
        message = (
            f"Local saturation: no connection to backend '{name}' came free within "
            f"{waited}ms (all {limit} in use); nothing was sent"
        )
        error = LocalSaturation(backend=name, limit=limit, waited_ms=waited, message=message)
        self._fail_request(request, error, actions)

    def _chunk(self, request: LiveRequest) -> None:
        request.chunks += 1
        if request.phase is _CONNECTING:
            request.phase = _STREAMING
            if request.deadline is not None:
                self._timers.first_chunk.forget_front(request)
                request.deadline = None
            if self._latency is not None:
                # From the send when the transport reported one, else from the start (§25).
                self._latency.observe(request.backend_index, self._now - request.sending_since)
        idle = self._idle_timeout_ms
        if idle is not None:
            request.idle_due = self._now + idle
            # One heap entry per stream, not per chunk: it is moved on lazily.
            if request.idle_mark is None:
                request.idle_mark = request.idle_due
                self._timers.arm(request, request.idle_due)

    def _succeed(
        self, request: LiveRequest, event: AttemptSucceeded, actions: list[Action]
    ) -> None:
        backend = self._backends[request.backend_index]
        counter = self._metrics_for(backend.name)
        tokens = event.input_tokens + event.output_tokens
        counter.successes += 1
        counter.tokens += tokens
        counter.total_latency_ms += self._now - request.attempt_started_at
        if tokens > 0:
            self._tpm.add(backend.name, tokens, self._now)
            if self._sharing is not None:
                self._sharing.tokens(backend.name, tokens)
        if self._latency is not None and request.chunks == 0:
            self._latency.observe(request.backend_index, self._now - request.sending_since)
        if self._failover:
            # Failover counts a request once it succeeded; round-robin did at dispatch.
            self._profile_counts[backend.name] = self._profile_counts.get(backend.name, 0) + 1
            self._total_requests += 1
            breaker = self._breakers.get(backend.name) if self._breakers else None
            if breaker is not None and breaker.record_success():
                actions.append(CloseBreaker(backend=backend.name))
                if self._sharing is not None:
                    self._sharing.closed(backend.name)
            self._set_sticky(request, request.backend_index)
        self._finish(
            request,
            RequestCompleted(
                request_id=request.request_id,
                backend=backend.name,
                attempt=request.attempt,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
            ),
            actions,
        )

    def _record_failure(
        self, request: LiveRequest, failure: Failure, actions: list[Action]
    ) -> None:
        """Count a backend visit's final failure in metrics and in its breaker."""
        backend = self._backends[request.backend_index]
        counter = self._metrics_for(backend.name)
        counter.failures += 1
        # After a retry wait, the failed attempt ended when it failed, not now.
        ended = request.failed_at if request.phase is Phase.WAITING else self._now
        counter.total_latency_ms += ended - request.attempt_started_at
        if failure.kind == FailureKind.TIMEOUT:
            counter.timeouts += 1
        if self._latency is not None and request.phase is not Phase.STREAMING:
            self._latency.observe_failure(request.backend_index, ended - request.attempt_started_at)
        if self._breakers_on:
            breaker = self._breakers.get(backend.name)
            if breaker is None:
                breaker = self._breakers[backend.name] = Breaker()
            tripped = breaker.record_failure(
                self._now, failure, self._settings, request.request_id, failed_at=ended
            )
            if self._sharing is not None:
                self._sharing.failure_recorded(backend.name, failure, tripped, self._now - ended)
            if tripped:
                actions.append(
                    TripBreaker(
                        backend=backend.name,
                        failures_in_window=len(breaker.failures),
                        half_open_after=self._now
                        + self._settings.circuit_breaker_recovery_timeout_ms,
                    )
                )

    def _leave_backend(
        self,
        request: LiveRequest,
        failure: Failure,
        reason: FailoverReason,
        actions: list[Action],
        *,
        record: bool = True,
    ) -> None:
        """Give up on the current backend and move on through the rotation."""
        if record:
            self._record_failure(request, failure, actions)
        else:
            self._hand_back_probe(request)
        name = self._backends[request.backend_index].name
        request.note_failure(name, failure)
        request.pending_failover = (name, reason, failure)
        request.deadline = None
        self._release_slot(request)
        self._advance_sticky_past(request, request.backend_index)
        self._advance(request, actions)

    def _may_retry_here(self, request: LiveRequest) -> bool:
        """A same-backend retry must not slip past a breaker that opened meanwhile."""
        if not self._breakers_on:
            return True
        name = self._backends[request.backend_index].name
        breaker = self._breakers.get(name)
        if breaker is None or breaker.state is BreakerState.CLOSED:
            return True
        return breaker.holds_probe(request.request_id)

    def _undo_dispatch(self, request: LiveRequest) -> None:
        """Forget an attempt that failed before anything was sent (a setup failure).

        The reference checks these things before it counts anything, so the
        attempt must not cost budget, metrics or (round-robin) stats.
        """
        name = self._backends[request.backend_index].name
        request.used -= 1
        counter = self._metrics[name]
        counter.requests -= 1
        if counter.requests == 0:  # nothing else can be counted without an attempt
            del self._metrics[name]
        if not self._failover and request.counted_epoch == self._stats_epoch:
            self._total_requests -= 1
            self._profile_counts[name] -= 1
            if not self._profile_counts[name]:
                del self._profile_counts[name]

    def _fail(self, request: LiveRequest, failure: Failure, actions: list[Action]) -> None:
        setup = failure.kind == FailureKind.SETUP and request.phase is Phase.CONNECTING
        if setup:
            self._undo_dispatch(request)
        if (
            failure.kind == FailureKind.TERMINAL
            and self._failover
            and request.phase is Phase.CONNECTING
        ):
            # A nested balancer already failed over and says retrying cannot help:
            # its failure is the answer, charged to nothing (section 5.10). A probe
            # it held goes back, or the breaker would wait for this request forever.
            self._hand_back_probe(request)
            self._fail_raw(request, failure, actions, record=False)
            return
        if self._honour_retry_after:
            self._cool_down(request.backend_index, failure, actions)
        if request.phase is Phase.STREAMING or not self._failover:
            # Output already reached the caller, or round-robin, which never
            # fails over: the raw failure is the answer.
            self._fail_raw(request, failure, actions, record=not setup)
            return
        request.deadline = None
        reason = self._reason_to_leave(request, failure)
        delay = 0
        if reason is None:
            delay = self._retry_wait(request)
            if self._ends_too_late(request, delay):
                reason = FailoverReason.PAST_DEADLINE
        if reason is not None:
            self._leave_backend(request, failure, reason, actions, record=not setup)
            return
        if not self._retry_budget.take(request, len(self._live)):
            self._record_failure(request, failure, actions)
            request.note_failure(self._backends[request.backend_index].name, failure)
            self._refuse_retry(request, actions)
            return
        if delay > 0:
            request.phase = Phase.WAITING
            request.failed_at = self._now
            request.retry_failure = failure
            self._schedule_retry(request, delay, actions)
            return
        self._launch(request, request.backend_index, actions)

    def _schedule_retry(self, request: LiveRequest, delay: int, actions: list[Action]) -> None:
        request.retry_due = self._now + delay
        self._timers.arm(request, request.retry_due)
        name = self._backends[request.backend_index].name
        actions.append(
            RetryScheduled(request_id=request.request_id, backend=name, due=request.retry_due)
        )

    def _retry_wait(self, request: LiveRequest) -> int:
        """A same-backend retry's wait: its delay, or the backend's Retry-After if longer."""
        delay = self._delays.delay(request.attempts_here)
        until = self._cooling_until(request.backend_index)
        return delay if until is None else max(delay, until - self._now)

    def _ends_too_late(self, request: LiveRequest, wait: int) -> bool:
        """Whether a retry after ``wait`` would start at or past the request's total deadline."""
        return request.expires_at is not None and self._now + wait >= request.expires_at

    def _reason_to_leave(self, request: LiveRequest, failure: Failure) -> FailoverReason | None:
        """Why the request must leave its backend after ``failure``; None to retry it there.

        The order is the reference's (section 3.4), with the breaker check added last.
        """
        if failure.kind == FailureKind.SETUP:
            return FailoverReason.SETUP
        if is_immediate_failover(failure):
            return FailoverReason.IMMEDIATE
        if not allows_same_backend_retry(failure, self._settings):
            return FailoverReason.NOT_RETRYABLE
        attempts_left = request.attempts_here < self._settings.attempts_per_backend
        if not attempts_left or not self._budget_left(request):
            return FailoverReason.RETRIES_EXHAUSTED
        if not self._may_retry_here(request):
            return FailoverReason.BREAKER_OPENED
        return None

    def _fail_raw(
        self, request: LiveRequest, failure: Failure, actions: list[Action], *, record: bool
    ) -> None:
        """End the request with this backend's own failure, as the caller's answer."""
        if record:
            self._record_failure(request, failure, actions)
        error = BackendFailed(
            backend=self._backends[request.backend_index].name,
            message=failure.message,
            failure=failure,
            chunks_delivered=request.chunks,
            retryable=record and is_transient(failure),
        )
        self._fail_request(request, error, actions)

    # ------------------------------------------------------------------ clock

    def _tick(self, actions: list[Action]) -> None:
        now = self._now
        for request in self._timers.take_due(now):
            # What an earlier request did on this tick may have changed this one.
            if self._live.get(request.request_id) is not request:
                continue
            if request.expires_at is not None and request.expires_at <= now:
                self._expire(request, actions)
                continue
            if request.idle_due is not None and request.idle_due <= now:
                self._idle_out(request, actions)
                continue
            if request.phase is Phase.WAITING:
                if request.retry_due is not None and request.retry_due <= now:
                    self._retry_due(request, actions)
                continue
            if request.phase is Phase.QUEUED:
                if request.queue_due is not None and request.queue_due <= now:
                    self._time_out_in_queue(request, actions)
                continue
            if request.deadline is None or request.deadline > now:
                continue
            self._cancel_attempt(request, CancelReason.FIRST_CHUNK_TIMEOUT, actions)
            timeout = self._settings.timeout_ms
            failure = Failure(
                kind=FailureKind.TIMEOUT,
                message=f"Request timeout after {timeout}ms",
                code="first_chunk_timeout",
            )
            self._fail(request, failure, actions)

    def _cancel_attempt(
        self, request: LiveRequest, reason: CancelReason, actions: list[Action]
    ) -> None:
        actions.append(
            CancelAttempt(
                request_id=request.request_id,
                attempt=request.attempt,
                backend=self._backends[request.backend_index].name,
                reason=reason,
            )
        )

    def _expire(self, request: LiveRequest, actions: list[Action]) -> None:
        """The total deadline passed: end the request wherever it is, charging no backend.

        The time was the caller's to set, not the backend's to keep: like a
        cancel, nothing is recorded against the backend in flight, if any.
        """
        total = self._settings.deadline_ms
        assert total is not None
        in_flight = request.phase is Phase.CONNECTING or request.phase is Phase.STREAMING
        if in_flight:
            self._cancel_attempt(request, CancelReason.DEADLINE, actions)
        # A retry waiting on a half-open backend holds its probe too.
        self._hand_back_probe(request)
        chunks = request.chunks if request.phase is Phase.STREAMING else 0
        failures = tuple(BackendFailure(backend=n, failure=f) for n, f in request.failures)
        where = f" on backend '{self._backends[request.backend_index].name}'" if in_flight else ""
        message = (
            f"Request deadline of {total}ms passed{where}; "
            f"{len(failures)} backend failure(s) before it"
        )
        error = DeadlineExceeded(
            message=message, deadline_ms=total, chunks_delivered=chunks, failures=failures
        )
        self._fail_request(request, error, actions)

    def _idle_out(self, request: LiveRequest, actions: list[Action]) -> None:
        """A stream went quiet for ``idle_timeout_ms``: the backend's failure, reported raw."""
        self._cancel_attempt(request, CancelReason.IDLE_TIMEOUT, actions)
        failure = Failure(
            kind=FailureKind.TIMEOUT,
            message=(
                f"Stream idle: no chunk for {self._settings.idle_timeout_ms}ms "
                f"after chunk {request.chunks}"
            ),
            code="idle_timeout",
        )
        self._fail(request, failure, actions)

    def _retry_due(self, request: LiveRequest, actions: list[Action]) -> None:
        failure = request.retry_failure
        assert failure is not None
        if not self._may_retry_here(request):
            self._leave_backend(request, failure, FailoverReason.BREAKER_OPENED, actions)
            return
        until = self._cooling_until(request.backend_index)
        if until is None:
            self._launch(request, request.backend_index, actions)
        elif self._ends_too_late(request, until - self._now):
            self._leave_backend(request, failure, FailoverReason.PAST_DEADLINE, actions)
        else:
            # Another request's Retry-After cooled the backend down meanwhile: wait for it too.
            self._schedule_retry(request, until - self._now, actions)

    def _cancel(self, request: LiveRequest, actions: list[Action]) -> None:
        if request.phase is Phase.CONNECTING or request.phase is Phase.STREAMING:
            self._cancel_attempt(request, CancelReason.CANCELLED, actions)
        self._hand_back_probe(request)
        self._finish(request, RequestAborted(request_id=request.request_id), actions)

    def _reset_stats(self) -> None:
        self._stats_epoch += 1
        self._profile_counts = {}
        self._total_requests = 0
        self._last_selected = None
