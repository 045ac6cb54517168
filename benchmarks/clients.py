"""One client run, launched as a child process and measured: wall, CPU (user+sys), peak RSS, exit status.

The parent measures what every client shares (``run_measured``: wall time,
the child's rusage from ``os.wait4``, a hard time cap); ``run_greenmon`` and
``run_peer`` add what is their own (greenmon's JSON summary, a peer's JSON
line). Every child runs in its own session, so a timeout kills its whole
process group (greenmon's worker processes too), and nothing outlives a run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks.names import NAME
from benchmarks.peers import installed

REPO = Path(__file__).resolve().parent.parent
GREENMON_TIMEOUT_S = 30.0      # monitor.timeout in the benchmark configs (none of the targets is slow)
PEER_TIMEOUT_S = 30.0

# Row statuses.
OK, FAILED, TIMEOUT, NOT_AVAILABLE, NOT_INSTALLED, ERROR = (
    "ok", "failed", "timeout", "n/a", "not installed", "error")


@dataclass(frozen=True)
class ProcessRun:
    returncode: int | None      # None: killed at the time cap
    wall_s: float
    cpu_s: float                # user + sys of the child and the children it waited for
    max_rss_mb: float           # the largest single process among them
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


@dataclass(frozen=True)
class ClientResult:
    """One row of a scenario table. Figures are for ``n`` checks (scaled when ``extrapolated``)."""

    client: str
    kind: str                   # "greenmon" or "peer"
    n: int
    status: str
    measured_n: int = 0
    ok: int | None = None
    process_s: float | None = None      # the whole child process, start to exit
    sweep_s: float | None = None        # the sweep alone (greenmon: its summary's duration_s)
    cpu_s: float | None = None          # the whole child process
    net_cpu_s: float | None = None      # without process start (see report.NET_CPU_NOTE)
    rss_mb: float | None = None
    extrapolated: bool = False
    note: str = ""
    farm: dict | None = None            # the farm's counters during this run

    @property
    def checks_per_s(self) -> float | None:
        return self.n / self.sweep_s if self.sweep_s else None

    @property
    def cpu_ms_per_check(self) -> float | None:
        return None if self.cpu_s is None else self.cpu_s * 1000 / self.n

    @property
    def net_cpu_ms_per_check(self) -> float | None:
        return None if self.net_cpu_s is None else self.net_cpu_s * 1000 / self.n

    def as_dict(self) -> dict:
        data = {key: getattr(self, key) for key in self.__dataclass_fields__}
        data.update(checks_per_s=self.checks_per_s, cpu_ms_per_check=self.cpu_ms_per_check,
                    net_cpu_ms_per_check=self.net_cpu_ms_per_check)
        return data


def run_measured(argv: list[str], cap_s: float, *, env: dict | None = None) -> ProcessRun:
    """Run ``argv`` from the repository root; kill its process group after ``cap_s`` seconds."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO,
                                 env=env, start_new_session=True)
        reaped: list = []
        waiter = threading.Thread(target=lambda: reaped.append(os.wait4(child.pid, 0)), daemon=True)
        waiter.start()
        try:
            waiter.join(cap_s)
            timed_out = waiter.is_alive()
        finally:
            _kill_group(child.pid)      # a timeout, grandchildren left behind, or we are interrupted
            waiter.join(10)
        wall = time.perf_counter() - started
        if not reaped:                  # pragma: no cover - SIGKILL did not reap in 10 s
            raise RuntimeError(f"cannot reap child {child.pid}")
        _, status, usage = reaped[0]
        child.returncode = os.waitstatus_to_exitcode(status)   # we reaped it, not Popen
        out.seek(0)
        err.seek(0)
        return ProcessRun(returncode=None if timed_out else child.returncode, wall_s=wall,
                          cpu_s=usage.ru_utime + usage.ru_stime, max_rss_mb=usage.ru_maxrss / 1024,
                          stdout=out.read().decode(errors="replace"),
                          stderr=err.read().decode(errors="replace"))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stderr_tail(text: str, lines: int = 3) -> str:
    """The last lines of a failed run's stderr, on one line, for a row's note."""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])[:300]


# --- greenmon --------------------------------------------------------------------------------

