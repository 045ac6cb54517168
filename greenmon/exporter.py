"""Prometheus metrics: per-target numbers updated by each result, turned into series when asked.

A MetricsStore is a result listener. It keeps plain numbers per target, so
a check costs a few updates and removing a target's series is a dict
delete. It notes which targets changed since the last scrape (``changed``)
so that the /metrics cache (``exposition``) re-formats only those. The
samples themselves are defined once, here (``target_samples`` and
``global_samples``): the cache formats them, and ``StoreCollector`` hands
the same samples to prometheus_client for --textfile and --pushgateway.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Callable, Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from greenmon import __version__
from greenmon.breaker import CLOSED, STATE_VALUES, BreakerState
from greenmon.errors import ERROR_CLASSES
from greenmon.histogram import Histogram
from greenmon.history import History
from greenmon.result import MonitorResult
from greenmon.settings import MonitorSettings
from greenmon.targets import Target, is_label_name, is_target_label
from greenmon.timing import Timing
from greenmon.urls import redact_url

log = logging.getLogger(__name__)

_CLASS_INDEX = {name: index for index, name in enumerate(ERROR_CLASSES)}

Labels = tuple[tuple[str, str], ...]          # sorted by label name, as the exposition writes them
Sample = tuple[str, Labels, float]            # (sample name, labels, value)


class TargetSeries:
    """Everything exported about one target."""

    __slots__ = ("target", "checks", "errors", "retries", "last", "contacted", "last_checked_at",
                 "breaker", "history", "histogram", "good", "bad")

    def __init__(self, target: Target, history: int = 60):
        self.target = target
        self.checks = 0
        self.errors = [0] * len(ERROR_CLASSES)
        self.retries = [0] * len(ERROR_CLASSES)
        self.last: MonitorResult | None = None
        self.contacted: MonitorResult | None = None   # the last result that contacted the target
        self.last_checked_at: float | None = None  # of the last check that contacted the target
        self.breaker = CLOSED
        self.history = History(history)
        self.histogram: Histogram | None = None
        self.good = 0   # every scheduled check, for the SLI: skipped by an open breaker is bad
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
                 monitor: MonitorSettings = MonitorSettings()):
        self.shard = shard
        self.monitor = monitor   # the defaults of the SLO objective and the history's length
        self.buckets = tuple(buckets)
        self.per_target_histograms = per_target_histograms
        self.series: dict[str, TargetSeries] = {}
        self.shared_histogram = Histogram(self.buckets)   # per_target_histograms = false
        self.inflight = inflight
        self.timing = Timing()          # loop lag, schedule lag, overruns (daemon)
        self.sweeps = 0
        self.sweep_duration_s = 0.0
        self.changed: dict[str, int] = {}   # target -> families changed since the cache read them
        self.layout = 0                 # grows when targets, labels or buckets change
        self.info_labels: list[str] = []   # target labels on greenmon_target_info (all targets')
        # Discovery sources by their label ("openapi[0]"): (targets yielded now, failed loads).
        self.discovery: dict[str, tuple[int, int]] = {}

    def configure(self, buckets: tuple[float, ...], per_target_histograms: bool) -> None:
        """New histogram settings; histograms restart from zero when their shape changes."""
        if (tuple(buckets), per_target_histograms) != (self.buckets, self.per_target_histograms):
            self.buckets, self.per_target_histograms = tuple(buckets), per_target_histograms
            self.shared_histogram = Histogram(self.buckets)
            for series in self.series.values():
                series.histogram = None
            self.layout += 1

    def set_monitor(self, monitor: MonitorSettings) -> None:
        """New monitor defaults (a reload): objectives and the length of the kept history."""
        self.monitor = monitor
        for series in self.series.values():
            series.history.resize(monitor.history)
        self.layout += 1

    def objective(self, target: Target) -> float:
        """The target's availability objective (its own, else the monitor's)."""
        return target.slo_availability or self.monitor.slo_availability

    def window_days(self, target: Target) -> float:
        """The target's error budget window (its own, else the monitor's)."""
        return target.slo_window_days or self.monitor.slo_window_days

    def set_targets(self, targets: Iterable[Target], tick: Callable[[], None] = lambda: None) -> None:
        """Track exactly these targets, in this order: new ones start at zero, removed ones
        lose their series, kept ones keep their numbers. ``tick`` is called after each
        target (the daemon yields to its event loop there: cooperative.Slices).

        A series holds the target as it is exported (``exported_target``: valid UTF-8,
        Prometheus label names), made once here so that no scrape has to check a line; it
        stays keyed by the target's own name, the one its results carry."""
        old, series_now, labels, dropped = self.series, {}, set(), set()
        for target in targets:
            shown = exported_target(target, dropped)
            series = old.get(target.name)
            if series is None:
                series = TargetSeries(shown, self.monitor.history)
            else:
                series.target = shown
            series_now[target.name] = series
            labels.update(shown.labels)
            tick()
        if dropped:
            log.warning("target labels not exported (not Prometheus label names, or greenmon's "
                        "own): %s", ", ".join(sorted(repr(name)[:80] for name in dropped)[:10]))
        self.series = series_now
        self.info_labels = sorted(labels)
        self.changed = {name: bits for name, bits in self.changed.items() if name in series_now}
        self.layout += 1

    def observe(self, result: MonitorResult) -> None:
        """Result listener: count the check, its errors and retries, time every attempt."""
        series = self.series.get(result.target)
        if series is None:
            return
        series.last = result
        series.breaker = result.breaker
        series.history.add(result)
        if result.ok:
            series.good += 1
        else:
            series.bad += 1
        if result.skipped:   # not contacted: no check, no error counted; greenmon_up stays 0
            self._mark_changed(result.target, SKIPPED_CHANGES)
            return
        changes = CHECKED_CHANGES
        series.checks += 1
        if series.contacted is None or series.contacted.tls != result.tls:
            changes |= TLS_CHANGES
        series.contacted = result
        series.last_checked_at = result.checked_at
        if not result.ok:
            series.errors[_CLASS_INDEX[result.error_class]] += 1
            changes |= FAILURE_CHANGES
        for error_class in result.retried_classes:
            series.retries[_CLASS_INDEX[error_class]] += 1
            changes |= RETRY_CHANGES
        self._mark_changed(result.target, changes)
        if self.per_target_histograms:
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
            self._mark_changed(name, BREAKER_CHANGES)

    def _mark_changed(self, name: str, families: int) -> None:
        """These families of the target must be formatted again by the next scrape."""
        self.changed[name] = self.changed.get(name, 0) | families

    def sweep_finished(self, duration_s: float) -> None:
        self.sweeps += 1
        self.sweep_duration_s = duration_s

    def latest_results(self) -> list[MonitorResult]:
        return [s.last for s in self.series.values() if s.last is not None]


