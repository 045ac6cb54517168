"""Prometheus metrics: per-target state updated by each result, turned into series at scrape time.

A MetricsStore is a result listener; its collector is registered in a
registry the caller owns (never the global default). Keeping plain numbers
and building the families only when Prometheus scrapes keeps the per-check
cost to a few dict updates, makes removing a target's series a dict delete,
and lets per-target histograms collapse into one (``per_target_histograms``).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.registry import CollectorRegistry, Collector

from greenmon import __version__
from greenmon.breaker import STATE_VALUES
from greenmon.errors import ERROR_CLASSES
from greenmon.result import MonitorResult
from greenmon.targets import Target

RECENT_LATENCIES = 100  # per target, for the status page's P95


class _Histogram:
    """Counts per bucket (not cumulative) and the sum, for one label set."""

    __slots__ = ("counts", "total")

    def __init__(self, size: int):
        self.counts = [0] * (size + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, bounds: tuple[float, ...], value: float) -> None:
        self.counts[bisect.bisect_left(bounds, value)] += 1
        self.total += value

    def family_buckets(self, bounds: tuple[float, ...]) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip(bounds + (math.inf,), self.counts):
            running += count
            out.append(("+Inf" if bound == math.inf else _float_label(bound), running))
        return out


def _float_label(value: float) -> str:
    return repr(float(value))


@dataclass
class TargetSeries:
    """Everything exported about one target."""

    target: Target
    checks: int = 0
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_CLASSES, 0))
    retries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_CLASSES, 0))
    last: MonitorResult | None = None
    last_checked_at: float | None = None  # of the last check that contacted the target
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_LATENCIES))


class MetricsStore:
    """The numbers behind /metrics, /api/results and the status page."""

    def __init__(self, buckets: tuple[float, ...], per_target_histograms: bool = True,
                 inflight: Callable[[], int] = lambda: 0,
                 breaker_states: Callable[[], Mapping[str, str]] = dict,
                 shard: tuple[int, int] = (0, 1)):
        self.shard = shard
        self.buckets = tuple(buckets)
        self.per_target_histograms = per_target_histograms
        self.series: dict[str, TargetSeries] = {}
        self.histograms: dict[str, _Histogram] = {}   # key: target name, or "" when shared
        self.inflight = inflight
        self.breaker_states = breaker_states
        self.sweeps = 0
        self.sweep_duration_s = 0.0
        self.sweep_overruns = 0

    def configure(self, buckets: tuple[float, ...], per_target_histograms: bool) -> None:
        """New histogram settings; histograms restart from zero when their shape changes."""
        if (tuple(buckets), per_target_histograms) != (self.buckets, self.per_target_histograms):
            self.buckets, self.per_target_histograms = tuple(buckets), per_target_histograms
            self.histograms.clear()

    def set_targets(self, targets: Iterable[Target]) -> None:
        """Track exactly these targets: new ones start at zero, removed ones lose their series."""
        targets = list(targets)
        names = {t.name for t in targets}
        for name in list(self.series):
            if name not in names:
                del self.series[name]
                self.histograms.pop(name, None)
        for target in targets:
            if target.name in self.series:
                self.series[target.name].target = target
            else:
                self.series[target.name] = TargetSeries(target)

    def observe(self, result: MonitorResult) -> None:
        """Result listener: count the check, its errors and retries, time every attempt."""
        series = self.series.get(result.target)
        if series is None:
            return
        series.last = result
        if result.skipped:
            return  # not contacted: no check, no error counted; greenmon_up stays 0
        series.checks += 1
        series.last_checked_at = result.checked_at
        if not result.ok:
            series.errors[result.error_class] += 1
        for error_class in result.retried_classes:
            series.retries[error_class] += 1
        if result.latency_s is not None:
            series.recent.append(result.latency_s)
        key = result.target if self.per_target_histograms else ""
        histogram = self.histograms.get(key)
        if histogram is None:
            histogram = self.histograms[key] = _Histogram(len(self.buckets))
        for latency in result.attempt_latencies:
            histogram.observe(self.buckets, latency)

    def sweep_finished(self, duration_s: float, overran: bool = False) -> None:
        self.sweeps += 1
        self.sweep_duration_s = duration_s
        self.sweep_overruns += overran

    def latest_results(self) -> list[MonitorResult]:
        return [s.last for s in self.series.values() if s.last is not None]


class StoreCollector(Collector):
    """Builds every greenmon_* family from the store when the registry is collected."""

    def __init__(self, store: MetricsStore):
        self.store = store

    def collect(self):
        store = self.store
        series = list(store.series.values())
        breakers = store.breaker_states()

        up = GaugeMetricFamily("greenmon_up", "1 if the last check of the target succeeded.", labels=["target"])
        status = GaugeMetricFamily("greenmon_http_status_code", "Status code of the last check (0: none).", labels=["target"])
        breaker = GaugeMetricFamily("greenmon_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open.", labels=["target"])
        last_check = GaugeMetricFamily("greenmon_last_check_timestamp_seconds", "When the last check started (Unix time).", labels=["target"])
        checks = CounterMetricFamily("greenmon_checks", "Checks done (not those skipped by an open breaker).", labels=["target"])
        errors = CounterMetricFamily("greenmon_check_errors", "Failed checks by error class.", labels=["target", "class"])
        retries = CounterMetricFamily("greenmon_check_retries", "Retried attempts by the class of the failure that caused the retry.", labels=["target", "class"])
        label_names = sorted({name for s in series for name in s.target.labels})
        info = GaugeMetricFamily("greenmon_target_info", "Target metadata; always 1.", labels=["target", "url", "method"] + label_names)

        for s in series:
            name = s.target.name
            last = s.last
            state = breakers.get(name) or (last.breaker if last is not None else "closed")
            breaker.add_metric([name], STATE_VALUES[state])
            if last is not None:  # no up/status series before the first check: no false "down"
                up.add_metric([name], 1 if last.ok else 0)
                status.add_metric([name], last.status_code or 0)
            if s.last_checked_at is not None:
                last_check.add_metric([name], s.last_checked_at)
            checks.add_metric([name], s.checks)
            for error_class, count in s.errors.items():
                errors.add_metric([name, error_class], count)
            for error_class, count in s.retries.items():
                retries.add_metric([name, error_class], count)
            info.add_metric([name, s.target.display_url, s.target.method]
                            + [s.target.labels.get(label, "") for label in label_names], 1)
        yield from (up, status, breaker, last_check, checks, errors, retries, info)

        duration = HistogramMetricFamily(
            "greenmon_check_duration_seconds", "Duration of every attempt of every check.",
            labels=["target"] if store.per_target_histograms else [])
        for key, histogram in store.histograms.items():
            duration.add_metric([key] if store.per_target_histograms else [],
                                histogram.family_buckets(store.buckets), histogram.total)
        yield duration

        yield GaugeMetricFamily("greenmon_targets", "Targets being checked.", value=len(series))
        yield GaugeMetricFamily("greenmon_inflight_checks", "Checks in flight now.", value=store.inflight())
        yield GaugeMetricFamily("greenmon_sweep_duration_seconds", "Duration of the last sweep.", value=store.sweep_duration_s)
        yield CounterMetricFamily("greenmon_sweeps", "Sweeps done.", value=store.sweeps)
        yield CounterMetricFamily("greenmon_sweep_overruns", "Sweeps that took longer than the interval.", value=store.sweep_overruns)
        build = GaugeMetricFamily("greenmon_build_info", "greenmon version; always 1.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        shard = GaugeMetricFamily("greenmon_shard", "This instance checks shard `index` of `total` (--shard).",
                                  labels=["index", "total"])
        shard.add_metric([str(store.shard[0]), str(store.shard[1])], 1)
        yield shard


def build_registry(store: MetricsStore) -> CollectorRegistry:
    """A fresh registry holding only greenmon's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry


def store_for(config, targets: Iterable[Target], **sources) -> MetricsStore:
    store = MetricsStore(config.metrics.buckets, config.metrics.per_target_histograms,
                         shard=config.shard, **sources)
    store.set_targets(targets)
    return store
