"""The benchmark command: start the farm, run every scenario's clients one after the other, print tables.

    python -m benchmarks.run [--scenarios NAMES] [--quick] [--repeat K] [--write docs/benchmarks.md]
                             [--json FILE]

NAMES is a comma-separated list of scenario names (see benchmarks/scenarios.py),
``default`` (the default) or ``all`` (adds the long, optional 50k scenarios).
``--quick`` is the smoke version run by the test suite: tiny, fast, no
timing meaning. Every client runs K times (``--repeat``, default 3; on
small scenarios as often as it takes to check 10,000 targets in all) and its
median run by net CPU is reported. The daemon scenarios (``daemon-*``) run
greenmon's daemon for a measured window instead (``benchmarks.daemon``),
once each. Clients never run concurrently; each run has a hard time cap; the
farm and every child are stopped in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from benchmarks import daemon, report, stall
from benchmarks.clients import (OK, REPO, STEADY_LABEL, ClientResult, greenmon_label, run_greenmon,
                                run_greenmon_steady, run_peer)
from benchmarks.farm import DEFAULT_LISTENERS, raise_open_file_limit, target_path
from benchmarks.names import NameServer
from benchmarks.scenarios import PEERS, DaemonScenario, Scenario, StallScenario, select

FARM_START_S = 30.0
DRAIN_WAIT_S = 10.0
PAUSE_S = 0.3
DEFAULT_REPEAT = 3
CHECKS_PER_ROW = 10_000  # a 1,000-check run's net CPU varies by about +-15 % here from run to run


class FarmProcess:
    """The target farm as a child process; ``stop`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, hosts: int, tls: bool, workdir: Path) -> None:
        argv = [sys.executable, "-m", "benchmarks.farm", "--hosts", str(hosts),
                "--parent-pid", str(os.getpid()), "--max-seconds", str(6 * 3600)]
        if tls:
            argv += ["--tls", "--ca-file", str(workdir / "farm-ca.pem")]
        self.process = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(FARM_START_S)
        if not lines or not lines[0].strip():
            self.process.kill()
            self.process.wait(5)
            message = self.process.stderr.read()[-500:]
            self.stop()
            raise RuntimeError(f"the farm did not start: {message}")
        self.info = json.loads(lines[0])
        self.addresses: list[str] = self.info["addresses"]
        self.port: int = self.info["port"]
        self.tls_port: int | None = self.info["tls_port"]
        self.ca_file: str | None = self.info["ca_file"]

    def urls(self, scenario: Scenario) -> list[str]:
        scheme, port = ("https", self.tls_port) if scenario.tls else ("http", self.port)
        return [f"{scheme}://{self.addresses[i % scenario.hosts]}:{port}"
                f"{target_path(scenario.delay_ms, 200, str(i))}" for i in range(scenario.n)]

    def stats(self, reset: bool = False) -> dict:
        self.check_alive()
        connection = http.client.HTTPConnection(self.addresses[0], self.port, timeout=10)
        try:
            connection.request("GET", "/_stats/reset" if reset else "/_stats",
                               headers={"Connection": "close"})
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def drain(self) -> None:
        """Wait (bounded) until the last client's connections are gone from the farm."""
        deadline = time.monotonic() + DRAIN_WAIT_S
        while time.monotonic() < deadline and self.stats()["open"] > 1:   # 1: this request
            time.sleep(0.1)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the farm exited with {self.process.returncode}: "
                               f"{self.process.stderr.read()[-500:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for stream in (self.process.stdout, self.process.stderr):
            stream.close()


def listen_overflows() -> int:
    """The kernel's TcpExt ListenOverflows counter (connections that found an accept queue full)."""
    try:
        with open("/proc/net/netstat", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return 0
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenOverflows", 0))
    return 0


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)      # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU of this process and of every child it has reaped (the clients; not the farm, still running)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def median_run(runs: list[ClientResult]) -> ClientResult:
    """The run to report of several of one client: a failed one if any (failures stay visible),
    else the one with the median net CPU (a run's CPU is its noisiest figure on a shared machine)."""
    failed = [run for run in runs if run.status != OK]
    if failed:
        return failed[0]
    ranked = sorted(runs, key=lambda run: (run.net_cpu_s is None, run.net_cpu_s or 0.0))
    return ranked[(len(ranked) - 1) // 2]


def run_scenario(scenario: Scenario, farm: FarmProcess, workdir: Path,
                 peers: tuple[str, ...] = PEERS, repeat: int = 1) -> list[ClientResult]:
    """Every client ``repeat`` times, and more on small scenarios: a row measures at least
    CHECKS_PER_ROW checks in all (the seed, sweeping for a fixed time, runs once)."""
    if repeat > 1:
        repeat = max(repeat, math.ceil(CHECKS_PER_ROW / scenario.n))
    urls = farm.urls(scenario)
    ca_file = farm.ca_file if scenario.tls else None
    rows: list[ClientResult] = []

    def measured(label: str, run, repeat: int = repeat) -> None:
        runs = []
        for attempt in range(repeat):
            farm.drain()
            time.sleep(PAUSE_S)
            farm.stats(reset=True)
            overflows = listen_overflows()
            _progress(f"[{scenario.name}] {label} ({attempt + 1}/{repeat}) ...")
            started = time.monotonic()
            busy, own = busy_cpu_s(), own_cpu_s()
            row = run()
            stats = farm.stats()
            # What other processes on the machine took meanwhile: noise in these figures.
            stats["other_cpu_s"] = round(max(0.0, (busy_cpu_s() - busy) - (own_cpu_s() - own)
                                             - stats["cpu_s"]), 2)
            stats["window_s"] = round(time.monotonic() - started, 2)
            stats["listen_overflows"] = listen_overflows() - overflows
            runs.append(replace(row, farm=stats))
            _progress(f"[{scenario.name}] {label}: {row.status} {row.note} "
                      f"({time.monotonic() - started:.1f} s)")
            if row.status != OK:
                break
        rows.append(median_run(runs))

    # A flow or addresses scenario runs the same requests as one-request targets first: the
    # flows, or the targets of every address, are the reference.
    shapes = [{}]
    if scenario.flow_steps > 1:
        shapes.append({"flow_steps": scenario.flow_steps})
    if scenario.addresses > 1:
        shapes.append({"addresses": scenario.addresses})
    with contextlib.ExitStack() as stack:
        if scenario.addresses > 1:
            names = stack.enter_context(NameServer(farm.addresses[:scenario.addresses]))
            shapes[-1]["name_server"] = names.server
        for workers in scenario.workers:
            for shape in shapes:
                measured(greenmon_label(workers, shape.get("flow_steps", 1), scenario.n,
                                        shape.get("addresses", 1)),
                         lambda workers=workers, shape=shape: run_greenmon(
                             urls, concurrency=scenario.greenmon_concurrency, ca_file=ca_file,
                             workers=workers, cap_s=scenario.cap_s, workdir=workdir, **shape))
    if scenario.steady:
        measured(STEADY_LABEL, lambda: run_greenmon_steady(
            urls, concurrency=scenario.greenmon_concurrency, ca_file=ca_file, cap_s=scenario.cap_s,
            workdir=workdir))
    for peer in peers:
        subset = urls[:scenario.seed_count] if peer == "seed" else urls
        measured(peer, lambda peer=peer, subset=subset: run_peer(
            peer, subset, n=scenario.n, concurrency=scenario.client_concurrency, ca_file=ca_file,
            cap_s=scenario.cap_s, workdir=workdir), repeat=1 if peer == "seed" else repeat)
    return rows


def _progress(message: str) -> None:
    print(message.rstrip(), file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", metavar="NAMES",
                        help="comma-separated scenario names, 'default' or 'all' (adds the 50k scenarios)")
    parser.add_argument("--quick", action="store_true", help="the tiny smoke version (test suite)")
    parser.add_argument("--peers", metavar="NAMES", help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--write", metavar="PATH", help="write the Markdown report here (docs/benchmarks.md)")
    parser.add_argument("--json", metavar="PATH", help="write every row as JSON here")
    parser.add_argument("--repeat", type=int, metavar="K",
                        help="run every client K times, report its median run by net CPU "
                             "(default 3; 1 with --quick)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        scenarios = select(args.scenarios, args.quick)
        peers = PEERS if not args.peers else tuple(p.strip() for p in args.peers.split(","))
        unknown = set(peers) - set(PEERS)
        if unknown:
            raise ValueError(f"unknown peers: {', '.join(sorted(unknown))}")
        if args.repeat is not None and args.repeat < 1:
            raise ValueError("--repeat must be at least 1")
    except ValueError as error:
        print(f"benchmarks: {error}", file=sys.stderr)
        return 2
    repeat = args.repeat or (1 if args.quick else DEFAULT_REPEAT)
    raise_open_file_limit()
    command = shlex.join(["python", "-m", "benchmarks.run", *argv])
    results: list[tuple[Scenario, list[ClientResult]]] = []
    daemon_results: list[tuple[DaemonScenario, list[daemon.DaemonResult]]] = []
    stall_results: list[tuple[StallScenario, stall.StallResult]] = []
    references: dict = {}      # the daemon scenarios' paced reference, one per workload
    with tempfile.TemporaryDirectory(prefix="greenmon-bench-") as directory:
        workdir = Path(directory)
        farm = FarmProcess(max(s.hosts for s in scenarios), any(s.tls for s in scenarios), workdir)
        try:
            farm_note = (f"{len(farm.addresses)} loopback address(es) {farm.addresses[0]}..."
                         f"{farm.addresses[-1]}, {DEFAULT_LISTENERS} SO_REUSEPORT listeners each"
                         + (", TLS on a second port" if farm.tls_port else ""))
            for scenario in scenarios:
                if isinstance(scenario, StallScenario):
                    _progress(f"[{scenario.name}] {scenario.runs} runs of each ...")
                    found = stall.run_stall(farm, workdir, scenario.plain, scenario.runs, scenario.cap_s)
                    stall_results.append((scenario, found))
                    print(stall.block(scenario, found) + "\n", flush=True)
                    continue
                if isinstance(scenario, DaemonScenario):
                    rows = daemon.run_daemon_scenario(scenario, farm, workdir, references, _progress)
                    daemon_results.append((scenario, rows))
                    print(report.daemon_block(scenario, rows) + "\n", flush=True)
                    continue
                rows = run_scenario(scenario, farm, workdir, peers, repeat)
                results.append((scenario, rows))
                print(report.scenario_block(scenario, rows) + "\n", flush=True)
        finally:
            farm.stop()
    lines = (report.verdicts(results) + report.daemon_verdicts(daemon_results)
             + [stall.verdict(s, found) for s, found in stall_results if s.runs > 1])
    print("Targets:\n" + ("\n".join(lines) if lines else "- no figure to judge"))
    print("\n" + (report.NET_CPU_NOTE if results else "")
          + ("\n\n" if results and daemon_results else "")
          + (report.DAEMON_NOTE if daemon_results else ""), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"command": command, "scenarios": [
                {"name": s.name, "kind": "sweep", "n": s.n, "delay_ms": s.delay_ms, "hosts": s.hosts,
                 "tls": s.tls, "rows": [r.as_dict() for r in rows]} for s, rows in results] + [
                {"name": s.name, "kind": "daemon", "n": s.n, "delay_ms": s.delay_ms, "hosts": s.hosts,
                 "tls": s.tls, "interval": s.interval, "workers": s.workers, "window_s": s.window_s,
                 "rows": [r.as_dict() for r in rows]} for s, rows in daemon_results] + [
                {"name": s.name, "kind": "stall", "plain": s.plain, "runs": s.runs, **found.as_dict()}
                for s, found in stall_results]},
            indent=2) + "\n", encoding="utf-8")
    if args.write:
        path = Path(args.write)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.document(command, results, farm_note=farm_note,
                                        daemon_results=daemon_results), encoding="utf-8")
        print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
