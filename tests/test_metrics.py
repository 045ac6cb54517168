"""The metrics of docs/metrics.md: the store and the metric table, a fresh store and registry per test.

Fed either with real results of sweeps against local servers, or with
hand-built MonitorResult values where a test needs exact numbers. Series are
read back through prometheus_client's own text parser, as a scraper would.
"""

from __future__ import annotations

import dataclasses
import weakref
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest

import greenmon
from greenmon.breaker import BreakerState
from greenmon.config import parse_config
from greenmon.settings import DEFAULT_BUCKETS, MetricsSettings, MonitorSettings
from greenmon.engine import Engine
from greenmon.errors import ERROR_CLASSES
from greenmon.metrics import build_registry
from greenmon.store import MetricsStore, store_for
from greenmon.exposition import Exposition
from greenmon.result import MonitorResult
from greenmon.targets import Target
from support.configs import BREAKER_OPENS_AT_ONCE, config_text
from support.daemon_helpers import label_sets, samples, select, targets_in, value
from support.servers import HTTPFarm, closed_port, reply, sequence


# --- Builders -----------------------------------------------------------------------

_expositions: "weakref.WeakKeyDictionary[MetricsStore, Exposition]" = weakref.WeakKeyDictionary()


def scrape(store: MetricsStore) -> list:
    """What Prometheus reads from /metrics: the cached, incremental exposition (one per store,
    kept across scrapes, as the daemon keeps it), which must be byte for byte the text
    prometheus_client's own generate_latest writes for the store's collector."""
    exposition = _expositions.setdefault(store, Exposition(store))
    rendered = exposition.render()
    data = b"".join(rendered)
    assert len(data) == len(rendered)   # the Content-Length /metrics sends
    text = data.decode()
    assert text == generate_latest(build_registry(store)).decode()
    return samples(text)


def target(name: str, url: str = "http://127.0.0.1:9/x", **kwargs) -> Target:
    return Target(name=name, url=url, **kwargs)


def result(name: str, *, ok: bool = True, error_class: str | None = None, status: int | None = 200,
           attempts: int = 1, latencies: tuple = (0.01,), retried: tuple = (), breaker: str = "closed",
           checked_at: float = 1_800_000_000.0) -> MonitorResult:
    """A hand-built result; a failed one needs ``error_class``."""
    skipped = attempts == 0
    return MonitorResult(
        target=name, url="http://127.0.0.1:9/x", method="GET", ok=ok,
        status_code=None if skipped else status,
        latency_s=None if skipped else latencies[-1], elapsed_s=0.0 if skipped else sum(latencies),
        attempts=attempts, error_class=error_class, detail=None if ok else "x",
        error=None if ok else "failed", breaker=breaker, checked_at=checked_at,
        body_bytes=None if skipped else 2, labels={}, retried_classes=retried,
        attempt_latencies=() if skipped else latencies)


def store_with(*names: str, buckets=DEFAULT_BUCKETS, per_target_histograms: bool = True) -> MetricsStore:
    store = MetricsStore(buckets, per_target_histograms)
    store.set_targets([target(name) for name in names])
    return store


def swept_store(config, sweeps: int = 1) -> tuple[MetricsStore, list]:
    """Real sweeps of the config's targets on one Engine, observed by a fresh store."""
    engine = Engine(config)
    store = store_for(config, config.enabled_targets)
    engine.listeners.append(store.observe)
    engine.breaker_listeners.append(store.breaker_changed)
    try:
        results = [engine.sweep() for _ in range(sweeps)]
    finally:
        engine.close()
    return store, results


# --- One realistic exposition, shared by the label-set table -----------------------------

@pytest.fixture(scope="module")
def exposition():
    """Two targets swept once: a healthy one with labels, and one that needed a retry."""
    routes = {"/ok": reply(), "/flaky": sequence(reply("503 Service Unavailable"), reply())}
    with HTTPFarm(routes) as farm:
        config = parse_config(config_text([
                          {"name": "ok", "url": farm.url("/ok"), "labels": {"team": "identity"}},
                          {"name": "flaky", "url": farm.url("/flaky"), "method": "HEAD"},
                      ], retries=2, backoff=0.01), "<test>")
        store, _ = swept_store(config)
    store.sweep_finished(0.5)
    return generate_latest(build_registry(store)).decode()


