"""What a benchmark run prints: one Markdown table per scenario, the target verdicts, the machine.

Pure formatting over ``ClientResult`` rows; the figures are measured in
``benchmarks.clients``.
"""

from __future__ import annotations

import os
import platform
import resource
from importlib import metadata

from benchmarks.clients import OK, ClientResult
from benchmarks.scenarios import Scenario

NET_CPU_NOTE = (
    "*net CPU*: greenmon's is the CPU of the whole `greenmon --once` process (all its processes, "
    "config load and report included) minus that of a run of the same config with 1 target per "
    "process (with `--workers N`, N targets, so every worker starts): it excludes process start. "
    "A peer's is the CPU its process spent in the sweep itself, measured in-process (no "
    "interpreter start, no imports). *process*: the whole child process, start to "
    "exit, measured by the parent with `os.wait4`. *sweep s*: greenmon's is its summary's "
    "`duration_s`, a peer's its own timer around the sweep. *peak RSS*: the largest single "
    "process (with `--workers`, the largest of parent and workers). *ratios*: peer sweep s / "
    "greenmon sweep s (> 1: greenmon is faster) and greenmon net CPU per check / peer net CPU per "
    "check (< 1: greenmon is cheaper), against the scenario's reference greenmon row (marked *). "
    "*farm conns*: the most connections the farm held at once during that run. Every client "
    "runs `--repeat` times (3 unless the command says otherwise), and on scenarios under 10,000 "
    "targets as often as it takes to check 10,000 in all (the seed, which sweeps for a fixed "
    "time, once); each row is its run with the median net CPU.")

SHORT_NOTE = ("CPU ms/check (net): greenmon's = its process CPU minus that of a run of the same "
              "config with 1 target per process (no process start); a peer's = the CPU of its sweep, "
              "measured in-process.")

TARGET_CPU_MS = 0.30
TARGET_RSS_MB = 150.0
TARGET_RAW_FACTOR = 1.5
TARGET_PROCESS_S = 3.0
OTHER_LOAD_WARNING = 0.05      # share of the machine's CPU used by other processes that earns a warning

LIBRARIES = ("gevent", "requests", "urllib3", "grequests", "aiohttp", "trustme", "greenlet")


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def reference(rows: list[ClientResult]) -> ClientResult | None:
    """The greenmon row peers are compared with: the last greenmon run that succeeded."""
    candidates = [r for r in rows if r.kind == "greenmon" and r.status == OK]
    return candidates[-1] if candidates else None


def table(scenario: Scenario, rows: list[ClientResult]) -> str:
    ref = reference(rows)
    header = ("| client | N | status | sweep s | process s | checks/s | CPU ms/check (net) | "
              "CPU ms/check (process) | peak RSS MB | farm conns | peer/greenmon wall | "
              "greenmon/peer CPU |")
    lines = [header, "|" + "---|" * header.count(" |")]
    for row in rows:
        wall_ratio = cpu_ratio = "—"
        if ref is not None and row.kind == "peer" and row.status == OK:
            if row.sweep_s and ref.sweep_s:
                wall_ratio = f"{row.sweep_s / ref.sweep_s:.2f}x"
            if row.net_cpu_ms_per_check and ref.net_cpu_ms_per_check is not None:
                cpu_ratio = f"{ref.net_cpu_ms_per_check / row.net_cpu_ms_per_check:.2f}x"
        name = row.client + (" *" if row is ref else "")
        status = row.status if row.status != OK else f"ok {row.ok:,}/{row.measured_n:,}"
        if row.note:
            status += f" ({row.note})"
        farm = row.farm or {}
        lines.append("| " + " | ".join([
            name, f"{row.n:,}", status, _num(row.sweep_s), _num(row.process_s),
            _num(row.checks_per_s, 0), _num(row.net_cpu_ms_per_check, 3),
            _num(row.cpu_ms_per_check, 3), _num(row.rss_mb, 0),
            f"{farm['peak_open']:,}" if "peak_open" in farm and row.sweep_s is not None else "—",
            wall_ratio, cpu_ratio]) + " |")
    return "\n".join(lines)


def scenario_block(scenario: Scenario, rows: list[ClientResult]) -> str:
    title = f"### {scenario.name}: {scenario.summary()}"
    parts = [title, ""]
    if scenario.description:
        parts += [scenario.description + ".", ""]
    parts += [table(scenario, rows), "", SHORT_NOTE]
    other = sum((r.farm or {}).get("other_cpu_s", 0.0) for r in rows)
    window = sum((r.farm or {}).get("window_s", 0.0) for r in rows)
    if window and other / (window * (os.cpu_count() or 1)) > OTHER_LOAD_WARNING:
        parts += ["", f"Other processes on this machine used {other:.1f} CPU-s during these "
                      f"{window:.0f} s of runs ({other / (window * (os.cpu_count() or 1)):.0%} of its "
                      "cores): these figures are noisy."]
    overflows = sum((r.farm or {}).get("listen_overflows", 0) for r in rows)
    if overflows:
        parts += ["", f"Listen-queue overflows during this scenario: {overflows} (connections that "
                      "waited for a SYN retransmit; see `nstat TcpExtListenOverflows`)."]
    return "\n".join(parts)


