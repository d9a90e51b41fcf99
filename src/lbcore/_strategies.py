"""Where a request's rotation starts, for the strategies beyond round-robin and failover.

``weighted-round-robin``, ``least-busy`` and ``latency`` share failover's
rotation (spec §5): each backend is visited at most once per request, with the
same retries, skips, breakers and aggregate error. Only the first backend of the
rotation differs; failover takes its sticky index, these take a pick from here.
Every pick is integer arithmetic over state the balancer owns, and the only
randomness is a SplitMix64 seeded from ``settings.seed``, so traces replay byte
for byte (spec §23-§25).
"""

from __future__ import annotations

from typing import Final

from ._backoff import SplitMix64
from ._capacity import Capacity
from ._config import BalancerConfig, Strategy

__all__ = (
    "FAILED_SAMPLE_MS",
    "LATENCY_SHIFT",
    "FastestFirst",
    "LeastBusy",
    "Picker",
    "SmoothWeighted",
    "picker_for",
)

#: An estimate moves 1/2**LATENCY_SHIFT of the way to each new sample: the weight of a
#: sample halves after 5.19 newer ones ((7/8) ** 5.19 == 1/2), its half-life.
LATENCY_SHIFT: Final = 3
#: Estimates are kept in 1/256 ms, so small samples still move them.
_FRACTION_BITS: Final = 8
#: What a visit that failed before its first chunk counts as, at least: a backend that
#: fails fast must not look fast.
FAILED_SAMPLE_MS: Final = 10_000
#: Mixed into the seed so exploration draws are not the backoff jitter's numbers.
_LATENCY_STREAM: Final = 0x6C6174656E637921


class SmoothWeighted:
    """nginx's smooth weighted round-robin, exactly, in O(distinct weights) per pick.

    nginx adds each weight to its backend's current value, takes the largest
    (first in configured order on a tie) and takes the total weight off it. After
    ``t`` picks a backend's value is ``t * weight - total * picks``, so backends of
    equal weight are picked in turn, in configured order: one candidate per weight
    is enough. After ``total`` picks every backend was picked ``weight`` times and
    every value is back at zero, so the counters restart and never grow.
    """

    __slots__ = ("_members", "_picks", "_step", "_total", "_weights")

    def __init__(self, weights: tuple[int, ...]) -> None:
        groups: dict[int, list[int]] = {}
        for index, weight in enumerate(weights):
            if weight > 0:
                groups.setdefault(weight, []).append(index)
        self._weights = tuple(groups)
        self._members = tuple(tuple(members) for members in groups.values())
        self._picks = [0] * len(groups)
        self._total = sum(weights)
        self._step = 0

    def pick(self) -> int:
        self._step += 1
        step, total, picks = self._step, self._total, self._picks
        best_group, best_value, best_index = -1, 0, 0
        for group, weight in enumerate(self._weights):
            members = self._members[group]
            rounds, turn = divmod(picks[group], len(members))
            value = step * weight - total * rounds
            index = members[turn]
            if best_group < 0 or value > best_value or (value == best_value and index < best_index):
                best_group, best_value, best_index = group, value, index
        picks[best_group] += 1
        if step == total:
            self._step = 0
            self._picks = [0] * len(picks)
        return best_index


class LeastBusy:
    """The backend holding the fewest concurrency slots; the first one on a tie."""

    __slots__ = ("_capacity",)

    def __init__(self, capacity: Capacity) -> None:
        self._capacity = capacity

    def pick(self) -> int:
        counts = self._capacity.in_flight
        return counts.index(min(counts))


class FastestFirst:
    """The lowest time-to-first-chunk estimate, with a seeded share of exploration."""

    __slots__ = ("_explore", "_random", "_sampled", "estimates")

    def __init__(self, count: int, explore_percent: int, seed: int) -> None:
        #: Per backend: the estimate in 1/256 ms; 0 until its first sample, so an
        #: untried backend is tried first.
        self.estimates = [0] * count
        self._sampled = [False] * count
        self._explore = explore_percent
        self._random = SplitMix64(seed ^ _LATENCY_STREAM)

    def observe(self, index: int, elapsed_ms: int) -> None:
        sample = elapsed_ms << _FRACTION_BITS
        if not self._sampled[index]:
            self._sampled[index] = True
            self.estimates[index] = sample
            return
        estimate = self.estimates[index]
        # Floor division on both signs: plain integers, identical everywhere.
        self.estimates[index] = estimate + ((sample - estimate) >> LATENCY_SHIFT)

    def observe_failure(self, index: int, elapsed_ms: int) -> None:
        self.observe(index, max(elapsed_ms, FAILED_SAMPLE_MS))

    def estimate_ms(self, index: int) -> int | None:
        """The estimate rounded down to whole milliseconds; None before any sample."""
        return self.estimates[index] >> _FRACTION_BITS if self._sampled[index] else None

    def pick(self) -> int:
        estimates = self.estimates
        best = estimates.index(min(estimates))
        count = len(estimates)
        if self._explore and count > 1 and self._random.up_to(99) < self._explore:
            other = self._random.up_to(count - 2)
            return other + (other >= best)
        return best


Picker = SmoothWeighted | LeastBusy | FastestFirst


def picker_for(config: BalancerConfig, capacity: Capacity) -> Picker | None:
    """The pick for ``config``'s strategy; None when failover's sticky index starts it."""
    strategy = config.strategy
    if strategy == Strategy.WEIGHTED_ROUND_ROBIN:
        return SmoothWeighted(tuple(b.weight for b in config.backends))
    if strategy == Strategy.LEAST_BUSY:
        return LeastBusy(capacity)
    if strategy == Strategy.LATENCY:
        settings = config.settings
        return FastestFirst(len(config.backends), settings.latency_explore_percent, settings.seed)
    return None
