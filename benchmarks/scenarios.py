"""The benchmark scenarios: how many targets, how slow, on how many hosts, TLS or not, which greenmon runs.

``DaemonScenario`` is the other kind: greenmon's daemon left running on its
timetable and scraped (``benchmarks.daemon``), not a sweep against the clock.

This machine's hard RLIMIT_NOFILE may be well under 2 x 50,000 (20,000 on
the 2-core benchmark machines), and the farm and the client each hold one
socket per connection, so a scenario's concurrency is capped at
``MAX_CONCURRENCY``: the 50k scenarios sweep in waves of 10,000.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

MAX_CONCURRENCY = 10_000
SEED_BUDGET_S = 5.0            # the seed (5 threads) sweeps about this long, then is extrapolated
PEERS = ("seed", "gevent_requests", "gevent_urllib3", "grequests", "aiohttp", "raw_asyncio")


@dataclass(frozen=True)
class Scenario:
    name: str
    n: int
    delay_ms: int
    hosts: int = 1
    tls: bool = False
    # None: monitor.concurrency = N (capped); "defaults": greenmon's own [monitor] defaults.
    concurrency: int | None = None
    greenmon_defaults: bool = False
    # greenmon runs: None is the plain command, an int adds --workers W. The last is the reference
    # that the peers' ratios are computed against.
    workers: tuple[int | None, ...] = (None,)
    seed_n: int | None = None      # None: as many as the seed sweeps in SEED_BUDGET_S
    cap_s: float = 180.0           # hard time cap of one client run
    optional: bool = False         # only with --scenarios all (or by name)
    steady: bool = True            # also measure the daemon's steady state (benchmarks.steady)
    # > 1: greenmon checks the N URLs as N / flow_steps flows of this many steps, each step after
    # the first sending a value the one before extracted; and once as N one-step targets, to compare.
    flow_steps: int = 1
    # > 1: greenmon checks the N URLs (on as many hosts) as N / addresses targets of one name
    # with that many addresses, addresses = "all"; and once as N one-address targets, to compare.
    addresses: int = 1
    description: str = ""

    @property
    def client_concurrency(self) -> int:
        return min(self.concurrency or self.n, MAX_CONCURRENCY)

    @property
    def greenmon_concurrency(self) -> int | None:
        return None if self.greenmon_defaults else self.client_concurrency

    @property
    def seed_count(self) -> int:
        if self.seed_n is not None:
            return min(self.seed_n, self.n)
        per_request_s = max(self.delay_ms / 1000.0, 0.01)
        return min(self.n, max(10, int(SEED_BUDGET_S * 5 / per_request_s)))

    def summary(self) -> str:
        parts = [f"N={self.n:,}", f"delay {self.delay_ms} ms", f"{self.hosts} host{'s' if self.hosts > 1 else ''}",
                 "HTTPS" if self.tls else "HTTP"]
        if self.greenmon_defaults:
            parts.append("greenmon with default [monitor] (concurrency 1000, timeout 10 s)")
        else:
            parts.append(f"concurrency {self.client_concurrency:,}")
        if self.flow_steps > 1:
            parts.append(f"greenmon as {self.n // self.flow_steps:,} flows of {self.flow_steps} steps "
                         f"and as {self.n:,} one-step targets")
        if self.addresses > 1:
            parts.append(f"greenmon as {self.n // self.addresses:,} targets of a name with "
                         f"{self.addresses} addresses (addresses = \"all\") and as {self.n:,} targets")
        return ", ".join(parts)


# What a daemon scenario can be judged on (benchmarks.daemon computes them, report prints them).
CRITERIA = ("scrape", "latency", "reference", "inflight", "loop_lag", "rss", "late")


@dataclass(frozen=True)
class DaemonScenario:
    """greenmon's daemon checking ``n`` targets every ``interval`` s while /metrics is scraped."""

    name: str
    n: int
    delay_ms: int = 1000
    hosts: int = 64
    interval: float = 10.0
    timeout: float = 5.0
    concurrency: int = 10_000
    workers: int | str | None = None     # None: one process; N or "auto": --workers
    window_s: float = 40.0               # measured, after one interval of warm-up
    scrape_every_s: float = 1.0
    reference: bool = True               # also run the paced aiohttp client on the same schedule
    judge: tuple[str, ...] = ()          # the CRITERIA that get PASS/FAIL; the rest are shown
    optional: bool = False               # only with --scenarios all (or by name)
    tls: bool = False                    # plain HTTP (the farm is started for every scenario's needs)
    description: str = ""
    # The scenario's own targets, where they are not the 10,000-target daemon's (report.TARGET_*).
    scrape_p50_s: float | None = None
    scrape_max_s: float | None = None
    rss_mb: float | None = None
    metrics: str = ""                    # the [metrics] table's lines, as TOML; "": the defaults

    @property
    def rate(self) -> float:
        """Checks per second the timetable asks for."""
        return self.n / self.interval

    @property
    def expected_checks(self) -> int:
        """Checks the timetable starts inside the measured window."""
        return round(self.n * self.window_s / self.interval)

    @property
    def expected_inflight(self) -> float:
        """Checks in flight at once on the timetable: the rate times how long a check takes."""
        return self.rate * self.delay_ms / 1000

    def summary(self) -> str:
        workers = "one process" if self.workers is None else f"--workers {self.workers}"
        return (f"daemon, N={self.n:,}, delay {self.delay_ms} ms, {self.hosts} hosts, interval "
                f"{self.interval:g} s ({self.rate:,.0f} checks/s), {workers}, /metrics scraped "
                f"every {self.scrape_every_s:g} s with gzip for {self.window_s:g} s")