# --- The samples, defined once ------------------------------------------------------------

# (name as prometheus_client names the family, help, type): Metric's arguments.
# Counters get "_total" in the text.
TARGET_FAMILIES = (
    ("greenmon_up", "1 if the last check of the target succeeded.", "gauge"),
    ("greenmon_http_status_code", "Status code of the last check (0: none).", "gauge"),
    ("greenmon_breaker_state", "Circuit breaker: 0 closed, 1 open, 2 half-open.", "gauge"),
    ("greenmon_last_check_timestamp_seconds", "When the last check started (Unix time).", "gauge"),
    ("greenmon_checks", "Checks done (not those skipped by an open breaker).", "counter"),
    ("greenmon_check_errors", "Failed checks by error class.", "counter"),
    ("greenmon_check_retries",
     "Retried attempts by the class of the failure that caused the retry.", "counter"),
    ("greenmon_target_info", "Target metadata; always 1.", "gauge"),
    ("greenmon_check_phase_seconds",
     "Where the last attempt of the last check that contacted the target spent its time.", "gauge"),
    ("greenmon_tls_cert_expiry_timestamp_seconds",
     "When the certificate the target presented expires (Unix time; the leaf's notAfter).", "gauge"),
    ("greenmon_tls_version_info", "The TLS version of the last contacted check; always 1.", "gauge"),
    ("greenmon_slo_checks",
     "Every scheduled check by result (good, bad; one skipped by an open breaker is bad): "
     "the availability SLI, which does not go quiet during an outage.", "counter"),
    ("greenmon_slo_objective", "The target's availability objective (slo_availability).", "gauge"),
    ("greenmon_slo_window_seconds",
     "The target's error budget window (slo_window_days): the burn-rate alerts scale with it.",
     "gauge"),
    ("greenmon_check_duration_seconds", "Duration of every attempt of every check.", "histogram"),
)
DURATION = len(TARGET_FAMILIES) - 1   # the histogram: per target, or one without the label


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def histogram_samples(name: str, histogram: Histogram, labels: Labels) -> list[Sample]:
    """A histogram's samples as prometheus_client writes them: buckets, _count, _sum."""
    out = []
    for bound, running in histogram.cumulative():
        out.append((name + "_bucket", tuple(sorted(labels + (("le", _le(bound)),))), running))
    out.append((name + "_count", labels, out[-1][2]))
    out.append((name + "_sum", labels, histogram.total))
    return out


