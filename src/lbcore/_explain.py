"""Rendering a trace as readable per-request tables ("why did r7 go to c?")."""

from __future__ import annotations

from collections.abc import Sequence

from ._actions import (
    Action,
    CancelAttempt,
    CloseBreaker,
    CompressPrompt,
    CoolDown,
    FailOver,
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
    FailoverIndexReset,
    PromptCompressed,
    RequestCancelled,
    RequestStarted,
    SlotTimedOut,
    StatsReset,
    Tick,
)
from ._peer_records import (
    BreakerClosed,
    BreakerOpened,
    ClaimProbe,
    FailureSeen,
    PeerFact,
    PeerReport,
    ProbeClaimed,
    ProbeRefused,
    Publish,
    TokensUsed,
)
from ._text import truncate
from ._trace import Step, TraceHeader

__all__ = ("describe_action", "describe_event", "explain")


def describe_event(event: Event) -> str:
    if isinstance(event, RequestStarted):
        extras = []
        if event.prompt_tokens is not None:
            extras.append(f"prompt {event.prompt_tokens} tokens")
        if event.attempt_budget is not None:
            extras.append(f"budget {event.attempt_budget}")
        return "started" + (f" ({', '.join(extras)})" if extras else "")
    if isinstance(event, ChunkReceived):
        return f"chunk on #{event.attempt}"
    if isinstance(event, AttemptSucceeded):
        return f"#{event.attempt} ok ({event.input_tokens}+{event.output_tokens} tokens)"
    if isinstance(event, AttemptFailed):
        failure = event.failure
        status = f" {failure.status}" if failure.status is not None else ""
        return f"#{event.attempt} failed: {failure.kind}{status} {truncate(failure.message, 40)!r}"
    if isinstance(event, AttemptTimedOut):
        return f"#{event.attempt} transport timeout ({event.phase})"
    if isinstance(event, AttemptHeld):
        return f"#{event.attempt} held for a local connection"
    if isinstance(event, AttemptSent):
        return f"#{event.attempt} sent"
    if isinstance(event, SlotTimedOut):
        return f"#{event.attempt} got no local connection (limit {event.limit})"
    if isinstance(event, RequestCancelled):
        return "cancelled by caller"
    if isinstance(event, StatsReset):
        return "stats reset"
    if isinstance(event, PeerReport):
        facts = ", ".join(describe_fact(f) for f in event.facts)
        return truncate(f"peer {event.origin}#{event.seq}: {facts or 'nothing'}", 46)
    if isinstance(event, ProbeClaimed):
        return f"probe of {event.backend} claimed"
    if isinstance(event, ProbeRefused):
        return f"probe of {event.backend} held elsewhere"
    if isinstance(event, PromptCompressed):
        if event.error is not None:
            return f"compression failed: {truncate(event.error, 40)!r}"
        return f"compressed to {event.prompt_tokens} tokens"
    if isinstance(event, FailoverIndexReset):
        return "failover index reset"
    return "tick"


def describe_fact(fact: PeerFact) -> str:
    """A shared-state fact in a few words (spec §26.2)."""
    if isinstance(fact, FailureSeen):
        status = f" {fact.status}" if fact.status is not None else ""
        return f"{fact.backend} failed ({fact.kind}{status})"
    if isinstance(fact, BreakerOpened):
        return f"{fact.backend} breaker open for {fact.recovery_left_ms} ms"
    if isinstance(fact, BreakerClosed):
        return f"{fact.backend} breaker closed"
    if isinstance(fact, TokensUsed):
        return f"{fact.backend} used {fact.tokens} tokens"
    return f"{fact.backend} cools down for {fact.left_ms} ms"


def describe_action(action: Action) -> str:
    if isinstance(action, StartAttempt):
        deadline = (
            f", first chunk by {action.first_chunk_deadline}"
            if action.first_chunk_deadline is not None
            else ""
        )
        probe = ", half-open probe" if action.probe else ""
        return f"start #{action.attempt} on {action.backend}{deadline}{probe}"
    if isinstance(action, FirstChunkDue):
        return f"first chunk of #{action.attempt} by {action.due}"
    if isinstance(action, RetryScheduled):
        return f"retry {action.backend} at {action.due}"
    if isinstance(action, FailOver):
        status = f" {action.status}" if action.status is not None else ""
        return (
            f"fail over {action.from_backend} -> {action.to_backend} "
            f"({action.reason}: {action.failure_kind}{status})"
        )
    if isinstance(action, SkipBackend):
        return f"skip {action.backend} ({action.reason}: {action.detail})"
    if isinstance(action, CancelAttempt):
        return f"cancel #{action.attempt} on {action.backend} ({action.reason})"
    if isinstance(action, TripBreaker):
        return f"breaker {action.backend} open until {action.half_open_after}"
    if isinstance(action, HalfOpenBreaker):
        return f"breaker {action.backend} half-open"
    if isinstance(action, CloseBreaker):
        return f"breaker {action.backend} closed"
    if isinstance(action, CoolDown):
        return f"{action.backend} cools down until {action.until} (Retry-After)"
    if isinstance(action, SelectionChanged):
        return f"selected {action.backend}"
    if isinstance(action, CompressPrompt):
        return f"compress for {action.backend} ({action.tokens} tokens, limit {action.limit})"
    if isinstance(action, RequestCompleted):
        return f"COMPLETED on {action.backend}"
    if isinstance(action, RequestQueued):
        gives_up = f", gives up at {action.due}" if action.due is not None else ""
        names = ", ".join(action.waiting_for)
        return f"queued for {names} ({action.queued} waiting{gives_up})"
    if isinstance(action, RequestDequeued):
        return f"dequeued to {action.backend} after {action.waited_ms} ms"
    if isinstance(action, RequestFailed):
        return f"FAILED: {type(action.error).__name__}: {truncate(action.error.message, 160)}"
    if isinstance(action, RequestAborted):
        return "ABORTED"
    if isinstance(action, Publish):
        return "publish: " + ", ".join(describe_fact(f) for f in action.facts)
    if isinstance(action, ClaimProbe):
        return f"claim the probe of {action.backend}"
    # An action this describer has no words for yet still gets its name.
    return type(action).__name__


def _request_of(step: Step) -> str:
    event = step.event
    peer = PeerReport | ProbeClaimed | ProbeRefused
    if isinstance(event, Tick | StatsReset | FailoverIndexReset | peer):
        ids = {getattr(a, "request_id", None) for a in step.actions} - {None}
        return ", ".join(sorted(str(i) for i in ids)) or "-"
    return event.request_id


def explain(header: TraceHeader, steps: Sequence[Step], request_id: str | None = None) -> str:
    """A table per request: when, what happened, what the balancer decided."""
    config = header.config
    backends = ", ".join(b.name for b in config.backends)
    lines = [f"{config.strategy} over {backends} (profile {config.profile_name!r})"]
    order: list[str] = []
    rows: dict[str, list[str]] = {}
    for step in steps:
        owner = _request_of(step)
        if request_id is not None and request_id not in owner.split(", "):
            continue
        if owner not in rows:
            order.append(owner)
            rows[owner] = []
        decisions = "; ".join(describe_action(a) for a in step.actions) or "-"
        rows[owner].append(f"  {step.event.at:>8}  {describe_event(step.event):<46}  {decisions}")
    for owner in order:
        lines.append(f"request {owner}:")
        lines.append(f"  {'at (ms)':>8}  {'event':<46}  decisions")
        lines.extend(rows[owner])
    if request_id is not None and not order:
        lines.append(f"request {request_id!r} does not appear in this trace")
    return "\n".join(lines)