def verdicts(results: list[tuple[Scenario, list[ClientResult]]]) -> list[str]:
    """The figures that decide greenmon's performance targets, each with PASS/FAIL."""
    lines = []

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    for scenario, rows in results:
        greenmons = [r for r in rows if r.kind == "greenmon" and r.status == OK]
        peers = {r.client: r for r in rows if r.kind == "peer" and r.status == OK}
        for g in greenmons:
            where = f"{scenario.name}, {g.client}"
            if g.net_cpu_ms_per_check is not None and scenario.n >= 1_000:
                if scenario.tls:  # the target is for plain HTTP checks
                    lines.append(f"- {where}: net CPU per check {g.net_cpu_ms_per_check:.3f} ms "
                                 "over TLS (for information: the target is for plain HTTP)")
                else:
                    lines.append(f"- {where}: net CPU per check {g.net_cpu_ms_per_check:.3f} ms "
                                 f"(target <= {TARGET_CPU_MS:.2f}): "
                                 f"{verdict(g.net_cpu_ms_per_check <= TARGET_CPU_MS)}")
            if scenario.n >= 10_000 and g.rss_mb is not None:
                if "--workers 2" in g.client:
                    lines.append(f"- {where}: peak RSS {g.rss_mb:.0f} MB, the largest of the parent "
                                 f"and its workers (target <= {TARGET_RSS_MB:.0f} per worker): "
                                 f"{verdict(g.rss_mb <= TARGET_RSS_MB)}")
                else:  # the target names --workers 2; one process holding every check is shown as is
                    lines.append(f"- {where}: peak RSS {g.rss_mb:.0f} MB in one process with "
                                 f"concurrency {scenario.client_concurrency:,} (for information)")
            if scenario.n == 1_000 and scenario.delay_ms == 1000 and scenario.greenmon_defaults \
                    and g.process_s is not None:
                lines.append(f"- {where}: whole process {g.process_s:.2f} s "
                             f"(target < {TARGET_PROCESS_S:.0f}): {verdict(g.process_s < TARGET_PROCESS_S)}")
            if scenario.n == 10_000 and scenario.delay_ms == 1000 and g.client.endswith("--workers 2"):
                if "aiohttp" in peers and g.sweep_s is not None:
                    a = peers["aiohttp"].sweep_s
                    lines.append(f"- {where}: sweep {g.sweep_s:.2f} s vs aiohttp {a:.2f} s "
                                 f"(target: no slower): {verdict(g.sweep_s <= a)}")
                if "raw_asyncio" in peers and g.sweep_s is not None:
                    raw = peers["raw_asyncio"].sweep_s
                    lines.append(f"- {where}: sweep {g.sweep_s:.2f} s = {g.sweep_s / raw:.2f}x the raw "
                                 f"floor {raw:.2f} s (target <= {TARGET_RAW_FACTOR}x): "
                                 f"{verdict(g.sweep_s <= TARGET_RAW_FACTOR * raw)}")
        for r in rows:
            if r.kind == "greenmon" and r.status != OK:
                lines.append(f"- {scenario.name}, {r.client}: {r.status} {r.note}".rstrip())
    return lines


def machine() -> list[str]:
    """nproc, CPU model, memory, kernel, Python and library versions, open-file limit."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            kb = int(handle.readline().split()[1])
            memory = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    import greenmon

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return [f"- CPU: {os.cpu_count()} x {model} (nproc {len(os.sched_getaffinity(0))}), memory {memory}",
            f"- OS: {platform.system()} {platform.release()}",
            f"- Python {platform.python_version()} ({platform.python_implementation()}), "
            f"greenmon {greenmon.__version__}",
            "- " + ", ".join(versions),
            f"- open files: soft {soft}, hard {hard} (the farm and every client raise soft to hard)"]


def document(command: str, results: list[tuple[Scenario, list[ClientResult]]], *,
             farm_note: str) -> str:
    """docs/benchmarks.md: the tables from one run, the command that made them, the machine."""
    parts = ["# greenmon benchmarks", "",
             "greenmon `--once` against its peers on the same targets, one client at a time, "
             "against a separate target farm process on this machine (`benchmarks/farm.py`: asyncio, "
             "loopback addresses only, configurable delay and status per path). The farm shares the "
             "cores with the client under test.", "",
             "## Command", "", "```sh", command, "```", "",
             "## Machine", "", *machine(), f"- farm: {farm_note}", "",
             "## Results", ""]
    for scenario, rows in results:
        parts += [scenario_block(scenario, rows), ""]
    parts += ["## Targets", "", *(verdicts(results) or ["- no figure to judge"]), "",
              "## How to read the tables", "", NET_CPU_NOTE, "",
              "The seed design (ThreadPoolExecutor(5) + requests) sweeps fewer targets and its "
              "figures are extrapolated to N (labelled so): its throughput is bounded by its 5 "
              "threads, so its sweep time grows linearly with N.", ""]
    return "\n".join(parts)
