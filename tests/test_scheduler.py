"""The daemon's schedule against real servers: spread, per-target intervals,
overruns, reload, /healthz, and greenmon's own work never holding the loop that times checks.

Times are asserted only as generous behaviour bounds (where a check lands
within its interval, how many checks a window holds), never as performance.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import time

import gevent
import pytest
import requests

from support.configs import config_text
from support.daemon_helpers import running_daemon, value
from support.helpers import wait_until
from support.servers import HTTPFarm, RawServer, never_answer, reply
from greenmon.breaker import BreakerState
from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.result import MonitorResult
from greenmon.timetable import Slot

WALL_MINUS_MONOTONIC = time.time() - time.monotonic()


def daemon_config(targets: list[dict], *, interval: float, **kwargs):
    return parse_config(config_text(targets, **kwargs), "<test>").replace("monitor", interval=interval)


def circular_gap(a: float, b: float, period: float) -> float:
    gap = (a - b) % period
    return min(gap, period - gap)


def names_in_distinct_slices(count: int, interval: float, slices: int) -> list[str]:
    """``count`` target names whose offsets fall in ``count`` different slices of the interval."""
    chosen, taken = [], set()
    for index in range(10_000):
        name = f"spread-{index}"
        where = int(Slot.of(name, interval).offset / interval * slices)
        if where not in taken:
            taken.add(where)
            chosen.append(name)
        if len(chosen) == count:
            return chosen
    raise AssertionError("no names found")


# --- Spread and per-target intervals -------------------------------------------------------

def test_targets_with_one_interval_start_in_distinct_slices_at_their_offsets():
    interval, slices = 2.0, 8
    names = names_in_distinct_slices(slices, interval, slices)
    with HTTPFarm({f"/{n}": reply() for n in names}) as farm:
        config = daemon_config([{"name": n, "url": farm.url(f"/{n}")} for n in names],
                                interval=interval, timeout=1.0)
        with running_daemon(config) as running:
            wait_until(lambda: all(farm.hits(f"/{n}") >= 1 for n in names), 3 * interval,
                       message="the first check of every target (within its first interval)")
            assert running.daemon.healthy()
        first_hits = {n: farm.hit_times(f"/{n}")[0] + WALL_MINUS_MONOTONIC for n in names}
    landed = {int((first_hits[n] % interval) / interval * slices) for n in names}
    # Not all at once: the checks start in (nearly) as many slices as there are targets...
    assert len(landed) >= slices - 2, sorted(landed)
    # ...each at its own stable offset (a digest of its name), on the wall clock's grid.
    for name in names:
        assert circular_gap(first_hits[name], Slot.of(name, interval).offset, interval) < 0.25, name


def test_each_target_is_checked_at_its_own_interval():
    """Counted between turns of the slow target (ratios), not inside a wall-clock window: a
    loaded machine slows every schedule alike."""
    with HTTPFarm({"/fast": reply(), "/slow": reply(), "/default": reply()}) as farm:
        config = daemon_config([{"name": "fast", "url": farm.url("/fast"), "interval": 0.2},
                                 {"name": "slow", "url": farm.url("/slow"), "interval": 1.2},
                                 {"name": "default", "url": farm.url("/default")}],
                                interval=0.6, timeout=0.2)
        with running_daemon(config):
            slow = wait_until(lambda: (lambda times: times if len(times) >= 5 else None)(farm.hit_times("/slow")),
                              60, message="five checks of the slow target")
        first, last = slow[0], slow[4]
        counts = {path: sum(first <= moment < last for moment in farm.hit_times(path))
                  for path in ("/fast", "/default")}
    # Between a turn of slow (1.2 s) and its fourth after it: fast (0.2 s) about 24 checks,
    # default (the [monitor] interval, 0.6 s) about 8. fast at the default interval gives 8,
    # default at slow's 4, slow at the default interval leaves default at 4; default or fast
    # checked at a shorter interval than their own gives 24 or 48.
    assert 12 <= counts["/fast"] <= 36, counts
    assert 6 <= counts["/default"] <= 12, counts
    assert counts["/fast"] > counts["/default"], counts


def test_a_targets_interval_in_the_config_file_is_read(write_config):
    from greenmon.config import load_config
    path = write_config('[monitor]\ninterval = 30\n\n[[targets]]\nname = "a"\nurl = "http://127.0.0.1:9/"\n'
                        'interval = 15\n\n[[targets]]\nname = "b"\nurl = "http://127.0.0.1:9/"\n')
    config = load_config(path)
    assert [t.interval for t in config.targets] == [15.0, None]
    assert config.monitor.interval == 30.0


# --- Reload keeps phases and breakers -------------------------------------------------------

def test_reload_keeps_the_phase_and_the_breaker_of_targets_that_stay():
    interval = 0.8
    opens_at_once = "[breaker]\nfailure_threshold = 1\nrecovery_timeout = 300\n"
    with HTTPFarm({"/kept": reply(), "/down": reply("500 Internal Server Error"),
                   "/added": reply()}) as farm:
        kept = {"name": "kept", "url": farm.url("/kept")}
        down = {"name": "down", "url": farm.url("/down")}
        before = daemon_config([kept, down], interval=interval, timeout=0.5, extra=opens_at_once)
        after = daemon_config([kept, down, {"name": "added", "url": farm.url("/added")}],
                               interval=interval, timeout=0.5, extra=opens_at_once)
        configs = [before]
        with running_daemon(before, loader=lambda: configs[-1]) as running:
            wait_until(lambda: farm.hits("/kept") >= 2 and farm.hits("/down") >= 1, 4 * interval,
                       message="two checks of kept, one of down")
            assert running.daemon.engine.breakers["down"].state == "open"
            configs.append(after)
            assert running.daemon.reload() is True
            reloaded_at = time.monotonic()
            wait_until(lambda: farm.hits("/added") >= 1 and
                       sum(t > reloaded_at for t in farm.hit_times("/kept")) >= 2, 5 * interval,
                       message="the added target checked, and kept twice after the reload")
            assert running.daemon.engine.breakers["down"].state == "open"
            text = running.metrics()
        hits = [t + WALL_MINUS_MONOTONIC for t in farm.hit_times("/kept")]
    offset = Slot.of("kept", interval).offset
    # Every check of kept, before and after the reload, sits at its offset: no phase jump,
    # and no extra check at the moment of the reload.
    assert all(circular_gap(hit, offset, interval) < 0.2 for hit in hits), [h % interval for h in hits]
    gaps = [b - a for a, b in zip(hits, hits[1:])]
    assert min(gaps) > interval / 2, gaps
    # The open breaker survived: down was contacted once, its series says open.
    assert farm.hits("/down") == 1
    assert value(text, "greenmon_breaker_state", target="down") == 1


# --- /healthz: checks start on schedule --------------------------------------------------------

def test_healthz_turns_503_while_due_checks_cannot_start_and_200_when_they_do():
    # concurrency 1: while the hanging target's check (two attempts of 1 s) holds the only slot,
    # the other target's due check waits; after interval + longest timeout (1.2 s) it is late.
    with RawServer(never_answer) as hang, HTTPFarm({"/ok": reply()}) as farm:
        config = daemon_config([{"name": "hang", "url": hang.url("/")},
                                 {"name": "ok", "url": farm.url("/ok")}],
                                interval=0.2, timeout=1.0, retries=1, backoff=0.05)
        config = config.replace("monitor", concurrency=1)
        with running_daemon(config) as running:
            wait_until(lambda: running.get("/healthz").status_code == 503, 6, interval=0.05,
                       message="/healthz 503 while ok's due check waits")
            wait_until(lambda: running.get("/healthz").status_code == 200, 6, interval=0.05,
                       message="/healthz 200 again once checks start")
            assert running.daemon.store.timing.schedule_lag.quantile(1.0) >= 1.0


def test_healthz_is_503_after_the_scheduler_stopped():
    with HTTPFarm({"/ok": reply()}) as farm:
        config = daemon_config([{"name": "ok", "url": farm.url("/ok")}], interval=0.2, timeout=0.2)
        with running_daemon(config) as running:
            wait_until(lambda: farm.hits("/ok") >= 1, 3, message="a check")
            assert running.get("/healthz").status_code == 200
            running.daemon.stop()
            running.greenlet.join(timeout=3)
            wait_until(lambda: running.get("/healthz").status_code == 503, 3,
                       message="/healthz 503 once due checks stop starting")


# --- Trust stores are loaded before timing starts ------------------------------------------------

def test_the_trust_store_of_https_targets_is_loaded_before_any_check(tmp_path):
    import trustme
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    config = parse_config(config_text([{"name": "plain", "url": "http://127.0.0.1:9/"},
                                       {"name": "tls", "url": "https://127.0.0.1:9/", "ca_file": str(ca_file)}]),
                          "<test>")
    engine = Engine(config)
    try:
        # Built with the engine, not by the first check of the HTTPS target.
        assert engine.transport.adapter.trust.loaded() == {str(ca_file)}
    finally:
        engine.close()


def test_a_reload_loads_new_trust_stores_before_the_new_targets_are_checked(tmp_path):
    import trustme
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with HTTPFarm({"/ok": reply()}) as farm:
        before = daemon_config([{"name": "plain", "url": farm.url("/ok")}], interval=0.5, timeout=0.5)
        after = daemon_config([{"name": "plain", "url": farm.url("/ok")},
                                {"name": "tls", "url": "https://127.0.0.1:9/", "ca_file": str(ca_file)}],
                               interval=0.5, timeout=0.5)
        configs = [before]
        with running_daemon(before, loader=lambda: configs[-1]) as running:
            assert running.daemon.engine.transport.adapter.trust.loaded() == frozenset()
            configs.append(after)
            assert running.daemon.reload() is True
            assert str(ca_file) in running.daemon.engine.transport.adapter.trust.loaded()
            assert "tls" in running.daemon.checks.scheduler.targets


# --- greenmon's own work does not hold the loop -------------------------------------------------

class Ticker:
    """A greenlet that wakes every few milliseconds and keeps the longest hold of the loop it
    saw: the CPU time this thread (the hub's) spent between two of its wake-ups. CPU time,
    not wall time: on a loaded machine the OS may leave this process waiting for a core for
    longer than the bound, which is no work of greenmon's holding the loop."""

    def __init__(self, period: float = 0.005):
        self.period = period
        self.longest = 0.0
        self._greenlet = None

    def __enter__(self) -> "Ticker":
        self._greenlet = gevent.spawn(self._run)
        gevent.sleep(0.05)
        self.longest = 0.0
        return self

    def __exit__(self, *exc_info) -> None:
        self._greenlet.kill()

    def _run(self) -> None:
        while True:
            started = time.thread_time()
            gevent.sleep(self.period)
            self.longest = max(self.longest, time.thread_time() - started)


def big_store_monitor(count: int):
    """A served monitor (never started) whose store holds ``count`` targets with a result each."""
    targets = [{"name": f"target-{i}", "url": f"http://127.0.0.{i % 50 + 1}:9/{i}", "labels": {"team": "x"}}
               for i in range(count)]
    return daemon_config(targets, interval=60.0)


def fill(store, names, checked_at: float) -> None:
    for name in names:
        store.observe(MonitorResult(
            target=name, url="http://127.0.0.1:9/", method="GET", ok=True, status_code=200,
            latency_s=1.0, elapsed_s=1.0, attempts=1, error_class=None, detail=None, error=None,
            breaker="closed", checked_at=checked_at, body_bytes=2, attempt_latencies=(1.0,)))


# CPU time of the loop's thread between two ticks (Ticker): generous, and still below what
# rendering in one piece holds the loop for: /metrics of 10,000 targets 0.5 s
# (prometheus_client's own: 1.4 s, gzip 2.3 s), /api/results of 20,000 targets 0.25 s, the
# status page 0.15 s.
GENEROUS_HOLD_S = 0.1


@contextlib.contextmanager
def frozen_gc():
    """As the daemon does after start-up (limits.tune_gc): a full collection over every object
    of this test process would be a pause of its own, not greenmon's rendering."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("path, gzipped, count", [("/metrics", True, 10_000), ("/metrics", False, 10_000),
                                                  ("/api/results", True, 20_000), ("/", False, 20_000)])
def test_serving_a_large_store_never_holds_the_loop(path, gzipped, count):
    config = big_store_monitor(count)
    names = [t.name for t in config.enabled_targets]
    with running_daemon(config, start=False) as idle, frozen_gc():
        store = idle.daemon.store
        fill(store, names, time.time())
        gevent.sleep(0.05)
        headers = {"Accept-Encoding": "gzip" if gzipped else "identity"}
        for round_ in range(2):   # the first renders every target, the second what changed
            with Ticker() as ticker:
                response = requests.get(idle.url(path), headers=headers, timeout=60)
            assert response.status_code == 200
            assert (response.headers.get("Content-Encoding") == "gzip") == gzipped
            assert ticker.longest < GENEROUS_HOLD_S, (round_, ticker.longest)
            fill(store, names[::5], time.time())   # a fifth of the targets have a new result
            gevent.sleep(0.05)
        if path == "/metrics":
            def of(name: str) -> str:   # parsing all 310,000 samples would take seconds
                return "".join(line + "\n" for line in response.text.splitlines()
                               if line.startswith("#") or f'target="{name}"' in line)
            assert value(of("target-9999"), "greenmon_up", target="target-9999") == 1
            # The second scrape has the results filled in after the first, and only those.
            assert value(of("target-5"), "greenmon_checks_total", target="target-5") == 2
            assert value(of("target-6"), "greenmon_checks_total", target="target-6") == 1


def test_the_gzipped_metrics_are_the_plain_metrics():
    config = big_store_monitor(300)
    with running_daemon(config, start=False) as idle:
        fill(idle.daemon.store, [t.name for t in config.enabled_targets], time.time())
        plain = requests.get(idle.url("/metrics"), headers={"Accept-Encoding": "identity"}, timeout=10)
        zipped = requests.get(idle.url("/metrics"), headers={"Accept-Encoding": "gzip"}, stream=True,
                              timeout=10)
        raw = zipped.raw.read(decode_content=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content) / 5


def test_a_reload_of_10k_targets_never_holds_the_loop():
    small = big_store_monitor(10)
    large = big_store_monitor(10_000)
    configs = [small]
    with running_daemon(small, loader=lambda: configs[-1]) as running, frozen_gc():
        configs.append(large)
        with Ticker() as ticker:
            assert running.daemon.reload() is True
        assert len(running.daemon.store.series) == 10_000
        assert ticker.longest < GENEROUS_HOLD_S, ticker.longest


# --- The state file is written on a cadence, not per check ---------------------------------------

def test_the_daemon_writes_the_state_file_when_breakers_change_and_at_stop(tmp_path, monkeypatch):
    import greenmon.daemon
    monkeypatch.setattr(greenmon.daemon, "STATE_SAVE_EVERY_S", 0.3)
    state = tmp_path / "state.json"
    opens_at_once = "[breaker]\nfailure_threshold = 1\nrecovery_timeout = 300\n"
    with HTTPFarm({"/down": reply("500 Internal Server Error"), "/ok": reply()}) as farm:
        config = daemon_config([{"name": "down", "url": farm.url("/down")},
                                 {"name": "ok", "url": farm.url("/ok")}],
                                interval=0.2, timeout=0.2, extra=opens_at_once)
        config = config.replace("monitor", state_file=str(state))
        with running_daemon(config) as running:
            wait_until(state.exists, 3, message="the state file written after down's breaker opened")
            written = state.stat().st_mtime_ns
            checks = farm.hits("/ok")
            wait_until(lambda: farm.hits("/ok") >= checks + 5, 30, message="more checks of ok")
            # Nothing changed in the breaker table since: the file was not written again.
            assert state.stat().st_mtime_ns == written
            assert running.daemon.engine.breakers["down"].state == "open"
    from greenmon import statefile
    assert statefile.load(str(state))["down"].state == "open"
    assert "ok" not in statefile.load(str(state))   # closed breakers are not stored
    assert statefile.load(str(state)).get("ok", BreakerState()) == BreakerState()



# --- Idle connections: only where the schedule needs them ----------------------------------------

def test_a_target_checked_seldom_closes_its_connection_and_a_busy_origin_keeps_one():
    with HTTPFarm({"/busy": reply(), "/seldom": reply()}) as busy_farm, \
            HTTPFarm({"/seldom": reply()}) as seldom_farm:
        config = daemon_config([{"name": "busy", "url": busy_farm.url("/busy"), "interval": 0.5},
                                 {"name": "seldom", "url": seldom_farm.url("/seldom"), "interval": 5.0}],
                                interval=0.5, timeout=0.5)
        with running_daemon(config):
            wait_until(lambda: seldom_farm.hits("/seldom") >= 1 and busy_farm.hits("/busy") >= 2, 8,
                       message="a check of seldom, two of busy")
        seldom = [headers for _, headers in seldom_farm.requests["/seldom"]]
        busy = [headers for _, headers in busy_farm.requests["/busy"]]
    assert all(h.get("Connection") == "close" for h in seldom), seldom
    assert not any(h.get("Connection") == "close" for h in busy), busy
