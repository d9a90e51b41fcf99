"""Checking an event against the balancer's state before anything changes.

Every rule a caller can break is here, in the order it is checked, so the
balancer itself can assume a valid event. Nothing in this module mutates: a
refused event raises :class:`InvalidEvent` and leaves no trace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ._errors import InvalidEvent
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
from ._state import (
    ACCEPTED_EVENTS,
    ANSWER_EVENTS,
    SENDING_EVENTS,
    SENDING_RULES,
    LiveRequest,
    Phase,
    Sending,
)
from ._text import clean_text, truncate

__all__ = ("MAX_COUNT", "check_event", "check_start", "check_time", "is_count")

_EVENT_TYPES: Final = frozenset(
    {
        RequestStarted,
        ChunkReceived,
        AttemptSucceeded,
        AttemptFailed,
        AttemptTimedOut,
        AttemptHeld,
        AttemptSent,
        SlotTimedOut,
        RequestCancelled,
        Tick,
        StatsReset,
        PromptCompressed,
        FailoverIndexReset,
    }
)
_TIMEOUT_PHASES: Final = tuple(TimeoutPhase)
# Module constants: much faster to read than the enum class's attribute.
_CONNECTING: Final = Phase.CONNECTING
_HELD: Final = Sending.HELD


def _show_id(request_id: object) -> str:
    return repr(clean_text(str(request_id), 64))


#: The largest count an event may carry: the largest integer a JSON number (a
#: trace line, a peer's report) holds exactly. spec/wire.md refuses larger ones
#: from backends; another frontend must not poison stats() with 10**400 either.
MAX_COUNT: Final = 2**53 - 1


def is_count(value: object) -> bool:
    """A non-negative int (not a bool) of at most MAX_COUNT."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def check_event(
    kind: type,
    event: Event,
    now: int,
    live: Mapping[str, LiveRequest],
    finished: Mapping[str, None],
) -> None:
    """Raise :class:`InvalidEvent` unless ``event`` (of exact type ``kind``) can be handled.

    ``live`` maps request ids in flight to their state; ``finished`` holds the
    recently finished ids, to tell a late event from an unknown one.
    """
    if kind not in _EVENT_TYPES:
        raise InvalidEvent(f"not an lbcore event: {kind.__name__}")
    check_time(kind.__name__, event.at, now)
    if kind is Tick or kind is StatsReset or kind is FailoverIndexReset:
        return
    if kind is RequestStarted:
        check_start(event, live, finished)  # type: ignore[arg-type]
        return
    request_id = event.request_id  # type: ignore[union-attr]
    request = live.get(request_id) if isinstance(request_id, str) else None
    if request is None:
        if not isinstance(request_id, str) or not request_id:
            raise InvalidEvent(f"{kind.__name__}.request_id must be a non-empty string")
        state = "has already finished" if request_id in finished else "is unknown"
        raise InvalidEvent(f"can't handle {kind.__name__}: request {_show_id(request_id)} {state}")
    if kind not in ACCEPTED_EVENTS[request.phase]:
        raise InvalidEvent(
            f"can't handle {kind.__name__} for request {_show_id(request_id)} in phase "
            f"{request.phase}: "
            + (
                "no compression was asked for"
                if kind is PromptCompressed
                else "its attempt is already answering"
                if request.phase is Phase.STREAMING
                else "no attempt is in flight"
            )
        )
    if kind is RequestCancelled:
        return
    if kind is PromptCompressed:
        _check_compressed(event)  # type: ignore[arg-type]
        return
    attempt = event.attempt  # type: ignore[union-attr]
    if type(attempt) is not int:
        # True == 1 and 1.0 == 1: without this, a wrong type would read as a stale number.
        raise InvalidEvent(
            f"{kind.__name__}.attempt has the wrong type: {type(attempt).__name__} "
            f"{truncate(repr(attempt), 40)} (must be an int)"
        )
    if attempt != request.attempt:
        raise InvalidEvent(
            f"stale attempt {attempt!r} for request {_show_id(request_id)}: "
            f"the current attempt is {request.attempt}"
        )
    if kind is AttemptSucceeded:
        tokens_in, tokens_out = event.input_tokens, event.output_tokens  # type: ignore[union-attr]
        # Plain ints first: the common case needs no call.
        if not (
            (type(tokens_in) is int and 0 <= tokens_in <= MAX_COUNT) or is_count(tokens_in)
        ) or not (
            (type(tokens_out) is int and 0 <= tokens_out <= MAX_COUNT) or is_count(tokens_out)
        ):
            raise InvalidEvent(
                "AttemptSucceeded token counts must be non-negative integers of at most 2**53 - 1"
            )
    elif kind is AttemptFailed:
        failure = event.failure  # type: ignore[union-attr]
        if not isinstance(failure, Failure):
            raise InvalidEvent("AttemptFailed.failure must be a Failure")
        if failure.kind == FailureKind.CONTEXT_LIMIT:
            raise InvalidEvent("context_limit failures are decided by the core, not reported")
    elif kind is AttemptTimedOut and event.phase not in _TIMEOUT_PHASES:  # type: ignore[union-attr]
        raise InvalidEvent(f"AttemptTimedOut.phase must be one of {list(_TIMEOUT_PHASES)}")
    # Last, as spec/behaviour.md section 3.4 lists it.
    if request.phase is _CONNECTING:
        _check_sending(kind, event, request)


