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
    __slots__ = ("_buckets", "_calm", "_pruned_at", "_windows")

    def __init__(self) -> None:
        # minute -> backend -> tokens
        self._buckets: dict[int, dict[str, int]] = {}
        # backend -> [minute, oldest busy minute or -1, tokens]: the window
        # ending at that minute, summed once. Every routing decision asks for
        # the rate and every success adds to it, so the sum is kept up to date
        # by add() within the minute instead of rebuilt from the buckets.
        self._windows: dict[str, list[int]] = {}
        #: The minute of the last add: buckets too old for it are gone already.
        self._pruned_at = -1
        #: (minute, threshold, backends) for which any_below() found no backend
        #: slow. Within a minute a rate only grows, so it stays true until an
        #: add gives a backend without a rate its first tokens (see add).
        self._calm: tuple[int, int, tuple[str, ...]] | None = None

    def add(self, backend: str, tokens: int, now: int) -> None:
        minute = now // MINUTE_MS
        bucket = self._buckets.setdefault(minute, {})
        bucket[backend] = bucket.get(backend, 0) + tokens
        window = self._windows.get(backend)
        if window is None:
            self._calm = None
        elif window[0] == minute and tokens > 0:
            if window[1] < 0:
                window[1] = minute
                self._calm = None  # a first rate this minute: it may be below the threshold
            window[2] += tokens
        else:
            del self._windows[backend]
            self._calm = None
        if minute == self._pruned_at:
            return
        self._pruned_at = minute
        old = [m for m in self._buckets if m < minute - WINDOW_MINUTES]
        if old:
            for m in old:
                del self._buckets[m]
            self._windows.clear()

    def rate(self, backend: str, now: int) -> float:
        minute = now // MINUTE_MS
        window = self._windows.get(backend)
        if window is None or window[0] != minute:
            window = self._windows[backend] = self._sum(backend, minute)
        first = window[1]
        return 0.0 if first < 0 else window[2] / (minute - first + 1)

    def _sum(self, backend: str, minute: int) -> list[int]:
        """The window of ``backend`` ending at ``minute``, from the buckets."""
        first, total = -1, 0
        for m in range(minute - WINDOW_MINUTES + 1, minute + 1):
            tokens = self._buckets.get(m, {}).get(backend, 0)
            if tokens > 0:
                if first < 0:
                    first = m
                total += tokens
        return [minute, first, total]

    def below_threshold(self, backend: str, now: int, threshold: int | None) -> float | None:
        """The rate when it is above zero but under the threshold (a reason to skip), else None."""
        if threshold is None:
            return None
        # rate(), inline: this runs on every visit of every routing decision.
        minute = now // MINUTE_MS
        window = self._windows.get(backend)
        if window is None or window[0] != minute:
            window = self._windows[backend] = self._sum(backend, minute)
        first = window[1]
        if first < 0:
            return None
        rate = window[2] / (minute - first + 1)
        return rate if rate < threshold else None

    def any_below(self, backends: tuple[str, ...], now: int, threshold: int) -> bool:
        """Whether ``below_threshold`` would give a rate for any of ``backends``."""
        minute = now // MINUTE_MS
        calm = self._calm
        if calm is not None and calm[0] == minute and calm[1] == threshold and calm[2] is backends:
            return False
        windows = self._windows
        for backend in backends:
            window = windows.get(backend)
            if window is None or window[0] != minute:
                window = windows[backend] = self._sum(backend, minute)
            first = window[1]
            if first >= 0 and window[2] / (minute - first + 1) < threshold:
                return True
        self._calm = (minute, threshold, backends)
        return False