def greenmon_config(urls: list[str], *, concurrency: int | None, ca_file: str | None,
                    flow_steps: int = 1, addresses: int = 1) -> str:
    """A config with ``urls`` as targets: defaults except concurrency and timeout (and ca_file for TLS).

    ``concurrency=None`` leaves [monitor] at greenmon's own defaults (timeout too).
    ``flow_steps`` > 1: the URLs in turn are the steps of flows; each step after the first
    sends, as a header, a value the step before extracted (what a login and call do).
    ``addresses`` > 1: the URLs go round that many hosts; each group of them is one target of
    names.NAME (which has those addresses), checked with addresses = "all".
    """
    monitor = []
    if concurrency is not None:
        monitor += [f"concurrency = {concurrency}", f"timeout = {GREENMON_TIMEOUT_S}"]
    if ca_file:
        monitor.append(f'ca_file = "{ca_file}"')
    if flow_steps > 1:   # an interval that holds the steps' timeouts (--once has no schedule)
        monitor.append(f"interval = {flow_steps * GREENMON_TIMEOUT_S}")
    if addresses > 1:
        monitor.append('addresses = "all"')
        urls = [_on_name(url) for url in urls[::addresses]]
    lines = ["[monitor]", *monitor, ""]
    if flow_steps == 1:
        for url in urls:
            lines += ["[[targets]]", f'url = "{url}"', ""]
        return "\n".join(lines)
    for first in range(0, len(urls), flow_steps):
        lines += ["[[targets]]", f'name = "flow-{first // flow_steps}"', ""]
        for number, url in enumerate(urls[first:first + flow_steps]):
            lines += ["[[targets.steps]]", f'url = "{url}"']
            if number:
                lines.append('headers = { X-Token = "{{token}}" }')
            lines += ['extract = { token = "header:Content-Type" }', ""]
    return "\n".join(lines)


def _on_name(url: str) -> str:
    """``url`` with its host (an address) replaced by the name that has every farm address."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{NAME}:{rest.split(':', 1)[1]}"


def greenmon_label(workers: int | None, flow_steps: int = 1, n: int = 0, addresses: int = 1) -> str:
    label = "greenmon" if workers is None else f"greenmon --workers {workers}"
    if addresses > 1:
        return f"{label} ({n // addresses:,} targets x {addresses} addresses)"
    return label if flow_steps == 1 else f"{label} ({n // flow_steps:,} flows of {flow_steps} steps)"


def run_greenmon(urls: list[str], *, concurrency: int | None, ca_file: str | None,
                 workers: int | None, cap_s: float, workdir: Path, flow_steps: int = 1,
                 addresses: int = 1, name_server: str | None = None) -> ClientResult:
    """``greenmon --once`` on ``urls``, measured whole; net CPU subtracts a run of the same config
    and processes with one target per process. With ``flow_steps`` > 1 the URLs are the steps
    of flows, with ``addresses`` > 1 the addresses of targets (``name_server`` answers for
    them): the figures stay per request, ``ok`` counts the requests of the targets up."""
    n = len(urls)
    group = flow_steps * addresses
    label = greenmon_label(workers, flow_steps, n, addresses)
    shape = dict(flow_steps=flow_steps, addresses=addresses, name_server=name_server)
    full = _greenmon_once(urls, concurrency=concurrency, ca_file=ca_file, workers=workers,
                          cap_s=cap_s, workdir=workdir, tag="full", **shape)
    if isinstance(full, ClientResult):
        return replace(full, client=label, n=n)
    run, summary = full
    up = summary.get("up", 0) * group
    result = ClientResult(client=label, kind="greenmon", n=n, measured_n=n, ok=up,
                          status=OK if up == n and run.returncode == 0 else FAILED,
                          process_s=run.wall_s, sweep_s=summary.get("duration_s"), cpu_s=run.cpu_s,
                          rss_mb=run.max_rss_mb)
    if result.status == FAILED:
        errors = {k: v for k, v in summary.get("errors", {}).items() if v}
        result = replace(result, note=(f"exit {run.returncode}, summary: targets {summary.get('targets')}, "
                                       f"up {up}/{n}, errors {errors}"))
    # The baseline starts the same processes: one target per worker (one target is checked in
    # this process, without workers).
    base = _greenmon_once(urls[:(workers or 1) * group], concurrency=concurrency, ca_file=ca_file,
                          workers=workers, cap_s=cap_s, workdir=workdir, tag="base", **shape)
    if isinstance(base, ClientResult):
        return replace(result, note=(result.note + " baseline run failed").strip())
    return replace(result, net_cpu_s=max(0.0, run.cpu_s - base[0].cpu_s))


def _greenmon_once(urls, *, concurrency, ca_file, workers, cap_s, workdir: Path, tag: str, flow_steps: int = 1,
                   addresses: int = 1, name_server: str | None = None):
    """(ProcessRun, summary) on success, else a ClientResult row saying what went wrong."""
    config = workdir / f"greenmon-{tag}.toml"
    output = workdir / f"greenmon-{tag}.json"
    config.write_text(greenmon_config(urls, concurrency=concurrency, ca_file=ca_file, flow_steps=flow_steps,
                                      addresses=addresses), encoding="utf-8")
    env = None if name_server is None else {**os.environ, "GEVENT_RESOLVER_NAMESERVERS": name_server}
    output.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "greenmon", "--once", "--config", str(config), "--format", "json",
            "--output", str(output)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    run = run_measured(argv, cap_s, env=env)
    base = dict(client="greenmon", kind="greenmon", n=len(urls), measured_n=len(urls))
    if run.timed_out:
        return ClientResult(status=TIMEOUT, note=f"killed after {cap_s:.0f} s", **base)
    if run.returncode == 2 and "unrecognized arguments" in run.stderr:
        return ClientResult(status=NOT_AVAILABLE, note="--workers is not implemented yet", **base)
    try:
        summary = json.loads(output.read_text(encoding="utf-8"))["summary"]
    except (OSError, ValueError, KeyError):
        return ClientResult(status=ERROR, note=f"exit {run.returncode}: {stderr_tail(run.stderr)}", **base)
    return run, summary


STEADY_LABEL = "greenmon steady (daemon sweeps)"


def run_greenmon_steady(urls: list[str], *, concurrency: int | None, ca_file: str | None,
                        cap_s: float, workdir: Path, sweeps: int = 4) -> ClientResult:
    """Sweeps 2..K of one engine (``benchmarks.steady``): the daemon's cost per check, keep-alive."""
    base = dict(client=STEADY_LABEL, kind="greenmon", n=len(urls), measured_n=len(urls))
    config = workdir / "greenmon-steady.toml"
    config.write_text(greenmon_config(urls, concurrency=concurrency, ca_file=ca_file), encoding="utf-8")
    run = run_measured([sys.executable, "-m", "benchmarks.steady", "--config", str(config),
                        "--sweeps", str(sweeps)], cap_s)
    if run.timed_out:
        return ClientResult(status=TIMEOUT, note=f"killed after {cap_s:.0f} s", **base)
    try:
        line = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return ClientResult(status=ERROR, note=f"exit {run.returncode}: {stderr_tail(run.stderr)}", **base)
    status = OK if line["ok"] == len(urls) and run.returncode == 0 else FAILED
    return ClientResult(status=status, ok=line["ok"], sweep_s=line["wall_s"], net_cpu_s=line["cpu_s"],
                        rss_mb=run.max_rss_mb, note=f"mean of sweeps 2..{sweeps}", **base)