def _up(store, series, target, by_target, info_labels):
    last = series.last   # none before the first check: an unknown state is not "down"
    return [] if last is None else [("greenmon_up", by_target, 1 if last.ok else 0)]


def _status(store, series, target, by_target, info_labels):
    last = series.last
    return [] if last is None else [("greenmon_http_status_code", by_target, last.status_code or 0)]


def _breaker(store, series, target, by_target, info_labels):
    return [("greenmon_breaker_state", by_target, STATE_VALUES[series.breaker])]


def _last_check(store, series, target, by_target, info_labels):
    return [] if series.last_checked_at is None else [
        ("greenmon_last_check_timestamp_seconds", by_target, series.last_checked_at)]


def _checks(store, series, target, by_target, info_labels):
    return [("greenmon_checks_total", by_target, series.checks)]


def _errors(store, series, target, by_target, info_labels):
    return [("greenmon_check_errors_total", (("class", c), ("target", target.name)), n)
            for c, n in zip(ERROR_CLASSES, series.errors)]


def _retries(store, series, target, by_target, info_labels):
    return [("greenmon_check_retries_total", (("class", c), ("target", target.name)), n)
            for c, n in zip(ERROR_CLASSES, series.retries)]


def _info(store, series, target, by_target, info_labels):
    labels = target.labels   # set_targets checked them (exported_target)
    info = {name: labels.get(name, "") for name in info_labels}
    # greenmon's own last: no target label may stand in for them
    info.update(target=target.name, url=target.display_url, method=target.method)
    return [("greenmon_target_info", tuple(sorted(info.items())), 1)]


def _phases(store, series, target, by_target, info_labels):
    timings = series.contacted.timings if series.contacted is not None else None
    return [] if timings is None else [
        ("greenmon_check_phase_seconds", (("phase", phase), ("target", target.name)), seconds)
        for phase, seconds in timings.items() if seconds is not None]


def _cert_expiry(store, series, target, by_target, info_labels):
    tls = series.contacted.tls if series.contacted is not None else None
    return [] if tls is None or tls.cert_not_after is None else [
        ("greenmon_tls_cert_expiry_timestamp_seconds", by_target, tls.cert_not_after)]


def _tls_version(store, series, target, by_target, info_labels):
    tls = series.contacted.tls if series.contacted is not None else None
    return [] if tls is None or tls.version is None else [
        ("greenmon_tls_version_info", (("target", target.name), ("version", tls.version)), 1)]


def _slo_checks(store, series, target, by_target, info_labels):
    return [("greenmon_slo_checks_total", (("result", "bad"), ("target", target.name)), series.bad),
            ("greenmon_slo_checks_total", (("result", "good"), ("target", target.name)), series.good)]


def _objective(store, series, target, by_target, info_labels):
    return [("greenmon_slo_objective", by_target, store.objective(target))]


def _window(store, series, target, by_target, info_labels):
    return [("greenmon_slo_window_seconds", by_target, store.window_days(target) * 86400.0)]


def _duration(store, series, target, by_target, info_labels):
    if store.per_target_histograms and series.histogram is not None:
        return histogram_samples("greenmon_check_duration_seconds", series.histogram, by_target)
    return []   # no attempt timed yet (or one histogram for all targets)


# The samples of each family of TARGET_FAMILIES, in its order.
_FAMILY_SAMPLES = (_up, _status, _breaker, _last_check, _checks, _errors, _retries, _info, _phases,
                   _cert_expiry, _tls_version, _slo_checks, _objective, _window, _duration)
ALL_FAMILIES = (1 << len(TARGET_FAMILIES)) - 1


def _bits(*functions) -> int:
    return sum(1 << _FAMILY_SAMPLES.index(function) for function in functions)


# Which families a result changes (the exposition cache formats only those again).
SKIPPED_CHANGES = _bits(_up, _status, _breaker, _slo_checks)
CHECKED_CHANGES = SKIPPED_CHANGES | _bits(_last_check, _checks, _phases, _duration)
FAILURE_CHANGES = _bits(_errors)
RETRY_CHANGES = _bits(_retries)
TLS_CHANGES = _bits(_cert_expiry, _tls_version)
BREAKER_CHANGES = _bits(_breaker)


def target_samples(store: MetricsStore, series: TargetSeries, info_labels: list[str],
                   families: int = ALL_FAMILIES) -> list[list[Sample] | None]:
    """One target's samples, a list per family of TARGET_FAMILIES (None for a family left
    out of ``families``, a bit mask in that order)."""
    target = series.target
    by_target = (("target", target.name),)
    return [function(store, series, target, by_target, info_labels) if families >> index & 1 else None
            for index, function in enumerate(_FAMILY_SAMPLES)]


