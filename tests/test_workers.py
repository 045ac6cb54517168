"""--workers N|auto and --shard I/N (README, "Scale"), through the real command.

Every target is a local server on 127.0.0.1 run by this test process (an
HTTPFarm, or a closed port for "refused"). The worker processes are found
in /proc as children of the greenmon process whose command line names
``greenmon.worker``; every test kills what it started, workers included.
"""

from __future__ import annotations

import contextlib
import io
import logging
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import zlib
from pathlib import Path
from typing import Iterator

import gevent
import gevent.event
import gevent.queue
import pytest
import requests

from greenmon.config import parse_config
from greenmon.workers.child import Worker
from greenmon.workers.messages import Render, Setup, send_message
from support.configs import config_text
from support.daemon_helpers import DaemonProcess, samples, select, targets_in, value
from support.helpers import run_cli, start_cli, wait_until
from support.servers import HTTPFarm, InFlight, RawServer, closed_port, delayed, never_answer, reply

RUN_TIMEOUT_S = 60     # for one `greenmon --once` run: against a hang, generous for a loaded machine
SLOW_S = 1.5           # a slow target's answer delay: long enough to look at the workers
WORKER_MARK = b"greenmon.worker"


# --- Processes, from /proc --------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def running(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie has ended; it only waits to be reaped)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def worker_pids(parent: int) -> set[int]:
    """The live greenmon.worker children of ``parent``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat and stat[1] == parent and stat[0] != "Z" and WORKER_MARK in _cmdline(int(entry)):
            found.add(int(entry))
    return found


class Workers:
    """Remembers every worker process seen, to assert they end and to kill them if they do not."""

    def __init__(self):
        self.seen: set[int] = set()

    def of(self, parent: int) -> set[int]:
        pids = worker_pids(parent)
        self.seen |= pids
        return pids

    def wait_for(self, parent: int, count: int, timeout: float = 30.0) -> set[int]:
        """Wait until ``parent`` has exactly ``count`` live workers; returns their pids."""
        return wait_until(lambda: (lambda pids: pids if len(pids) == count else None)(self.of(parent)),
                          timeout, interval=0.05, message=f"{count} greenmon.worker children")

    def still_running(self) -> set[int]:
        return {pid for pid in self.seen if running(pid) and WORKER_MARK in _cmdline(pid)}

    def wait_all_gone(self, timeout: float = 15.0) -> None:
        wait_until(lambda: not self.still_running(), timeout, interval=0.05,
                   message=f"every worker process ended (still running: {self.still_running()})")

    def kill_leftovers(self) -> None:
        for pid in self.still_running():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def workers() -> Iterator[Workers]:
    watch = Workers()
    try:
        yield watch
    finally:
        watch.kill_leftovers()


@contextlib.contextmanager
def started(*args: str, watch: Workers | None = None) -> Iterator[subprocess.Popen]:
    """start_cli, killed (and waited for) on the way out whatever happened.

    Workers inherit greenmon's stderr: those ``watch`` has seen are killed too,
    or reading to the end of that pipe would wait for them.
    """
    process = start_cli(*args)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        if watch is not None:
            watch.kill_leftovers()
        process.communicate(timeout=5)


# --- Targets and runs ---------------------------------------------------------------------

KINDS = ("healthy", "503", "refused")


@pytest.fixture
def farm():
    with HTTPFarm({"/healthy": reply(), "/503": reply("503 Service Unavailable", "busy"),
                   "/slow": delayed(SLOW_S), "/fail": reply("500 Internal Server Error")}) as server:
        yield server


def mixed_targets(farm: HTTPFarm, count: int = 20) -> list[dict]:
    """healthy, 503 and refused targets in turn (the refused ones on closed ports)."""
    targets = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        url = f"http://127.0.0.1:{closed_port()}/" if kind == "refused" else farm.url(f"/{kind}")
        targets.append({"name": f"t{i:02d}-{kind}", "url": url})
    return targets


def healthy_targets(farm: HTTPFarm, count: int) -> list[dict]:
    return [{"name": f"svc-{i:02d}", "url": farm.url("/healthy")} for i in range(count)]


def once(path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("--config", str(path), "--once", *args, env=env, timeout=RUN_TIMEOUT_S)


def once_json(path, *args: str, env: dict | None = None) -> tuple[int, dict]:
    done = once(path, "--format", "json", *args, env=env)
    assert done.returncode in (0, 1), f"exit {done.returncode}:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)


def verdicts(document: dict) -> list[tuple]:
    """What must not depend on the number of workers, per target, in report order."""
    return [(r["target"], r["ok"], r["error_class"], r["status_code"], r["attempts"])
            for r in document["results"]]


def shard_of(name: str, count: int) -> int:
    """The shard of a name: a stable digest of it, the same in every process and version
    (computed here independently of greenmon)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big") % count


