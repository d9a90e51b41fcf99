"""Callbacks that watch each decision as it is taken: the reference's lifecycle notifier.

The trace stays the record; observers are a live view of the same actions.
Actions are queued under the core's guard, in the order the core took them,
and handed to the callbacks outside it (by whichever thread or task made
them), so a callback may read the client (``stats()``, ``backend_states()``)
without deadlocking and never holds up the core. A callback that raises is
reported once, as an :class:`ObserverWarning`, and then quietly skipped for
that one decision each time it raises again: a watcher must never break the
request it watches.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from lbcore import (
    Action,
    CloseBreaker,
    CompressPrompt,
    FailOver,
    HalfOpenBreaker,
    RequestAborted,
    RequestCompleted,
    RequestFailed,
    SelectionChanged,
    SkipBackend,
    StartAttempt,
    TripBreaker,
    clean_text,
)

# Everything in __all__ is re-exported by lbtransports.
__all__ = ("Observation", "Observer", "ObserverWarning")

#: The decisions observers are told about, and what each is called.
_KINDS: Final[dict[type, str]] = {
    SelectionChanged: "selection",
    StartAttempt: "attempt_start",
    FailOver: "failover",
    SkipBackend: "skip",
    CompressPrompt: "compression",
    TripBreaker: "breaker",
    HalfOpenBreaker: "breaker",
    CloseBreaker: "breaker",
    RequestCompleted: "terminal",
    RequestFailed: "terminal",
    RequestAborted: "terminal",
}


class Observation(msgspec.Struct, frozen=True, kw_only=True):
    """One decision, as it was taken."""

    #: ``selection``, ``attempt_start``, ``failover``, ``skip``, ``compression``,
    #: ``breaker`` or ``terminal``.
    kind: str
    #: The client's clock (ms since it was made), as the trace has it.
    at: int
    #: The balancer that decided: the client's ``profile_name``, or a nested one's.
    profile_name: str
    #: The request it concerns; None for a breaker change.
    request_id: str | None
    #: The core's action itself, exactly as the trace records it.
    action: Action


Observer = Callable[[Observation], object]


class ObserverWarning(UserWarning):
    """An observer raised; it is reported once and never breaks a request."""


class Observers:
    """The callbacks of one client, and the decisions waiting to reach them."""

    def __init__(self, callbacks: Iterable[Observer] = ()) -> None:
        self._callbacks: list[Observer] = []
        self._complained: set[int] = set()
        self._pending: deque[Observation] = deque()
        self._delivering = threading.Lock()
        for callback in callbacks:
            self.add(callback)

    def add(self, callback: Observer) -> None:
        """Register ``callback``; one already registered (or equal, as a bound method
        of the same object is) is not added twice, so it hears each decision once."""
        if not callable(callback):
            raise TypeError(f"an observer must be callable, got {type(callback).__name__}")
        if not any(known is callback or known == callback for known in self._callbacks):
            self._callbacks.append(callback)

    def merged(self, other: Observers) -> Observers:
        """These callbacks and ``other``'s, each once (for a nested balancer's client)."""
        merged = Observers(self._callbacks)
        for callback in other._callbacks:
            merged.add(callback)
        return merged

    def __bool__(self) -> bool:
        return bool(self._callbacks)

    def offer(
        self, at: int, profile_name: str, actions: Iterable[Action], request_id: str | None
    ) -> None:
        """Queue the observable ``actions`` (called under the core's guard: no callback runs).

        ``request_id``: the request whose event caused them, for actions that name
        none of their own (a selection change); a breaker change stays None.
        """
        for action in actions:
            kind = _KINDS.get(type(action))
            if kind is not None:
                self._pending.append(
                    Observation(
                        kind=kind,
                        at=at,
                        profile_name=profile_name,
                        request_id=getattr(action, "request_id", None)
                        or (request_id if kind == "selection" else None),
                        action=action,
                    )
                )

    def deliver(self) -> None:
        """Hand every queued decision to every callback, in order (outside the guard).

        One deliverer at a time; another thread finding it busy leaves its
        decisions to it (the deliverer looks again after letting go), and a
        callback whose own call into the client ends here returns at once.
        """
        pending = self._pending
        while pending:
            if not self._delivering.acquire(blocking=False):
                return
            try:
                while pending:
                    observation = pending.popleft()
                    for callback in self._callbacks:
                        self._call(callback, observation)
            finally:
                self._delivering.release()

    def _call(self, callback: Observer, observation: Observation) -> None:
        try:
            callback(observation)
        except Exception as error:  # contained by design: see the module docstring
            if id(callback) in self._complained:
                return
            self._complained.add(id(callback))
            name = getattr(callback, "__qualname__", type(callback).__name__)
            # With warnings turned into errors the warning itself raises: contained too.
            with contextlib.suppress(Exception):
                warnings.warn(
                    ObserverWarning(
                        f"observer {clean_text(str(name), 64)} raised "
                        f"{type(error).__name__}: {clean_text(str(error), 200)}; "
                        "it is reported once and its later failures are ignored"
                    ),
                    stacklevel=2,
                )