# --- peers -----------------------------------------------------------------------------------

def run_peer(peer: str, urls: list[str], *, n: int, concurrency: int, ca_file: str | None,
             cap_s: float, workdir: Path) -> ClientResult:
    """``python -m benchmarks.peers PEER`` on ``urls``; figures scaled to ``n`` when fewer URLs were swept."""
    base = dict(client=peer, kind="peer", n=n, measured_n=len(urls))
    if not installed(peer):
        return ClientResult(status=NOT_INSTALLED, **base)
    urls_file = workdir / f"urls-{peer}.txt"
    urls_file.write_text("\n".join(urls) + "\n", encoding="utf-8")
    argv = [sys.executable, "-m", "benchmarks.peers", peer, "--urls-file", str(urls_file),
            "--concurrency", str(concurrency), "--timeout", str(PEER_TIMEOUT_S)]
    if ca_file:
        argv += ["--ca-file", ca_file]
    run = run_measured(argv, cap_s)
    if run.timed_out:
        return ClientResult(status=TIMEOUT, note=f"killed after {cap_s:.0f} s", **base)
    try:
        line = json.loads(run.stdout.strip().splitlines()[-1])
        ok, sweep_s, sweep_cpu_s = line["ok"], line["wall_s"], line["cpu_s"]
    except (ValueError, KeyError, IndexError):
        return ClientResult(status=ERROR, note=f"exit {run.returncode}: {stderr_tail(run.stderr)}", **base)
    status = OK if ok == len(urls) and run.returncode == 0 else FAILED
    note = "" if status == OK else f"ok {ok}/{len(urls)}"
    scale = n / len(urls)
    if scale == 1:
        return ClientResult(status=status, ok=ok, process_s=run.wall_s, sweep_s=sweep_s,
                            cpu_s=run.cpu_s, net_cpu_s=sweep_cpu_s, rss_mb=run.max_rss_mb, note=note,
                            **base)
    # Extrapolated: the start-up stays, the sweep (throughput-bound) grows with N.
    startup_s, startup_cpu_s = run.wall_s - sweep_s, run.cpu_s - sweep_cpu_s
    return ClientResult(status=status, ok=ok, process_s=startup_s + sweep_s * scale,
                        sweep_s=sweep_s * scale, cpu_s=startup_cpu_s + sweep_cpu_s * scale,
                        net_cpu_s=sweep_cpu_s * scale, rss_mb=run.max_rss_mb, extrapolated=True,
                        note=(f"extrapolated from n={len(urls)} " + note).strip(), **base)