@dataclass(frozen=True)
class StallScenario:
    """``plain`` plain targets checked by ``--once`` with and without one HTTPS target beside
    them, ``runs`` times each (benchmarks.stall)."""

    name: str
    plain: int = 20
    runs: int = 7
    cap_s: float = 60.0
    optional: bool = False
    description: str = ""
    hosts: int = 1
    tls: bool = True      # the farm needs its TLS port

    def summary(self) -> str:
        return (f"--once, {self.plain} plain targets with and without one HTTPS target, "
                f"{self.runs} runs each, in turn")


# Issue 23's large deployment, judged on its figures.
DAEMON_50K = DaemonScenario(
    "daemon-50k", 50_000, workers="auto", interval=60.0, scrape_every_s=15.0, window_s=120.0,
    reference=False, optional=True, judge=("scrape", "latency", "loop_lag", "rss", "late"),
    scrape_p50_s=1.0, scrape_max_s=2.0, rss_mb=250.0,
    description="a large deployment: 50,000 targets every minute, scraped every 15 s as a "
                "Prometheus would scrape it; greenmon's defaults")

SCENARIOS = [
    Scenario("1k@100ms", 1_000, 100),
    Scenario("1k@1s", 1_000, 1000, greenmon_defaults=True,
             description="greenmon with its defaults: the whole `--once` process should take < 3 s"),
    Scenario("5k@100ms-50hosts", 5_000, 100, hosts=50, concurrency=1_000,
             description="the probe-depth issue's scenario: phase timings on, 50 hosts, concurrency 1,000"),
    Scenario("10k@100ms", 10_000, 100, optional=True),
    Scenario("10k@1s", 10_000, 1000),
    Scenario("10k@1s-workers", 10_000, 1000, workers=(1, 2),
             description="greenmon --workers 1 vs --workers 2; peer ratios against --workers 2"),
    Scenario("many-hosts", 10_000, 100, hosts=64,
             description="targets spread over 64 loopback addresses: 64 connection pools"),
    Scenario("https-1k@100ms", 1_000, 100, tls=True,
             description="TLS with a CA made for the farm, trusted through ca_file"),
    Scenario("flows-1k@100ms", 2_000, 100, flow_steps=2, steady=False,
             description="1,000 flows of two steps (the second sends a header the first extracted) "
                         "against the same 2,000 requests as one-step targets: what a step of a flow "
                         "costs"),
    Scenario("addresses-1k@100ms", 3_000, 100, hosts=3, addresses=3, steady=False,
             description="1,000 targets of one name with 3 addresses, addresses = \"all\", against "
                         "the same 3,000 requests as one-address targets: what an address costs"),
    Scenario("50k@100ms", 50_000, 100, optional=True, cap_s=300.0),
    Scenario("50k@1s", 50_000, 1000, optional=True, cap_s=300.0),
    StallScenario("first-https", description="the first HTTPS check must not stall the plain "
                  "checks timed beside it: no import, trust store or context is made on the loop "
                  "while they run"),
    DaemonScenario("daemon-10k", 10_000, judge=CRITERIA,
                   description="the daemon at scale in one process; the paced aiohttp client on "
                               "the same schedule is the latency reference"),
    DaemonScenario("daemon-10k-workers2", 10_000, workers=2, judge=("rss",),
                   description="the same with --workers 2: peak RSS is judged per process, the "
                               "rest is for information"),
    # concurrency 19,000: 9,500 per worker on 2 cores, as many as a 20,000 open-file hard
    # limit holds without greenmon lowering it (limits.fit_concurrency), and above the 5,000 due.
    DaemonScenario("daemon-50k-auto", 50_000, workers="auto", concurrency=19_000, reference=False,
                   optional=True, description="interval 10 s at 50,000 targets: beyond what 2 cores "
                                              "hold, for information only"),
    DAEMON_50K,
    replace(DAEMON_50K, name="daemon-50k-lean",
            metrics='phase_gauges = false\nbuckets = [0.25, 0.5, 1.0, 2.0, 5.0]\nall_error_classes = false',
            description="the same with the README's settings for 50,000 targets: 18 series per "
                        "target instead of 39"),
]