FAMILY_LABELS = [
    # (sample name, prometheus type of its family, label names of each sample)
    ("greenmon_up", "gauge", {"target"}),
    ("greenmon_http_status_code", "gauge", {"target"}),
    ("greenmon_breaker_state", "gauge", {"target"}),
    ("greenmon_last_check_timestamp_seconds", "gauge", {"target"}),
    ("greenmon_checks_total", "counter", {"target"}),
    ("greenmon_check_errors_total", "counter", {"target", "class"}),
    ("greenmon_check_retries_total", "counter", {"target", "class"}),
    ("greenmon_check_duration_seconds_bucket", "histogram", {"target", "le"}),
    ("greenmon_check_duration_seconds_count", "histogram", {"target"}),
    ("greenmon_check_duration_seconds_sum", "histogram", {"target"}),
    ("greenmon_target_info", "gauge", {"target", "url", "method", "team"}),
    ("greenmon_targets", "gauge", set()),
    ("greenmon_inflight_checks", "gauge", set()),
    ("greenmon_sweep_duration_seconds", "gauge", set()),
    ("greenmon_sweeps_total", "counter", set()),
    ("greenmon_build_info", "gauge", {"version", "location"}),
]


@pytest.mark.parametrize("name, kind, labels", FAMILY_LABELS, ids=[row[0] for row in FAMILY_LABELS])
def test_each_family_has_its_label_set_and_type(exposition, name, kind, labels):
    found = select(exposition, name)
    assert found, f"no {name} sample in the exposition"
    assert {s.type for s in found} == {kind}
    assert label_sets(found, name) == {frozenset(labels)}


def test_exposition_values_after_one_real_sweep(exposition):
    assert value(exposition, "greenmon_up", target="ok") == 1
    assert value(exposition, "greenmon_up", target="flaky") == 1
    assert value(exposition, "greenmon_http_status_code", target="ok") == 200
    assert value(exposition, "greenmon_checks_total", target="flaky") == 1
    assert value(exposition, "greenmon_check_retries_total", target="flaky", **{"class": "http"}) == 1
    assert value(exposition, "greenmon_check_duration_seconds_count", target="flaky") == 2
    assert value(exposition, "greenmon_targets") == 2
    assert value(exposition, "greenmon_sweeps_total") == 1
    assert value(exposition, "greenmon_sweep_duration_seconds") == 0.5


# --- Checks and errors ----------------------------------------------------------------

def test_every_error_class_starts_at_zero_for_every_target():
    found = scrape(store_with("a", "b"))
    for name in ("a", "b"):
        assert value(found, "greenmon_checks_total", target=name) == 0
        # No greenmon_up before a target's first check: an unknown state is not "down".
        assert value(found, "greenmon_up", target=name) is None
        errors = {s.labels["class"]: s.value for s in select(found, "greenmon_check_errors_total", target=name)}
        assert errors == dict.fromkeys(ERROR_CLASSES, 0.0)
        retries = {s.labels["class"]: s.value for s in select(found, "greenmon_check_retries_total", target=name)}
        assert retries == dict.fromkeys(ERROR_CLASSES, 0.0)


@pytest.mark.parametrize("error_class", ERROR_CLASSES)
def test_a_failed_check_counts_in_its_own_class_only(error_class):
    store = store_with("a")
    store.observe(result("a"))
    store.observe(result("a", ok=False, error_class=error_class, status=None))
    found = scrape(store)
    assert value(found, "greenmon_checks_total", target="a") == 2
    errors = {s.labels["class"]: s.value for s in select(found, "greenmon_check_errors_total", target="a")}
    assert errors == {c: (1.0 if c == error_class else 0.0) for c in ERROR_CLASSES}
    assert value(found, "greenmon_up", target="a") == 0


