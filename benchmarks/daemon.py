"""The daemon scenario: greenmon left running on its timetable, scraped as Prometheus would scrape it.

The sweep scenarios time ``greenmon --once``; the daemon's promise is a
different one: N targets each checked every ``interval`` seconds, the
latencies it reports being the targets' own while /metrics is scraped, in
bounded memory. So this starts ``python -m greenmon --config F --listen ...``
(in its own session: its process group is killed at the end, always)
against the farm, waits for /metrics, lets one interval pass, then for the
measurement window:

- scrapes /metrics every second with ``Accept-Encoding: gzip`` (each
  scrape's wall time; from its text, the checks in flight, the event loop
  and schedule lag histograms and the overrun counter);
- fetches /api/results (gzip too) every half interval, so that every
  check's result is seen before the next one replaces it, and keeps each
  check once by (target, checked_at), if it started inside the window;
- samples VmRSS of the daemon and of its worker processes, and reads their
  VmHWM (peak) before stopping them.

The reference (``benchmarks.paced``): aiohttp checking the same URLs on the
same timetable, as its own child process after greenmon (never at the same
time), against the same farm. Everything runs on this machine's cores with
the farm; the figures say what the daemon does on it, not on a quiet box.

    python -m benchmarks.daemon [--scenario daemon-10k] [--window 40] [--no-reference] [--json F]
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.clients import ERROR, FAILED, OK, REPO, TIMEOUT, run_measured, stderr_tail
from benchmarks.paced import percentile
from benchmarks.peers import installed
from benchmarks.scenarios import DaemonScenario

if TYPE_CHECKING:
    from benchmarks.run import FarmProcess

SKIPPED = "skipped"
DAEMON_START_S = 120.0       # until /metrics answers (reading a 50,000-target config included)
HTTP_TIMEOUT_S = 10.0        # one scrape or /api/results fetch (Prometheus' default scrape timeout)
RESULTS_AFTER_S = 0.5        # /api/results is fetched this long after a scrape, between two
STOP_GRACE_S = 10.0          # beyond the check timeout, for SIGTERM to end the daemon
REFERENCE_SLACK_S = 60.0     # the reference's hard cap beyond its warm-up and window
FDS_PER_CHECK = 2            # a socket in flight and an idle keep-alive one, per expected check
FD_RESERVE = 1024
LOOP_LAG_LIMIT_S = 0.05      # the loop-lag bucket the target is about (le="0.05")
LATE_LIMIT_S = 1.0           # a check that starts later than this after its due time is late
LOG_LINES = 3


@dataclass(frozen=True)
class DaemonResult:
    """One row of a daemon scenario's table: the daemon, or the paced reference."""

    client: str
    kind: str                              # "greenmon" or "peer"
    n: int
    status: str
    note: str = ""
    window_s: float | None = None
    expected_checks: int | None = None     # n * window / interval
    checks: int | None = None              # distinct checks due in the window and seen
    ok: int | None = None
    latency_p50_s: float | None = None     # of the ok checks' reported latency
    latency_p99_s: float | None = None
    latency_max_s: float | None = None
    start_late_p99_s: float | None = None  # how late checks started (daemon: schedule lag bucket)
    scrapes: int = 0
    scrape_errors: int = 0
    scrapes_skipped: int = 0               # a slow scrape pushed the next one past its turn
    scrape_p50_s: float | None = None
    scrape_max_s: float | None = None
    scrape_kb: float | None = None         # gzip size of the last scrape
    results_max_s: float | None = None     # the slowest /api/results fetch
    inflight_max: int | None = None
    loop_lag_samples: int | None = None
    loop_lag_within: float | None = None   # share of loop-lag samples <= 50 ms
    late_over_1s: float | None = None      # share of checks started more than 1 s after due
    loop_lag_p99_s: float | None = None    # bucket bound
    overruns: int | None = None
    cpu_s: float | None = None             # daemon (and workers), or the reference's whole run
    cores: float | None = None             # cpu_s over the time it covers
    rss_mb: float | None = None            # peak (VmHWM, start-up included), the largest process
    window_rss_mb: float | None = None     # the largest VmRSS sampled in the window
    rss_each_mb: tuple[float, ...] = ()    # peak of each process: the daemon first, then workers
    processes: int | None = None
    farm_peak_conns: int | None = None
    scrape_walls: tuple[float, ...] = ()   # every scrape of the window, in order
    harness_cpu_s: float | None = None     # this process's own CPU during the window (scraping)
    other_cpu_s: float | None = None       # what other processes on the machine took meanwhile

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


