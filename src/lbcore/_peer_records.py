"""The vocabulary of shared state (spec/behaviour.md §26): facts, peer events, peer actions.

A *fact* is one thing a process learnt about one backend. Facts leave a core
in a :class:`Publish` action and enter another process's core in a
:class:`PeerReport` event. Durations travel as lengths measured on the
publisher's clock (``age_ms``, ``left_ms``...), never as timestamps, so two
hosts' clocks are never compared.
"""

from __future__ import annotations

from typing import ClassVar, final

from ._failure import Failure, FailureKind
from ._records import Record

# Everything in __all__ is re-exported by lbcore.
__all__ = (
    "BreakerClosed",
    "BreakerOpened",
    "ClaimProbe",
    "CooledDown",
    "FailureSeen",
    "PeerFact",
    "PeerReport",
    "ProbeClaimed",
    "ProbeRefused",
    "Publish",
    "TokensUsed",
)


@final
class FailureSeen(Record, frozen=True, kw_only=True):
    """A failure was recorded against the backend's breaker, ``age_ms`` ago."""

    backend: str
    kind: FailureKind
    status: int | None
    age_ms: int = 0


@final
class BreakerOpened(Record, frozen=True, kw_only=True):
    """The publisher's own failure opened the breaker; it may be probed in ``recovery_left_ms``."""

    backend: str
    recovery_left_ms: int


@final
class BreakerClosed(Record, frozen=True, kw_only=True):
    """The publisher's probe succeeded: the backend is healthy again."""

    backend: str


@final
class TokensUsed(Record, frozen=True, kw_only=True):
    """A success on the backend used ``tokens``, ``age_ms`` ago."""

    backend: str
    tokens: int
    age_ms: int = 0


@final
class CooledDown(Record, frozen=True, kw_only=True):
    """The backend asked for a pause (Retry-After) that ends in ``left_ms``."""

    backend: str
    left_ms: int
    #: The failure that asked for it, reported by requests that skip the backend.
    failure: Failure


PeerFact = FailureSeen | BreakerOpened | BreakerClosed | TokensUsed | CooledDown


@final
class PeerReport(Record, frozen=True, kw_only=True):
    """Facts another process published (or a catch-up read of the shared snapshot)."""

    at: int
    #: The publishing process's id, or ``snapshot``.
    origin: str
    #: The publisher's count of its reports (for readers; the core does not deduplicate).
    seq: int
    facts: tuple[PeerFact, ...]


@final
class ProbeClaimed(Record, frozen=True, kw_only=True):
    """This process holds the backend's half-open probe across all processes."""

    at: int
    backend: str


@final
class ProbeRefused(Record, frozen=True, kw_only=True):
    """Another process holds the backend's half-open probe."""

    at: int
    backend: str


@final
class Publish(Record, frozen=True, kw_only=True):
    """Tell the other processes what this event taught the core."""

    performs_io: ClassVar[bool] = True
    facts: tuple[PeerFact, ...]


@final
class ClaimProbe(Record, frozen=True, kw_only=True):
    """Ask the carrier for the backend's probe; answer with ProbeClaimed or ProbeRefused."""

    performs_io: ClassVar[bool] = True
    backend: str
