"""One request's decisions told in sentences: the answer to "why did r7 go to c?".

:func:`explain` in ``_explain.py`` prints every step as a table row; this module
reads the same steps and writes prose a person can follow without knowing the
event vocabulary, ending with a one-line answer to why the request ended where
it did. It is pure: a trace in, text out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._actions import (
    Action,
    CancelAttempt,
    CancelReason,
    CloseBreaker,
    CompressPrompt,
    FailOver,
    FailoverReason,
    FirstChunkDue,
    HalfOpenBreaker,
    RequestAborted,
    RequestCompleted,
    RequestFailed,
    RetryScheduled,
    SelectionChanged,
    SkipBackend,
    SkipReason,
    StartAttempt,
    TripBreaker,
)
from ._events import (
    AttemptFailed,
    AttemptHeld,
    AttemptSent,
    AttemptSucceeded,
    AttemptTimedOut,
    ChunkReceived,
    Event,
    PromptCompressed,
    RequestCancelled,
    RequestStarted,
    SlotTimedOut,
)
from ._explain import describe_action, describe_event
from ._failure import Failure
from ._text import truncate
from ._trace import Step, TraceHeader

__all__ = ("request_ids", "tell")

_SKIP_WHY = {
    SkipReason.BREAKER_OPEN: "its circuit breaker was open",
    SkipReason.TPM_BELOW_THRESHOLD: "its tokens per minute were below the configured floor",
    SkipReason.CONTEXT_LIMIT: "the prompt does not fit its context window",
    SkipReason.COOLING_DOWN: "it had asked for a pause (Retry-After) that was still running",
}
_FAILOVER_WHY = {
    FailoverReason.IMMEDIATE: "the failure was an authorisation error, which retrying cannot fix",
    FailoverReason.RETRIES_EXHAUSTED: "its same-backend retries were used up",
    FailoverReason.NOT_RETRYABLE: "the failure does not allow a retry on the same backend",
    FailoverReason.BREAKER_OPENED: "its breaker opened while the request waited to retry there",
    FailoverReason.SETUP: "the attempt could not be prepared",
    FailoverReason.PAST_DEADLINE: "a retry there would have waited past the request's deadline",
}


def _failure_text(failure: Failure) -> str:
    status = f" (HTTP {failure.status})" if failure.status is not None else ""
    return f"{failure.kind}{status}: {truncate(failure.message, 120)!r}"


@dataclass
class _Teller:
    """Sentences for one request, with what later sentences need to remember."""

    request_id: str
    sentences: list[str] = field(default_factory=list)
    #: attempt number -> (backend, when it started)
    attempts: dict[int, tuple[str, int]] = field(default_factory=dict)
    chunks: dict[int, int] = field(default_factory=dict)
    #: backend -> why the request did not end there, in the order it happened
    passed_over: dict[str, str] = field(default_factory=dict)
    arrived: int | None = None
    outcome: str | None = None
    served_by: str | None = None

    def say(self, text: str) -> None:
        self.sentences.append(text)

    def backend_of(self, attempt: int) -> str:
        return self.attempts.get(attempt, ("an unknown backend", 0))[0]

    def flush_chunks(self, attempt: int) -> None:
        """Report the chunks after the first one once, when the attempt ends."""
        later = self.chunks.get(attempt, 0) - 1
        if later > 0:
            self.say(f"{later} more chunk{'s' if later != 1 else ''} followed.")

    def attempt_ended(self, attempt: int, why: str, sentence: str, at: int) -> None:
        """An attempt that failed: remembered for the summary, then told."""
        self.flush_chunks(attempt)
        backend = self.backend_of(attempt)
        self.passed_over[backend] = why
        self.say(f"At {at} ms attempt #{attempt} on {backend} {sentence}.")

    def event(self, event: Event) -> None:
        at = event.at
        if isinstance(event, RequestStarted):
            self.arrived = at
            extras = []
            if event.prompt_tokens is not None:
                extras.append(f"a prompt of about {event.prompt_tokens} tokens")
            if event.attempt_budget is not None:
                extras.append(f"a budget of {event.attempt_budget} attempts")
            self.say(
                f"At {at} ms request {self.request_id} arrived"
                + (f" with {' and '.join(extras)}." if extras else ".")
            )
        elif isinstance(event, ChunkReceived):
            count = self.chunks.get(event.attempt, 0) + 1
            self.chunks[event.attempt] = count
            if count == 1:
                backend, started = self.attempts.get(event.attempt, ("?", at))
                self.say(
                    f"At {at} ms the first chunk came from {backend}, "
                    f"{at - started} ms after attempt #{event.attempt} began."
                )
        elif isinstance(event, AttemptSucceeded):
            self.flush_chunks(event.attempt)
            self.say(
                f"At {at} ms {self.backend_of(event.attempt)} finished the answer "
                f"({event.input_tokens} tokens in, {event.output_tokens} out)."
            )
        elif isinstance(event, AttemptFailed):
            text = _failure_text(event.failure)
            self.attempt_ended(event.attempt, f"failed with {text}", f"failed with {text}", at)
        elif isinstance(event, AttemptTimedOut):
            self.attempt_ended(
                event.attempt,
                f"timed out ({event.phase})",
                f"timed out in the transport ({event.phase})",
                at,
            )
        elif isinstance(event, AttemptHeld):
            self.say(
                f"At {at} ms attempt #{event.attempt} waited for a free local connection to "
                f"{self.backend_of(event.attempt)}; its deadline stopped meanwhile."
            )
        elif isinstance(event, AttemptSent):
            self.say(f"At {at} ms attempt #{event.attempt} was sent.")
        elif isinstance(event, SlotTimedOut):
            self.say(
                f"At {at} ms attempt #{event.attempt} still had no local connection to "
                f"{self.backend_of(event.attempt)} (all {event.limit} in use), so it was "
                "never sent."
            )
        elif isinstance(event, RequestCancelled):
            self.say(f"At {at} ms the caller cancelled the request.")
        elif isinstance(event, PromptCompressed):
            if event.error is not None:
                self.say(f"At {at} ms shortening failed: {truncate(event.error, 120)}.")
            else:
                self.say(f"At {at} ms the shortened prompt came to {event.prompt_tokens} tokens.")
        else:
            self.say(f"At {at} ms: {describe_event(event)}.")

    def action(self, at: int, action: Action) -> None:
        if isinstance(action, SkipBackend):
            why = _SKIP_WHY.get(action.reason, str(action.reason))
            self.passed_over.setdefault(action.backend, f"skipped: {why}")
            self.say(f"The balancer skipped {action.backend}: {why} ({action.detail}).")
        elif isinstance(action, StartAttempt):
            self.attempts[action.attempt] = (action.backend, at)
            details = [f"model {action.model}"] if action.model else []
            if action.first_chunk_deadline is not None:
                details.append(f"first chunk due by {action.first_chunk_deadline} ms")
            probe = " as the single trial its half-open breaker allows" if action.probe else ""
            self.say(
                f"It dispatched attempt #{action.attempt} to {action.backend}{probe}"
                + (f" ({', '.join(details)})." if details else ".")
            )
        elif isinstance(action, CancelAttempt):
            self.flush_chunks(action.attempt)
            if action.reason == CancelReason.FIRST_CHUNK_TIMEOUT:
                self.passed_over[action.backend] = "no first chunk before the deadline"
                self.say(
                    f"At {at} ms no chunk had come from {action.backend} by the deadline, "
                    f"so attempt #{action.attempt} was cancelled."
                )
            elif action.reason == CancelReason.DEADLINE:
                self.say(
                    f"At {at} ms the request's total deadline passed, "
                    f"so attempt #{action.attempt} on {action.backend} was cancelled."
                )
            elif action.reason == CancelReason.IDLE_TIMEOUT:
                self.say(
                    f"At {at} ms the stream from {action.backend} had been quiet for too long, "
                    f"so attempt #{action.attempt} was cancelled."
                )
            else:
                self.say(f"Attempt #{action.attempt} on {action.backend} was cancelled.")
        elif isinstance(action, FirstChunkDue):
            self.say(f"Its first chunk is now due by {action.due} ms.")
        elif isinstance(action, RetryScheduled):
            self.say(
                f"It will try {action.backend} again at {action.due} ms "
                f"({action.due - at} ms later)."
            )
        elif isinstance(action, FailOver):
            why = _FAILOVER_WHY.get(action.reason, str(action.reason))
            self.say(
                f"It failed over from {action.from_backend} to {action.to_backend}, because {why}."
            )
        elif isinstance(action, TripBreaker):
            count = action.failures_in_window
            self.say(
                f"With {count} failure{'s' if count != 1 else ''} in the window, "
                f"{action.backend}'s breaker opened until {action.half_open_after} ms."
            )
        elif isinstance(action, HalfOpenBreaker):
            self.say(f"{action.backend}'s breaker became half-open: one trial may go through.")
        elif isinstance(action, CloseBreaker):
            self.say(f"{action.backend}'s breaker closed again.")
        elif isinstance(action, SelectionChanged):
            self.say(f"The backend in use became {action.backend}.")
        elif isinstance(action, CompressPrompt):
            self.say(
                f"The prompt ({action.tokens} tokens) does not fit {action.backend} "
                f"(limit {action.limit}), so the transport was asked to shorten it."
            )
        elif isinstance(action, RequestCompleted):
            took = f", {at - self.arrived} ms after it arrived" if self.arrived is not None else ""
            self.say(
                f"The request completed on {action.backend} with attempt #{action.attempt}{took}."
            )
            self.outcome = f"it completed on {action.backend}"
            self.served_by = action.backend
        elif isinstance(action, RequestFailed):
            error = action.error
            self.say(f"The request failed: {type(error).__name__}: {truncate(error.message, 200)}")
            self.outcome = f"it failed ({type(error).__name__})"
        elif isinstance(action, RequestAborted):
            self.say("Nothing was charged to any backend for the cancelled request.")
            self.outcome = "the caller cancelled it"
        else:
            self.say(f"The balancer decided: {describe_action(action)}.")

    def summary(self) -> str:
        if self.outcome is None:
            return f"In short: {self.request_id} had not ended when the trace stops."
        others = [
            f"{backend} {why}"
            for backend, why in self.passed_over.items()
            if backend != self.served_by
        ]
        because = f" after {'; '.join(others)}" if others else ""
        return f"In short: {self.outcome}{because}."


def _belongs(step: Step, request_id: str) -> bool:
    event_owner = getattr(step.event, "request_id", None)
    if event_owner is not None:
        return bool(event_owner == request_id)
    # A tick or a stats reset has no owner; it is this request's step when it
    # decided something for this request.
    return any(getattr(action, "request_id", None) == request_id for action in step.actions)


def request_ids(steps: Sequence[Step]) -> list[str]:
    """Every request the trace mentions, in the order each first appears."""
    seen: dict[str, None] = {}
    for step in steps:
        owner = getattr(step.event, "request_id", None)
        if owner is not None:
            seen.setdefault(owner, None)
    return list(seen)


def tell(header: TraceHeader, steps: Sequence[Step], request_id: str) -> str:
    """One request's story in sentences, ending with a one-line summary."""
    config = header.config
    teller = _Teller(request_id)
    for step in steps:
        if not _belongs(step, request_id):
            continue
        teller.event(step.event)
        for action in step.actions:
            owner = getattr(action, "request_id", request_id)
            if owner == request_id:
                teller.action(step.event.at, action)
    if not teller.sentences:
        return f"Request {request_id!r} does not appear in this trace."
    backends = ", ".join(b.name for b in config.backends)
    opening = f"Profile {config.profile_name!r} balances {config.strategy} over {backends}."
    return "\n".join([opening, *teller.sentences, teller.summary()])