# --- --once with workers --------------------------------------------------------------------

def test_two_workers_report_what_one_worker_reports_in_config_order(farm, write_config):
    targets = mixed_targets(farm)
    path = write_config(config_text(targets, timeout=2.0))
    code_1, one = once_json(path, "--workers", "1")
    code_2, two = once_json(path, "--workers", "2")
    names = [t["name"] for t in targets]
    assert [r["target"] for r in two["results"]] == names  # config order, not completion order
    assert verdicts(two) == verdicts(one)
    assert code_2 == code_1 == 1
    # Not only equal, but right: every kind of target got its own verdict.
    by_kind = {kind: {(r["ok"], r["error_class"]) for r in two["results"] if r["target"].endswith(kind)}
               for kind in KINDS}
    assert by_kind == {"healthy": {(True, None)}, "503": {(False, "http")},
                       "refused": {(False, "connection")}}
    assert {k: two["summary"][k] for k in ("targets", "up", "down", "errors")} == \
           {k: one["summary"][k] for k in ("targets", "up", "down", "errors")}


def test_workers_auto_checks_every_target(farm, write_config):
    targets = healthy_targets(farm, 6)
    path = write_config(config_text(targets))
    code, document = once_json(path, "--workers", "auto")
    assert code == 0
    assert [r["target"] for r in document["results"]] == [t["name"] for t in targets]
    assert all(r["ok"] for r in document["results"])
    assert farm.hits("/healthy") == 6  # each target checked once, by one worker only


def test_jsonl_with_two_workers_streams_one_line_per_target(farm, write_config):
    targets = mixed_targets(farm, 12) + [{"name": "slow", "url": farm.url("/slow")}]
    path = write_config(config_text(targets, timeout=SLOW_S + 2))
    with started("--config", str(path), "--once", "--format", "jsonl", "--workers", "2") as process:
        with gevent.Timeout(30, AssertionError("no jsonl line within 30 s")):
            first = process.stdout.readline()
        # Streamed: a fast target's line is out while the slow one is still being checked.
        assert process.poll() is None, "greenmon ended before its first line was read"
        assert json.loads(first)["target"] != "slow"
        rest, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    lines = [first] + rest.splitlines()
    results = [json.loads(line) for line in lines if line.strip()]
    assert sorted(r["target"] for r in results) == sorted(t["name"] for t in targets)
    assert results[-1]["target"] == "slow" and results[-1]["ok"] is True
    assert process.returncode == 1, stderr


@pytest.mark.parametrize("bad", ["0", "-1", "x", "", "1.5"])
def test_bad_workers_value_is_a_usage_error(bad, farm, write_config):
    path = write_config(config_text(healthy_targets(farm, 2)))
    done = once(path, "--workers", bad)
    assert done.returncode == 2
    assert "--workers" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert farm.hits("/healthy") == 0


@pytest.mark.parametrize("concurrency, count", [
    (2, 2),
    (4, 2),
    (1, 2),
    (3, 2),
], ids=["2-over-2", "4-over-2", "1-over-2", "3-over-2"])
def test_concurrency_limits_the_checks_in_flight_across_all_workers(concurrency, count, write_config):
    # monitor.concurrency is "checks in flight at once": for the whole command, not per worker.
    held = InFlight(0.4)
    with HTTPFarm({"/held": held}) as farm:
        targets = [{"name": f"held-{i}", "url": farm.url("/held")} for i in range(2 * concurrency + 2)]
        path = write_config(config_text(targets))
        code, document = once_json(path, "--workers", str(count), "--concurrency", str(concurrency))
    assert code == 0 and len(document["results"]) == len(targets)
    assert held.peak <= concurrency


# --- The worker processes -------------------------------------------------------------------

