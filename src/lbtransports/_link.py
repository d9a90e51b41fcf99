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
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import IO, Final

from lbcore import (
    Action,
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    AttemptTimedOut,
    Balancer,
    ChunkReceived,
    Event,
    Failure,
    RequestCancelled,
    RequestStarted,
    RetryScheduled,
    SlotTimedOut,
    Stats,
    Tick,
    TimeoutPhase,
    encode_line,
)

from ._config import ClientConfig
from ._reader import Ending, Succeeded
from ._run import Attempt, Finished, Queued, RequestRun, Send, Step, Wait
from .wire import Chunk, estimate_tokens

__all__ = ("CoreLink", "monotonic_ms")

_NO_STEP: Final = "the core left request {rid} with nothing to do and no ending"


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
    ) -> None:
        self.config = config
        self._balancer = Balancer(config.balancer, record=trace is not None)
        self._guard = threading.Lock()
        #: The thread holding the guard, so that a finalizer that thread runs
        #: inside a guarded section can tell, and defer instead of deadlocking.
        self._owner: int | None = None
        # Trace lines are written in the order the core produced them, but
        # outside the core's guard: the writer takes this lock before letting
        # go of the guard (hand over hand), so order holds without file I/O
        # under the guard.
        self._trace_lock = threading.Lock()
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
        if trace is not None:
            self._write([encode_line(self._balancer.trace_header())])

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
        with self._locked() as lines:
            self._runs[run.request_id] = run
            try:
                self._feed(
                    lines,
                    lambda at: RequestStarted(
                        at=at,
                        request_id=run.request_id,
                        prompt_tokens=prompt,
                        attempt_budget=attempt_budget,
                    ),
                )
            except BaseException:
                del self._runs[run.request_id]
                raise

    def next_step(self, run: RequestRun) -> Step:
        """What ``run``'s loop must do now, given everything the core decided.

        Time passes first: an attempt whose first-chunk deadline passed before
        the loop came for it (a busy machine, a loop late from a retry delay)
        is cancelled by the core here, and never sent. This also reads the
        clock, so the attempt's idle timer starts now, not when the core
        started it.
        """
        with self._locked() as lines:
            self._catch_up(lines)
            if run.finished:
                run.inbox.clear()
                return Finished()
            while run.inbox:
                action = run.inbox.popleft()
                if isinstance(action, RetryScheduled):
                    run.retry_due = action.due
                    continue
                run.retry_due = None
                run.attempt = Attempt(
                    start=action, target=self._targets[action.backend], last_progress=self._now
                )
                return Send(run.attempt)
            if run.retry_due is not None:
                return Wait(run.retry_due)
            if run.queued:
                return Queued(run.queued_until)
        raise RuntimeError(_NO_STEP.format(rid=run.request_id))

    def wait_for_news(self, run: RequestRun, wake: Callable[[], None]) -> bool:
        """Have ``wake`` called when the core dispatches or ends the queued ``run``.

        False when there is news already (it came between :meth:`next_step`
        and this call): ask for the next step at once. Checked and installed
        under the guard, where the news is filed, so no wake-up is lost.
        """
        with self._locked() as lines:
            self._catch_up(lines)
            if run.finished or run.inbox or not run.queued:
                return False
            run.on_news = wake
            return True

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
        if self._owner == threading.get_ident():
            self._abandoned.append(run)
            return
        with self._locked() as lines:
            if not run.finished and run.request_id in self._runs:
                self._feed(lines, lambda at: RequestCancelled(at=at, request_id=run.request_id))

    # -- time -----------------------------------------------------------------

    def now(self) -> int:
        """The client's clock in milliseconds (for waits; events use the guarded reading)."""
        return self._clock() - self._epoch

    def tick(self) -> None:
        """Let the core act on every deadline that has passed."""
        with self._locked() as lines:
            self._catch_up(lines)

    def wait_limit(self, run: RequestRun, attempt: Attempt) -> float:
        """Seconds ``attempt`` may wait for the next piece before a deadline passes.

        The earlier of the core's first-chunk deadline (until the first chunk)
        and the transport's idle timeout. One millisecond is added so that on
        waking the deadline has surely passed on the millisecond clock.
        """
        # No guard: only this attempt's own loop moves its progress, and a fresh
        # clock reading is never earlier than one the core has seen.
        return max(0.0, (self._attempt_due(attempt) - self.now() + 1) / 1000)

    def resumed(self, attempt: Attempt) -> None:
        """The caller took the chunks it was given and asks for more: waiting starts now.

        The idle timeout measures how long the backend keeps the client waiting,
        not how long the caller spends on each chunk. Only the attempt's own loop
        calls this, so no guard is needed.
        """
        attempt.last_progress = max(attempt.last_progress, self.now())

    def expire(self, run: RequestRun, attempt: Attempt, phase: TimeoutPhase) -> None:
        """A wait for ``attempt`` ran out (its connection is being closed): report it.

        A passed first-chunk deadline is the core's to act on: the tick makes
        it cancel the attempt. Otherwise the transport's own timer fired.
        """
        with self._locked() as lines:
            if not self._ending(run, attempt, lines):
                return
            self._feed(
                lines,
                lambda at: AttemptTimedOut(
                    at=at, request_id=run.request_id, attempt=attempt.number, phase=phase
                ),
            )

    # -- leaving the process ---------------------------------------------------

    def held(self, run: RequestRun, attempt: Attempt) -> bool:
        """``attempt`` waits for a local connection slot: its deadline stops.

        Returns False if the core no longer wants the attempt.
        """
        with self._locked() as lines:
            if not self._still_wanted(run, attempt, lines):
                return False
            rid, number = run.request_id, attempt.number
            self._feed(lines, lambda at: AttemptHeld(at=at, request_id=rid, attempt=number))
            attempt.first_chunk_deadline = None
            attempt.held = True
            return True

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
        with self._locked() as lines:
            if not self._still_wanted(run, attempt, lines):
                return
            rid, number = run.request_id, attempt.number
            self._feed(lines, lambda at: AttemptSent(at=at, request_id=rid, attempt=number))
            attempt.held = False
            # The idle timer, too, starts with the send, not the dispatch.
            attempt.last_progress = max(attempt.last_progress, self._now)

    def saturated(self, run: RequestRun, attempt: Attempt, limit: int) -> None:
        """The held ``attempt`` got no connection slot in time; nothing was sent."""
        with self._locked() as lines:
            if not self._ending(run, attempt, lines):
                return
            rid, number = run.request_id, attempt.number
            self._feed(
                lines,
                lambda at: SlotTimedOut(at=at, request_id=rid, attempt=number, limit=limit),
            )

    # -- news of an attempt ---------------------------------------------------

    def deliver(self, run: RequestRun, attempt: Attempt, chunks: list[Chunk]) -> list[Chunk]:
        """Report ``chunks`` to the core; returns those the caller may see.

        None, if the core had already given up on the attempt.
        """
        if not chunks:
            return chunks
        # The hot path, once per piece of every answer: the guard is taken
        # without a context object, one clock reading serves the batch, and the
        # events are built without the _feed indirection.
        lines = self._enter()
        try:
            if not self._still_wanted(run, attempt, lines):
                return []
            at, rid, number = self._now, run.request_id, attempt.number
            handle = self._balancer.handle
            for _ in chunks:
                actions = handle(ChunkReceived(at=at, request_id=rid, attempt=number))
                if actions:
                    self._file(actions)
            self._take_trace(lines)
            attempt.chunks += len(chunks)
            attempt.last_progress = at
        finally:
            self._exit(lines)
        return chunks

    def finish(self, run: RequestRun, attempt: Attempt, ending: Ending) -> None:
        """Report how ``attempt`` ended (its answer completed, or it failed)."""
        with self._locked() as lines:
            if not self._ending(run, attempt, lines):
                return
            rid, number = run.request_id, attempt.number
            if isinstance(ending, Succeeded):
                usage = ending.usage
                self._feed(
                    lines,
                    lambda at: AttemptSucceeded(
                        at=at,
                        request_id=rid,
                        attempt=number,
                        input_tokens=usage.input_tokens,
                        output_tokens=usage.output_tokens,
                    ),
                )
            else:
                failure: Failure = ending.failure
                self._feed(
                    lines,
                    lambda at: AttemptFailed(
                        at=at, request_id=rid, attempt=number, failure=failure
                    ),
                )

    # -- reading the core ------------------------------------------------------

    def stats(self) -> Stats:
        with self._locked():
            return self._balancer.stats()

    def reset_stats(self) -> None:
        with self._locked() as lines:
            self._route(self._balancer.reset_stats(), lines)

    # -- inside the guard ----------------------------------------------------

    def _drain_abandoned(self, lines: list[bytes]) -> None:
        while self._abandoned:
            run = self._abandoned.popleft()
            if not run.finished and run.request_id in self._runs:
                event = RequestCancelled(at=self._read_clock(), request_id=run.request_id)
                self._route(self._balancer.handle(event), lines)

    def _read_clock(self) -> int:
        # Threads read the clock in any order; the core needs time never to go back.
        now = self._clock() - self._epoch
        self._now = max(self._now, now)
        return self._now

    def _attempt_due(self, attempt: Attempt) -> int:
        due = attempt.last_progress + self.config.idle_timeout_ms
        deadline = attempt.first_chunk_deadline
        if attempt.chunks == 0 and deadline is not None:
            due = min(due, deadline)
        return due

    def _still_wanted(self, run: RequestRun, attempt: Attempt, lines: list[bytes]) -> bool:
        """Let due deadlines act first, then say whether the core still wants news of it."""
        self._catch_up(lines)
        if run.attempt_is_live(attempt):
            return True
        attempt.over = True
        return False

    def _ending(self, run: RequestRun, attempt: Attempt, lines: list[bytes]) -> bool:
        """Like :meth:`_still_wanted`, for news that ends the attempt either way."""
        wanted = self._still_wanted(run, attempt, lines)
        attempt.over = True
        return wanted

    def _catch_up(self, lines: list[bytes]) -> None:
        now = self._read_clock()
        deadline = self._balancer.next_deadline()
        if deadline is not None and deadline <= now:
            self._route(self._balancer.handle(Tick(at=now)), lines)

    def _feed(self, lines: list[bytes], event: Callable[[int], Event]) -> None:
        self._route(self._balancer.handle(event(self._read_clock())), lines)

    def _route(self, actions: Iterable[Action], lines: list[bytes]) -> None:
        self._file(actions)
        self._take_trace(lines)

    def _file(self, actions: Iterable[Action]) -> None:
        """Give each action to the run it concerns."""
        for action in actions:
            rid = getattr(action, "request_id", None)
            run = self._runs.get(rid) if rid is not None else None
            if run is None:
                continue
            run.accept(action)
            if run.finished:
                del self._runs[rid]  # type: ignore[arg-type]

    def _take_trace(self, lines: list[bytes]) -> None:
        if self._trace is not None:
            lines.extend(encode_line(step) for step in self._balancer.take_steps())

    def _locked(self) -> _Locked:
        return _Locked(self)

    def _enter(self) -> list[bytes]:
        """Take the guard; returns the list that collects trace lines until :meth:`_exit`."""
        lines: list[bytes] = []
        self._guard.acquire()
        # No line between the acquire and the try: an interrupt must not leave it held.
        try:
            self._owner = threading.get_ident()
            if self._abandoned:
                self._drain_abandoned(lines)
        except BaseException:
            self._owner = None
            self._guard.release()
            raise
        return lines

    def _exit(self, lines: list[bytes]) -> None:
        """Let go of the guard, then write ``lines`` to the trace, in order."""
        writing = False
        try:
            try:
                self._owner = None
                if lines and self._trace is not None:
                    # Hand over hand: take the trace lock before the guard is let go.
                    writing = self._trace_lock.acquire()
            finally:
                self._guard.release()
            if writing:
                self._write(lines)
        finally:
            if writing:
                self._trace_lock.release()

    def close_trace(self, trace: IO[bytes]) -> None:
        """Close ``trace`` once no stream is writing to it (under the trace lock)."""
        with self._trace_lock:
            trace.close()

    def _write(self, lines: list[bytes]) -> None:
        assert self._trace is not None
        if self._trace.closed:
            # The client was closed under requests still running: what they
            # decide from now on is not recorded (spec/transports.md section 5).
            return
        self._trace.write(b"".join(line + b"\n" for line in lines))
        self._trace.flush()


class _Locked:
    """``with link._locked() as lines:`` guard the core, then write its trace lines."""

    __slots__ = ("_lines", "_link")

    def __init__(self, link: CoreLink) -> None:
        self._link = link

    def __enter__(self) -> list[bytes]:
        self._lines = self._link._enter()
        return self._lines

    def __exit__(self, *exc: object) -> None:
        self._link._exit(self._lines)
