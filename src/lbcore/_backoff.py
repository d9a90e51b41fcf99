"""The wait before a same-backend retry, and the core's own seeded PRNG for its jitter.

The core may not read an unseeded random source (its decisions must replay
byte for byte), so jitter comes from a SplitMix64 generator seeded by
``settings.seed``. Its state is a plain integer inside the balancer: the same
config and the same events draw the same numbers in the same order. Numbers are
drawn only under ``retry_backoff = "exponential"``, so a fixed backoff never
touches the generator.
"""

from __future__ import annotations

from typing import Final

from ._config import Backoff, Settings

__all__ = ("RetryDelays", "SplitMix64")

_MASK: Final = (1 << 64) - 1
_GOLDEN: Final = 0x9E3779B97F4A7C15


class SplitMix64:
    """Steele, Lea and Flood's SplitMix64: tiny, fast, and good enough for jitter."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & _MASK

    def next(self) -> int:
        """The next 64-bit number."""
        self.state = (self.state + _GOLDEN) & _MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        return z ^ (z >> 31)

    def up_to(self, bound: int) -> int:
        """A number from 0 to ``bound`` inclusive (multiply-shift: no modulo, no retry loop)."""
        return (self.next() * (bound + 1)) >> 64


class RetryDelays:
    """How long the n-th same-backend retry of a visit waits (before any Retry-After)."""

    __slots__ = ("_base", "_cap", "_exponential", "_fixed", "_random")

    def __init__(self, settings: Settings) -> None:
        self._exponential = settings.retry_backoff == Backoff.EXPONENTIAL
        self._fixed = settings.failover_retry_delay_ms
        self._base = settings.retry_backoff_base_ms
        self._cap = settings.retry_backoff_cap_ms
        self._random = SplitMix64(settings.seed)

    def ceiling(self, retry: int) -> int:
        """The largest wait retry number ``retry`` (1 for the first) may get."""
        if not self._exponential:
            return self._fixed
        # The shift is bounded so a visit of 100 attempts never builds a huge integer.
        return min(self._cap, self._base << min(retry - 1, 62))

    def delay(self, retry: int) -> int:
        """Retry ``retry``'s wait: fixed, or full jitter between 0 and its ceiling."""
        if not self._exponential:
            return self._fixed
        return self._random.up_to(self.ceiling(retry))