def test_checks_and_errors_from_real_sweeps():
    routes = {"/ok": reply(), "/broken": reply("500 Internal Server Error")}
    with HTTPFarm(routes) as farm:
        config = parse_config(config_text([{"name": "ok", "url": farm.url("/ok")},
                                           {"name": "broken", "url": farm.url("/broken")},
                                           {"name": "refused", "url": f"http://127.0.0.1:{closed_port()}/"}]),
                              "<test>")
        store, _ = swept_store(config, sweeps=2)
    found = scrape(store)
    for name in ("ok", "broken", "refused"):
        assert value(found, "greenmon_checks_total", target=name) == 2
    assert value(found, "greenmon_check_errors_total", target="broken", **{"class": "http"}) == 2
    assert value(found, "greenmon_check_errors_total", target="refused", **{"class": "connection"}) == 2
    assert sum(s.value for s in select(found, "greenmon_check_errors_total", target="ok")) == 0
    assert value(found, "greenmon_up", target="ok") == 1
    assert value(found, "greenmon_up", target="broken") == 0
    assert value(found, "greenmon_http_status_code", target="broken") == 500
    assert value(found, "greenmon_http_status_code", target="refused") == 0


def test_up_and_status_follow_the_last_check():
    store = store_with("a")
    store.observe(result("a"))
    assert value(scrape(store), "greenmon_up", target="a") == 1
    store.observe(result("a", ok=False, error_class="http", status=503))
    found = scrape(store)
    assert value(found, "greenmon_up", target="a") == 0
    assert value(found, "greenmon_http_status_code", target="a") == 503
    store.observe(result("a", checked_at=1_800_000_060.5))
    found = scrape(store)
    assert value(found, "greenmon_up", target="a") == 1
    assert value(found, "greenmon_last_check_timestamp_seconds", target="a") == 1_800_000_060.5


# --- Retries ------------------------------------------------------------------------

def test_retries_count_the_class_that_caused_them_in_a_real_sweep():
    routes = {"/flaky": sequence(reply("503 Service Unavailable"), reply("503 Service Unavailable"), reply())}
    with HTTPFarm(routes) as farm:
        config = parse_config(config_text([{"name": "flaky", "url": farm.url("/flaky")}], retries=3, backoff=0.01),
                              "<test>")
        store, results = swept_store(config)
    assert results[0][0].ok and results[0][0].attempts == 3
    found = scrape(store)
    retries = {s.labels["class"]: s.value for s in select(found, "greenmon_check_retries_total", target="flaky")}
    assert retries == {**dict.fromkeys(ERROR_CLASSES, 0.0), "http": 2.0}
    assert value(found, "greenmon_check_retries_total", target="flaky", **{"class": "http"}) == 2
    # The check itself succeeded: retries are not errors.
    assert value(found, "greenmon_check_errors_total", target="flaky", **{"class": "http"}) == 0
    assert value(found, "greenmon_checks_total", target="flaky") == 1


def test_retries_accumulate_per_class():
    store = store_with("a")
    store.observe(result("a", attempts=4, latencies=(1.0, 0.1, 1.0, 0.05),
                         retried=("timeout", "connection", "timeout")))
    store.observe(result("a", ok=False, error_class="http", status=503, attempts=2,
                         latencies=(0.1, 0.1), retried=("http",)))
    found = scrape(store)
    retries = {s.labels["class"]: s.value for s in select(found, "greenmon_check_retries_total", target="a")}
    assert retries == {"timeout": 2.0, "connection": 1.0, "http": 1.0, "auth": 0.0, "content": 0.0}


