"""What a benchmark run prints: one Markdown table per scenario, the target verdicts, the machine.

Pure formatting over ``ClientResult`` rows (sweeps, measured in
``benchmarks.clients``) and ``DaemonResult`` rows (the daemon scenarios,
measured in ``benchmarks.daemon``).
"""

from __future__ import annotations

import math
import os
import platform
import resource
from importlib import metadata

from benchmarks.clients import OK, ClientResult
from benchmarks.scenarios import DaemonScenario, Scenario

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
TARGET_AIOHTTP_FACTOR = 1.25      # 5k@100ms over 50 hosts: sweep within this factor of aiohttp
OTHER_LOAD_WARNING = 0.05      # share of the machine's CPU used by other processes that earns a warning

# The daemon scenario's targets (the numbers).
TARGET_SCRAPE_P50_S = 0.25
TARGET_SCRAPE_MAX_S = 0.5
TARGET_LATENCY_SLACK_S = 0.10      # reported p99 within this of the farm's delay
TARGET_REFERENCE_FACTOR = 1.07     # reported p99 within this factor of the paced aiohttp p99
TARGET_INFLIGHT = 2_500
TARGET_LOOP_LAG_SHARE = 0.99       # of the loop-lag samples at or under 50 ms
TARGET_LATE_SHARE = 0.01           # of the checks that start more than 1 s after they are due

DAEMON_NOTE = (
    "*checks*: distinct checks (target, checked_at) that started inside the window, as "
    "/api/results reported them (fetched every half interval), of the N x window / interval the "
    "timetable asks for; the reference's, the requests due inside its window. *latency*: the "
    "reported `latency_s` of the checks that succeeded (the reference: its own timer from request "
    "start to body read); the farm answers after the delay, so the delay is the truth. *started "
    "late p99*: the daemon's `greenmon_schedule_lag_seconds` over the window, as a bucket bound "
    "(an upper estimate; +Inf: beyond the largest, 10 s); the reference's, measured. *scrape*: wall time of `GET /metrics` with "
    "`Accept-Encoding: gzip` on a fresh connection, until the body is read; *KB* its size on "
    "the wire. *in flight max*: the largest `greenmon_inflight_checks` a scrape saw. *loop lag*: "
    "`greenmon_event_loop_lag_seconds` over the window (the last scrape's buckets minus the "
    "first's): the share of samples <= 50 ms, and p99 as a bucket bound. *cores*: CPU seconds of "
    "the daemon (and its workers) in the window over its length. *peak RSS*: VmHWM (start-up "
    "included) of the largest process of the daemon and its workers; *in window*: the largest "
    "VmRSS sampled at the window's scrapes. *farm conns*: the most "
    "connections the farm held at once in the window. Both clients share the 2 cores with the "
    "farm and with the scraper (its CPU in the window is in the notes).")

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
    per_step = flow_step_cost(scenario, rows)
    if per_step:
        parts += ["", per_step]
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


def flow_step_cost(scenario: Scenario, rows: list[ClientResult]) -> str:
    """A flow or addresses scenario's figure: net CPU per step of the flows, or per address of
    the targets checked at every address, against per one-request target (the same
    requests); "" when there is none to give."""
    if scenario.flow_steps == 1 and scenario.addresses == 1:
        return ""
    marker, what, why = (("flows of", "step of a flow", "extraction, filling {{token}} in, one "
                          "cookie jar per check") if scenario.flow_steps > 1 else
                         ("addresses)", "address of a target checked at every address",
                          "the name resolved per check, a greenlet and a pool per address"))
    greenmons = [r for r in rows if r.kind == "greenmon" and r.status == OK
                 and r.net_cpu_ms_per_check is not None]
    grouped = [r for r in greenmons if marker in r.client]
    single = [r for r in greenmons if marker not in r.client]
    if not grouped or not single:
        return ""
    grouped_ms, single_ms = grouped[-1].net_cpu_ms_per_check, single[-1].net_cpu_ms_per_check
    ratio = f"{grouped_ms / single_ms:.2f}x" if single_ms else "no ratio (too little CPU to measure)"
    return (f"Net CPU per {what} {grouped_ms:.3f} ms, per one-request target {single_ms:.3f} ms: "
            f"{ratio} ({why}).")


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
            if scenario.name == "5k@100ms-50hosts" and "aiohttp" in peers and g.sweep_s is not None:
                a = peers["aiohttp"].sweep_s
                lines.append(f"- {where}: sweep {g.sweep_s:.2f} s = {g.sweep_s / a:.2f}x aiohttp's "
                             f"{a:.2f} s (target <= {TARGET_AIOHTTP_FACTOR}x): "
                             f"{verdict(g.sweep_s <= TARGET_AIOHTTP_FACTOR * a)}")
        per_step = flow_step_cost(scenario, rows)
        if per_step and scenario.n >= 1_000:
            lines.append(f"- {scenario.name}: {per_step} (for information)")
        for r in rows:
            if r.kind == "greenmon" and r.status != OK:
                lines.append(f"- {scenario.name}, {r.client}: {r.status} {r.note}".rstrip())
    return lines