def test_two_worker_processes_run_the_sweep_and_all_end_with_the_command(farm, write_config, workers):
    # Round-robin shares: targets 0 and 1 (both slow) land on different workers.
    targets = [{"name": "slow-a", "url": farm.url("/slow")}, {"name": "slow-b", "url": farm.url("/slow")}]
    targets += healthy_targets(farm, 4)
    path = write_config(config_text(targets, timeout=SLOW_S + 2))
    with started("--config", str(path), "--once", "--format", "json", "--workers", "2",
                 watch=workers) as process:
        pids = workers.wait_for(process.pid, 2)
        assert process.pid not in pids
        # Both are in the middle of the same sweep: each holds one slow request.
        wait_until(lambda: farm.hits("/slow") == 2, 30, message="both slow targets contacted")
        assert process.poll() is None and all(running(pid) for pid in pids)
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    assert process.returncode == 0, err
    assert len(json.loads(out)["results"]) == 6
    workers.wait_all_gone()


@contextlib.contextmanager
def two_workers_hanging(write_config, workers):
    """`--once --workers 2` with one never-answering check (5 s deadline) in flight on each worker."""
    with RawServer(never_answer) as hang:
        targets = [{"name": f"hang-{i}", "url": hang.url(f"/{i}")} for i in range(2)]
        path = write_config(config_text(targets, timeout=5.0))
        with started("--config", str(path), "--once", "--workers", "2", watch=workers) as process:
            workers.wait_for(process.pid, 2)
            wait_until(lambda: hang.connections == 2, 30, message="both hanging checks in flight")
            yield process


def test_sigterm_of_once_leaves_no_worker_behind(write_config, workers):
    with two_workers_hanging(write_config, workers) as process:
        process.send_signal(signal.SIGTERM)
        # Graceful, as a stop must be: checks in flight end or hit their 5 s deadline (the bound
        # is against a hang: a stop that never comes).
        wait_until(lambda: process.poll() is not None, 5.0 + 15.0, message="greenmon ended after SIGTERM")
        assert process.returncode == 130
        workers.wait_all_gone(timeout=10)


def test_daemon_sigterm_mid_sweep_ends_every_worker(write_config, tmp_path, workers):
    with RawServer(never_answer) as hang, HTTPFarm({"/ok": reply()}) as farm:
        targets = [{"name": "hang", "url": hang.url("/")}] + healthy_targets(farm, 3)
        path = write_config(config_text(targets, timeout=SLOW_S, retries=2, interval=SLOW_S))
        with DaemonProcess(path, tmp_path, "--workers", "2") as daemon:
            daemon.wait_ready()
            workers.wait_for(daemon.process.pid, 2)
            daemon.wait_metric(lambda t: value(t, "greenmon_inflight_checks") == 1,
                               message="the hanging check in flight")
            daemon.send(signal.SIGTERM)
            code = daemon.wait_exit(SLOW_S + 15)
            assert code == 0, f"exit {code}:\n{daemon.stderr()}"
        workers.wait_all_gone()
        assert hang.connections <= 2  # no retry started after the signal
    assert "Traceback" not in daemon.stderr()


# --- The daemon with workers ------------------------------------------------------------------

def test_daemon_with_two_workers_serves_one_metrics_for_all_targets(farm, write_config, tmp_path, workers):
    targets = [{"name": f"up-{i}", "url": farm.url("/healthy")} for i in range(4)]
    targets += [{"name": f"down-{i}", "url": farm.url("/503")} for i in range(2)]
    names = {t["name"] for t in targets}
    path = write_config(config_text(targets, timeout=0.5, interval=0.5))
    with DaemonProcess(path, tmp_path, "--workers", "2") as daemon:
        daemon.wait_ready()
        first_workers = workers.wait_for(daemon.process.pid, 2)

        def every_target_checked(text):
            return all((value(text, "greenmon_checks_total", target=n) or 0) >= 1 for n in names)
        text = daemon.wait_metric(every_target_checked, message="a check of every target")
        assert {n for n in names if value(text, "greenmon_up", target=n) == 1} == \
               {n for n in names if n.startswith("up-")}
        assert {n for n in names if value(text, "greenmon_up", target=n) == 0} == \
               {n for n in names if n.startswith("down-")}
        assert value(text, "greenmon_targets") == len(targets)
        assert targets_in(text) == names
        assert len(select(text, "greenmon_build_info")) == 1  # one exposition, not one per worker
        sweeps = value(text, "greenmon_sweeps_total")
        daemon.wait_metric(lambda t: value(t, "greenmon_sweeps_total") >= sweeps + 2,
                           message="two more sweeps")
        api = daemon.get("/api/results").json()
        assert {r["target"] for r in api["results"]} == names

        # SIGHUP: a new config with one more target; the new target shows up everywhere.
        path.write_text(config_text(targets + [{"name": "added", "url": farm.url("/healthy")}], timeout=0.5,
                                    interval=0.5))
        daemon.send(signal.SIGHUP)
        text = daemon.wait_metric(lambda t: value(t, "greenmon_up", target="added") == 1,
                                  message="greenmon_up{target=added} 1")
        assert value(text, "greenmon_targets") == len(targets) + 1
        wait_until(lambda: "added" in {r["target"] for r in daemon.get("/api/results").json()["results"]},
                   30, message="added in /api/results")
        # The same workers took the new config: their schedules, breakers and connections stay.
        assert set(workers.wait_for(daemon.process.pid, 2)) == set(first_workers)
        assert all(running(pid) for pid in first_workers)
        assert daemon.alive()

        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.stderr()
    workers.wait_all_gone()
    assert "Traceback" not in daemon.stderr()