def test_the_cached_exposition_follows_every_kind_of_change():
    """Scraped after each step, so each step formats only the families it changed: a
    family left out of a step's change set would keep its old text and fail the oracle."""
    from dataclasses import replace
    from greenmon.result import TLSFacts
    store = store_with("a", "b")
    old_cert = TLSFacts("TLSv1.3", 1_900_000_000.0, "CN=a", "CN=ca")
    steps = [
        lambda: store.observe(result("a")),
        lambda: store.observe(result("a", attempts=2, latencies=(0.2, 0.1), retried=("timeout",))),
        lambda: store.observe(result("a", ok=False, error_class="http", status=503)),
        lambda: store.observe(replace(result("a"), tls=old_cert, timings={"dns": 0.001, "connect": 0.002})),
        lambda: store.observe(replace(result("a"), tls=replace(old_cert, cert_not_after=1_950_000_000.0,
                                                              version="TLSv1.2"))),
        lambda: store.breaker_changed("a", BreakerState(state="open", failures=3, opened_at=1.0)),
        lambda: store.observe(result("a", attempts=0, breaker="open", ok=False, error_class="connection")),
        lambda: store.observe(result("b", ok=False, error_class="content", attempts=3,
                                     latencies=(0.1, 0.1, 0.1), retried=("content", "content"))),
    ]
    before = scrape(store)
    for step in steps:
        step()
        after = scrape(store)
        assert after != before    # each step changes something, and the oracle checked all of it
        before = after


# --- Duration histogram ------------------------------------------------------------

def test_every_attempt_is_observed_in_a_real_sweep():
    with HTTPFarm({"/down": reply("503 Service Unavailable")}) as farm:
        config = parse_config(config_text([{"name": "down", "url": farm.url("/down")}], retries=2, backoff=0.01),
                              "<test>")
        store, results = swept_store(config)
    assert results[0][0].attempts == 3
    found = scrape(store)
    assert value(found, "greenmon_check_duration_seconds_count", target="down") == 3
    assert value(found, "greenmon_check_duration_seconds_bucket", target="down", le="+Inf") == 3
    assert value(found, "greenmon_check_duration_seconds_sum", target="down") > 0
    assert value(found, "greenmon_checks_total", target="down") == 1


def test_attempt_latencies_land_in_cumulative_buckets():
    store = store_with("a")
    store.observe(result("a", attempts=3, latencies=(0.001, 1.5, 3.0), retried=("timeout", "timeout")))
    found = scrape(store)
    buckets = {s.labels["le"]: s.value for s in select(found, "greenmon_check_duration_seconds_bucket", target="a")}
    assert buckets["0.005"] == 1
    assert buckets["1.0"] == 1
    assert buckets["2.0"] == 2
    assert buckets["2.5"] == 2
    assert buckets["5.0"] == 3
    assert buckets["+Inf"] == 3
    assert value(found, "greenmon_check_duration_seconds_count", target="a") == 3
    assert value(found, "greenmon_check_duration_seconds_sum", target="a") == pytest.approx(4.501)


def test_default_buckets_include_the_p95_objective():
    assert 2.0 in DEFAULT_BUCKETS
    config = parse_config(config_text([{"name": "a", "url": "http://127.0.0.1:9/"}]), "<test>")
    assert 2.0 in config.metrics.buckets
    store = store_for(config, config.enabled_targets)
    store.observe(result("a"))
    les = [s.labels["le"] for s in select(scrape(store), "greenmon_check_duration_seconds_bucket", target="a")]
    assert les == [repr(float(b)) for b in DEFAULT_BUCKETS] + ["+Inf"]
    assert "2.0" in les


def test_buckets_are_configurable_and_upper_bounds_are_inclusive():
    config = parse_config(config_text([{"name": "a", "url": "http://127.0.0.1:9/"}],
                                      extra="[metrics]\nbuckets = [0.1, 0.3]\n"), "<test>")
    store = store_for(config, config.enabled_targets)
    store.observe(result("a", attempts=3, latencies=(0.1, 0.2, 0.4), retried=("timeout", "timeout")))
    buckets = {s.labels["le"]: s.value for s in select(scrape(store), "greenmon_check_duration_seconds_bucket")}
    assert buckets == {"0.1": 1.0, "0.3": 2.0, "+Inf": 3.0}


