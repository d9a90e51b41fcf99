"""One backend's circuit breaker, with time passed in.

States and signals::

    closed --(failures in window >= threshold)--> open
    open --(health check after recovery timeout)--> half-open (probe taken)
    half-open --(probe succeeds)--> closed
    half-open --(probe fails)--> open
    half-open --(probe handed back)--> half-open (probe free again)

Only the failover strategy uses breakers. As in the reference, a backend gets
an entry on its first recorded failure, and the move from open to half-open
happens lazily, when a request asks whether the backend is healthy.

Two deliberate departures from the reference, both to stop a breaker from
sticking in half-open with its one probe spent forever:

* a failed probe always re-opens the breaker, even when pruning left fewer
  failures than the threshold in the window (other requests' failures while
  half-open count towards the threshold as usual);
* a probe whose attempt ends with no outcome recorded (cancelled, skipped for
  TPM, rejected for the context limit, failed before sending) is handed back.
"""

from __future__ import annotations

import enum

import msgspec

from ._config import Settings
from ._failure import Failure, FailureKind

# Everything in __all__ is re-exported by lbcore.
__all__ = ("BreakerFailure", "BreakerSnapshot", "BreakerState")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class BreakerFailure(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    at: int
    kind: FailureKind
    status: int | None


class BreakerSnapshot(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    state: BreakerState
    failures: tuple[BreakerFailure, ...]
    opened_at: int | None
    #: When the half-open probe was handed out; None while it is free.
    probe_taken_at: int | None
    #: The request holding the probe, if any.
    probe_holder: str | None


class Breaker:
    """Mutable state of one backend's breaker. Every method gets ``now``."""

    __slots__ = ("claim_out", "failures", "opened_at", "probe_holder", "probe_taken_at", "state")

    def __init__(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures: list[BreakerFailure] = []
        self.opened_at: int | None = None
        self.probe_taken_at: int | None = None
        # Who holds the probe: only that request may hand it back or retry through
        # it, so a stale holder from an earlier half-open period cannot free a new one.
        self.probe_holder: str | None = None
        #: Shared state (spec §26.4): a ClaimProbe was sent and awaits its answer.
        self.claim_out = False

    def _free_probe(self) -> None:
        self.probe_taken_at = None
        self.probe_holder = None

    def holds_probe(self, holder: str) -> bool:
        return self.state is BreakerState.HALF_OPEN and self.probe_holder == holder

    def _recovered(self, now: int, settings: Settings) -> bool:
        return (
            self.opened_at is not None
            and now - self.opened_at >= settings.circuit_breaker_recovery_timeout_ms
        )

    def can_attempt(self, now: int, settings: Settings) -> bool:
        """Side-effect free: would a health check let a request through?"""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN:
            return self.probe_taken_at is None
        # Shared: only a granted claim turns an open breaker half-open (spec §26.4).
        return not settings.peer_sharing and self._recovered(now, settings)

    def take(self, now: int, settings: Settings, holder: str) -> tuple[bool, bool]:
        """The health check: may request ``holder`` go through now?

        Returns ``(healthy, became_half_open)``. Going through a half-open
        breaker takes its single probe.
        """
        became_half_open = False
        if self.state is BreakerState.CLOSED:
            return True, False
        if self.state is BreakerState.OPEN:
            if settings.peer_sharing or not self._recovered(now, settings):
                return False, False
            self.state = BreakerState.HALF_OPEN
            self._free_probe()
            became_half_open = True
        if self.probe_taken_at is None:
            self.probe_taken_at = now
            self.probe_holder = holder
            return True, became_half_open
        return False, became_half_open

    def hand_back_probe(self, holder: str) -> None:
        if self.holds_probe(holder):
            self._free_probe()

    def record_failure(
        self, now: int, failure: Failure, settings: Settings, holder: str, failed_at: int
    ) -> bool:
        """Count ``holder``'s failure, which happened at ``failed_at``.

        Returns True when this trips (or re-trips) the breaker. The probe
        holder's failure always re-opens; anyone else's counts towards the
        threshold, as in the closed state. A failure from no later than the
        current opening (a retry that waited while the breaker tripped) is
        counted but never trips the breaker again, in any state, so it can
        neither push the recovery time back nor void a half-open probe.
        """
        self.failures.append(BreakerFailure(at=failed_at, kind=failure.kind, status=failure.status))
        window = settings.circuit_breaker_failure_window_ms
        self.failures = [f for f in self.failures if now - f.at < window]
        # A failure from no later than the current opening is old news: the
        # opening already accounts for it, in any state.
        stale = self.opened_at is not None and failed_at <= self.opened_at
        probe_failed = self.holds_probe(holder)
        threshold_reached = len(self.failures) >= settings.circuit_breaker_failure_threshold
        if probe_failed or (threshold_reached and not stale):
            self.state = BreakerState.OPEN
            self.opened_at = now
            self._free_probe()
            self.claim_out = False
            return True
        return False

    def record_peer_failure(
        self, now: int, kind: FailureKind, status: int | None, settings: Settings, failed_at: int
    ) -> bool:
        """Count a failure another process saw; True when it trips the breaker here."""
        failure = Failure(kind=kind, message="", status=status)
        return self.record_failure(now, failure, settings, holder="", failed_at=failed_at)

    def wants_claim(self, now: int, settings: Settings) -> bool:
        """Shared: the breaker recovered and no claim is out, so one goes out now."""
        if self.state is not BreakerState.OPEN or self.claim_out:
            return False
        if not self._recovered(now, settings):
            return False
        self.claim_out = True
        return True

    def claimed(self) -> bool:
        """The carrier granted the probe: half-open with the probe free. True if that changed."""
        if not self.claim_out or self.state is not BreakerState.OPEN:
            self.claim_out = False
            return False
        self.claim_out = False
        self.state = BreakerState.HALF_OPEN
        self._free_probe()
        return True

    def refused(self, now: int) -> None:
        """Another process probes: wait another recovery period before claiming again."""
        if self.claim_out and self.state is BreakerState.OPEN:
            self.opened_at = now
        self.claim_out = False

    def open_from_peer(self, opened_at: int) -> bool:
        """A peer's own failure opened the backend's breaker; True if this one changed."""
        if self.state is BreakerState.OPEN and (self.opened_at or 0) >= opened_at:
            return False
        self.state = BreakerState.OPEN
        self.opened_at = opened_at
        self._free_probe()
        self.claim_out = False
        return True

    def close_from_peer(self) -> bool:
        """A peer's probe succeeded; True if this breaker was not closed."""
        was_closed = self.state is BreakerState.CLOSED
        self.state = BreakerState.CLOSED
        self.failures = []
        self._free_probe()
        self.claim_out = False
        return not was_closed

    def record_success(self) -> bool:
        """Returns True when a successful probe closes the breaker."""
        if self.state is not BreakerState.HALF_OPEN:
            # A success while closed leaves older failures in the window, as in the reference.
            return False
        self.state = BreakerState.CLOSED
        self.failures = []
        self._free_probe()
        self.claim_out = False
        return True

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(
            state=self.state,
            failures=tuple(self.failures),
            opened_at=self.opened_at,
            probe_taken_at=self.probe_taken_at,
            probe_holder=self.probe_holder,
        )