# --- the daemon process --------------------------------------------------------------------------

def daemon_config(urls: list[str], scenario: DaemonScenario) -> str:
    lines = ["[monitor]", f"interval = {scenario.interval}", f"timeout = {scenario.timeout}",
             f"concurrency = {scenario.concurrency}", ""]
    if scenario.metrics:
        lines += ["[metrics]", scenario.metrics, ""]
    for url in urls:
        lines += ["[[targets]]", f'url = "{url}"', ""]
    return "\n".join(lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def workers_label(workers: int | str | None) -> str:
    if workers is None:
        return "greenmon daemon"
    if workers == "auto":
        return f"greenmon daemon --workers auto ({os.cpu_count() or 1})"
    return f"greenmon daemon --workers {workers}"


class Daemon:
    """``python -m greenmon`` (daemon mode) in its own session; ``stop`` always ends its group."""

    def __init__(self, config: Path, port: int, workers: int | str | None) -> None:
        argv = [sys.executable, "-m", "greenmon", "--config", str(config),
                "--listen", f"127.0.0.1:{port}"]
        if workers is not None:
            argv += ["--workers", str(workers)]
        self.port = port
        self.log = config.with_suffix(".log")
        self._log = open(self.log, "wb")
        self.process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.exit_code: int | None = None
        self.stop_s: float | None = None
        self._killed = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and self.alive():
            try:
                fetch(self.port, "/metrics")
                return True
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
        return False

    def terminate(self, grace_s: float) -> None:
        """SIGTERM (graceful: the checks in flight end), then the whole group is killed."""
        started = time.monotonic()
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.process.wait(grace_s)
                self.stop_s = time.monotonic() - started
            except subprocess.TimeoutExpired:
                pass
        else:
            self.exit_code = self.process.returncode
        self.kill()

    def kill(self) -> None:
        """SIGKILL to the group, once: workers left behind by a daemon that exited go too."""
        if self._killed:
            return
        self._killed = True
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:   # pragma: no cover - SIGKILL did not end it
            pass
        self._log.close()

    def log_tail(self) -> list[str]:
        """Its WARNING/ERROR lines, distinct, at most LOG_LINES (the log is short unless unwell)."""
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        seen: list[str] = []
        for number, line in enumerate(lines):
            if line.startswith("Traceback"):   # what was raised: the traceback's last line
                raised = next((later for later in lines[number + 1:]
                               if later and not later[0].isspace()), "?")
                text = f"Traceback: {raised}"[:200]
            elif any(mark in line for mark in (" WARNING ", " ERROR ", " CRITICAL ", "greenmon: ")):
                text = line.split(": ", 1)[-1][:200]
            else:
                continue
            if text not in seen:
                seen.append(text)
        return seen[:LOG_LINES]


def fetch(port: int, path: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[float, int, bytes]:
    """GET with gzip accepted, a fresh connection: (wall s until the body is read, bytes on the
    wire, decoded body). Raises OSError on anything but 200."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Accept-Encoding": "gzip", "Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        wall = time.perf_counter() - started
        if response.status != 200:
            raise OSError(f"{path}: HTTP {response.status}")
        gzipped = response.getheader("Content-Encoding", "") == "gzip"
    finally:
        connection.close()
    return wall, len(body), zlib.decompress(body, 31) if gzipped else body


# --- what a scrape says --------------------------------------------------------------------------

def family_lines(text: bytes, family: str) -> list[bytes]:
    """The sample lines of one family (found by its TYPE line, not by scanning the whole text:
    10,000 targets make 25 MB of it)."""
    at = text.find(b"\n# TYPE " + family.encode() + b" ")
    if at < 0:
        return []
    end = text.find(b"\n# ", at + 1)
    return text[at + 1:end if end >= 0 else len(text)].splitlines()[1:]


def gauge(text: bytes, family: str) -> float | None:
    for line in family_lines(text, family):
        return float(line.rsplit(b" ", 1)[1])
    return None


def histogram(text: bytes, family: str) -> list[tuple[float, float]]:
    """[(le, cumulative count)], +Inf last; the count is the +Inf bucket."""
    out = []
    prefix = family.encode() + b'_bucket{le="'
    for line in family_lines(text, family):
        if line.startswith(prefix):
            bound = line[len(prefix):line.index(b'"', len(prefix))].decode()
            out.append((math.inf if bound == "+Inf" else float(bound), float(line.rsplit(b" ", 1)[1])))
    return out


@dataclass(frozen=True)
class Scrape:
    wall_s: float
    gzip_bytes: int
    inflight: float | None
    loop_lag: list[tuple[float, float]]
    schedule_lag: list[tuple[float, float]]
    overruns: float | None


def parse_scrape(wall_s: float, size: int, text: bytes) -> Scrape:
    return Scrape(wall_s, size, gauge(text, "greenmon_inflight_checks"),
                  histogram(text, "greenmon_event_loop_lag_seconds"),
                  histogram(text, "greenmon_schedule_lag_seconds"),
                  gauge(text, "greenmon_schedule_overruns_total"))


def delta(first: list[tuple[float, float]], last: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """What a cumulative histogram gained between two scrapes (the same buckets in both)."""
    if [b for b, _ in first] != [b for b, _ in last]:
        return last
    return [(bound, after - before) for (bound, before), (_, after) in zip(first, last)]


def within(buckets: list[tuple[float, float]], limit: float) -> tuple[float | None, int]:
    """(share of the observations at or below ``limit``, observations) of a histogram delta."""
    total = buckets[-1][1] if buckets else 0
    below = next((count for bound, count in buckets if bound >= limit - 1e-12), None)
    if not total or below is None:
        return None, int(total)
    return below / total, int(total)


def bucket_quantile(buckets: list[tuple[float, float]], fraction: float) -> float | None:
    """The smallest bucket bound with ``fraction`` of the observations at or below it."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    return next(bound for bound, count in buckets if count >= fraction * total)


# --- the processes' memory and CPU ---------------------------------------------------------------

def child_pids(pid: int) -> list[int]:
    """Direct children (the worker processes), from /proc."""
    found = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])    # utime, stime
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class ProcessWatch:
    """Peak RSS of the daemon and of every worker seen, and their CPU over the window."""

    pid: int
    peak_kb: dict[int, int] = field(default_factory=dict)
    window_kb: dict[int, int] = field(default_factory=dict)   # VmRSS samples while counting
    cpu_at: dict[int, int] = field(default_factory=dict)
    counting: bool = False

    def pids(self) -> list[int]:
        return [self.pid, *child_pids(self.pid)]

    def sample(self, key: str = "VmRSS") -> None:
        for pid in self.pids():
            kb = status_kb(pid, key)
            if kb is not None:
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), kb)
                if self.counting:
                    self.window_kb[pid] = max(self.window_kb.get(pid, 0), kb)

    def start_cpu(self) -> None:
        self.cpu_at = {pid: cpu_ticks(pid) for pid in self.pids()}

    def cpu_s(self) -> float:
        """CPU since ``start_cpu`` of the processes alive now (a worker restarted meanwhile counts
        from its start)."""
        ticks = sum(cpu_ticks(pid) - self.cpu_at.get(pid, 0) for pid in self.pids())
        return ticks / os.sysconf("SC_CLK_TCK")

    @property
    def peak_mb(self) -> float | None:
        return max(self.peak_kb.values()) / 1024 if self.peak_kb else None

    @property
    def each_mb(self) -> tuple[float, ...]:
        order = [self.pid] + sorted(pid for pid in self.peak_kb if pid != self.pid)
        return tuple(round(self.peak_kb[pid] / 1024, 1) for pid in order if pid in self.peak_kb)

    @property
    def window_mb(self) -> float | None:
        return max(self.window_kb.values()) / 1024 if self.window_kb else None


