"""A bucketed histogram as plain numbers: observed on the hot path, merged across processes.

The metric table turns it into a Prometheus histogram at scrape time; worker
processes send the counts they gathered since their last message, and the
parent adds them up (``merge``).
"""

from __future__ import annotations

import bisect
import math
from array import array

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts per bucket (not cumulative; the last slot is +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = _zeros(len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) per bucket, +Inf last."""
        out, running = [], 0
        for bound, count in zip(self.bounds + (math.inf,), self.counts):
            running += count
            out.append((bound, running))
        return out

    def take(self) -> tuple[list[int], float]:
        """What was observed since the last take, and a fresh start (a worker's delta)."""
        delta = (self.counts.tolist(), self.total)
        self.counts = _zeros(len(self.bounds) + 1)
        self.total = 0.0
        return delta

    def merge(self, delta: tuple[list[int], float]) -> None:
        counts, total = delta
        for index, count in enumerate(counts):
            self.counts[index] += count
        self.total += total

    def quantile(self, fraction: float) -> float | None:
        """The smallest bucket bound with at least ``fraction`` of the observations at or
        below it (an upper estimate, as the buckets allow); None when nothing was observed."""
        total = self.count
        if not total:
            return None
        for bound, running in self.cumulative():
            if running >= fraction * total:
                return bound
        return math.inf


def _zeros(buckets: int) -> array:
    """Counts of 8 bytes a bucket, all 0 (no int object per bucket)."""
    return array("Q", bytes(8 * buckets))