def test_workers_check_each_target_on_its_own_schedule(write_config, tmp_path, workers):
    """Each target on its own interval whichever worker has it, and the workers' measurements
    in the parent's one /metrics. The checks are counted between turns of the slow target
    (ratios), not inside a wall-clock window: a loaded machine slows every schedule alike."""
    with HTTPFarm({f"/{name}": reply() for name in ("fast", "slow", "a", "b")}) as farm:
        targets = [{"name": "fast", "url": farm.url("/fast"), "interval": 0.25},
                   {"name": "slow", "url": farm.url("/slow"), "interval": 1.5},
                   {"name": "a", "url": farm.url("/a")}, {"name": "b", "url": farm.url("/b")}]
        path = write_config(config_text(targets, interval=0.75, timeout=0.25))
        with DaemonProcess(path, tmp_path, "--workers", "2") as daemon:
            daemon.wait_ready(timeout=30)
            workers.wait_for(daemon.process.pid, 2, timeout=30)
            start = daemon.wait_metric(lambda t: all(value(t, "greenmon_checks_total", target=n) >= 1
                                                     for n in ("fast", "slow", "a", "b")),
                                       timeout=30, message="a check of every target")
            slow_before = farm.hits("/slow")
            # Five more turns of the slow target (7.5 s on an idle machine), however long they take.
            slow_times = wait_until(lambda: (lambda times: times if len(times) >= slow_before + 5 else None)(
                farm.hit_times("/slow")), 90, message="five more checks of the slow target")
            text = daemon.metrics()
            slow_checks = farm.hits("/slow") - slow_before
            checks_made = sum(farm.hits(p) for p in ("/fast", "/slow", "/a", "/b"))
            # The schedule lag of every check started, on either worker, reaches the parent
            # (one worker's alone would stay near half of the checks made).
            daemon.wait_metric(lambda t: value(t, "greenmon_schedule_lag_seconds_count") >= checks_made,
                               timeout=30, message=f"the schedule lag of all {checks_made} checks made")
            # The workers' loop-lag probes keep reporting to the parent (none would leave it flat).
            loop_samples = value(text, "greenmon_event_loop_lag_seconds_count") or 0
            daemon.wait_metric(lambda t: value(t, "greenmon_event_loop_lag_seconds_count") > loop_samples + 40,
                               timeout=30, message="more loop-lag samples from the workers")
            # Healthy (checks on schedule), a moment of lag on a loaded machine allowed.
            wait_until(lambda: daemon.get("/healthz").status_code == 200, 30, message="/healthz 200")
            daemon.send(signal.SIGTERM)
            assert daemon.wait_exit(30) == 0, daemon.stderr()
    workers.wait_all_gone(timeout=30)
    # Between a turn of the slow target and its fourth turn after it (4 x 1.5 s): fast (0.25 s)
    # about 24 checks, a and b (the [monitor] interval, 0.75 s) about 8 each. fast at a's
    # interval gives 8, a at slow's 4, slow at the [monitor] interval leaves a at about 4;
    # a target checked more often than its interval (by both workers, say) gives twice as many.
    first, last = slow_times[slow_before], slow_times[slow_before + 4]
    counts = {p: sum(first <= moment < last for moment in farm.hit_times(p)) for p in ("/fast", "/a", "/b")}
    assert 12 <= counts["/fast"] <= 36, counts
    assert 6 <= counts["/a"] <= 12 and 6 <= counts["/b"] <= 12, counts
    assert counts["/fast"] > max(counts["/a"], counts["/b"]), counts
    # A sweep is a pass of the longest interval of the whole config (1.5 s), counted once for
    # both workers: about one per turn of the slow target. Passes of the 0.75 s interval, or
    # one per worker, would count about twice as many.
    sweeps = value(text, "greenmon_sweeps_total") - (value(start, "greenmon_sweeps_total") or 0)
    assert 1 <= sweeps <= slow_checks + 2, (sweeps, slow_checks)


