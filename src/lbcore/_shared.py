"""Shared state (spec/behaviour.md §26): what peers learnt comes in, what we learnt goes out.

The balancer keeps its breakers, TPM window and cooldowns; this module holds
the rules for changing them on a peer's word, for checking peer events, and
for collecting the facts worth publishing. One ``Publish`` per ``handle``
call carries them, so a burst of failures costs one message, not one each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from ._actions import Action, CloseBreaker, CoolDown, HalfOpenBreaker, TripBreaker
from ._breaker import Breaker, BreakerState
from ._config import BackendSpec, Settings
from ._cooldown import Cooldowns
from ._errors import InvalidEvent
from ._failure import Failure
from ._peer_records import (
    BreakerClosed,
    BreakerOpened,
    ClaimProbe,
    CooledDown,
    FailureSeen,
    PeerFact,
    PeerReport,
    ProbeClaimed,
    ProbeRefused,
    Publish,
    TokensUsed,
)
from ._tpm import TokenRate
from ._validate import check_time, is_count

__all__ = ("PEER_EVENTS", "Sharing")

PEER_EVENTS: Final = frozenset({PeerReport, ProbeClaimed, ProbeRefused})
_FACTS: Final = frozenset({FailureSeen, BreakerOpened, BreakerClosed, TokensUsed, CooledDown})
_LENGTHS: Final = ("age_ms", "recovery_left_ms", "left_ms", "tokens")


class Sharing:
    """The shared-state rules of one balancer, over its own breakers, TPM and cooldowns."""

    __slots__ = (
        "_breakers",
        "_breakers_on",
        "_cooldowns",
        "_honour_retry_after",
        "_index",
        "_names",
        "_settings",
        "_tpm",
        "outbox",
    )

    def __init__(
        self,
        backends: Sequence[BackendSpec],
        settings: Settings,
        *,
        breakers: dict[str, Breaker],
        breakers_on: bool,
        tpm: TokenRate,
        cooldowns: Cooldowns,
        honour_retry_after: bool,
    ) -> None:
        self._names = tuple(b.name for b in backends)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._settings = settings
        self._breakers = breakers
        self._breakers_on = breakers_on
        self._tpm = tpm
        self._cooldowns = cooldowns
        self._honour_retry_after = honour_retry_after
        #: Facts recorded during the current handle call, published at its end.
        self.outbox: list[PeerFact] = []

    # ------------------------------------------------------------ publishing

    def failure_recorded(self, backend: str, failure: Failure, tripped: bool, age: int) -> None:
        self.outbox.append(
            FailureSeen(backend=backend, kind=failure.kind, status=failure.status, age_ms=age)
        )
        if tripped:
            recovery = self._settings.circuit_breaker_recovery_timeout_ms
            self.outbox.append(BreakerOpened(backend=backend, recovery_left_ms=recovery))

    def closed(self, backend: str) -> None:
        self.outbox.append(BreakerClosed(backend=backend))

    def tokens(self, backend: str, tokens: int) -> None:
        self.outbox.append(TokensUsed(backend=backend, tokens=tokens))

    def cooled(self, backend: str, left: int, failure: Failure) -> None:
        self.outbox.append(CooledDown(backend=backend, left_ms=left, failure=failure))

    def flush(self, actions: list[Action]) -> None:
        """End of a handle call: one Publish with every fact it recorded."""
        if self.outbox:
            actions.append(Publish(facts=tuple(self.outbox)))
            self.outbox = []

    def claims(self, now: int, actions: list[Action]) -> None:
        """A request starts: claim the probe of every recovered open breaker (§26.4)."""
        if not self._breakers_on:
            return
        for name in self._names:
            breaker = self._breakers.get(name)
            if breaker is not None and breaker.wants_claim(now, self._settings):
                actions.append(ClaimProbe(backend=name))

    # -------------------------------------------------------------- checking

    def check(self, event: PeerReport | ProbeClaimed | ProbeRefused, now: int) -> None:
        """Raise InvalidEvent unless the peer event can be applied; changes nothing."""
        kind = type(event).__name__
        if not self._settings.peer_sharing:
            raise InvalidEvent(f"{kind} needs settings.peer_sharing")
        check_time(kind, event.at, now)
        if type(event) is not PeerReport:
            self._check_backend(kind, event.backend)
            return
        if not isinstance(event.origin, str) or not event.origin:
            raise InvalidEvent("PeerReport.origin must be a non-empty string")
        if not is_count(event.seq):
            raise InvalidEvent("PeerReport.seq must be a non-negative integer of at most 2**53 - 1")
        if not isinstance(event.facts, tuple):
            raise InvalidEvent("PeerReport.facts must be a tuple of facts")
        for fact in event.facts:
            name = type(fact).__name__
            if type(fact) not in _FACTS:
                raise InvalidEvent(f"not a shared-state fact: {name}")
            self._check_backend(name, fact.backend)
            for field in _LENGTHS:
                if hasattr(fact, field) and not is_count(getattr(fact, field)):
                    raise InvalidEvent(
                        f"{name}.{field} must be a non-negative integer of at most 2**53 - 1"
                    )
            if type(fact) is CooledDown and not isinstance(fact.failure, Failure):
                raise InvalidEvent("CooledDown.failure must be a Failure")

    def _check_backend(self, kind: str, backend: object) -> None:
        if not isinstance(backend, str) or backend not in self._index:
            raise InvalidEvent(f"{kind}.backend names no backend of this config")

    # -------------------------------------------------------------- applying

    def apply(
        self, event: PeerReport | ProbeClaimed | ProbeRefused, now: int, actions: list[Action]
    ) -> None:
        kind = type(event)
        if kind is PeerReport:
            for fact in event.facts:  # type: ignore[union-attr]
                self._apply_fact(fact, now, actions)
            return
        breaker = self._breakers.get(event.backend) if self._breakers_on else None  # type: ignore[union-attr]
        if breaker is None:
            return
        if kind is ProbeClaimed:
            if breaker.claimed():
                actions.append(HalfOpenBreaker(backend=event.backend))  # type: ignore[union-attr]
        else:
            breaker.refused(now)

    def _breaker(self, name: str) -> Breaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = self._breakers[name] = Breaker()
        return breaker

    def _apply_fact(self, fact: PeerFact, now: int, actions: list[Action]) -> None:
        kind, settings = type(fact), self._settings
        if kind is TokensUsed:
            if fact.tokens > 0:  # type: ignore[union-attr]
                self._tpm.add(fact.backend, fact.tokens, max(0, now - fact.age_ms))  # type: ignore[union-attr]
            return
        if kind is CooledDown:
            if self._honour_retry_after:
                until = now + min(fact.left_ms, settings.max_retry_after_ms)  # type: ignore[union-attr]
                index = self._index[fact.backend]
                if self._cooldowns.extend(index, until, fact.failure, now):  # type: ignore[union-attr]
                    actions.append(CoolDown(backend=fact.backend, until=until))
            return
        if not self._breakers_on:
            return
        recovery = settings.circuit_breaker_recovery_timeout_ms
        breaker = self._breaker(fact.backend)
        if kind is FailureSeen:
            failed_at = max(0, now - fact.age_ms)  # type: ignore[union-attr]
            if breaker.record_peer_failure(now, fact.kind, fact.status, settings, failed_at):  # type: ignore[union-attr]
                self._tripped(fact.backend, breaker, now, actions)
        elif kind is BreakerOpened:
            left = min(fact.recovery_left_ms, recovery)  # type: ignore[union-attr]
            if breaker.open_from_peer(now - recovery + left):
                self._tripped(fact.backend, breaker, now, actions)
        elif breaker.close_from_peer():
            actions.append(CloseBreaker(backend=fact.backend))

    def _tripped(self, name: str, breaker: Breaker, now: int, actions: list[Action]) -> None:
        assert breaker.state is BreakerState.OPEN and breaker.opened_at is not None
        recovery = self._settings.circuit_breaker_recovery_timeout_ms
        actions.append(
            TripBreaker(
                backend=name,
                failures_in_window=len(breaker.failures),
                half_open_after=breaker.opened_at + recovery,
            )
        )
