"""Daemon soak: 500 targets, 200 sweeps, flat resources, /metrics always answers (docs/reliability.md).

One soak run (a module fixture) feeds every test here. Three processes, so that the
numbers are greenmon's own:

- the target farm (load_helpers.FarmProcess): healthy, failing (500) and never-answering
  endpoints, plus a refused port;
- greenmon itself, the real command line as a daemon (load_helpers.ProbedDaemon), which
  after every sweep (a pass of the schedule's interval: every target is due once in it)
  writes its number and duration to a probe file and, at a few sweeps, its open file
  descriptors, greenlets, RSS and the checks in flight at that moment (each holds a
  greenlet and a socket: they are told apart from what stays);
- a scraper (load_helpers.Scraper) GETting /metrics in a loop, timing each scrape the way
  Prometheus would see it.

The soak is capped at SOAK_CAP_S; reaching 200 sweeps inside the cap is asserted. Times are
bounded only against hangs, with margins that hold on a loaded 2-core machine (docs/testing.md):
how fast a scrape or a sweep is belongs to benchmarks/ (python -m benchmarks.run, daemon scenario).
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass

import gevent
import pytest

from support.configs import config_text
from support.daemon_helpers import value
from support.load_helpers import FarmProcess, ProbedDaemon, Scraper
from support.servers import closed_port

SWEEPS = 200
WARM_UP_SWEEPS = 20
SAMPLE_AT = (WARM_UP_SWEEPS, 50, 80, 110, 140, 170, SWEEPS)
# 200 passes of the 0.3 s interval take 60 s; the rest is for a loaded machine. The cap only
# ends a daemon that stopped sweeping (it never reaches 200): how fast it sweeps is benchmarks/'.
SOAK_CAP_S = 360.0
TIMEOUT_S = 0.3
RETRIES = 1
BACKOFF_S = 0.01
INTERVAL_S = TIMEOUT_S   # as short as the config allows: every target is due every 0.3 s
MIX = {"healthy": 250, "failing": 100, "refused": 75, "hanging": 75}

# The longest one check may take: every attempt runs into the deadline, plus the backoff
# between them. A daemon sweep is one pass of the interval, done when every check started in
# it has ended: at most INTERVAL_S + CHECK_BOUND_S (0.91 s) on an idle machine. A check that
# outlived its deadline would hold its pass open until the farm's silent server lets go of
# it (60 s): the bound is far below that, to catch a hang, and far above a pass on a loaded
# machine, not to measure speed.
CHECK_BOUND_S = (RETRIES + 1) * TIMEOUT_S + RETRIES * BACKOFF_S
SWEEP_HANG_BOUND_S = 10.0
# Every scrape must be answered within Prometheus' default scrape_timeout (10 s): a slower
# one is a failed scrape (up == 0). How fast scrapes are is measured in benchmarks/daemon.py.
SCRAPE_TIMEOUT_S = 10.0
SCRAPE_PAUSE_S = 0.2

# After warm-up, what the daemon holds must stay flat. The bounds are generous on purpose:
# a leak of one socket or greenlet per sweep, or per failed check, blows far past them.
# (The keep-alive pool is checked on its own: it may grow until the peak of checks in flight.)
FD_SLACK = 50
GREENLET_SLACK = 50
RSS_SLACK_MB = 30.0


def soak_targets(farm: FarmProcess) -> list[dict]:
    refused = f"http://127.0.0.1:{closed_port()}"
    targets = []
    for i in range(MIX["healthy"]):
        targets.append({"name": f"healthy-{i:03d}", "url": farm.url(f"/ok?i={i}")})
    for i in range(MIX["failing"]):
        targets.append({"name": f"failing-{i:03d}", "url": farm.url(f"/err?i={i}")})
    for i in range(MIX["refused"]):
        targets.append({"name": f"refused-{i:03d}", "url": f"{refused}/?i={i}"})
    for i in range(MIX["hanging"]):
        targets.append({"name": f"hanging-{i:03d}", "url": farm.hang_url(f"/?i={i}")})
    return targets


def soak_config_text(farm: FarmProcess) -> str:
    # Breakers open after 3 failed checks and half-open 1.5 s later: failing and hanging
    # targets go through every breaker state again and again during the soak, and the
    # never-answering server is contacted (and left hanging) at every trial.
    return config_text(soak_targets(farm), retries=RETRIES, backoff=BACKOFF_S, timeout=TIMEOUT_S,
                       interval=INTERVAL_S, breaker={"failure_threshold": 3, "recovery_timeout": 1.5})


@dataclass
class SoakRun:
    farm_ports: dict[str, int]
    seconds: float
    probes: list[dict]
    scrapes: list[tuple[float, float, int]]
    metrics: str
    results: dict
    exit_code: int | None
    stderr: str

    @property
    def sweeps(self) -> int:
        return max((p["sweep"] for p in self.probes), default=0)

    @property
    def samples(self) -> dict[int, dict]:
        """Resources by sweep; ``other_fds``: every descriptor but the pooled keep-alive
        connections to the farm (their number follows the peak of checks in flight, see below)."""
        out = {}
        for probe in self.probes:
            if "fds" in probe:
                pooled = probe["tcp"].get(f"{self.farm_ports['http']} ESTABLISHED", 0)
                waiting = probe["tcp"].get(f"{self.farm_ports['hang']} ESTABLISHED", 0)
                out[probe["sweep"]] = {**probe, "pooled": pooled, "waiting": waiting,
                                       "other_fds": probe["fds"] - pooled - waiting,
                                       "idle_greenlets": probe["greenlets"] - probe["inflight"]}
        return out


@pytest.fixture(scope="module")
def soak(tmp_path_factory) -> SoakRun:
    workdir = tmp_path_factory.mktemp("soak")
    with FarmProcess() as farm:
        config = workdir / "greenmon.toml"
        config.write_text(soak_config_text(farm), encoding="utf-8")
        with ProbedDaemon(config, workdir, sample_at=SAMPLE_AT) as daemon:
            daemon.wait_ready(timeout=60)
            started = time.monotonic()
            # The scraper's own timeout is far past the 10 s asserted: a slow scrape is
            # reported with its latency, not as a failed request.
            with Scraper(daemon.url("/metrics"), pause_s=SCRAPE_PAUSE_S,
                         timeout_s=3 * SCRAPE_TIMEOUT_S) as scraper:
                while time.monotonic() - started < SOAK_CAP_S and daemon.alive():
                    probes = daemon.probes()
                    if probes and probes[-1]["sweep"] >= SWEEPS:
                        break
                    gevent.sleep(0.25)
                seconds = time.monotonic() - started
                scrapes = scraper.stop()
            metrics = daemon.metrics() if daemon.alive() else ""
            results = daemon.get("/api/results").json() if daemon.alive() else {}
            if daemon.alive():
                daemon.send(signal.SIGTERM)
            exit_code = daemon.wait_exit(CHECK_BOUND_S + 30)   # against a hang, not a speed check
            return SoakRun({"http": farm.http_port, "hang": farm.hang_port}, seconds, daemon.probes(),
                           scrapes, metrics, results, exit_code, daemon.stderr())


def test_soak_reaches_200_sweeps_within_the_cap(soak):
    assert soak.sweeps >= SWEEPS, f"only {soak.sweeps} sweeps in {soak.seconds:.0f}s"
    assert value(soak.metrics, "greenmon_sweeps_total") >= SWEEPS
    assert value(soak.metrics, "greenmon_targets") == 500
    # and the daemon stopped cleanly on SIGTERM afterwards, without a traceback
    assert soak.exit_code == 0, soak.stderr[-2000:]
    assert "Traceback" not in soak.stderr


def test_soak_no_sweep_hangs(soak):
    durations = [p["duration_s"] for p in soak.probes]
    assert len(durations) >= SWEEPS - 1
    # A pass lasts at least its interval: the probe reads what the daemon exports.
    assert min(durations) >= INTERVAL_S * 0.99, sorted(durations)[:5]
    slowest = sorted(durations)[-5:]
    assert slowest[-1] <= SWEEP_HANG_BOUND_S, f"slowest sweeps {slowest} > {SWEEP_HANG_BOUND_S:.2f}s"


@pytest.mark.parametrize("resource, slack", [("other_fds", FD_SLACK), ("idle_greenlets", GREENLET_SLACK),
                                             ("rss_mb", RSS_SLACK_MB)])
def test_soak_resources_are_flat_after_warm_up(soak, resource, slack):
    """No leak: late in the soak the daemon holds what it held after the warm-up."""
    samples = soak.samples
    assert set(samples) == set(SAMPLE_AT), f"sampled at {sorted(samples)}"
    baseline = samples[WARM_UP_SWEEPS][resource]
    history = {sweep: sample[resource] for sweep, sample in sorted(samples.items())}
    for sweep, measured in history.items():
        assert measured <= baseline + slack, f"{resource} by sweep: {history}"


def test_soak_sockets_are_pooled_or_closed(soak):
    """The daemon holds keep-alive connections to the farm, at most one per target that answers
    (their count follows the peak of checks in flight), sockets to the server that never
    answers only for the checks waiting on it right now (none left behind by a check that
    ended), and none half-closed (CLOSE_WAIT)."""
    keep_alive_targets = MIX["healthy"] + MIX["failing"]
    http, hang = soak.farm_ports["http"], soak.farm_ports["hang"]
    for sweep, sample in sorted(soak.samples.items()):
        tcp = sample["tcp"]   # (connections *to* the daemon, from the scraper, come and go)
        assert sample["pooled"] <= keep_alive_targets, (sweep, tcp)
        hanging = sum(n for key, n in tcp.items() if key.startswith(f"{hang} "))
        assert hanging <= min(sample["inflight"], MIX["hanging"]), \
            f"sweep {sweep}: {hanging} sockets to the silent server, {sample['inflight']} checks in flight: {tcp}"
        assert not tcp.get(f"{http} CLOSE_WAIT"), f"sweep {sweep}: half-closed farm connections: {tcp}"


def enough_scrapes(soak: SoakRun) -> int:
    """As many scrapes as the soak's length holds even if each took the whole scrape timeout: the
    scraper kept asking all along (fewer, and "every scrape answered" would say little)."""
    return max(5, int(soak.seconds / (SCRAPE_TIMEOUT_S + SCRAPE_PAUSE_S)))


def test_soak_metrics_answers_every_scrape(soak):
    assert len(soak.scrapes) >= enough_scrapes(soak), f"only {len(soak.scrapes)} scrapes in {soak.seconds:.0f}s"
    failed = [s for s in soak.scrapes if s[2] != 200]
    assert not failed, f"{len(failed)} of {len(soak.scrapes)} scrapes failed: {failed[:5]}"


def test_soak_every_metrics_scrape_is_answered_within_the_scrape_timeout(soak):
    """Never hangs: every scrape answered within Prometheus' default scrape_timeout (a failed
    one would read as greenmon down). Not a speed bound: benchmarks/daemon.py measures that."""
    latencies = sorted(latency for _, latency, _ in soak.scrapes)
    assert len(latencies) >= enough_scrapes(soak)
    slow = [round(latency, 2) for latency in latencies if latency >= SCRAPE_TIMEOUT_S]
    assert not slow, (f"{len(slow)} of {len(latencies)} scrapes took >= {SCRAPE_TIMEOUT_S:.0f} s: {slow}; "
                      f"median {latencies[len(latencies) // 2] * 1000:.0f} ms")


def test_soak_results_keep_their_classes(soak):
    expected = {"failing": ("http", "500"), "refused": ("connection", "refused"),
                "hanging": ("timeout", "read")}
    results = soak.results["results"]
    assert len(results) == 500
    for result in results:
        kind = result["target"].split("-")[0]
        if kind == "healthy":
            assert result["ok"] and result["breaker"] == "closed", result
        else:
            assert not result["ok"], result
            assert (result["error_class"], result["detail"]) == expected[kind], result
    summary = soak.results["summary"]
    assert (summary["targets"], summary["up"], summary["down"]) == (500, 250, 250)
    json.dumps(soak.results)  # a plain JSON document