QUICK = [
    Scenario("quick", 50, 10, hosts=2, workers=(None, 2), seed_n=20, cap_s=60.0,
             description="smoke: proves the harness works; no timing meaning"),
    Scenario("quick-https", 20, 10, tls=True, seed_n=10, cap_s=60.0,
             description="smoke over TLS"),
    Scenario("quick-flows", 20, 10, flow_steps=2, steady=False, seed_n=10, cap_s=60.0,
             description="smoke of flows against one-step targets"),
    Scenario("quick-addresses", 30, 10, hosts=3, addresses=3, steady=False, seed_n=10, cap_s=60.0,
             description="smoke of addresses = \"all\" against one-address targets"),
    StallScenario("quick-first-https", plain=5, runs=1, description="smoke of the stall scenario"),
    DaemonScenario("daemon-quick", 200, hosts=2, interval=2.0, timeout=1.5, concurrency=200,
                   window_s=8.0, description="smoke of the daemon scenario; no timing meaning"),
]

BY_NAME = {s.name: s for s in SCENARIOS + QUICK}


def select(names: str | None, quick: bool) -> list[Scenario]:
    """``--scenarios`` (comma-separated names, "default" or "all") or ``--quick``."""
    if quick and not names:
        return list(QUICK)
    if not names or names == "default":
        return [s for s in SCENARIOS if not s.optional]
    if names == "all":
        return list(SCENARIOS)
    chosen = []
    for name in (part.strip() for part in names.split(",")):
        if name == "default":
            chosen += [s for s in SCENARIOS if not s.optional]
        elif name == "quick":
            chosen += QUICK
        elif name in BY_NAME:
            chosen.append(BY_NAME[name])
        elif name:
            known = ", ".join(["default", "all"] + list(BY_NAME))
            raise ValueError(f"unknown scenario {name!r} (known: {known})")
    return chosen
