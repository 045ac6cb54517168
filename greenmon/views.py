"""What /api/results and the status page show, made without holding the loop that times checks.

Each target's JSON line and table row is rendered once per new result and
kept; a request renders only the targets that have a new result since the
last one, in slices that yield to the loop, and hands out the cached pieces.
"""

from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

from greenmon import statuspage
from greenmon.cooperative import Slices
from greenmon.exporter import MetricsStore, TargetSeries
from greenmon.report import json_frame, result_json
from greenmon.summary import summarize

T = TypeVar("T")


class PerTarget(Generic[T]):
    """``render(series)`` kept per target until its result, breaker or definition changes."""

    def __init__(self, render: Callable[[TargetSeries], T]):
        self._render = render
        self._cache: dict[str, tuple[object, object, str, T]] = {}

    def get(self, series: TargetSeries) -> T:
        name = series.target.name
        hit = self._cache.get(name)
        if (hit is not None and hit[0] is series.last and hit[1] is series.target
                and hit[2] == series.breaker):
            return hit[3]
        value = self._render(series)
        self._cache[name] = (series.last, series.target, series.breaker, value)
        return value

    def keep_only(self, names) -> None:
        if len(self._cache) > len(names):
            self._cache = {n: v for n, v in self._cache.items() if n in names}


class Views:
    """The documents of /api/results and / for one store."""

    def __init__(self, store: MetricsStore, slo_p95_s: Callable[[], float]):
        self.store = store
        self._slo_p95_s = slo_p95_s
        self._json = PerTarget(lambda s: result_json(s.last).encode())
        self._rows = PerTarget(lambda s: statuspage.row(s, self._slo_p95_s(), time.time()).encode())

    def results_document(self) -> list[bytes]:
        """The same document as `--format json`, from the latest result of each target."""
        slices = Slices()
        results, lines = [], []
        for series in slices.each(list(self.store.series.values())):
            if series.last is not None:
                results.append(series.last)
                lines.append(self._json.get(series))
        self._json.keep_only(self.store.series)
        summary = summarize(results, self.store.sweep_duration_s, self._slo_p95_s())
        head, separator, tail = (part.encode() for part in json_frame(summary, not lines))
        pieces = [head]
        for index, line in enumerate(lines):
            if index:
                pieces.append(separator)
            pieces.append(line)
        pieces.append(tail)
        return pieces

    def status_page(self, *, interval_s: float, now: float) -> list[bytes]:
        """Failures first, then the rest, each in config order."""
        slices = Slices()
        store = self.store
        failing, healthy, results = [], [], []
        for series in slices.each(list(store.series.values())):
            row = self._rows.get(series)
            last = series.last
            if last is not None:
                results.append(last)
            (healthy if last is None or last.ok else failing).append(row)
        self._rows.keep_only(store.series)
        slo = self._slo_p95_s()
        head, tail = statuspage.page(
            summarize(results, store.sweep_duration_s, slo), targets=len(store.series),
            slo_p95_s=slo, sweeps=store.sweeps, sweep_duration_s=store.sweep_duration_s,
            fidelity_line=statuspage.fidelity(store.timing.loop_lag, store.timing.schedule_lag),
            refresh_s=int(min(max(interval_s, 5), 60)), now=now)
        return [head.encode()] + failing + healthy + [tail.encode()]