def test_daemon_replaces_a_worker_that_died(farm, write_config, tmp_path, workers):
    targets = healthy_targets(farm, 4)
    path = write_config(config_text(targets, timeout=0.5, interval=0.5))
    with DaemonProcess(path, tmp_path, "--workers", "2") as daemon:
        daemon.wait_ready()
        victim = min(workers.wait_for(daemon.process.pid, 2))
        text = daemon.wait_metric(lambda t: all(value(t, "greenmon_checks_total", target=x["name"])
                                                for x in targets), message="every target checked")
        before = {t["name"]: value(text, "greenmon_checks_total", target=t["name"]) for t in targets}
        os.kill(victim, signal.SIGKILL)
        # Until it is replaced, /metrics says so (503) rather than leave its targets out.

        def counted_on() -> bool:
            response = daemon.get("/metrics")
            if response.status_code != 200:
                assert response.status_code == 503 and "worker" in response.text, response.text
                return False
            # The new worker's metrics go on from the parent's numbers: no counter restarts.
            now = {name: value(response.text, "greenmon_checks_total", target=name) for name in before}
            assert all(now[name] >= count for name, count in before.items()), (before, now)
            return all(now[name] >= count + 2 for name, count in before.items())
        wait_until(counted_on, 30, interval=0.1,
                   message="every target (the dead worker's too) checked twice more")
        assert daemon.alive()
        replaced = workers.wait_for(daemon.process.pid, 2)
        assert victim not in replaced
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.stderr()
    workers.wait_all_gone()


def test_inflight_gauge_counts_the_checks_in_flight_on_every_worker(write_config, tmp_path, workers):
    with RawServer(never_answer) as hang:
        targets = [{"name": f"hang-{i}", "url": hang.url(f"/{i}")} for i in range(2)]
        path = write_config(config_text(targets, timeout=4.0, interval=4.0))
        with DaemonProcess(path, tmp_path, "--workers", "2") as daemon:
            daemon.wait_ready()
            workers.wait_for(daemon.process.pid, 2)
            # Each target's first check comes within its first 4 s interval, then hangs for its
            # 4 s deadline; the turn that falls due meanwhile is skipped, so each is in flight
            # about half the time, and both at once for a while in every 8 s.
            wait_until(lambda: hang.connections >= 2, 15, message="both hanging checks started")
            daemon.wait_metric(lambda t: value(t, "greenmon_inflight_checks") == 2, timeout=20,
                               message="greenmon_inflight_checks 2")


def test_daemon_with_workers_and_a_shard_exports_only_its_targets(farm, write_config, tmp_path, workers):
    targets = healthy_targets(farm, 12)
    mine = {t["name"] for t in targets if shard_of(t["name"], 3) == 2}
    assert len(mine) >= 2  # enough for two workers
    path = write_config(config_text(targets, timeout=0.5, interval=0.5))
    with DaemonProcess(path, tmp_path, "--workers", "2", "--shard", "2/3") as daemon:
        daemon.wait_ready()
        workers.wait_for(daemon.process.pid, 2)
        text = daemon.wait_metric(lambda t: all(value(t, "greenmon_up", target=n) == 1 for n in mine),
                                  message="every target of shard 2/3 up")
        assert targets_in(text) == mine
        assert value(text, "greenmon_targets") == len(mine)
        assert value(text, "greenmon_shard", index="2", total="3") == 1
        assert len(select(text, "greenmon_shard")) == 1
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.stderr()
    workers.wait_all_gone()


# --- /metrics with workers: their shares, joined -------------------------------------------------

# Families whose values do not depend on when a check ran or how long it took.
STEADY = ("greenmon_up", "greenmon_http_status_code", "greenmon_breaker_state", "greenmon_target_info",
          "greenmon_slo_objective", "greenmon_slo_window_seconds", "greenmon_targets", "greenmon_shard")