def test_per_target_histograms_false_gives_one_histogram_without_target():
    routes = {"/a": reply(), "/b": reply("503 Service Unavailable")}
    with HTTPFarm(routes) as farm:
        config = parse_config(config_text([{"name": "a", "url": farm.url("/a")}, {"name": "b", "url": farm.url("/b")}],
                                          retries=1, backoff=0.01,
                                          extra="[metrics]\nper_target_histograms = false\n"), "<test>")
        store, _ = swept_store(config)
    found = scrape(store)
    assert label_sets(found, "greenmon_check_duration_seconds_bucket") == {frozenset({"le"})}
    assert label_sets(found, "greenmon_check_duration_seconds_count") == {frozenset()}
    # 1 attempt of a, 2 of b (one retry of the 503), in the one shared histogram.
    assert value(found, "greenmon_check_duration_seconds_count") == 3
    # Every other per-target family keeps its target label.
    assert value(found, "greenmon_up", target="a") == 1
    assert value(found, "greenmon_checks_total", target="b") == 1


# --- Skipped checks (open breaker) ----------------------------------------------------------

def test_a_skipped_result_is_not_a_check():
    store = store_with("a")
    store.observe(result("a", ok=False, error_class="connection", status=None, breaker="open"))
    store.observe(result("a", ok=False, error_class="connection", attempts=0, breaker="open"))
    found = scrape(store)
    assert value(found, "greenmon_checks_total", target="a") == 1
    assert value(found, "greenmon_check_errors_total", target="a", **{"class": "connection"}) == 1
    assert value(found, "greenmon_up", target="a") == 0
    assert value(found, "greenmon_breaker_state", target="a") == 1
    assert value(found, "greenmon_http_status_code", target="a") == 0
    assert value(found, "greenmon_check_duration_seconds_count", target="a") == 1


def test_a_breaker_opened_by_a_real_failure_skips_without_counting():
    url = f"http://127.0.0.1:{closed_port()}/"
    config = parse_config(config_text([{"name": "refused", "url": url}], extra=BREAKER_OPENS_AT_ONCE), "<test>")
    store, results = swept_store(config, sweeps=3)
    assert [r[0].attempts for r in results] == [1, 0, 0]
    found = scrape(store)
    assert value(found, "greenmon_checks_total", target="refused") == 1
    assert value(found, "greenmon_check_errors_total", target="refused", **{"class": "connection"}) == 1
    assert value(found, "greenmon_up", target="refused") == 0
    assert value(found, "greenmon_breaker_state", target="refused") == 1


def test_breaker_state_values():
    store = store_with("a", "b", "c")
    store.observe(result("a"))
    store.observe(result("b", ok=False, error_class="http", status=503, breaker="open"))
    store.observe(result("c", ok=False, error_class="http", status=503, breaker="open"))
    store.breaker_changed("c", BreakerState("half-open"))   # the engine starts c's trial
    found = scrape(store)
    assert [value(found, "greenmon_breaker_state", target=n) for n in "abc"] == [0, 1, 2]
    store.observe(result("c"))   # the trial succeeded
    assert value(scrape(store), "greenmon_breaker_state", target="c") == 0


# --- Target info, reload, build info -----------------------------------------------------

def test_target_info_carries_url_method_and_labels():
    store = MetricsStore(DEFAULT_BUCKETS)
    store.set_targets([
        target("users", "http://127.0.0.1:9/users", method="POST", labels={"team": "identity", "tier": "1"}),
        target("billing", "http://127.0.0.1:9/billing", labels={"team": "money"}),
    ])
    found = scrape(store)
    info = {s.labels["target"]: s for s in select(found, "greenmon_target_info")}
    assert info["users"].labels == {"target": "users", "url": "http://127.0.0.1:9/users",
                                    "method": "POST", "team": "identity", "tier": "1"}
    assert info["billing"].labels["team"] == "money"
    assert info["billing"].labels["method"] == "GET"
    assert info["billing"].labels.get("tier", "") == ""  # empty means absent in Prometheus
    assert {s.value for s in info.values()} == {1.0}


