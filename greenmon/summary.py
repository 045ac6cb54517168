"""The summary of a sweep: up/down/degraded counts, latency percentiles, the SLO verdict, errors by class."""

from __future__ import annotations

import math
from typing import Sequence

from greenmon.errors import ERROR_CLASSES
from greenmon.result import MonitorResult, round_seconds


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``fraction`` of values at or below it."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(results: Sequence[MonitorResult], duration_s: float, slo_p95_s: float) -> dict:
    """One pass over the results (the daemon summarizes 10,000 of them on its event loop)."""
    latencies = []
    errors = dict.fromkeys(ERROR_CLASSES, 0)
    up = skipped = degraded = 0
    for result in results:
        if result.latency_s is not None:
            latencies.append(result.latency_s)
        if result.ok:
            up += 1
            degraded += result.degraded
        else:
            if result.error_class in errors:
                errors[result.error_class] += 1
            skipped += result.attempts == 0
    latencies.sort()
    p95 = percentile(latencies, 0.95)
    return {
        "targets": len(results),
        "up": up,
        "down": len(results) - up,
        "skipped": skipped,
        "degraded": degraded,
        "duration_s": round(duration_s, 3),
        "p50_s": round_seconds(percentile(latencies, 0.50)),
        "p95_s": round_seconds(p95),
        "max_s": round_seconds(latencies[-1] if latencies else None),
        "slo_p95_s": slo_p95_s,
        "slo_met": None if p95 is None else p95 <= slo_p95_s,
        "errors": errors,
    }