def _check_sending(kind: type, event: Event, request: LiveRequest) -> None:
    stage = request.sending
    if kind in SENDING_EVENTS and kind not in SENDING_RULES[stage]:
        state = f"is {stage}, not held" if kind is SlotTimedOut else f"is already {stage}"
        raise InvalidEvent(
            f"can't handle {kind.__name__} for request {_show_id(request.request_id)}: "
            f"its attempt {request.attempt} {state}"
        )
    if kind in ANSWER_EVENTS and stage is _HELD:
        raise InvalidEvent(
            f"can't handle {kind.__name__} for request {_show_id(request.request_id)}: "
            f"its attempt {request.attempt} is held and was never sent"
        )
    if kind is SlotTimedOut:
        limit = event.limit  # type: ignore[union-attr]
        if type(limit) is not int or limit < 1:
            raise InvalidEvent("SlotTimedOut.limit must be a positive integer")


def _check_compressed(event: PromptCompressed) -> None:
    tokens, error = event.prompt_tokens, event.error
    if (tokens is None) == (error is None):
        raise InvalidEvent("PromptCompressed needs exactly one of prompt_tokens and error")
    if tokens is not None and not is_count(tokens):
        raise InvalidEvent(
            "PromptCompressed.prompt_tokens must be a non-negative integer of at most 2**53 - 1"
        )
    if error is not None and not isinstance(error, str):
        raise InvalidEvent("PromptCompressed.error must be a string")


def check_start(
    event: RequestStarted, live: Mapping[str, LiveRequest], finished: Mapping[str, None]
) -> None:
    request_id = event.request_id
    if not isinstance(request_id, str) or not request_id:
        raise InvalidEvent("RequestStarted.request_id must be a non-empty string")
    if request_id in live or request_id in finished:
        raise InvalidEvent(f"duplicate request id {_show_id(request_id)}")
    # Plain ints first: the common case needs no call.
    tokens, budget = event.prompt_tokens, event.attempt_budget
    if tokens is not None and not (
        (type(tokens) is int and 0 <= tokens <= MAX_COUNT) or is_count(tokens)
    ):
        raise InvalidEvent(_START_COUNT.format("prompt_tokens"))
    if budget is not None and not (
        (type(budget) is int and 0 <= budget <= MAX_COUNT) or is_count(budget)
    ):
        raise InvalidEvent(_START_COUNT.format("attempt_budget"))


_START_COUNT: Final = "RequestStarted.{} must be a non-negative integer of at most 2**53 - 1"


def check_time(kind: str, at: object, now: int) -> None:
    """Raise InvalidEvent unless ``at`` is a time in ms no earlier than ``now``."""
    if type(at) is not int or at < 0:
        raise InvalidEvent(f"{kind}.at must be a non-negative integer of milliseconds")
    if at < now:
        raise InvalidEvent(f"time went backwards: {kind} at {at} is before {now}")