def test_target_info_url_has_no_password():
    store = MetricsStore(DEFAULT_BUCKETS)
    store.set_targets([target("secret", "http://monitor:hunter2@127.0.0.1:9/x")])
    text = generate_latest(build_registry(store)).decode()
    assert "hunter2" not in text
    assert value(text, "greenmon_target_info", target="secret") == 1
    assert select(text, "greenmon_target_info")[0].labels["url"] == "http://monitor:***@127.0.0.1:9/x"


def test_set_targets_drops_a_removed_targets_series():
    store = store_with("keep", "gone")
    for name in ("keep", "gone"):
        store.observe(result(name, attempts=2, latencies=(0.1, 0.1), retried=("timeout",)))
    assert targets_in(scrape(store)) == {"keep", "gone"}
    store.set_targets([target("keep"), target("new")])
    found = scrape(store)
    assert targets_in(found) == {"keep", "new"}
    assert value(found, "greenmon_targets") == 2
    assert value(found, "greenmon_checks_total", target="keep") == 1  # a kept target keeps its counts
    assert value(found, "greenmon_check_duration_seconds_count", target="keep") == 2
    assert value(found, "greenmon_checks_total", target="new") == 0
    assert len(select(found, "greenmon_check_errors_total", target="new")) == len(ERROR_CLASSES)
    # A result for a target no longer tracked is ignored, not resurrected.
    store.observe(result("gone"))
    assert "gone" not in targets_in(scrape(store))


def test_build_info_carries_the_installed_packages_version():
    found = scrape(MetricsStore(DEFAULT_BUCKETS))
    [build] = select(found, "greenmon_build_info")
    # The version the package was installed as (setup.cfg reads greenmon.__version__).
    assert build.labels["version"] == installed_version("greenmon") == greenmon.__version__
    assert build.value == 1


@pytest.mark.parametrize("location", ["", "eu-west-1"])
def test_build_info_says_where_the_instance_probes_from(location):
    """monitor.location is the location label; none set is location="" (the family keeps
    one label set; Prometheus stores an empty label as none). A reload's new location shows
    at the next scrape."""
    store = MetricsStore(DEFAULT_BUCKETS, monitor=MonitorSettings(location=location))
    [build] = select(scrape(store), "greenmon_build_info")
    assert build.labels == {"location": location, "version": greenmon.__version__}
    store.set_monitor(MonitorSettings(location="ap-south-2"))
    [build] = select(scrape(store), "greenmon_build_info")
    assert build.labels["location"] == "ap-south-2"


def test_inflight_gauge_reads_its_source_at_scrape_time():
    count = {"now": 0}
    store = MetricsStore(DEFAULT_BUCKETS, inflight=lambda: count["now"])
    assert value(scrape(store), "greenmon_inflight_checks") == 0
    count["now"] = 7
    assert value(scrape(store), "greenmon_inflight_checks") == 7


def test_the_global_registry_is_left_alone():
    with HTTPFarm({"/ok": reply()}) as farm:
        config = parse_config(config_text([{"name": "ok", "url": farm.url("/ok")}]), "<test>")
        store, _ = swept_store(config)
    assert value(scrape(store), "greenmon_up", target="ok") == 1
    assert not [s for s in samples(generate_latest(REGISTRY).decode()) if s.name.startswith("greenmon_")]


def timed(checked: MonitorResult) -> MonitorResult:
    """``checked`` with the phases of a plain HTTP check (no tls phase)."""
    return dataclasses.replace(checked, timings={"dns": 0.0, "connect": 0.01, "tls": None,
                                                 "processing": 0.18, "transfer": 0.01})


