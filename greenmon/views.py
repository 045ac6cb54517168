"""What /api/results and the status page show, made without holding the loop that times checks.

Both are made in slices that yield to the loop. The status page's rows are
kept per target until its result changes (a page shows 200 of them); the
JSON lines of /api/results are encoded anew each time.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Generic, TypeVar

from greenmon import statuspage
from greenmon.cooperative import Slices
from greenmon.report import json_frame, result_json
from greenmon.store import MetricsStore, TargetSeries
from greenmon.summary import summarize

T = TypeVar("T")
PAGE_ROWS = 200   # rows of the status page at a time: 10,000 targets are 50 pages


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
    """The documents of /api/results and / for one store (its ``monitor``: the objectives)."""

    def __init__(self, store: MetricsStore):
        self.store = store
        self._rows = PerTarget(lambda s: statuspage.row(
            s, slo_p95_s=self._slo_p95_s(), objective=store.objective(s.target), now=time.time()).encode())

    def _slo_p95_s(self) -> float:
        return self.store.monitor.slo_p95_seconds

    def results_document(self) -> list[bytes]:
        """The same document as `--format json`, from the latest result of each target."""
        slices = Slices()
        results, lines = [], []
        for series in slices.each(list(self.store.series.values())):
            if series.last is not None:   # encoded anew: 5 MB of lines at 10,000 targets is not
                results.append(series.last)   # worth keeping for a document fetched now and then
                lines.append(result_json(series.last).encode())
        summary = summarize(results, self.store.sweep_duration_s, self._slo_p95_s())
        head, separator, tail = (part.encode() for part in json_frame(summary, not lines))
        pieces = [head]
        for index, line in enumerate(lines):
            if index:
                pieces.append(separator)
            pieces.append(line)
        pieces.append(tail)
        return pieces

    def history_document(self, name: str) -> bytes | None:
        """The target's kept outcomes, oldest first (None: no such target)."""
        series = self.store.series.get(name)
        if series is None:
            return None
        return json.dumps(series.history.outcomes()).encode()

    def status_page(self, *, interval_s: float, now: float, query: str = "",
                    page: int = 1, state: str = "") -> list[bytes]:
        """The targets burning their error budget fastest first, then the degraded, then the
        rest in config order, a page of PAGE_ROWS at a time; ``query`` keeps the targets
        whose name or URL holds it, ``state`` (one of statuspage.STATES) those in that state."""
        slices = Slices()
        store = self.store
        words = query.strip().lower()
        state = state if state in statuspage.STATES else ""
        burning, degraded, calm, results = [], [], [], []
        counts = dict.fromkeys(statuspage.STATES, 0)
        for series in slices.each(list(store.series.values())):
            last = series.last
            if last is not None:
                results.append(last)
            if words and words not in series.target.name.lower() \
                    and words not in series.target.display_url.lower():
                continue
            shown = statuspage.state_of(last)[0].lower()
            counts[shown] += 1
            if state and shown != state:
                continue
            burn = statuspage.burn_rate(series, store.objective(series.target))
            if burn > 0 or (last is not None and not last.ok):
                burning.append((-burn, last is None or last.ok, series))
            elif last is not None and last.degraded:
                degraded.append(series)
            else:
                calm.append(series)
        burning.sort(key=lambda item: item[:2])   # stable: ties keep the config's order
        ordered = [item[2] for item in burning] + degraded + calm
        count = max(1, -(-len(ordered) // PAGE_ROWS))
        page = min(max(page, 1), count)
        rows = [self._rows.get(series) for series in slices.each(
            ordered[(page - 1) * PAGE_ROWS:page * PAGE_ROWS])]
        self._rows.keep_only(store.series)
        slo = self._slo_p95_s()
        paging = statuspage.pages(query, page, count, state)
        head, tail = statuspage.page(
            summarize(results, store.sweep_duration_s, slo), targets=len(store.series),
            shown=len(ordered), slo_p95_s=slo, objective=store.monitor.slo_availability,
            sweeps=store.sweeps, sweep_duration_s=store.sweep_duration_s,
            fidelity_line=statuspage.fidelity(store.timing.loop_lag, store.timing.schedule_lag),
            refresh_s=int(min(max(interval_s, 5), 60)), now=now, query=query, paging=paging,
            states=statuspage.state_links(query, state, counts), state=state)
        return [head.encode()] + rows + [tail.encode()]
