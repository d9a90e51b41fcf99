"""One request as a client sees it: its attempts, its mailbox, how it ended.

This is bookkeeping, not I/O. :class:`CoreLink` files the core's actions into
the run they concern (any request's clock tick can decide something for
another request), and the client's loop asks the run what to do next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from lbcore import (
    Action,
    CancelAttempt,
    CompressPrompt,
    FirstChunkDue,
    RequestAborted,
    RequestCompleted,
    RequestDequeued,
    RequestFailed,
    RequestQueued,
    RetryScheduled,
    StartAttempt,
)

from ._errors import LoadBalancerError, RequestInterruptedError, error_for
from ._timer import AttemptTimer
from ._upstream import Upstream
from .wire import BackendTarget, ChatRequest, HttpRequest

__all__ = ("Attempt", "Compress", "Finished", "Queued", "RequestRun", "Send", "Step", "Wait")


@dataclass(eq=False)
class Attempt:
    """One attempt the core started: where it goes and how far it got."""

    start: StartAttempt
    target: BackendTarget
    #: Its first-chunk deadline and idle timeout: how long a wait may last.
    timer: AttemptTimer
    http: HttpRequest | None = None
    chunks: int = 0
    #: The core no longer wants it (cancelled), or its ending was reported.
    over: bool = False
    #: Waiting for a local connection slot (reported to the core as held).
    held: bool = False
    #: Its request was written once (a stale connection's retry sends it again).
    sent: bool = False
    #: The core's attempt number (a plain field: it is read once per chunk).
    number: int = field(init=False)

    def __post_init__(self) -> None:
        self.number = self.start.attempt

    @property
    def backend(self) -> str:
        return self.start.backend


class Send(NamedTuple):
    """Prepare and send ``attempt``, then read its answer."""

    attempt: Attempt


class Wait(NamedTuple):
    """Nothing to do until the clock reaches ``until`` (a same-backend retry delay)."""

    until: int


class Queued(NamedTuple):
    """Every backend is full: wait for news (the core dispatches or ends the request),
    or until ``until`` (its queue timeout, then tick), whichever comes first."""

    until: int | None


class Compress(NamedTuple):
    """Shrink the original request for ``ask.backend`` and report its new size."""

    ask: CompressPrompt


class Finished(NamedTuple):
    """The request is over; see :attr:`RequestRun.completed` and :attr:`RequestRun.error`."""


Step = Send | Wait | Queued | Compress | Finished


@dataclass(eq=False)
class RequestRun:
    request_id: str
    chat: ChatRequest
    attempt_budget: int | None = None
    #: Actions that ask this request's loop to act, in the order the core gave them.
    inbox: deque[StartAttempt | RetryScheduled | CompressPrompt] = field(default_factory=deque)
    #: Every action the core took about this request, for callers who want the story.
    decisions: list[Action] = field(default_factory=list)
    attempt: Attempt | None = None
    retry_due: int | None = None
    #: When the core's total deadline (``deadline_ms``) ends the request, if it has one.
    expires_at: int | None = None
    completed: RequestCompleted | None = None
    error: LoadBalancerError | RequestInterruptedError | None = None
    aborted: bool = False
    #: Waiting in the core's queue (RequestQueued, until RequestDequeued or the end).
    queued: bool = False
    queued_until: int | None = None
    #: Wakes the loop waiting in the queue; set under the core's guard (see CoreLink.wait_for_news).
    on_news: Callable[[], None] | None = None
    #: The answering backend's own events, when the caller asked to keep them.
    upstream: Upstream | None = None
    #: Backend -> the request the compress hook shrank for it (each from ``chat``).
    compressed: dict[str, ChatRequest] = field(default_factory=dict)
    #: A nested balancer's own exception, raised as it is when it ended the request.
    nested_error: BaseException | None = None

    def request_for(self, backend: str) -> ChatRequest:
        """What to send to ``backend``: its compressed request, else the original."""
        return self.compressed.get(backend, self.chat)

    @property
    def finished(self) -> bool:
        return self.completed is not None or self.error is not None or self.aborted

    def accept(self, action: Action) -> None:
        """Take in an action about this request (called under the core's guard)."""
        self.decisions.append(action)
        if isinstance(action, StartAttempt | RetryScheduled | CompressPrompt):
            self.inbox.append(action)
            self._wake()
        elif isinstance(action, RequestQueued):
            self.queued, self.queued_until = True, action.due
        elif isinstance(action, RequestDequeued):
            self.queued, self.queued_until = False, None
        elif isinstance(action, FirstChunkDue):
            if self.attempt is not None and self.attempt.number == action.attempt:
                self.attempt.timer.first_chunk_due(action.due)
        elif isinstance(action, CancelAttempt):
            if self.attempt is not None and self.attempt.number == action.attempt:
                self.attempt.over = True
            else:
                # Started and given up (by another request's tick) before this
                # request's loop got to it: it must never be sent.
                self.inbox = deque(
                    waiting
                    for waiting in self.inbox
                    if not (isinstance(waiting, StartAttempt) and waiting.attempt == action.attempt)
                )
        elif isinstance(action, RequestCompleted | RequestFailed | RequestAborted):
            if isinstance(action, RequestCompleted):
                self.completed = action
            elif isinstance(action, RequestFailed):
                self.error = error_for(self.request_id, action.error)
            else:
                self.aborted = True
            self.queued = False
            # Once the request has ended, nothing about any attempt is news.
            if self.attempt is not None:
                self.attempt.over = True
            self._wake()

    def _wake(self) -> None:
        wake, self.on_news = self.on_news, None
        if wake is not None:
            wake()

    def interrupted(self) -> None:
        """The link rebuilt its core under this open request: it ends here."""
        if not self.finished:
            self.error = RequestInterruptedError(self.request_id)
        self.inbox.clear()
        if self.attempt is not None:
            self.attempt.over = True

    def attempt_is_live(self, attempt: Attempt) -> bool:
        """Whether news of ``attempt`` is still wanted by the core."""
        return self.attempt is attempt and not attempt.over