def settled(daemon: DaemonProcess, names: list[str]) -> str:
    """/metrics once every target has been checked twice (a second check moves no series in)."""
    return daemon.wait_metric(lambda t: all((value(t, "greenmon_checks_total", target=n) or 0) >= 2
                                            for n in names), message="every target checked twice")


def test_workers_serve_the_one_process_metrics_series_for_series(farm, write_config, tmp_path, workers):
    """The parent's /metrics joins what each worker renders: the same series as one process has
    on the same targets and results, with the same values where they do not depend on timing,
    gzipped (as one member) or not."""
    targets = [{"name": f"svc-{i:02d}", "url": farm.url("/healthy"), "labels": {"team": f"t{i % 2}"}}
               for i in range(5)]
    targets += [{"name": "failing", "url": farm.url("/fail"), "labels": {"tier": "gold"}},
                {"name": "busy", "url": farm.url("/503")}]
    # No breaker opens: whether a failing target's last check was skipped would depend on timing.
    path = write_config(config_text(targets, timeout=0.5, interval=0.5,
                                    breaker={"failure_threshold": 1000}))
    names = [t["name"] for t in targets]
    found = {}
    for label, args in (("one", ()), ("workers", ("--workers", "2"))):
        (tmp_path / label).mkdir()
        with DaemonProcess(path, tmp_path / label, *args) as daemon:
            daemon.wait_ready()
            if args:
                workers.wait_for(daemon.process.pid, 2)
            settled(daemon, names)
            plain = requests.get(daemon.url("/metrics"), headers={"Accept-Encoding": "identity"},
                                 timeout=10)
            zipped = requests.get(daemon.url("/metrics"), headers={"Accept-Encoding": "gzip"},
                                  timeout=10, stream=True)
            body = zipped.raw.read(decode_content=False)
            assert plain.status_code == zipped.status_code == 200
            assert "Content-Encoding" not in plain.headers
            assert zipped.headers["Content-Encoding"] == "gzip"
            assert int(zipped.headers["Content-Length"]) == len(body)
            reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
            unzipped = reader.decompress(body).decode()
            assert reader.eof and reader.unused_data == b"", "more than one gzip member"
            found[label] = (plain.text, unzipped)
            daemon.send(signal.SIGTERM)
            assert daemon.wait_exit(30) == 0, daemon.stderr()
    workers.wait_all_gone()

    def series(text: str) -> set:
        return {(s.name, frozenset(s.labels.items())) for s in samples(text)}

    def steady(text: str) -> set:
        return {(s.name, frozenset(s.labels.items()), s.value) for s in samples(text) if s.family in STEADY}

    one, _ = found["one"]
    for text in found["workers"]:
        assert series(text) == series(one)
        assert steady(text) == steady(one)
        headers = [line for line in text.splitlines() if line.startswith("# ")]
        assert headers == [line for line in one.splitlines() if line.startswith("# ")]
    assert value(found["workers"][0], "greenmon_up", target="failing") == 0
    info = {s.labels["target"]: s.labels for s in select(found["workers"][0], "greenmon_target_info")}
    assert info["svc-00"]["tier"] == "" and info["failing"]["tier"] == "gold"


