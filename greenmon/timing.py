"""The proof that the latencies greenmon reports are the targets': loop lag and schedule lag.

If greenmon's own work held the event loop that times checks, every response
arriving meanwhile would be timed late. ``probe_loop_lag`` measures how late
the loop runs a short periodic timer; the scheduler records how late each
check starts against its due time. Both are exported as histograms and shown
on the status page.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gevent

from greenmon.histogram import LAG_BUCKETS, Histogram

LOOP_TICK_S = 0.025   # the loop-lag probe's period


@dataclass
class Timing:
    """What the scheduler and the loop-lag probe measured (exported as histograms)."""

    loop_lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))
    schedule_lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))
    overruns: int = 0

    def take(self) -> dict:
        """What was measured since the last take (a worker's report to its parent)."""
        overruns, self.overruns = self.overruns, 0
        return {"loop_lag": self.loop_lag.take(), "schedule_lag": self.schedule_lag.take(),
                "overruns": overruns}

    def merge(self, delta: dict) -> None:
        self.loop_lag.merge(delta["loop_lag"])
        self.schedule_lag.merge(delta["schedule_lag"])
        self.overruns += delta["overruns"]


def probe_loop_lag(histogram: Histogram, period: float = LOOP_TICK_S) -> None:
    """Forever: sleep ``period``, record how much later than that the loop woke us up."""
    loop = gevent.get_hub().loop
    while True:
        loop.update_now()  # the timer counts from now, not from the loop's cached time
        started = time.perf_counter()
        gevent.sleep(period)
        histogram.observe(max(0.0, time.perf_counter() - started - period))