# --- one measured window -------------------------------------------------------------------------

def epoch(checked_at: str) -> float:
    return datetime.fromisoformat(checked_at.replace("Z", "+00:00")).timestamp()


@dataclass
class Window:
    """What the scrapes and /api/results fetches of one window gathered."""

    started: float                      # epoch seconds
    ended: float = 0.0
    scrapes: list[Scrape] = field(default_factory=list)
    scrape_errors: list[str] = field(default_factory=list)
    skipped: int = 0
    results_walls: list[float] = field(default_factory=list)
    checks: dict[tuple[str, str], tuple[bool, float | None]] = field(default_factory=dict)

    def add_results(self, body: bytes) -> None:
        for result in json.loads(body)["results"]:
            key = (result["target"], result["checked_at"])
            if key not in self.checks and self.started <= epoch(result["checked_at"]) < self.ended:
                self.checks[key] = (bool(result["ok"]), result["latency_s"])


def observe(daemon: Daemon, watch: ProcessWatch, scenario: DaemonScenario, seconds: float,
            measured: bool = True) -> Window:
    """Scrape on a fixed timetable for ``seconds``. Measured: also fetch /api/results every half
    interval, and once more after the end for the checks that started before it; else (the
    warm-up, scraped as Prometheus would scrape it from the start) return at the end."""
    every = scenario.scrape_every_s
    start = time.monotonic()
    window = Window(started=time.time())
    window.ended = window.started + seconds
    events = [(start + k * every, "scrape") for k in range(int(seconds / every) + measured)]
    if measured:
        step = scenario.interval / 2
        events += [(start + RESULTS_AFTER_S + j * step, "results")
                   for j in range(1, int(seconds / step) + 1)]
        events.append((start + seconds + min(scenario.timeout, scenario.delay_ms / 1000 + 1.0),
                       "results"))
    else:
        events.append((start + seconds, "end"))
    for at, kind in sorted(events):
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif kind == "scrape" and -delay > every:
            window.skipped += 1      # as Prometheus does: no burst to catch up
            continue
        if not daemon.alive():
            window.scrape_errors.append(f"the daemon exited with {daemon.process.returncode}")
            break
        if kind == "end":
            break
        try:
            if kind == "scrape":
                window.scrapes.append(parse_scrape(*fetch(daemon.port, "/metrics")))
                watch.sample()
            else:
                wall, _, body = fetch(daemon.port, "/api/results")
                window.results_walls.append(wall)
                window.add_results(body)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as error:
            window.scrape_errors.append(f"{kind}: {type(error).__name__}: {error}"[:200])
    return window