def _seconds(value: float | None, digits: int = 3) -> str:
    if value == math.inf:
        return "+Inf"     # a bucket estimate beyond the largest finite bound
    return "—" if value is None else f"{value:.{digits}f}"


def daemon_table(rows) -> str:
    header = ("| client | status | checks | latency p50 / p99 / max s | started late p99 s | "
              "scrape p50 / max s | scrape KB | in flight max | loop lag <= 50 ms | loop lag p99 s | "
              "overruns | cores | peak RSS MB | farm conns |")
    lines = [header, "|" + "---|" * header.count(" |")]
    for row in rows:
        checks = "—" if row.checks is None else f"{row.checks:,}"
        if row.checks is not None and row.expected_checks:
            checks += f" / {row.expected_checks:,}"
            if row.ok is not None and row.ok != row.checks:
                checks += f" ({row.checks - row.ok:,} failed)"
        scrape = "—" if row.scrape_p50_s is None else \
            f"{row.scrape_p50_s:.3f} / {row.scrape_max_s:.3f} ({row.scrapes})"
        loop = "—" if row.loop_lag_within is None else \
            f"{row.loop_lag_within:.2%} of {row.loop_lag_samples:,}"
        rss = _num(row.rss_mb, 0)
        if row.window_rss_mb is not None:
            rss += f" ({row.window_rss_mb:.0f} in window)"
        if len(row.rss_each_mb) > 1:
            rss += f"; parent {row.rss_each_mb[0]:.0f}, workers " + \
                ", ".join(f"{mb:.0f}" for mb in row.rss_each_mb[1:])
        lines.append("| " + " | ".join([
            row.client, row.status, checks,
            " / ".join(_seconds(v) for v in (row.latency_p50_s, row.latency_p99_s, row.latency_max_s)),
            _seconds(row.start_late_p99_s), scrape, _num(row.scrape_kb, 0),
            "—" if row.inflight_max is None else f"{row.inflight_max:,}", loop,
            _seconds(row.loop_lag_p99_s), "—" if row.overruns is None else str(row.overruns),
            _num(row.cores), rss, "—" if row.farm_peak_conns is None else f"{row.farm_peak_conns:,}",
        ]) + " |")
    return "\n".join(lines)


def daemon_block(scenario: DaemonScenario, rows) -> str:
    parts = [f"### {scenario.name}: {scenario.summary()}", ""]
    if scenario.description:
        parts += [scenario.description[0].upper() + scenario.description[1:] + ".", ""]
    parts.append(daemon_table(rows))
    notes = [f"- {row.client}: {row.note}" for row in rows if row.note]
    for row in rows:
        if row.scrape_errors or row.scrapes_skipped:
            notes.append(f"- {row.client}: {row.scrape_errors} failed fetches, {row.scrapes_skipped} "
                         "scrapes skipped (a slow scrape pushed them past their turn)")
        if row.other_cpu_s:
            notes.append(f"- {row.client}: other processes on this machine used {row.other_cpu_s:.1f} "
                         "CPU-s meanwhile (not the farm, the scraper or this client)")
        if row.harness_cpu_s is not None:
            notes.append(f"- {row.client}: the scraper used {row.harness_cpu_s:.1f} CPU-s in the "
                         f"window (fetching, gunzipping, reading); slowest /api/results fetch "
                         f"{_seconds(row.results_max_s)} s")
    if notes:
        parts += ["", *notes]
    return "\n".join(parts)


