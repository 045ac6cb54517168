"""The metric table: every metric greenmon exports, each defined once, in one row.

A row gives a metric's name (as queried: a counter ends in ``_total``), type,
help, label names, and how its samples are read from the store; a per-target
row also says which of the store's events change it (``store.CHECKED`` ...),
so that the /metrics cache formats a target's metric again only then. The
cache (``exposition``), prometheus_client's collector (``StoreCollector``, for
--textfile and --pushgateway) and the docs test all read this table: a new
metric is one row, its sample function and its line in docs/metrics.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from greenmon import __version__
from greenmon.breaker import STATE_VALUES
from greenmon.errors import ERROR_CLASSES
from greenmon.histogram import Histogram
from greenmon.store import (BREAKER_CHANGED, CHECKED, FAILED, RETRIED, SKIPPED, TLS_CHANGED,
                            Labels, MetricsStore, Sample, TargetSeries, utf8_text)
from greenmon.targets import is_label_name


def _always(store: MetricsStore) -> bool:
    return True


@dataclass(frozen=True)
class MetricRow:
    name: str                   # as queried: a counter's ends in _total
    kind: str                   # gauge, counter or histogram
    help: str
    labels: tuple[str, ...]     # its label names ("le" for a histogram's buckets)
    samples: Callable           # per target: (store, series, its ("target", name) labels);
                                # the others: (store)
    changed_by: int = 0         # per target: the store events that change its samples
    shown: Callable[[MetricsStore], bool] = _always   # per target: whether it is exported at all

    @property
    def family(self) -> str:
        """The family name prometheus_client takes (a counter's without _total)."""
        return self.name[:-len("_total")] if self.kind == "counter" else self.name


# --- Per target: (store, series, by_target) -> samples -------------------------------------

def _up(store: MetricsStore, series: TargetSeries, by_target: Labels) -> list[Sample]:
    last = series.last   # none before the first check: an unknown state is not "down"
    return [] if last is None else [("greenmon_up", by_target, 1 if last.ok else 0)]


def _degraded(store, series, by_target):
    """Only for a target with a degraded_latency: 10,000 series of zeros cost scrapes and
    Prometheus memory for nothing."""
    last = series.last
    if last is None or not store.degraded_after(series.target):
        return []
    return [("greenmon_degraded", by_target, 1 if last.degraded else 0)]


def _status(store, series, by_target):
    last = series.last
    return [] if last is None else [("greenmon_http_status_code", by_target, last.status_code or 0)]


def _breaker(store, series, by_target):
    return [("greenmon_breaker_state", by_target, STATE_VALUES[series.breaker])]


def _last_check(store, series, by_target):
    return [] if series.last_checked_at is None else [
        ("greenmon_last_check_timestamp_seconds", by_target, series.last_checked_at)]


def _checks(store, series, by_target):
    return [("greenmon_checks_total", by_target, series.checks)]


def _per_class(metric: str, counts: str) -> Callable:
    """The samples of ``metric``, one per error class of the target's ``counts`` (failures or
    retries): every class from 0 (a rate() sees the first failure), or with
    all_error_classes = false only those that happened: 5 series of zeros fewer per healthy
    target, for each of the two."""
    def samples(store, series, by_target):
        name, every = series.target.name, store.all_error_classes
        return [(metric, (("class", c), ("target", name)), n)
                for c, n in zip(ERROR_CLASSES, getattr(series, counts)) if n or every]
    return samples


_errors = _per_class("greenmon_check_errors_total", "errors")
_retries = _per_class("greenmon_check_retries_total", "retries")


def _info(store, series, by_target):
    target = series.target
    labels = target.labels   # set_targets checked them (exported_target)
    info = {name: labels.get(name, "") for name in store.info_labels}
    # greenmon's own last: no target label may stand in for them
    info.update(target=target.name, url=target.display_url, method=target.method)
    return [("greenmon_target_info", tuple(sorted(info.items())), 1)]


def _phases(store, series, by_target):
    timings = series.contacted.timings if series.contacted is not None else None
    name = series.target.name
    return [] if timings is None else [
        ("greenmon_check_phase_seconds", (("phase", phase), ("target", name)), seconds)
        for phase, seconds in timings.items() if seconds is not None]


def _cert_expiry(store, series, by_target):
    tls = series.contacted.tls if series.contacted is not None else None
    return [] if tls is None or tls.cert_not_after is None else [
        ("greenmon_tls_cert_expiry_timestamp_seconds", by_target, tls.cert_not_after)]


def _tls_version(store, series, by_target):
    tls = series.contacted.tls if series.contacted is not None else None
    return [] if tls is None or tls.version is None else [
        ("greenmon_tls_version_info", (("target", series.target.name), ("version", tls.version)), 1)]


def _slo_checks(store, series, by_target):
    name = series.target.name
    samples = [("greenmon_slo_checks_total", (("result", "bad"), ("target", name)), series.bad),
               ("greenmon_slo_checks_total", (("result", "good"), ("target", name)), series.good)]
    if series.slow or store.degraded_after(series.target):   # as greenmon_degraded
        samples.append(("greenmon_slo_checks_total", (("result", "slow"), ("target", name)), series.slow))
    return samples


def _objective(store, series, by_target):
    return [("greenmon_slo_objective", by_target, store.objective(series.target))]


def _window(store, series, by_target):
    return [("greenmon_slo_window_seconds", by_target, store.window_days(series.target) * 86400.0)]


def _duration(store, series, by_target):
    if series.histogram is None:
        return []   # no attempt timed yet
    return histogram_samples("greenmon_check_duration_seconds", series.histogram, by_target)


def _per_part(metric: str, parts: str, label: str, key: str, value) -> Callable:
    """The samples of ``metric`` for each part of the last check that contacted the target:
    a flow's steps, or the addresses it checked (``parts``), labelled by the part's ``key``;
    a part whose ``value`` is None has none (a step or address gone since: no sample)."""
    def samples(store, series, by_target):
        contacted = series.contacted
        if contacted is None:
            return []
        name = series.target.name
        return [(metric, ((label, getattr(part, key)), ("target", name)), found)
                for part in getattr(contacted, parts) if (found := value(part)) is not None]
    return samples


_step_up = _per_part("greenmon_step_up", "steps", "step", "name", lambda part: 1 if part.ok else 0)
_step_duration = _per_part("greenmon_step_duration_seconds", "steps", "step", "name",
                           lambda part: part.latency_s)
_address_up = _per_part("greenmon_address_up", "addresses", "address", "address",
                        lambda part: 1 if part.ok else 0)
_address_duration = _per_part("greenmon_address_duration_seconds", "addresses", "address", "address",
                              lambda part: part.latency_s)


def _per_target_histograms(store: MetricsStore) -> bool:
    return store.per_target_histograms


def _phase_gauges(store: MetricsStore) -> bool:
    return store.phase_gauges


CONTACT = SKIPPED | CHECKED   # every scheduled check, whether or not it contacted the target
TARGET_METRICS = (
    MetricRow("greenmon_up", "gauge", "1 if the last check of the target succeeded.",
              ("target",), _up, CONTACT),
    MetricRow("greenmon_degraded", "gauge",
              "1: the last check succeeded slower than the target's degraded_latency (it is up).",
              ("target",), _degraded, CONTACT),
    MetricRow("greenmon_http_status_code", "gauge", "Status code of the last check (0: none).",
              ("target",), _status, CONTACT),
    MetricRow("greenmon_breaker_state", "gauge", "Circuit breaker: 0 closed, 1 open, 2 half-open.",
              ("target",), _breaker, CONTACT | BREAKER_CHANGED),
    MetricRow("greenmon_last_check_timestamp_seconds", "gauge",
              "When the last check started (Unix time).", ("target",), _last_check, CHECKED),
    MetricRow("greenmon_checks_total", "counter",
              "Checks done (not those skipped by an open breaker).", ("target",), _checks, CHECKED),
    MetricRow("greenmon_check_errors_total", "counter", "Failed checks by error class.",
              ("target", "class"), _errors, FAILED),
    MetricRow("greenmon_check_retries_total", "counter",
              "Retried attempts by the class of the failure that caused the retry.",
              ("target", "class"), _retries, RETRIED),
    MetricRow("greenmon_target_info", "gauge", "Target metadata; always 1.",
              ("target", "url", "method"), _info),   # and the target labels; new ones: a new layout
    MetricRow("greenmon_check_phase_seconds", "gauge",
              "Where the last attempt of the last check that contacted the target spent its time.",
              ("target", "phase"), _phases, CHECKED, shown=_phase_gauges),
    MetricRow("greenmon_tls_cert_expiry_timestamp_seconds", "gauge",
              "When the certificate the target presented expires (Unix time; the leaf's notAfter).",
              ("target",), _cert_expiry, TLS_CHANGED),
    MetricRow("greenmon_tls_version_info", "gauge",
              "The TLS version of the last contacted check; always 1.",
              ("target", "version"), _tls_version, TLS_CHANGED),
    MetricRow("greenmon_slo_checks_total", "counter",
              "Every scheduled check by result (good; slow: up, over degraded_latency; bad, and "
              "one skipped by an open breaker is bad): the availability SLI, which does not go "
              "quiet during an outage.",
              ("target", "result"), _slo_checks, CONTACT),
    MetricRow("greenmon_slo_objective", "gauge",
              "The target's availability objective (slo_availability).", ("target",), _objective),
    MetricRow("greenmon_slo_window_seconds", "gauge",
              "The target's error budget window (slo_window_days): the burn-rate alerts scale "
              "with it.", ("target",), _window),
    MetricRow("greenmon_step_up", "gauge",
              "A flow's steps in its last check that contacted the target: 1 passed, 0 failed "
              "(a step after the one that failed was not sent: no sample).",
              ("target", "step"), _step_up, CHECKED),
    MetricRow("greenmon_step_duration_seconds", "gauge",
              "A flow's steps in its last check that contacted the target: the duration of each "
              "step's final attempt.", ("target", "step"), _step_duration, CHECKED),
    MetricRow("greenmon_address_up", "gauge",
              "addresses = \"all\": each address of the target's name in its last check that "
              "contacted it: 1 up, 0 failed (an address the name no longer has: no sample).",
              ("target", "address"), _address_up, CHECKED),
    MetricRow("greenmon_address_duration_seconds", "gauge",
              "addresses = \"all\": the duration of the final attempt to each address in the "
              "target's last check that contacted it.", ("target", "address"), _address_duration, CHECKED),
    MetricRow("greenmon_check_duration_seconds", "histogram",
              "Duration of every attempt of every check.", ("target", "le"), _duration, CHECKED,
              shown=_per_target_histograms),
)
ALL_TARGET_METRICS = (1 << len(TARGET_METRICS)) - 1


@functools.cache
def changed_metrics(events: int) -> int:
    """The per-target metrics (a bit each, in TARGET_METRICS' order) that ``events`` change."""
    return sum(1 << index for index, row in enumerate(TARGET_METRICS) if row.changed_by & events)


def target_samples(store: MetricsStore, series: TargetSeries,
                   metrics: int = ALL_TARGET_METRICS) -> list[list[Sample] | None]:
    """One target's samples, a list per row of TARGET_METRICS (None for a row left out of
    ``metrics``, a bit mask in that order; none for a row the store does not show)."""
    by_target = (("target", series.target.name),)
    return [(row.samples(store, series, by_target) if row.shown(store) else [])
            if metrics >> index & 1 else None
            for index, row in enumerate(TARGET_METRICS)]


# --- Per instance: (store) -> samples ------------------------------------------------------

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


def _shared_duration(store: MetricsStore) -> list[Sample]:
    if store.per_target_histograms:
        return []   # one per target instead (TARGET_METRICS)
    return histogram_samples("greenmon_check_duration_seconds", store.shared_histogram, ())


def _one(name: str, read: Callable[[MetricsStore], float]) -> Callable[[MetricsStore], list[Sample]]:
    return lambda store: [(name, (), read(store))]


def _build_info(store):
    # location is always there, "" when none is set: the family keeps one label set whatever
    # the config, and Prometheus stores an empty label as no label at all.
    return [("greenmon_build_info", (("location", store.monitor.location), ("version", __version__)), 1)]


def _shard(store):
    return [("greenmon_shard", (("index", str(store.shard[0])), ("total", str(store.shard[1]))), 1)]


def _discovered(store):
    return [("greenmon_discovered_targets", (("source", label),), count)
            for label, (count, _) in store.discovery.items()]


def _discovery_errors(store):
    return [("greenmon_discovery_errors_total", (("source", label),), errors)
            for label, (_, errors) in store.discovery.items()]


GLOBAL_METRICS = (   # a row without samples (no discovery source) is not exported
    MetricRow("greenmon_check_duration_seconds", "histogram",
              "Duration of every attempt of every check.", ("le",), _shared_duration),
    MetricRow("greenmon_targets", "gauge", "Targets being checked.", (),
              _one("greenmon_targets", lambda store: len(store.series))),
    MetricRow("greenmon_inflight_checks", "gauge", "Checks in flight now.", (),
              _one("greenmon_inflight_checks", lambda store: store.inflight())),
    MetricRow("greenmon_sweep_duration_seconds", "gauge",
              "Duration of the last sweep (daemon: of the last pass of the longest interval).", (),
              _one("greenmon_sweep_duration_seconds", lambda store: store.sweep_duration_s)),
    MetricRow("greenmon_sweeps_total", "counter",
              "Sweeps done (daemon: passes of the longest interval).", (),
              _one("greenmon_sweeps_total", lambda store: store.sweeps)),
    MetricRow("greenmon_schedule_overruns_total", "counter",
              "Due checks skipped because the target's previous check still ran.", (),
              _one("greenmon_schedule_overruns_total", lambda store: store.timing.overruns)),
    MetricRow("greenmon_event_loop_lag_seconds", "histogram",
              "How late the event loop ran a short periodic timer: when it stays low, the "
              "latencies greenmon reports are the targets'.", ("le",),
              lambda store: histogram_samples("greenmon_event_loop_lag_seconds",
                                              store.timing.loop_lag, ())),
    MetricRow("greenmon_schedule_lag_seconds", "histogram",
              "How late checks started against their due time.", ("le",),
              lambda store: histogram_samples("greenmon_schedule_lag_seconds",
                                              store.timing.schedule_lag, ())),
    MetricRow("greenmon_build_info", "gauge",
              "greenmon version and where it probes from (monitor.location); always 1.",
              ("version", "location"), _build_info),
    MetricRow("greenmon_shard", "gauge", "This instance checks shard `index` of `total` (--shard).",
              ("index", "total"), _shard),
    MetricRow("greenmon_discovered_targets", "gauge",
              "Targets the discovery source yields (its last good load).", ("source",), _discovered),
    MetricRow("greenmon_discovery_errors_total", "counter",
              "Loads of the discovery source that failed (it kept its last good targets).",
              ("source",), _discovery_errors),
)


def global_samples(store: MetricsStore) -> list[tuple[MetricRow, list[Sample]]]:
    """The rows of GLOBAL_METRICS that have samples now, with them."""
    found = [(row, row.samples(store)) for row in GLOBAL_METRICS]
    return [(row, samples) for row, samples in found if samples]


# --- prometheus_client's writer -------------------------------------------------------------

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
        names_ok: dict[str, bool] = {}
        families = [Metric(row.family, row.help, row.kind) for row in TARGET_METRICS]
        for series in store.series.values():
            for family, found in zip(families, target_samples(store, series)):
                for name, labels, number in found:
                    family.add_sample(name, _client_labels(labels, names_ok), number)
        yield from (family for family, row in zip(families, TARGET_METRICS) if row.shown(store))
        for row, found in global_samples(store):
            family = Metric(row.family, row.help, row.kind)
            for name, labels, number in found:
                family.add_sample(name, _client_labels(labels, names_ok), number)
            yield family


def build_registry(store: MetricsStore) -> CollectorRegistry:
    """A fresh registry holding only greenmon's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry
