"""The one place a client touches the core: a guarded balancer with a clock.

Every call takes the guard, reads the clock, feeds the core one or two
events, files the resulting actions into the runs they concern, and lets go.
Nothing under the guard waits on a network: the clients do their I/O outside
it, so one stalled backend never holds up another request. Both the sync
client's threads and the async client's tasks use it; in the async client the
guard is never contended for long, because no call here awaits.

Two rules keep what the core hears consistent with what really happened:

* Time passes before news arrives. If a deadline the core set has passed,
  the core gets its :class:`lbcore.Tick` first, so a chunk that arrives after
  the first-chunk deadline is dropped rather than accepted late.
* News of an attempt the core gave up on is dropped here, never sent: the
  core would refuse it as stale, and its loop is about to close the connection.

An interrupt (Ctrl-C, or any exception raised asynchronously into a thread)
may land at any line of a guarded section, inside the core's ``handle()``
too, where it can leave the core half-changed. Each section therefore raises
a *damaged* flag when it starts changing things and lowers it when done; the
next section to find it raised rebuilds the core from a copy of it and every
event given to it since (the core is deterministic, so the rebuilt core is
the one the trace describes), then ends every request still open, whose
bookkeeping may have missed news. The guard is only ever held by a ``with``
statement, and trace lines wait in a queue whose writer pops, writes and
counts each in one statement, so no interrupt can leave a lock held or a
line lost or doubled.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import IO, Final, TypeVar

import msgspec

from lbcore import (
    Action,
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    AttemptTimedOut,
    Balancer,
    ChunkReceived,
    CompressPrompt,
    Event,
    FailoverIndexReset,
    Failure,
    InvalidEvent,
    PromptCompressed,
    RequestCancelled,
    RequestStarted,
    RetryScheduled,
    SlotTimedOut,
    Stats,
    StatsReset,
    Tick,
    TimeoutPhase,
    encode_line,
)

from ._config import ClientConfig
from ._observers import Observers
from ._reader import Ending, Succeeded
from ._run import Attempt, Compress, Finished, Queued, RequestRun, Send, Step, Wait
from ._timer import AttemptTimer
from .wire import Chunk, estimate_tokens

__all__ = ("CoreLink", "monotonic_ms")

_T = TypeVar("_T")
_NO_STEP: Final = "the core left request {rid} with nothing to do and no ending"
#: Events kept to rebuild the core before a fresh copy of it is taken (plus a
#: few per open request, so that copying stays amortised O(1) per event).
_EVENTS_PER_COPY: Final = 4096


class _Journal:
    """A copy of the core, and every event given to the live core since it was taken."""

    __slots__ = ("base", "events")

    def __init__(self, base: Balancer | None, events: list[Event] | None = None) -> None:
        #: None until the first copy: the core as its config makes it, which
        #: a new Balancer of that config is (the core is deterministic), made
        #: only if it is ever needed. A deep copy costs about 0.15 ms per client.
        self.base = base
        self.events: list[Event] = [] if events is None else events


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class CoreLink:
    """A :class:`lbcore.Balancer` shared safely by every request of one client."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        trace: IO[bytes] | None = None,
        clock: Callable[[], int] = monotonic_ms,
        compressing: bool = False,
        observers: Observers | None = None,
    ) -> None:
        self.config = config
        balancer = config.balancer
        if compressing and not balancer.settings.context_compression:
            # The hook is the client's; the core only needs to know it may ask.
            settings = msgspec.structs.replace(balancer.settings, context_compression=True)
            balancer = msgspec.structs.replace(balancer, settings=settings)
        self._balancer = Balancer(balancer, record=trace is not None)
        #: What a new core is made from, to rebuild one from the first event.
        self._balancer_config = balancer
        self._profile = balancer.profile_name
        self._observers = observers if observers else None
        self._journal = _Journal(None)
        #: Raised while a guarded section changes things (see the module docstring).
        self._damaged = False
        self._guard = threading.Lock()
        #: The thread holding the guard, so that a finalizer that thread runs
        #: inside a guarded section can tell, and defer instead of deadlocking.
        self._owner: int | None = None
        # Trace lines are queued under the guard in the order the core made
        # them, and written outside it, under this lock, first in first out.
        self._trace_lock = threading.Lock()
        self._pending: deque[bytes] = deque()
        #: Steps written (or dropped, once the trace is closed) from the queue.
        self._written = 0
        self._trace = trace
        self._clock = clock
        # The core's clock starts at 0 when the client is made: traces read better.
        self._epoch = clock()
        self._now = 0
        self._runs: dict[str, RequestRun] = {}
        #: Streams dropped unclosed, to cancel under the guard (see abandon()).
        self._abandoned: deque[RequestRun] = deque()
        self._next_id = 0
        self._targets = {target.name: target for target in config.targets}
        #: Where actions for other processes go (spec §26.6): Publish, ClaimProbe.
        self._outlet: Callable[[Action], None] | None = None
        if trace is not None:
            trace.write(encode_line(self._balancer.trace_header()) + b"\n")
            trace.flush()

    # -- requests -------------------------------------------------------------

    def name(self, run: RequestRun) -> None:
        """Give ``run`` the next id (``r1``, ``r2``...) unless the caller chose one."""
        with self._guard:
            if not run.request_id:
                self._next_id += 1
                run.request_id = f"r{self._next_id}"

    def open(self, run: RequestRun) -> None:
        """Start ``run`` in the core: its first-chunk deadline runs from now.

        Raises :class:`lbcore.InvalidEvent` (changing nothing) for an id the
        core has already seen.
        """
        if not run.request_id:
            self.name(run)
        first = self.config.targets[0]
        prompt = estimate_tokens(first, run.chat).tokens
        attempt_budget = run.attempt_budget
        with self._guard:
            self._begin()
            # The try lives in its own frame: CPython 3.11 leaves a ``try:``
            # line directly inside a ``with`` outside the with's cleanup, so an
            # interrupt landing on it would leave the guard held for good.
            self._open_in_core(run, prompt, attempt_budget)
            self._end()
        self._flush()

    def _open_in_core(self, run: RequestRun, prompt: int, attempt_budget: int | None) -> None:
        # Filed first, so the actions the start causes reach it; a refused
        # start (a request id already live) must give the id back to its owner.
        previous = self._runs.get(run.request_id)
        self._runs[run.request_id] = run
        try:
            self._feed(
                RequestStarted(
                    at=self._read_clock(),
                    request_id=run.request_id,
                    prompt_tokens=prompt,
                    attempt_budget=attempt_budget,
                )
            )
        except InvalidEvent:
            # Refused before anything changed in the core.
            if previous is None:
                del self._runs[run.request_id]
            else:
                self._runs[run.request_id] = previous
            self._end()
            raise
        total = self._balancer.config.settings.deadline_ms
        if total is not None:
            run.expires_at = self._now + total

    def next_step(self, run: RequestRun) -> Step:
        """What ``run``'s loop must do now, given everything the core decided.

        Time passes first: an attempt whose first-chunk deadline passed before
        the loop came for it (a busy machine, a loop late from a retry delay)
        is cancelled by the core here, and never sent. This also reads the
        clock, so the attempt's idle timer starts now, not when the core
        started it.
        """
        with self._guard:
            self._begin()
            self._catch_up()
            step = self._step_of(run)
            self._end()
        self._flush()
        if step is None:
            raise RuntimeError(_NO_STEP.format(rid=run.request_id))
        return step

    def _step_of(self, run: RequestRun) -> Step | None:
        if run.finished:
            run.inbox.clear()
            return Finished()
        while run.inbox:
            action = run.inbox.popleft()
            if isinstance(action, RetryScheduled):
                run.retry_due = action.due
                continue
            if isinstance(action, CompressPrompt):
                return Compress(action)
            run.retry_due = None
            timer = AttemptTimer(
                self.config.idle_timeout_ms, self._now, action.first_chunk_deadline
            )
            run.attempt = Attempt(start=action, target=self._targets[action.backend], timer=timer)
            return Send(run.attempt)
        if run.retry_due is not None:
            return Wait(run.retry_due)
        if run.queued:
            return Queued(run.queued_until)
        return None

    def wait_for_news(self, run: RequestRun, wake: Callable[[], None]) -> bool:
        """Have ``wake`` called when the core dispatches or ends the queued ``run``.

        False when there is news already (it came between :meth:`next_step`
        and this call): ask for the next step at once. Checked and installed
        under the guard, where the news is filed, so no wake-up is lost.
        """
        with self._guard:
            self._begin()
            self._catch_up()
            news = run.finished or bool(run.inbox) or not run.queued
            if not news:
                run.on_news = wake
            self._end()
        self._flush()
        return not news

    def abandon(self, run: RequestRun) -> None:
        """Cancel ``run`` at the next call that takes the guard.

        For finalizers: the garbage collector may run one while this very
        thread holds the guard, where cancelling at once would deadlock.
        Appending to a deque takes no lock.
        """
        self._abandoned.append(run)

    def cancel(self, run: RequestRun) -> None:
        """The caller gave up: tell the core, unless the request already ended.

        Also called from a dropped stream's generator as the collector
        finalizes it, which may happen inside a guarded section of this very
        thread: then the cancel waits for the next guarded call, like
        :meth:`abandon`.
        """
        if run.finished:
            # Set once, under the guard, never unset: an ended request needs no
            # guarded section (every request's stream calls this as it closes).
            return
        if self._owner == threading.get_ident() and self._guard.locked():
            self._abandoned.append(run)
            return
        with self._guard:
            self._begin()
            if not run.finished and run.request_id in self._runs:
                self._feed(RequestCancelled(at=self._read_clock(), request_id=run.request_id))
            self._end()
        self._flush()

    # -- time -----------------------------------------------------------------

    def now(self) -> int:
        """The client's clock in milliseconds (for waits; events use the guarded reading)."""
        return self._clock() - self._epoch

    def tick(self) -> None:
        """Let the core act on every deadline that has passed."""
        with self._guard:
            self._begin()
            self._catch_up()
            self._end()
        self._flush()

    def wait_limit(self, run: RequestRun, attempt: Attempt) -> float:
        """Seconds ``attempt`` may wait for the next piece before a deadline passes.

        The earlier of the core's first-chunk deadline (until the first chunk)
        and the transport's idle timeout, and of the core's total and idle
        deadlines (spec/behaviour.md §22), which only a tick can fire: waking
        for them lets the core cancel on time. One millisecond is added so that
        on waking the deadline has surely passed on the millisecond clock.
        """
        # No guard: only this attempt's own loop moves its progress, the core's
        # settings are frozen, and a fresh clock reading is never earlier than
        # one the core has seen.
        due = attempt.timer.due()
        if run.expires_at is not None:
            due = min(due, run.expires_at)
        # The core's own idle timeout (spec/behaviour.md §22) must be ticked on time too.
        core_idle = self._balancer.config.settings.idle_timeout_ms
        answered_at = attempt.timer.answered_at
        if core_idle is not None and answered_at is not None:
            due = min(due, answered_at + core_idle)
        return max(0.0, (due - self.now() + 1) / 1000)

    def resumed(self, attempt: Attempt) -> None:
        """The caller took the chunks it was given and asks for more: waiting starts now.

        The idle timeout measures how long the backend keeps the client waiting,
        not how long the caller spends on each chunk. Only the attempt's own loop
        calls this, so no guard is needed.
        """
        attempt.timer.progressed(self.now())

    def expire(self, run: RequestRun, attempt: Attempt, phase: TimeoutPhase) -> None:
        """A wait for ``attempt`` ran out (its connection is being closed): report it.

        A passed first-chunk deadline is the core's to act on: the tick makes
        it cancel the attempt. Otherwise the transport's own timer fired.
        """
        with self._guard:
            self._begin()
            if self._ending(run, attempt):
                self._feed(
                    AttemptTimedOut(
                        at=self._now, request_id=run.request_id, attempt=attempt.number, phase=phase
                    )
                )
            self._end()
        self._flush()

    # -- leaving the process ---------------------------------------------------

    def held(self, run: RequestRun, attempt: Attempt) -> bool:
        """``attempt`` waits for a local connection slot: its deadline stops.

        Returns False if the core no longer wants the attempt.
        """
        with self._guard:
            self._begin()
            wanted = self._still_wanted(run, attempt)
            if wanted:
                self._feed(
                    AttemptHeld(
                        at=self._read_clock(), request_id=run.request_id, attempt=attempt.number
                    )
                )
                attempt.timer.held()
                attempt.held = True
            self._end()
        self._flush()
        return wanted

    def sent(self, run: RequestRun, attempt: Attempt) -> None:
        """``attempt``'s request was written: its first-chunk deadline counts from now.

        Only worth telling the core when it has a deadline to move or the
        attempt is held; otherwise nothing would change.
        """
        # Once per attempt: a retry after a stale connection keeps the first send's clock.
        if attempt.sent:
            return
        attempt.sent = True
        if attempt.start.first_chunk_deadline is None and not attempt.held:
            return
        with self._guard:
            self._begin()
            if self._still_wanted(run, attempt):
                self._feed(
                    AttemptSent(
                        at=self._read_clock(), request_id=run.request_id, attempt=attempt.number
                    )
                )
                attempt.held = False
                # The idle timer, too, starts with the send, not the dispatch.
                attempt.timer.progressed(self._now)
            self._end()
        self._flush()

    def saturated(self, run: RequestRun, attempt: Attempt, limit: int) -> None:
        """The held ``attempt`` got no connection slot in time; nothing was sent."""
        with self._guard:
            self._begin()
            if self._ending(run, attempt):
                self._feed(
                    SlotTimedOut(
                        at=self._read_clock(),
                        request_id=run.request_id,
                        attempt=attempt.number,
                        limit=limit,
                    )
                )
            self._end()
        self._flush()

    # -- news of an attempt ---------------------------------------------------

    def deliver(self, run: RequestRun, attempt: Attempt, chunks: list[Chunk]) -> list[Chunk]:
        """Report ``chunks`` to the core; returns those the caller may see.

        None, if the core had already given up on the attempt.
        """
        if not chunks:
            return chunks
        # The hot path, once per piece of every answer: one clock reading
        # serves the batch, and the events are built without _feed.
        with self._guard:
            self._begin()
            wanted = self._still_wanted(run, attempt)
            if wanted:
                at, rid, number = self._now, run.request_id, attempt.number
                for _ in chunks:
                    actions = self._handle(ChunkReceived(at=at, request_id=rid, attempt=number))
                    if actions:
                        self._file(actions, rid)
                attempt.chunks += len(chunks)
                attempt.timer.answered(at)
            self._end()
        self._flush()
        return chunks if wanted else []

    def finish(self, run: RequestRun, attempt: Attempt, ending: Ending) -> None:
        """Report how ``attempt`` ended (its answer completed, or it failed)."""
        with self._guard:
            self._begin()
            if self._ending(run, attempt):
                self._feed(self._ending_event(run, attempt, ending))
            self._end()
        self._flush()

    def _ending_event(self, run: RequestRun, attempt: Attempt, ending: Ending) -> Event:
        if isinstance(ending, Succeeded):
            usage = ending.usage
            return AttemptSucceeded(
                at=self._now,
                request_id=run.request_id,
                attempt=attempt.number,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
            )
        failure: Failure = ending.failure
        return AttemptFailed(
            at=self._now, request_id=run.request_id, attempt=attempt.number, failure=failure
        )

    def compressed(self, run: RequestRun, tokens: int | None, error: str | None) -> None:
        """Report the compress hook's outcome for the backend the core asked about.

        Dropped if the request ended meanwhile (cancelled, or its deadline
        passed while the hook ran): the core no longer waits for it.
        """
        with self._guard:
            self._begin()
            self._catch_up()
            if not run.finished and run.request_id in self._runs:
                self._feed(
                    PromptCompressed(
                        at=self._read_clock(),
                        request_id=run.request_id,
                        prompt_tokens=tokens,
                        error=error,
                    )
                )
            self._end()
        self._flush()

    # -- shared state ------------------------------------------------------------

    def attach_outlet(self, outlet: Callable[[Action], None]) -> None:
        """Send the core's actions for other processes to ``outlet`` (which must not block)."""
        self._outlet = outlet

    def peer(self, build: Callable[[int], Event]) -> None:
        """Feed news from other processes, built at the guarded clock reading.

        From the carrier's own thread. An event the core refuses (a backend
        this config lacks slipped through, say) is dropped: a peer's word is
        never worth a failed request.
        """
        with self._guard:
            self._begin()
            # No catch-up Tick here: its actions could wake an async request's
            # task from this foreign thread. Peer news concerns no request, so
            # due deadlines wait for the next call from the requests' side.
            with contextlib.suppress(InvalidEvent):
                self._feed(build(self._read_clock()))
            self._end()
        self._flush()

    # -- reading the core ------------------------------------------------------

    def read(self, what: Callable[[Balancer], _T]) -> _T:
        """``what(core)`` under the guard: for the read-outs that change nothing."""
        with self._guard:
            self._begin()
            self._catch_up()
            value = what(self._balancer)
            self._end()
        self._flush()
        return value

    def reset_failover_index(self) -> None:
        with self._guard:
            self._begin()
            self._feed(FailoverIndexReset(at=self._read_clock()))
            self._end()
        self._flush()

    def stats(self) -> Stats:
        with self._guard:
            self._begin()
            stats = self._balancer.stats()
            self._end()
        self._flush()
        return stats

    def reset_stats(self) -> None:
        with self._guard:
            self._begin()
            self._feed(StatsReset(at=self._balancer.now))
            self._end()
        self._flush()

    # -- inside the guard ----------------------------------------------------

    def _begin(self) -> None:
        """First thing under the guard: repair what an interrupt left, then raise the flag."""
        self._owner = threading.get_ident()
        if self._damaged:
            self._recover()
        journal = self._journal
        if len(journal.events) >= _EVENTS_PER_COPY + 8 * len(self._runs):
            # One statement: the copy and its (empty) event list replace the old pair together.
            self._journal = _Journal(copy.deepcopy(self._balancer))
        self._damaged = True
        if self._abandoned:
            self._drain_abandoned()

    def _end(self) -> None:
        """Last thing under the guard: everything the section changed is consistent again."""
        self._damaged = False
        self._owner = None

    def _recover(self) -> None:
        """Rebuild the core after an interrupt, and end every request still open.

        The rebuilt core has taken every event the broken one was given
        (refused ones change nothing), so it is the core the trace describes;
        the steps it made that the trace queue lacks are queued now. The open
        requests end (the interrupted one as cancelled, others with
        :class:`RequestInterruptedError`): news meant for them may have been lost.
        """
        journal = self._journal
        if journal.base is None:
            core = Balancer(self._balancer_config, record=self._trace is not None)
        else:
            core = copy.deepcopy(journal.base)
        accepted: list[Event] = []
        for event in journal.events:
            try:
                core.handle(event)
            except InvalidEvent:
                continue
            accepted.append(event)
        self._balancer = core
        self._journal = _Journal(journal.base, accepted)
        if self._trace is not None:
            queued = self._written + len(self._pending)
            for step in core.take_steps():
                if step.seq > queued:
                    self._pending.append(encode_line(step))
        for run in list(self._runs.values()):
            run.interrupted()
            # Refused if it had ended in the core: that news was what got lost.
            with contextlib.suppress(InvalidEvent):
                self._feed(RequestCancelled(at=self._read_clock(), request_id=run.request_id))
        self._runs.clear()
        self._damaged = False

    def _drain_abandoned(self) -> None:
        while self._abandoned:
            run = self._abandoned.popleft()
            if not run.finished and run.request_id in self._runs:
                self._feed(RequestCancelled(at=self._read_clock(), request_id=run.request_id))

    def _read_clock(self) -> int:
        # Threads read the clock in any order; the core needs time never to go back.
        now = self._clock() - self._epoch
        self._now = max(self._now, now)
        return self._now

    def _still_wanted(self, run: RequestRun, attempt: Attempt) -> bool:
        """Let due deadlines act first, then say whether the core still wants news of it."""
        self._catch_up()
        if run.attempt_is_live(attempt):
            return True
        attempt.over = True
        return False

    def _ending(self, run: RequestRun, attempt: Attempt) -> bool:
        """Like :meth:`_still_wanted`, for news that ends the attempt either way."""
        wanted = self._still_wanted(run, attempt)
        attempt.over = True
        return wanted

    def _catch_up(self) -> None:
        now = self._read_clock()
        deadline = self._balancer.next_deadline()
        if deadline is not None and deadline <= now:
            self._feed(Tick(at=now))

    def _feed(self, event: Event) -> None:
        self._file(self._handle(event), getattr(event, "request_id", None))

    def _handle(self, event: Event) -> list[Action]:
        """The core's ``handle``, with the event journaled first and its step queued."""
        events = self._journal.events
        # Journaled before the core sees it: an interrupt inside handle() leaves
        # it for the rebuild to replay (a refused event replays as refused).
        events.append(event)
        try:
            actions = self._balancer.handle(event)
        except InvalidEvent:
            events.pop()
            raise
        if self._trace is not None:
            for step in self._balancer.take_steps():
                self._pending.append(encode_line(step))
        return actions

    def _file(self, actions: list[Action], cause: str | None) -> None:
        """Give each action to the run it concerns (and queue it for the observers,
        with ``cause``, the id of the request whose event it answers)."""
        if self._observers is not None:
            self._observers.offer(self._now, self._profile, actions, cause)
        for action in actions:
            rid = getattr(action, "request_id", None)
            run = self._runs.get(rid) if rid is not None else None
            if run is None:
                if rid is None and action.performs_io and self._outlet is not None:
                    self._outlet(action)
                continue
            run.accept(action)
            if run.finished:
                del self._runs[rid]  # type: ignore[arg-type]

    # -- the trace -------------------------------------------------------------

    def _flush(self) -> None:
        """Write the queued trace lines, in order, outside the guard; then tell the observers."""
        if self._pending:
            with self._trace_lock:
                self._write_pending()
        if self._observers is not None:
            self._observers.deliver()

    def _write_pending(self) -> None:
        trace = self._trace
        assert trace is not None
        if trace.closed:
            # The client was closed under requests still running: what they
            # decide from now on is not recorded (spec/transports.md section 5).
            self._pending.clear()
            return
        while self._pending:
            # Pop, write and count in one statement: an interrupt lands before
            # or after all three, so the count the rebuild relies on holds.
            self._written += bool(trace.write(self._pending.popleft() + b"\n")) or 1
        trace.flush()

    def close_trace(self, trace: IO[bytes]) -> None:
        """Write what is queued, then close ``trace``, under the trace lock."""
        with self._trace_lock:
            if self._pending and not trace.closed:
                self._write_pending()
            trace.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """A guarded section for tests that enter one from outside."""
        with self._guard:
            self._begin()
            yield
            self._end()
