"""The benchmark scenarios: how many targets, how slow, on how many hosts, TLS or not, which greenmon runs.

This machine's hard RLIMIT_NOFILE may be well under 2 x 50,000 (20,000 on
the 2-core benchmark machines), and the farm and the client each hold one
socket per connection, so a scenario's concurrency is capped at
``MAX_CONCURRENCY``: the 50k scenarios sweep in waves of 10,000.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CONCURRENCY = 10_000
SEED_BUDGET_S = 5.0            # the seed (5 threads) sweeps about this long, then is extrapolated
PEERS = ("seed", "gevent_requests", "grequests", "aiohttp", "raw_asyncio")


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
        return ", ".join(parts)


SCENARIOS = [
    Scenario("1k@100ms", 1_000, 100),
    Scenario("1k@1s", 1_000, 1000, greenmon_defaults=True,
             description="greenmon with its defaults: the whole `--once` process should take < 3 s"),
    Scenario("10k@100ms", 10_000, 100, optional=True),
    Scenario("10k@1s", 10_000, 1000),
    Scenario("10k@1s-workers", 10_000, 1000, workers=(1, 2),
             description="greenmon --workers 1 vs --workers 2; peer ratios against --workers 2"),
    Scenario("many-hosts", 10_000, 100, hosts=64,
             description="targets spread over 64 loopback addresses: 64 connection pools"),
    Scenario("https-1k@100ms", 1_000, 100, tls=True,
             description="TLS with a CA made for the farm, trusted through ca_file"),
    Scenario("50k@100ms", 50_000, 100, optional=True, cap_s=300.0),
    Scenario("50k@1s", 50_000, 1000, optional=True, cap_s=300.0),
]

QUICK = [
    Scenario("quick", 50, 10, hosts=2, workers=(None, 2), seed_n=20, cap_s=60.0,
             description="smoke: proves the harness works; no timing meaning"),
    Scenario("quick-https", 20, 10, tls=True, seed_n=10, cap_s=60.0,
             description="smoke over TLS"),
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
