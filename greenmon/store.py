"""The numbers behind /metrics, /api/results and the status page: plain numbers per target, updated by each result.

A MetricsStore is a result listener. It keeps plain numbers per target, so
a check costs a few updates and removing a target's series is a dict
delete. It notes what happened to each target since the last scrape
(``changed``: a bit per event, SKIPPED, CHECKED ...), so that the /metrics
cache (``exposition``) formats again only the metrics those events change
(``metrics.changed_metrics``). What is exported, and how it is read from
here, is the metric table's (``metrics``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Callable, Iterable

from greenmon.breaker import CLOSED, BreakerState
from greenmon.errors import ERROR_CLASSES
from greenmon.histogram import Histogram
from greenmon.history import History
from greenmon.result import MonitorResult
from greenmon.settings import MetricsSettings, MonitorSettings
from greenmon.targets import Target, is_target_label
from greenmon.timing import Timing
from greenmon.urls import redact_url

log = logging.getLogger(__name__)

_CLASS_INDEX = {name: index for index, name in enumerate(ERROR_CLASSES)}

Labels = tuple[tuple[str, str], ...]          # sorted by label name, as the exposition writes them
Sample = tuple[str, Labels, float]            # (sample name, labels, value)

# What happened to a target since the last scrape, a bit each: metrics.changed_metrics says
# which of its metrics that changes.
SKIPPED, CHECKED, FAILED, RETRIED, TLS_CHANGED, BREAKER_CHANGED = (1 << bit for bit in range(6))


NO_HISTORY = History(0)   # shared: with size 0 it is never written to (add, resize: no-ops)


class TargetSeries:
    """Everything exported about one target."""

    __slots__ = ("target", "checks", "errors", "retries", "last", "contacted", "last_checked_at",
                 "breaker", "history", "histogram", "good", "slow", "bad")

    def __init__(self, target: Target, history: int = 60):
        """``history`` 0: none kept (a worker process's store), and none allocated."""
        self.target = target
        self.checks = 0
        self.errors = [0] * len(ERROR_CLASSES)
        self.retries = [0] * len(ERROR_CLASSES)
        self.last: MonitorResult | None = None
        self.contacted: MonitorResult | None = None   # the last result that contacted the target
        self.last_checked_at: float | None = None  # of the last check that contacted the target
        self.breaker = CLOSED
        self.history = History(history) if history else NO_HISTORY
        self.histogram: Histogram | None = None
        self.good = 0   # every scheduled check, for the SLI: skipped by an open breaker is bad
        self.slow = 0   # up, but degraded (over its degraded_latency)
        self.bad = 0


# --- What the text format can carry (defence in depth behind config validation) ------------

_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_text(value: object) -> str:
    """``value`` as UTF-8 can carry it: each lone surrogate (a JSON "\\ud800" escape makes
    one) becomes U+FFFD, what a UTF-8 decoder shows for a bad sequence. Every other
    character is kept: a label value carries any once \\, " and newline are escaped."""
    if type(value) is not str:
        value = str(value)
    return value if value.isascii() else _SURROGATE.sub("\ufffd", value)


def _shown_url(url: object) -> str:
    """The URL as greenmon_target_info shows it (``display_url``: no password), as text that
    redact_url takes again without an error; one it cannot parse loses all up to its last
    "@" (the user info, so the password with it) and is shown as it is."""
    text = utf8_text(url)
    try:
        shown = redact_url(text)
        redact_url(shown)   # display_url redacts it again on every render of the family
        return shown
    except ValueError:   # an unparseable netloc ("[::1", or a character NFKC makes "#")
        return text.rpartition("@")[2]


def exported_target(target: Target, dropped: set[str] | None = None) -> Target:
    """The target as the exposition shows it: its strings valid UTF-8 (``utf8_text``) and
    its label names ones Prometheus takes (``is_target_label``); the same object when it
    needs nothing (any validated target without a password in its URL). Checked once here,
    not on every line of every scrape.

    A label name that is not valid is dropped (added to ``dropped``), not made valid: a
    made-up name ("team_" for "team\\n") is one no query or join asks for, two keys could
    become one (one value silently winning), and greenmon's own labels (target, url,
    method) must not be overwritten. Config validation refuses the same names, so only a
    target that got past it (a discovery bug) loses a label, and set_targets logs it."""
    name, method, url, labels = target.name, target.method, target.shown_url or target.url, target.labels
    if (type(name) is str and name.isascii() and type(method) is str and method.isascii()
            and type(url) is str and url.isascii() and "@" not in url
            and all(type(v) is str and v.isascii() and is_target_label(k) for k, v in labels.items())):
        return target   # the common case: nothing to change, nothing to parse
    kept = {}
    for key, value in labels.items():
        if is_target_label(key):
            kept[key] = utf8_text(value)
        elif dropped is not None:
            dropped.add(key if type(key) is str else repr(key))
    return replace(target, name=utf8_text(name), method=utf8_text(method), labels=kept,
                   shown_url=_shown_url(url))


class MetricsStore:
    """The numbers behind /metrics, /api/results and the status page."""

    def __init__(self, buckets: tuple[float, ...], per_target_histograms: bool = True,
                 inflight: Callable[[], int] = lambda: 0, shard: tuple[int, int] = (0, 1),
                 monitor: MonitorSettings = MonitorSettings(), phase_gauges: bool = True,
                 renders: bool = True, views: bool = True, all_error_classes: bool = True):
        """With worker processes the numbers are kept twice, each store for its readers only.
        ``renders`` False: the parent's, for the views; the workers render the per-target
        metrics, so it keeps no per-target histogram nor what changed. ``views`` False: a
        worker's, for its share of /metrics; it keeps no history (the status page's)."""
        self.renders = renders
        self.views = views
        self.shard = shard
        self.monitor = monitor   # the defaults of the SLO objective and the history's length
        self.buckets = tuple(buckets)
        self.per_target_histograms = per_target_histograms
        self.phase_gauges = phase_gauges   # false: greenmon_check_phase_seconds not exported
        self.all_error_classes = all_error_classes   # false: error counters of seen classes only
        self.series: dict[str, TargetSeries] = {}
        self.shared_histogram = Histogram(self.buckets)   # per_target_histograms = false
        self.inflight = inflight
        self.timing = Timing()          # loop lag, schedule lag, overruns (daemon)
        self.sweeps = 0
        self.sweep_duration_s = 0.0
        self.changed: dict[str, int] = {}   # target -> events since the cache read them
        self.layout = 0                 # grows when targets, labels or buckets change
        self.info_labels: list[str] = []   # target labels on greenmon_target_info (all targets')
        # Discovery sources by their label ("openapi[0]"): (targets yielded now, failed loads).
        self.discovery: dict[str, tuple[int, int]] = {}

    def configure(self, settings: MetricsSettings) -> None:
        """New [metrics] settings; histograms restart from zero when their shape changes."""
        shown = (settings.phase_gauges, settings.all_error_classes)
        if shown != (self.phase_gauges, self.all_error_classes):
            self.phase_gauges, self.all_error_classes = shown
            self.layout += 1
        buckets, per_target_histograms = tuple(settings.buckets), settings.per_target_histograms
        if (buckets, per_target_histograms) != (self.buckets, self.per_target_histograms):
            self.buckets, self.per_target_histograms = buckets, per_target_histograms
            self.shared_histogram = Histogram(self.buckets)
            for series in self.series.values():
                series.histogram = None
            self.layout += 1

    def set_monitor(self, monitor: MonitorSettings) -> None:
        """New monitor defaults (a reload): objectives and the length of the kept history."""
        self.monitor = monitor
        size = self._history_size
        for series in self.series.values():
            if series.history is not NO_HISTORY:
                series.history.resize(size)
            elif size:   # never resized: it is every such series' own
                series.history = History(size)
        self.layout += 1

    @property
    def _history_size(self) -> int:
        return self.monitor.history if self.views else 0

    def objective(self, target: Target) -> float:
        """The target's availability objective (its own, else the monitor's)."""
        return target.slo_availability or self.monitor.slo_availability

    def degraded_after(self, target: Target) -> float:
        """The target's degraded_latency (its own, else the monitor's; 0: off)."""
        return self.monitor.degraded_after(target.degraded_latency)

    def window_days(self, target: Target) -> float:
        """The target's error budget window (its own, else the monitor's)."""
        return target.slo_window_days or self.monitor.slo_window_days

    def set_targets(self, targets: Iterable[Target], tick: Callable[[], None] = lambda: None,
                    label_names: Iterable[str] | None = None) -> None:
        """Track exactly these targets, in this order: new ones start at zero, removed ones
        lose their series, kept ones keep their numbers. ``tick`` is called after each
        target (the daemon yields to its event loop there: cooperative.Slices).
        ``label_names``: those greenmon_target_info carries, when more targets than these
        have labels (a worker process's store holds its share only; Config.label_names).

        A series holds the target as it is exported (``exported_target``: valid UTF-8,
        Prometheus label names), made once here so that no scrape has to check a line; it
        stays keyed by the target's own name, the one its results carry."""
        old, series_now, labels, dropped = self.series, {}, set(), set()
        for target in targets:
            shown = exported_target(target, dropped)
            series = old.get(target.name)
            if series is None:
                series = TargetSeries(shown, self._history_size)
            else:
                series.target = shown
            series_now[target.name] = series
            labels.update(shown.labels)
            tick()
        if dropped:
            log.warning("target labels not exported (not Prometheus label names, or greenmon's "
                        "own): %s", ", ".join(sorted(repr(name)[:80] for name in dropped)[:10]))
        self.series = series_now
        if label_names is not None:
            labels = {name for name in label_names if is_target_label(name)}
        self.info_labels = sorted(labels)
        self.changed = {name: bits for name, bits in self.changed.items() if name in series_now}
        self.layout += 1

    def series_of(self, names: Iterable[str]) -> dict[str, TargetSeries]:
        """These targets' series (those it tracks): a replaced worker process's starting point."""
        return {name: self.series[name] for name in names if name in self.series}

    def observe(self, result: MonitorResult) -> None:
        """Result listener: count the check, its errors and retries, time every attempt."""
        series = self.series.get(result.target)
        if series is None:
            return
        series.last = result
        series.breaker = result.breaker
        series.history.add(result)
        if result.degraded:
            series.slow += 1
        elif result.ok:
            series.good += 1
        else:
            series.bad += 1
        if result.skipped:   # not contacted: no check, no error counted; greenmon_up stays 0
            self._mark_changed(result.target, SKIPPED)
            return
        changes = CHECKED
        series.checks += 1
        if series.contacted is None or series.contacted.tls != result.tls:
            changes |= TLS_CHANGED
        series.contacted = result
        series.last_checked_at = result.checked_at
        if not result.ok:
            series.errors[_CLASS_INDEX[result.error_class]] += 1
            changes |= FAILED
        for error_class in result.retried_classes:
            series.retries[_CLASS_INDEX[error_class]] += 1
            changes |= RETRIED
        self._mark_changed(result.target, changes)
        if self.per_target_histograms:
            if not self.renders:
                return   # the per-target histograms are the workers'
            if series.histogram is None:
                series.histogram = Histogram(self.buckets)
            histogram = series.histogram
        else:
            histogram = self.shared_histogram
        for latency in result.attempt_latencies:
            histogram.observe(latency)

    def breaker_changed(self, name: str, state: BreakerState) -> None:
        """Engine breaker listener: a half-open trial shows while it runs."""
        series = self.series.get(name)
        if series is not None:
            series.breaker = state.state
            self._mark_changed(name, BREAKER_CHANGED)

    def _mark_changed(self, name: str, events: int) -> None:
        """These events happened to the target: the next scrape formats what they change."""
        if self.renders:
            self.changed[name] = self.changed.get(name, 0) | events

    def sweep_finished(self, duration_s: float) -> None:
        self.sweeps += 1
        self.sweep_duration_s = duration_s

    def latest_results(self) -> list[MonitorResult]:
        return [s.last for s in self.series.values() if s.last is not None]


def store_for(config, targets: Iterable[Target], **sources) -> MetricsStore:
    store = MetricsStore(config.metrics.buckets, config.metrics.per_target_histograms,
                         phase_gauges=config.metrics.phase_gauges,
                         all_error_classes=config.metrics.all_error_classes,
                         shard=config.shard, monitor=config.monitor, **sources)
    store.set_targets(targets)
    store.discovery = discovery_counts(config)
    return store


def discovery_counts(config, errors: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """(targets, failed loads) of each discovery source of ``config``, by its label."""
    errors = errors or {}
    out = {}
    for source in config.sources:
        load = config.discovered.get(source.key)
        out[source.label] = (len(load.found) if load is not None else 0, errors.get(source.key, 0))
    return out