def global_samples(store: MetricsStore) -> Iterator[tuple[tuple[str, str, str], list[Sample]]]:
    """The families without a target label: (family, samples) each."""
    if not store.per_target_histograms:
        yield TARGET_FAMILIES[DURATION], histogram_samples(
            "greenmon_check_duration_seconds", store.shared_histogram, ())
    yield ("greenmon_targets", "Targets being checked.", "gauge"), [
        ("greenmon_targets", (), len(store.series))]
    yield ("greenmon_inflight_checks", "Checks in flight now.", "gauge"), [
        ("greenmon_inflight_checks", (), store.inflight())]
    yield ("greenmon_sweep_duration_seconds",
           "Duration of the last sweep (daemon: of the last pass of the longest interval).", "gauge"), [
        ("greenmon_sweep_duration_seconds", (), store.sweep_duration_s)]
    yield ("greenmon_sweeps",
           "Sweeps done (daemon: passes of the longest interval).", "counter"), [
        ("greenmon_sweeps_total", (), store.sweeps)]
    timing = store.timing
    yield ("greenmon_schedule_overruns",
           "Due checks skipped because the target's previous check still ran.", "counter"), [
        ("greenmon_schedule_overruns_total", (), timing.overruns)]
    yield ("greenmon_event_loop_lag_seconds",
           "How late the event loop ran a short periodic timer: when it stays low, the "
           "latencies greenmon reports are the targets'.", "histogram"), histogram_samples(
        "greenmon_event_loop_lag_seconds", timing.loop_lag, ())
    yield ("greenmon_schedule_lag_seconds",
           "How late checks started against their due time.", "histogram"), histogram_samples(
        "greenmon_schedule_lag_seconds", timing.schedule_lag, ())
    # location is always there, "" when none is set: the family keeps one label set whatever
    # the config, and Prometheus stores an empty label as no label at all.
    yield ("greenmon_build_info",
           "greenmon version and where it probes from (monitor.location); always 1.", "gauge"), [
        ("greenmon_build_info", (("location", store.monitor.location), ("version", __version__)), 1)]
    yield ("greenmon_shard", "This instance checks shard `index` of `total` (--shard).", "gauge"), [
        ("greenmon_shard", (("index", str(store.shard[0])), ("total", str(store.shard[1]))), 1)]
    if store.discovery:
        yield ("greenmon_discovered_targets",
               "Targets the discovery source yields (its last good load).", "gauge"), [
            ("greenmon_discovered_targets", (("source", label),), count)
            for label, (count, _) in store.discovery.items()]
        yield ("greenmon_discovery_errors",
               "Loads of the discovery source that failed (it kept its last good targets).",
               "counter"), [
            ("greenmon_discovery_errors_total", (("source", label),), errors)
            for label, (_, errors) in store.discovery.items()]


def _client_labels(labels: Labels, names_ok: dict[str, bool]) -> dict[str, str]:
    """A sample's labels for prometheus_client: names it writes as they are (its own check
    lets "team\\n" through, and --textfile would quote others), values its encode takes
    (a lone surrogate would raise): the same rules as the exposition (``exported_target``),
    applied to every sample here, off the daemon's loop. ``names_ok``: names seen."""
    out = {}
    for name, value in labels:
        ok = names_ok.get(name)
        if ok is None:
            ok = names_ok[name] = is_label_name(name)
        if ok:
            out[name] = value if type(value) is str and value.isascii() else utf8_text(value)
    return out


class StoreCollector(Collector):
    """The store's samples as prometheus_client families (--textfile, --pushgateway, tests),
    whatever their labels hold (``_client_labels``): what it writes parses."""

    def __init__(self, store: MetricsStore):
        self.store = store

    def collect(self):
        store = self.store
        info_labels = store.info_labels
        names_ok: dict[str, bool] = {}
        families = [Metric(*spec) for spec in TARGET_FAMILIES]
        for series in store.series.values():
            for family, found in zip(families, target_samples(store, series, info_labels)):
                for name, labels, number in found:
                    family.add_sample(name, _client_labels(labels, names_ok), number)
        yield from (f for i, f in enumerate(families) if i != DURATION or store.per_target_histograms)
        for spec, found in global_samples(store):
            family = Metric(*spec)
            for name, labels, number in found:
                family.add_sample(name, _client_labels(labels, names_ok), number)
            yield family


def build_registry(store: MetricsStore) -> CollectorRegistry:
    """A fresh registry holding only greenmon's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry


def store_for(config, targets: Iterable[Target], **sources) -> MetricsStore:
    store = MetricsStore(config.metrics.buckets, config.metrics.per_target_histograms,
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