def test_the_series_per_target_table_of_the_metrics_page_is_true():
    """docs/metrics.md says what a plain HTTP target costs by [metrics] setting: count it."""
    def count(buckets=DEFAULT_BUCKETS, per_target=True, phases=True, classes=True) -> int:
        store = MetricsStore(buckets, per_target, phase_gauges=phases, all_error_classes=classes)
        store.set_targets([Target(name="a", url="http://127.0.0.1:9/")])
        store.observe(timed(result("a", latencies=(0.2,))))
        return sum(1 for sample in scrape(store) if sample.labels.get("target") == "a")

    few = (0.25, 0.5, 1.0, 2.0, 5.0)
    counted = {"defaults (12 buckets, phase gauges, every error class)": count(),
               "`phase_gauges = false`": count(phases=False),
               "`buckets = [0.25, 0.5, 1.0, 2.0, 5.0]`": count(buckets=few),
               "`all_error_classes = false`": count(classes=False),
               "the three above (the 50,000-target settings)": count(buckets=few, phases=False, classes=False),
               "`per_target_histograms = false`": count(per_target=False)}
    page = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text(encoding="utf-8")
    table = page.split("## Series per target", 1)[1].split("\n\n", 3)[2]
    documented = {cells[0]: int(cells[1]) for cells in (
        [cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[2:])}
    assert documented == counted


def test_phase_gauges_false_exports_no_phase_series():
    config = parse_config(config_text([{"name": "a", "url": "http://127.0.0.1:9/"}],
                                      extra="[metrics]\nphase_gauges = false\n"), "<test>")
    store = store_for(config, config.enabled_targets)
    store.observe(timed(result("a", latencies=(0.2,))))
    found = scrape(store)
    assert select(found, "greenmon_check_phase_seconds") == [] and value(found, "greenmon_up", target="a") == 1


def test_all_error_classes_false_exports_the_classes_that_happened_only():
    """Error and retry counters appear with their class's first occurrence, and stay; a reload
    that turns the option back on brings every class back from the kept counts."""
    store = MetricsStore(DEFAULT_BUCKETS, all_error_classes=False)
    store.set_targets([target("a"), target("b")])
    store.observe(result("a"))
    store.observe(result("b", ok=False, error_class="timeout", attempts=2, retried=("connection",)))
    found = scrape(store)
    assert select(found, "greenmon_check_errors_total", target="a") == []
    assert select(found, "greenmon_check_retries_total", target="a") == []
    assert [(s.labels["class"], s.value) for s in select(found, "greenmon_check_errors_total")] == [("timeout", 1)]
    assert [(s.labels["class"], s.value) for s in select(found, "greenmon_check_retries_total")] == [("connection", 1)]
    store.observe(result("b"))   # a success: the counter stays, at 1
    assert value(scrape(store), "greenmon_check_errors_total", target="b", **{"class": "timeout"}) == 1
    store.observe(result("b", ok=False, error_class="http", status=500))
    assert {s.labels["class"] for s in select(scrape(store), "greenmon_check_errors_total", target="b")} == {
        "timeout", "http"}
    store.configure(MetricsSettings(all_error_classes=True))
    found = scrape(store)
    assert len(select(found, "greenmon_check_errors_total", target="a")) == len(ERROR_CLASSES)
    assert value(found, "greenmon_check_errors_total", target="b", **{"class": "http"}) == 1


def test_all_error_classes_is_a_metrics_key():
    config = parse_config(config_text([{"name": "a", "url": "http://127.0.0.1:9/"}],
                                      extra="[metrics]\nall_error_classes = false\n"), "<test>")
    assert config.metrics.all_error_classes is False
    assert store_for(config, config.enabled_targets).all_error_classes is False


def test_turning_phase_gauges_off_and_on_by_reload_renders_the_cache_anew():
    """A reload that changes phase_gauges: the cached exposition follows, both ways (scrape
    checks it against prometheus_client's own text each time)."""
    store = MetricsStore(DEFAULT_BUCKETS)
    store.set_targets([target("a")])
    store.observe(timed(result("a")))
    assert len(select(scrape(store), "greenmon_check_phase_seconds")) == 4
    store.configure(MetricsSettings(phase_gauges=False))
    assert select(scrape(store), "greenmon_check_phase_seconds") == []
    store.configure(MetricsSettings(phase_gauges=True))
    assert len(select(scrape(store), "greenmon_check_phase_seconds")) == 4