def daemon_verdicts(results) -> list[str]:
    """The daemon targets, PASS/FAIL for the criteria a scenario judges, the rest for information."""
    lines = []
    for scenario, rows in results:
        daemon = next((r for r in rows if r.kind == "greenmon"), None)
        if daemon is None or (not scenario.judge and scenario.n < 10_000):   # smoke: nothing to say
            continue
        where = f"{scenario.name}, {daemon.client}"
        if daemon.status != OK:
            if scenario.judge:
                lines.append(f"- {where}: {daemon.status} {daemon.note}".rstrip())
            continue
        reference = next((r for r in rows if r.kind == "peer" and r.status == OK), None)

        def line(criterion: str, text: str, ok: bool | None) -> None:
            if criterion not in scenario.judge:
                lines.append(f"- {where}: {text} (for information)")
            elif ok is None:
                lines.append(f"- {where}: {text}: not measured")
            else:
                lines.append(f"- {where}: {text}: {'PASS' if ok else 'FAIL'}")

        p50, top = daemon.scrape_p50_s, daemon.scrape_max_s
        want_p50 = scenario.scrape_p50_s or TARGET_SCRAPE_P50_S
        want_max = scenario.scrape_max_s or TARGET_SCRAPE_MAX_S
        line("scrape", f"/metrics with gzip p50 {_seconds(p50)} s, max {_seconds(top)} s (target p50 <= "
                       f"{want_p50} s, max <= {want_max} s)",
             None if p50 is None else p50 <= want_p50 and top <= want_max
             and not daemon.scrape_errors)
        p99, truth = daemon.latency_p99_s, scenario.delay_ms / 1000
        line("latency", f"reported latency p99 {_seconds(p99)} s for targets answering in "
                        f"{truth:.2f} s (target <= {truth + TARGET_LATENCY_SLACK_S:.2f} s)",
             None if p99 is None else p99 <= truth + TARGET_LATENCY_SLACK_S)
        if scenario.reference:
            ref = reference.latency_p99_s if reference else None
            factor = p99 / ref if p99 is not None and ref else None
            line("reference", f"reported latency p99 {_seconds(p99)} s = "
                              f"{'—' if factor is None else f'{factor:.3f}'}x the paced aiohttp "
                              f"p99 {_seconds(ref)} s (target <= {TARGET_REFERENCE_FACTOR}x)",
                 None if factor is None else factor <= TARGET_REFERENCE_FACTOR)
        peak = daemon.inflight_max
        line("inflight", f"checks in flight at most {'—' if peak is None else f'{peak:,}'} "
                         f"(target <= {TARGET_INFLIGHT:,}; the timetable gives about "
                         f"{scenario.expected_inflight:,.0f})",
             None if peak is None else peak <= TARGET_INFLIGHT)
        share = daemon.loop_lag_within
        line("loop_lag", f"event loop lag <= 50 ms in {'—' if share is None else f'{share:.2%}'} of "
                         f"{daemon.loop_lag_samples or 0:,} samples (target >= {TARGET_LOOP_LAG_SHARE:.0%})",
             None if share is None else share >= TARGET_LOOP_LAG_SHARE)
        want_rss = scenario.rss_mb or TARGET_RSS_MB
        line("rss", f"peak RSS {_num(daemon.rss_mb, 0)} MB, the largest of {daemon.processes} "
                    f"process(es) (target <= {want_rss:.0f} per process)",
             None if daemon.rss_mb is None else daemon.rss_mb <= want_rss)
        late = daemon.late_over_1s
        line("late", f"checks started more than 1 s late: {'—' if late is None else f'{late:.2%}'} "
                     f"(target <= {TARGET_LATE_SHARE:.0%})",
             None if late is None else late <= TARGET_LATE_SHARE)
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
             farm_note: str, daemon_results=()) -> str:
    """docs/benchmarks.md: the tables from one run, the command that made them, the machine."""
    parts = ["# greenmon benchmarks", "",
             "greenmon `--once` against its peers on the same targets, one client at a time, "
             "against a separate target farm process on this machine (`benchmarks/farm.py`: asyncio, "
             "loopback addresses only, configurable delay and status per path). The farm shares the "
             "cores with the client under test.", "",
             "## Command", "", "```sh", command, "```", "",
             "## Machine", "", *machine(), f"- farm: {farm_note}", ""]
    if results:
        parts += ["## Results", ""]
    for scenario, rows in results:
        parts += [scenario_block(scenario, rows), ""]
    if daemon_results:
        parts += ["## The daemon", "",
                  "`python -m greenmon --config F --listen ...` left running on its timetable "
                  "(each target once per interval, at a stable offset), its `/metrics` scraped "
                  "every second with gzip and `/api/results` read for every check's reported "
                  "latency, then, alone, a paced aiohttp client on the same URLs and timetable as "
                  "the latency reference (`benchmarks/daemon.py`, `benchmarks/paced.py`).", ""]
        for scenario, rows in daemon_results:
            parts += [daemon_block(scenario, rows), ""]
        parts += [DAEMON_NOTE, ""]
    judged = verdicts(results) + daemon_verdicts(daemon_results)
    parts += ["## Targets", "", *(judged or ["- no figure to judge"]), "",
              "## How to read the tables", "", NET_CPU_NOTE, "",
              "The seed design (ThreadPoolExecutor(5) + requests) sweeps fewer targets and its "
              "figures are extrapolated to N (labelled so): its throughput is bounded by its 5 "
              "threads, so its sweep time grows linearly with N.", ""]
    return "\n".join(parts)