def summarize(window: Window, scenario: DaemonScenario, label: str, watch: ProcessWatch,
              cpu_s: float, harness_cpu_s: float, note: str) -> DaemonResult:
    latencies = [latency for ok, latency in window.checks.values() if ok and latency is not None]
    walls = [s.wall_s for s in window.scrapes]
    fields: dict = {}
    if len(window.scrapes) >= 2:
        first, last = window.scrapes[0], window.scrapes[-1]
        loop = delta(first.loop_lag, last.loop_lag)
        share, samples = within(loop, LOOP_LAG_LIMIT_S)
        late = delta(first.schedule_lag, last.schedule_lag)
        on_time, _ = within(late, LATE_LIMIT_S)
        fields = dict(loop_lag_within=share, loop_lag_samples=samples,
                      loop_lag_p99_s=bucket_quantile(loop, 0.99),
                      start_late_p99_s=bucket_quantile(late, 0.99),
                      late_over_1s=None if on_time is None else 1.0 - on_time,
                      overruns=(None if last.overruns is None or first.overruns is None
                                else int(last.overruns - first.overruns)))
    inflight = [s.inflight for s in window.scrapes if s.inflight is not None]
    ok = sum(1 for ok, _ in window.checks.values() if ok)
    return DaemonResult(
        client=label, kind="greenmon", n=scenario.n, status=OK if window.scrapes and latencies else FAILED,
        note=note, window_s=scenario.window_s,
        expected_checks=scenario.expected_checks,
        checks=len(window.checks), ok=ok, latency_p50_s=percentile(latencies, 0.50),
        latency_p99_s=percentile(latencies, 0.99), latency_max_s=max(latencies, default=None),
        scrapes=len(window.scrapes), scrape_errors=len(window.scrape_errors),
        scrapes_skipped=window.skipped, scrape_p50_s=percentile(walls, 0.50),
        scrape_max_s=max(walls, default=None),
        scrape_kb=window.scrapes[-1].gzip_bytes / 1024 if window.scrapes else None,
        results_max_s=max(window.results_walls, default=None),
        inflight_max=int(max(inflight)) if inflight else None,
        scrape_walls=tuple(round(wall, 4) for wall in walls),
        cpu_s=round(cpu_s, 2), cores=round(cpu_s / scenario.window_s, 2), rss_mb=watch.peak_mb,
        window_rss_mb=watch.window_mb, rss_each_mb=watch.each_mb,
        processes=len(watch.peak_kb), harness_cpu_s=round(harness_cpu_s, 2), **fields)