def scrape_while_stopped(daemon: DaemonProcess, pid: int) -> requests.Response:
    """/metrics while the worker ``pid`` is stopped (it cannot render), then it runs again."""
    os.kill(pid, signal.SIGSTOP)
    try:
        return requests.get(daemon.url("/metrics"), timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_late_worker_is_served_by_its_last_share_and_one_without_any_fails_the_scrape(
        farm, write_config, tmp_path, workers):
    """A worker stopped (SIGSTOP) cannot render its share (as a loop saturated with checks
    renders late). Before it ever rendered one, /metrics answers 503 within the wait, naming
    why; once it has, the scrape is served whole with that last share (the same series) and
    the log says how old it is. Neither hangs, and the worker's share is fresh again after."""
    targets = healthy_targets(farm, 4)
    names = {t["name"] for t in targets}
    path = write_config(config_text(targets, timeout=0.5, interval=0.5))

    def up() -> bool:
        try:
            return daemon.get("/healthz").status_code in (200, 503)
        except requests.ConnectionError:
            return False

    with DaemonProcess(path, tmp_path, "--workers", "2") as daemon:
        stopped = min(workers.wait_for(daemon.process.pid, 2))
        wait_until(up, 30, interval=0.1, message="the daemon's web server up")
        first = scrape_while_stopped(daemon, stopped)
        assert first.status_code == 503, first.status_code
        assert "did not render its share" in first.text and "has none from the last" in first.text
        whole = daemon.wait_metric(lambda now: targets_in(now) == names,
                                   message="every target in /metrics")
        late = scrape_while_stopped(daemon, stopped)
        assert late.status_code == 200, late.text
        assert targets_in(late.text) == names
        assert {(s.name, frozenset(s.labels.items())) for s in samples(late.text)} == \
               {(s.name, frozenset(s.labels.items())) for s in samples(whole)}
        assert re.search(r"worker \d did not render its share of /metrics in 3 s: its share of \d+ s ago",
                         daemon.stderr())
        before = {name: value(late.text, "greenmon_checks_total", target=name) or 0 for name in names}
        daemon.wait_metric(lambda now: all((value(now, "greenmon_checks_total", target=name) or 0) > count
                                           for name, count in before.items()),
                           message="both workers' shares fresh again")
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0, daemon.stderr()
    workers.wait_all_gone()


def test_renders_asked_while_one_runs_are_answered_by_one_more_not_one_each():
    """A worker whose loop is saturated renders slower than scrapes come: the Renders asked
    meanwhile wait for the next render, one for all of them (a render per scrape would pile
    up). Each gets its answer, in the order asked."""
    config = parse_config(config_text([{"name": "a", "url": "http://127.0.0.1:9/"}]), "<test>")
    outbox = gevent.queue.Queue()
    worker = Worker(Setup(config, {}, logging.WARNING, {}), outbox)
    go = gevent.event.Event()
    rendered = []

    def render():
        rendered.append(len(rendered))
        go.wait()   # the first render runs until all the Renders below are asked
        return [f"share {len(rendered)}"]

    def asked(*numbers: int) -> io.BytesIO:
        commands = io.BytesIO()
        for number in numbers:
            send_message(commands, Render(number))
        commands.seek(0)
        return commands

    worker.render = render
    worker.serve(asked(1))
    wait_until(lambda: rendered == [0], 30, interval=0.01, message="the first render running")
    worker.serve(asked(2, 3, 4))
    gevent.sleep(0.1)
    assert rendered == [0]   # no second render started while the first runs
    go.set()
    answers = [outbox.get(timeout=30) for _ in range(4)]
    assert [(a.id, a.share) for a in answers] == [
        (1, ["share 1"]), (2, ["share 2"]), (3, ["share 2"]), (4, ["share 2"])]
    assert rendered == [0, 1] and outbox.empty()


# --- The state file with workers -------------------------------------------------------------

@pytest.mark.parametrize("count", ["1", "2"], ids=["one-worker", "two-workers"])
def test_state_file_keeps_an_open_breaker_across_runs(count, farm, write_config, tmp_path):
    targets = [{"name": "failing", "url": farm.url("/fail")}] + healthy_targets(farm, 3)
    extra = "[breaker]\nfailure_threshold = 1\nrecovery_timeout = 300\n"
    path = write_config(config_text(targets, extra=extra))
    state = tmp_path / "state.json"

    code, first = once_json(path, "--workers", count, "--state-file", str(state))
    failing = first["results"][0]
    assert code == 1
    assert (failing["target"], failing["ok"], failing["breaker"], failing["attempts"]) == \
           ("failing", False, "open", 1)
    assert farm.hits("/fail") == 1 and state.exists()

    code, second = once_json(path, "--workers", count, "--state-file", str(state))
    failing = second["results"][0]
    assert code == 1  # a target skipped by an open breaker is down
    assert farm.hits("/fail") == 1  # not contacted
    assert (failing["ok"], failing["breaker"], failing["attempts"], failing["error_class"]) == \
           (False, "open", 0, "http")
    assert second["summary"]["skipped"] == 1
    assert farm.hits("/healthy") == 6  # the others were checked on both runs
    assert all(r["ok"] for r in second["results"][1:])


# --- --shard -----------------------------------------------------------------------------------

def test_shards_split_the_targets_without_overlap_stably_and_in_any_order(farm, write_config):
    targets = healthy_targets(farm, 30)
    names = [t["name"] for t in targets]
    path = write_config(config_text(targets))
    shuffled = list(targets)
    random.Random(7).shuffle(shuffled)
    assert shuffled != targets
    path_shuffled = write_config(config_text(shuffled), "shuffled.toml")

    def checked(config_path, index, *args, seed):
        code, document = once_json(config_path, "--shard", f"{index}/3", *args,
                                   env={"PYTHONHASHSEED": seed})
        assert code == 0
        return [r["target"] for r in document["results"]]

    shards = [checked(path, i, seed="1") for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(names)  # every target, none twice
    assert all(shards), f"an empty shard in {[len(s) for s in shards]}"
    for index, shard in enumerate(shards):
        assert shard == [n for n in names if shard_of(n, 3) == index]  # config order, by the digest
    # Another process (another str hash seed), the file in another order, two workers: same split.
    again = [checked(path_shuffled, i, "--workers", "2", seed="2") for i in range(3)]
    assert [sorted(s) for s in again] == [sorted(s) for s in shards]
    assert farm.hits("/healthy") == 60


def test_textfile_of_a_shard_has_greenmon_shard(farm, write_config, tmp_path):
    targets = healthy_targets(farm, 9)
    mine = {t["name"] for t in targets if shard_of(t["name"], 3) == 1}
    assert mine
    path = write_config(config_text(targets))
    textfile = tmp_path / "greenmon.prom"
    done = once(path, "--shard", "1/3", "--textfile", str(textfile))
    assert done.returncode == 0, done.stderr
    text = textfile.read_text()
    assert [(s.labels, s.value) for s in select(text, "greenmon_shard")] == \
           [({"index": "1", "total": "3"}, 1.0)]
    assert value(text, "greenmon_targets") == len(mine)
    assert targets_in(text) == mine


def test_without_shard_the_metric_says_shard_0_of_1(farm, write_config, tmp_path):
    path = write_config(config_text(healthy_targets(farm, 2)))
    textfile = tmp_path / "greenmon.prom"
    assert once(path, "--textfile", str(textfile)).returncode == 0
    assert [(s.labels, s.value) for s in select(textfile.read_text(), "greenmon_shard")] == \
           [({"index": "0", "total": "1"}, 1.0)]


@pytest.mark.parametrize("bad", ["3/3", "x", "1", "-1/3", "1/0", "0/0", "1/3/5", "/3", "1/"])
def test_bad_shard_value_is_a_usage_error(bad, farm, write_config):
    path = write_config(config_text(healthy_targets(farm, 2)))
    done = once(path, "--shard", bad)
    assert done.returncode == 2
    assert "--shard" in done.stderr and "Traceback" not in done.stderr
    assert farm.hits("/healthy") == 0


@pytest.mark.parametrize("count", ["1", "2"], ids=["one-worker", "two-workers"])
def test_a_shard_without_targets_exits_0_with_a_warning(count, farm, write_config):
    name = "checkout"  # its digest puts it in shard 2 of 3
    assert shard_of(name, 3) == 2
    path = write_config(config_text([{"name": name, "url": farm.url("/healthy")}]))
    done = once(path, "--format", "json", "--shard", "0/3", "--workers", count)
    assert done.returncode == 0, done.stderr
    assert re.search(r"WARNING .*shard 0/3 holds none", done.stderr), done.stderr
    assert json.loads(done.stdout)["results"] == []
    assert farm.hits("/healthy") == 0


# --- A worker that dies -------------------------------------------------------------------------

def test_a_worker_killed_mid_sweep_makes_once_fail_naming_the_lost_targets(farm, write_config, workers):
    # Six slow targets, three per worker: none of the victim's has answered when it dies.
    targets = [{"name": f"slow-{i}", "url": farm.url("/slow")} for i in range(6)]
    path = write_config(config_text(targets, timeout=SLOW_S + 2))
    with started("--config", str(path), "--once", "--format", "json", "--workers", "2",
                 watch=workers) as process:
        pids = workers.wait_for(process.pid, 2)
        wait_until(lambda: farm.hits("/slow") == 6, 30, message="every slow check in flight")
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    assert process.returncode not in (0, None)
    assert process.returncode == 1, err
    assert re.search(r"\b3 targets\b", err), err
    assert "Traceback" not in err
    workers.wait_all_gone()


def test_workers_end_with_a_parent_killed_outright(write_config, workers):
    with two_workers_hanging(write_config, workers) as process:
        process.kill()
        # Sooner than the 5 s deadline of their checks: the workers die with their parent.
        workers.wait_all_gone(timeout=3.0)
