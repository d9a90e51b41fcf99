"""Tokens per minute, per backend, over a five-minute window of minute buckets.

Minutes are ``at // 60000`` on the caller's clock. The rate divides by the
minutes elapsed since the oldest bucket with data (inclusive), not by the
number of busy buckets, so a backend's rate decays while it sits idle.
"""

from __future__ import annotations

from typing import Final

__all__ = ("TokenRate",)

MINUTE_MS: Final = 60_000
WINDOW_MINUTES: Final = 5


class TokenRate:
    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        # minute -> backend -> tokens
        self._buckets: dict[int, dict[str, int]] = {}

    def add(self, backend: str, tokens: int, now: int) -> None:
        minute = now // MINUTE_MS
        bucket = self._buckets.setdefault(minute, {})
        bucket[backend] = bucket.get(backend, 0) + tokens
        for old in [m for m in self._buckets if m < minute - WINDOW_MINUTES]:
            del self._buckets[old]

    def rate(self, backend: str, now: int) -> float:
        minute = now // MINUTE_MS
        busy = [
            m
            for m in range(minute - WINDOW_MINUTES + 1, minute + 1)
            if self._buckets.get(m, {}).get(backend, 0) > 0
        ]
        if not busy:
            return 0.0
        total = sum(self._buckets[m][backend] for m in busy)
        return total / (minute - busy[0] + 1)

    def below_threshold(self, backend: str, now: int, threshold: int | None) -> float | None:
        """The rate when it is above zero but under the threshold (a reason to skip), else None."""
        if threshold is None:
            return None
        rate = self.rate(backend, now)
        return rate if 0 < rate < threshold else None