def busy_cpu_s() -> float:
    from benchmarks.run import busy_cpu_s as machine_busy_s   # (run imports this module)

    return machine_busy_s()


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fd_shortfall(scenario: DaemonScenario) -> str | None:
    """Why this machine's open-file limit cannot hold the scenario's connections, or None."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if hard == resource.RLIM_INFINITY else hard
    need = int(scenario.expected_inflight * FDS_PER_CHECK) + FD_RESERVE
    if limit != resource.RLIM_INFINITY and limit < need:
        return (f"the open-file hard limit is {limit}, and about {need} sockets per process "
                f"(farm and daemon each) are needed: raise it (ulimit -Hn) to run this scenario")
    return None


def run_greenmon_daemon(scenario: DaemonScenario, urls: list[str], farm: "FarmProcess | None",
                        workdir: Path) -> DaemonResult:
    """Start the daemon, warm up one interval, observe the window, stop it (its group, always)."""
    label = workers_label(scenario.workers)
    shortfall = fd_shortfall(scenario)
    if shortfall:
        return DaemonResult(client=label, kind="greenmon", n=scenario.n, status=SKIPPED, note=shortfall)
    config = workdir / f"{scenario.name}.toml"
    config.write_text(daemon_config(urls, scenario), encoding="utf-8")
    daemon = Daemon(config, free_port(), scenario.workers)
    try:
        if not daemon.wait_ready(DAEMON_START_S):
            daemon.terminate(1.0)
            return DaemonResult(client=label, kind="greenmon", n=scenario.n, status=ERROR,
                                note=f"/metrics never answered (exit {daemon.exit_code}): "
                                     + " | ".join(daemon.log_tail()))
        watch = ProcessWatch(daemon.process.pid)
        observe(daemon, watch, scenario, scenario.interval, measured=False)
        if farm is not None:
            farm.stats(reset=True)
        watch.start_cpu()
        harness, busy = own_cpu_s(), busy_cpu_s()
        watch.counting = True
        window = observe(daemon, watch, scenario, scenario.window_s)
        watch.counting = False
        cpu_s, harness_cpu_s, busy = watch.cpu_s(), own_cpu_s() - harness, busy_cpu_s() - busy
        farm_stats = farm.stats() if farm is not None else {}
        watch.sample("VmHWM")    # the true peaks, start-up included, before they exit
        alive = daemon.alive()
        daemon.terminate(scenario.timeout + STOP_GRACE_S)
    finally:
        daemon.kill()
    notes = []
    if not alive:
        notes.append(f"the daemon exited during the window ({daemon.exit_code})")
    elif daemon.stop_s is None:
        notes.append(f"SIGTERM did not end it in {scenario.timeout + STOP_GRACE_S:.0f} s: killed")
    elif daemon.exit_code:
        notes.append(f"exit {daemon.exit_code} on SIGTERM")
    notes += window.scrape_errors[:2] + [f"log: {line}" for line in daemon.log_tail()]
    result = summarize(window, scenario, label, watch, cpu_s, harness_cpu_s, "; ".join(notes))
    return replace(result, status=result.status if alive else FAILED,
                   farm_peak_conns=farm_stats.get("peak_open"),
                   other_cpu_s=round(max(0.0, busy - cpu_s - harness_cpu_s - farm_stats.get("cpu_s", 0.0)), 2))


# --- the reference -------------------------------------------------------------------------------

REFERENCE_LABEL = "aiohttp (paced reference)"


def run_reference(scenario: DaemonScenario, urls: list[str], farm: "FarmProcess | None",
                  workdir: Path) -> DaemonResult:
    """``benchmarks.paced`` on the same URLs and timetable, warm-up and window as the daemon."""
    base = dict(client=REFERENCE_LABEL, kind="peer", n=scenario.n, window_s=scenario.window_s,
                expected_checks=scenario.expected_checks)
    if not installed("aiohttp"):
        return DaemonResult(status="not installed", **base)
    urls_file = workdir / f"{scenario.name}-urls.txt"
    urls_file.write_text("\n".join(urls) + "\n", encoding="utf-8")
    argv = [sys.executable, "-m", "benchmarks.paced", "--urls-file", str(urls_file),
            "--interval", str(scenario.interval), "--warmup", str(scenario.interval),
            "--window", str(scenario.window_s), "--concurrency", str(scenario.concurrency),
            "--timeout", str(scenario.timeout)]
    if farm is not None:
        farm.stats(reset=True)
    cap_s = scenario.interval + scenario.window_s + scenario.timeout + REFERENCE_SLACK_S
    busy = busy_cpu_s()
    run = run_measured(argv, cap_s)
    busy = busy_cpu_s() - busy
    farm_stats = farm.stats() if farm is not None else {}
    base.update(farm_peak_conns=farm_stats.get("peak_open"),
                other_cpu_s=round(max(0.0, busy - run.cpu_s - farm_stats.get("cpu_s", 0.0)), 2))
    if run.timed_out:
        return DaemonResult(status=TIMEOUT, note=f"killed after {cap_s:.0f} s", **base)
    try:
        line = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return DaemonResult(status=ERROR, note=f"exit {run.returncode}: {stderr_tail(run.stderr)}", **base)
    status = OK if line["ok"] and run.returncode == 0 else FAILED
    return DaemonResult(status=status, checks=line["checks"], ok=line["ok"],
                        latency_p50_s=line["p50_s"], latency_p99_s=line["p99_s"],
                        latency_max_s=line["max_s"], start_late_p99_s=line["late_p99_s"],
                        inflight_max=line["peak_inflight"], cpu_s=run.cpu_s,
                        cores=round(run.cpu_s / run.wall_s, 2), rss_mb=run.max_rss_mb, processes=1,
                        note="CPU and cores over its whole run, warm-up included", **base)


def reference_key(scenario: DaemonScenario) -> tuple:
    """Scenarios with the same key share one reference run (the workload is the same)."""
    return (scenario.n, scenario.delay_ms, scenario.hosts, scenario.interval, scenario.window_s,
            scenario.timeout, scenario.concurrency)


def run_daemon_scenario(scenario: DaemonScenario, farm: "FarmProcess", workdir: Path,
                        references: dict | None = None, progress=None) -> list[DaemonResult]:
    """The daemon's row, then the reference's: run now, or reused from a scenario with the same
    workload earlier in this run (``references``: reference_key -> (scenario name, row))."""
    progress = progress or (lambda message: print(message, file=sys.stderr, flush=True))
    references = {} if references is None else references
    urls = farm.urls(scenario)
    farm.drain()
    progress(f"[{scenario.name}] {workers_label(scenario.workers)}: warm-up {scenario.interval:g} s, "
             f"window {scenario.window_s:g} s ...")
    started = time.monotonic()
    rows = [run_greenmon_daemon(scenario, urls, farm, workdir)]
    progress(f"[{scenario.name}] {rows[0].client}: {rows[0].status} ({time.monotonic() - started:.1f} s)")
    if scenario.reference and rows[0].status != SKIPPED:
        key = reference_key(scenario)
        if key in references:
            made_for, reference = references[key]
            rows.append(replace(reference, note=f"the run made for {made_for}"))
        else:
            farm.drain()
            progress(f"[{scenario.name}] {REFERENCE_LABEL} ...")
            started = time.monotonic()
            reference = run_reference(scenario, urls, farm, workdir)
            progress(f"[{scenario.name}] {REFERENCE_LABEL}: {reference.status} "
                     f"({time.monotonic() - started:.1f} s)")
            references[key] = (scenario.name, reference)
            rows.append(reference)
    return rows


# --- standalone ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="daemon-10k", help="a daemon scenario's name")
    parser.add_argument("--window", type=float, metavar="S",
                        help="the measurement window in seconds (default: the scenario's)")
    parser.add_argument("--no-reference", action="store_true", help="skip the paced aiohttp reference")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    import dataclasses
    import tempfile

    from benchmarks import report
    from benchmarks.farm import raise_open_file_limit
    from benchmarks.run import FarmProcess
    from benchmarks.scenarios import BY_NAME

    args = build_parser().parse_args(argv)
    scenario = BY_NAME.get(args.scenario)
    if not isinstance(scenario, DaemonScenario):
        known = ", ".join(name for name, s in BY_NAME.items() if isinstance(s, DaemonScenario))
        print(f"benchmarks.daemon: not a daemon scenario: {args.scenario} (known: {known})", file=sys.stderr)
        return 2
    if args.window is not None:
        scenario = dataclasses.replace(scenario, window_s=args.window)
    if args.no_reference:
        scenario = dataclasses.replace(scenario, reference=False)
    raise_open_file_limit()
    with tempfile.TemporaryDirectory(prefix="greenmon-daemon-bench-") as directory:
        farm = FarmProcess(scenario.hosts, False, Path(directory))
        try:
            rows = run_daemon_scenario(scenario, farm, Path(directory))
        finally:
            farm.stop()
    print(report.daemon_block(scenario, rows) + "\n")
    print("Targets:\n" + "\n".join(report.daemon_verdicts([(scenario, rows)]) or ["- no figure to judge"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"scenario": scenario.name,
                                               "rows": [r.as_dict() for r in rows]}, indent=2) + "\n",
                                   encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
