"""Smoke test of the benchmark harness (benchmarks/): it runs end to end and reports every client.

Only that the harness works: the tiny ``--quick`` run has no timing meaning,
so nothing here asserts a time, a rate or a ratio. The quick daemon scenario
(``daemon-quick``: the daemon scraped for a few seconds, then the paced
aiohttp reference) is asserted for shape only: it ran, scraped, saw checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:       # `pytest` (not `python -m pytest`): benchmarks/ is importable too
    sys.path.insert(0, str(REPO))
PEERS = ["seed", "gevent_requests", "gevent_urllib3", "grequests", "aiohttp", "raw_asyncio"]
OPTIONAL_PEERS = {"grequests", "aiohttp"}          # reported "not installed" when missing
EXPECTED = {
    "quick": ["greenmon", "greenmon --workers 2", "greenmon steady (daemon sweeps)", *PEERS],
    "quick-https": ["greenmon", "greenmon steady (daemon sweeps)", *PEERS],
    "quick-flows": ["greenmon", "greenmon (10 flows of 2 steps)", *PEERS],
    "quick-addresses": ["greenmon", "greenmon (10 targets x 3 addresses)", *PEERS],
}
DAEMON_EXPECTED = {"daemon-quick": ["greenmon daemon", "aiohttp (paced reference)"]}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmarks")
    rows_file, doc_file = out / "rows.json", out / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--json", str(rows_file),
         "--write", str(doc_file)],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads(rows_file.read_text()), doc_file.read_text()


def allowed_statuses(client: str) -> set[str]:
    if client in OPTIONAL_PEERS:
        return {"ok", "not installed"}
    return {"ok"}


def test_every_client_ran_in_every_scenario(quick_run):
    _, document, _ = quick_run
    scenarios = {s["name"]: s["rows"] for s in document["scenarios"] if s["kind"] == "sweep"}
    assert sorted(scenarios) == sorted(EXPECTED)
    for name, clients in EXPECTED.items():
        rows = scenarios[name]
        assert [row["client"] for row in rows] == clients
        for row in rows:
            assert row["status"] in allowed_statuses(row["client"]), (name, row)
            if row["status"] == "ok":
                assert row["ok"] == row["measured_n"] > 0, (name, row)
                # The steady-state row has the CPU of its sweeps only, not of a whole process.
                assert row["rss_mb"] is not None, (name, row)
                assert row["net_cpu_s"] if row["client"].startswith("greenmon steady") \
                    else row["cpu_s"] is not None, (name, row)


def test_the_stall_scenario_timed_the_plain_targets_with_and_without_https(quick_run):
    """Shape only: one run of each sweep, a median latency of the plain targets from each."""
    _, document, _ = quick_run
    [stall] = [s for s in document["scenarios"] if s["kind"] == "stall"]
    assert stall["error"] == "" and len(stall["plain_ms"]) == len(stall["with_https_ms"]) == 1, stall
    assert stall["plain_ms"][0] > 0 and stall["with_https_ms"][0] > 0 and stall["move_ms"] is not None


def test_the_daemon_scenario_ran_scraped_and_saw_checks(quick_run):
    _, document, _ = quick_run
    scenarios = {s["name"]: s for s in document["scenarios"] if s["kind"] == "daemon"}
    assert sorted(scenarios) == sorted(DAEMON_EXPECTED)
    for name, clients in DAEMON_EXPECTED.items():
        rows = scenarios[name]["rows"]
        assert [row["client"] for row in rows] == clients
        daemon, reference = rows
        assert daemon["status"] == "ok", daemon
        assert daemon["scrapes"] > 0 and daemon["checks"] > 0 and daemon["expected_checks"] > 0, daemon
        for key in ("latency_p99_s", "scrape_p50_s", "scrape_max_s", "inflight_max",
                    "loop_lag_within", "rss_mb"):
            assert daemon[key] is not None, (key, daemon)
        assert reference["status"] in {"ok", "not installed"}, reference
        if reference["status"] == "ok":
            assert reference["checks"] > 0 and reference["latency_p99_s"] is not None, reference


def test_the_seed_is_extrapolated_and_labelled(quick_run):
    _, document, _ = quick_run
    seed = next(r for r in document["scenarios"][0]["rows"] if r["client"] == "seed")
    assert seed["extrapolated"] and seed["measured_n"] < seed["n"]
    assert "extrapolated" in seed["note"]


def test_printed_tables_have_a_row_per_client(quick_run):
    proc, _, _ = quick_run
    for name, clients in {**EXPECTED, **DAEMON_EXPECTED}.items():
        block = proc.stdout.split(f"### {name}:", 1)[1].split("###", 1)[0]
        table_rows = [line for line in block.splitlines() if line.startswith("| ")][1:]  # no header
        names = [row.split("|")[1].strip().rstrip(" *") for row in table_rows]
        assert names == clients, block


def test_written_document_has_the_command_machine_and_tables(quick_run):
    _, _, text = quick_run
    assert "python -m benchmarks.run --quick" in text
    assert "## Machine" in text and "Python" in text
    assert "### quick:" in text and "### quick-https:" in text and "### quick-flows:" in text
    assert "Net CPU per step of a flow" in text and "Net CPU per address of a target" in text
    assert "## The daemon" in text and "### daemon-quick:" in text


def test_a_missing_peer_library_is_reported_not_installed(monkeypatch, tmp_path):
    from benchmarks import clients, peers

    monkeypatch.setitem(peers.REQUIRES, "aiohttp", "no_such_module_for_the_smoke_test")
    row = clients.run_peer("aiohttp", ["http://127.0.0.1:1/"], n=1, concurrency=1, ca_file=None,
                           cap_s=5, workdir=tmp_path)
    assert row.status == clients.NOT_INSTALLED


def test_a_client_over_its_time_cap_is_killed():
    script = ("import sys; from benchmarks.clients import run_measured; "
              "run = run_measured([sys.executable, '-c', 'import time; time.sleep(60)'], 0.5); "
              "print(run.timed_out, run.wall_s < 10)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=30)
    assert proc.stdout.split() == ["True", "True"], proc.stderr


def test_repeated_runs_report_the_median_by_net_cpu_and_keep_failures_visible():
    from benchmarks.clients import FAILED, OK, ClientResult
    from benchmarks.run import median_run

    def row(net_cpu_s, status=OK):
        return ClientResult(client="greenmon", kind="greenmon", n=10, measured_n=10, status=status,
                            net_cpu_s=net_cpu_s)

    assert median_run([row(0.3), row(0.1), row(0.2)]).net_cpu_s == 0.2
    assert median_run([row(0.3), row(0.1)]).net_cpu_s == 0.1
    assert median_run([row(0.2)]).net_cpu_s == 0.2
    assert median_run([row(0.1), row(0.9, FAILED), row(0.2)]).status == FAILED


def test_the_daemon_scenario_reads_a_scrape_as_prometheus_would():
    from benchmarks.daemon import bucket_quantile, delta, parse_scrape, within

    def text(buckets: tuple[int, int, int], inflight: int) -> bytes:
        """Loop-lag buckets le=0.01, 0.05, +Inf (cumulative) among other families."""
        lag = "".join(f'greenmon_event_loop_lag_seconds_bucket{{le="{le}"}} {n}.0\n'
                      for le, n in zip(("0.01", "0.05", "+Inf"), buckets))
        return (b"# HELP greenmon_up x\n# TYPE greenmon_up gauge\n"
                b'greenmon_up{target="a"} 1.0\n'
                b"# HELP greenmon_inflight_checks x\n# TYPE greenmon_inflight_checks gauge\n"
                + f"greenmon_inflight_checks {inflight}.0\n".encode()
                + b"# HELP greenmon_event_loop_lag_seconds x\n"
                b"# TYPE greenmon_event_loop_lag_seconds histogram\n" + lag.encode()
                + f"greenmon_event_loop_lag_seconds_count {buckets[-1]}.0\n".encode()
                + b"# HELP greenmon_schedule_overruns_total x\n"
                b"# TYPE greenmon_schedule_overruns_total counter\n"
                b"greenmon_schedule_overruns_total 3.0\n")

    first = parse_scrape(0.1, 10, text((80, 90, 100), 7))
    last = parse_scrape(0.2, 10, text((270, 289, 300), 9))
    assert (first.inflight, last.inflight, last.overruns) == (7, 9, 3)
    gained = delta(first.loop_lag, last.loop_lag)
    assert gained == [(0.01, 190.0), (0.05, 199.0), (float("inf"), 200.0)]
    assert within(gained, 0.05) == (199 / 200, 200)
    assert bucket_quantile(gained, 0.99) == 0.05
    assert parse_scrape(0.1, 10, b"").loop_lag == [] and within([], 0.05) == (None, 0)
