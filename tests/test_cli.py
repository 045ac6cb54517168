"""The command line with --once: exit codes, report formats, --output, flag overrides, TTY hygiene, the demo."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import time

import pytest

import greenmon
from greenmon.cli import apply_overrides, build_parser
from greenmon.config import parse_config
from greenmon.errors import ERROR_CLASSES
from greenmon.report import json_document, write_json
from greenmon.result import MonitorResult
from greenmon.summary import summarize

from support.configs import config_text
from support.helpers import run_cli, start_cli
from support.servers import HTTPFarm, InFlight, closed_port, delayed, reply

RESULT_FIELDS = {"target", "url", "method", "ok", "status_code", "latency_s", "elapsed_s", "attempts",
                 "error_class", "detail", "error", "breaker", "checked_at", "body_bytes", "labels",
                 "timings", "tls", "degraded"}
SUMMARY_KEYS = {"targets", "up", "down", "skipped", "duration_s", "p50_s", "p95_s", "max_s",
                "slo_p95_s", "slo_met", "errors", "degraded"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def once(write_config, targets: list[dict], *flags: str, **config_kwargs):
    """Write a config for ``targets`` and run ``greenmon --config it --once FLAGS``."""
    path = write_config(config_text(targets, **config_kwargs))
    return run_cli("--config", str(path), "--once", *flags)


def refused_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/"


# --- exit codes -------------------------------------------------------------

@pytest.mark.parametrize("output_format", ["table", "json", "jsonl"])
def test_exit_0_when_every_target_is_up(write_config, output_format):
    with HTTPFarm({"/a": reply(), "/b": reply("204 No Content", b"")}) as farm:
        run = once(write_config, [{"name": "a", "url": farm.url("/a")},
                                  {"name": "b", "url": farm.url("/b")}], "--format", output_format)
        assert (farm.hits("/a"), farm.hits("/b")) == (1, 1)
    assert run.returncode == 0, run.stderr
    assert "check failed" not in run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("down", [
    pytest.param(lambda farm: refused_url(), id="refused"),
    pytest.param(lambda farm: farm.url("/error"), id="http-500"),
    pytest.param(lambda farm: farm.url("/missing"), id="http-404"),
])
def test_exit_1_when_one_target_is_down(write_config, down):
    with HTTPFarm({"/a": reply(), "/error": reply("500 Internal Server Error")}) as farm:
        run = once(write_config, [{"name": "a", "url": farm.url("/a")},
                                  {"name": "down", "url": down(farm)}], "--format", "json")
    assert run.returncode == 1, run.stderr
    results = {r["target"]: r for r in json.loads(run.stdout)["results"]}
    assert results["a"]["ok"] is True and results["down"]["ok"] is False
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("flags, complaint", [
    (["--timeout", "-1"], "--timeout"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "soon"], "--timeout"),
    (["--concurrency", "0"], "--concurrency"),
    (["--concurrency", "2.5"], "--concurrency"),
    (["--format", "xml"], "--format"),
    (["--log-level", "loud"], "--log-level"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_exit_2_for_usage_errors(write_config, flags, complaint):
    with HTTPFarm({"/a": reply()}) as farm:
        run = once(write_config, [{"name": "a", "url": farm.url("/a")}], *flags)
        assert farm.hits("/a") == 0
    assert run.returncode == 2
    assert complaint in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


def test_version():
    run = run_cli("--version")
    assert run.returncode == 0
    assert run.stdout.strip() == f"greenmon {greenmon.__version__}"


def test_exit_2_for_a_config_without_enabled_targets(write_config):
    path = write_config('[[targets]]\nurl = "http://127.0.0.1:9/"\nenabled = false\n')
    run = run_cli("--config", str(path), "--once")
    assert run.returncode == 2
    assert f"{path}: targets: no enabled targets" in run.stderr
    assert "Traceback" not in run.stderr


def test_exit_2_for_a_config_error(write_config):
    path = write_config('[[targets]]\nurl = "ftp://127.0.0.1/"\n')
    run = run_cli("--config", str(path), "--once", "--format", "json")
    assert run.returncode == 2
    assert f"{path}:2: targets[0].url: scheme must be http or https" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


def test_exit_2_when_the_output_file_cannot_be_written(write_config, tmp_path):
    with HTTPFarm({"/a": reply()}) as farm:
        target = tmp_path / "no-such-dir" / "report.json"
        run = once(write_config, [{"name": "a", "url": farm.url("/a")}], "--output", str(target))
    assert run.returncode == 2
    assert str(target) in run.stderr
    assert "Traceback" not in run.stderr


# --- report formats ---------------------------------------------------------

def test_json_report_has_every_field_and_summary_key(write_config):
    with HTTPFarm({"/a": reply(body=b"hello"), "/error": reply("500 Internal Server Error", b"boom")}) as farm:
        run = once(write_config, [
            {"name": "a", "url": farm.url("/a"), "labels": {"team": "identity"}},
            {"name": "error", "url": farm.url("/error"), "method": "POST", "body": "{}"},
            {"name": "refused", "url": refused_url()},
        ], "--format", "json", retries=1, backoff=0.01)
    assert run.returncode == 1, run.stderr
    document = json.loads(run.stdout)
    assert set(document) == {"results", "summary"}
    results = document["results"]
    assert [r["target"] for r in results] == ["a", "error", "refused"]
    for result in results:
        assert set(result) == RESULT_FIELDS, result
        assert ISO_UTC.match(result["checked_at"]), result["checked_at"]
        assert result["breaker"] == "closed"
    up, error, refused = results
    assert up == {**up, "ok": True, "status_code": 200, "attempts": 1, "error_class": None,
                  "detail": None, "error": None, "body_bytes": 5, "labels": {"team": "identity"},
                  "method": "GET", "url": up["url"]}
    assert up["url"].endswith("/a") and up["latency_s"] >= 0 and up["elapsed_s"] >= up["latency_s"]
    assert error["method"] == "POST"
    assert (error["ok"], error["status_code"], error["error_class"], error["detail"], error["attempts"]) == (
        False, 500, "http", "500", 1)
    assert error["error"].startswith("HTTP 500")
    assert (refused["status_code"], refused["error_class"], refused["detail"], refused["attempts"],
            refused["body_bytes"]) == (None, "connection", "refused", 2, None)

    summary = document["summary"]
    assert set(summary) == SUMMARY_KEYS
    assert set(summary["errors"]) == set(ERROR_CLASSES)
    assert (summary["targets"], summary["up"], summary["down"], summary["skipped"]) == (3, 1, 2, 0)
    assert summary["errors"] == {"timeout": 0, "connection": 1, "auth": 0, "http": 1, "content": 0}
    assert summary["slo_p95_s"] == 2.0 and summary["slo_met"] is True
    assert 0 <= summary["p50_s"] <= summary["p95_s"] <= summary["max_s"]
    assert summary["duration_s"] > 0


def test_jsonl_streams_one_result_per_line_as_checks_complete(write_config):
    with HTTPFarm({"/slow": delayed(0.6), "/fast": reply()}) as farm:
        run = once(write_config, [{"name": "slow", "url": farm.url("/slow")},
                                  {"name": "fast", "url": farm.url("/fast")},
                                  {"name": "refused", "url": refused_url()}], "--format", "jsonl")
    assert run.returncode == 1, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 3, run.stdout
    results = [json.loads(line) for line in lines]
    for result in results:
        assert set(result) == RESULT_FIELDS
    assert sorted(r["target"] for r in results) == ["fast", "refused", "slow"]
    assert results[-1]["target"] == "slow"   # in completion order, not config order
    assert "summary" not in run.stdout


def test_jsonl_lines_are_written_before_the_sweep_ends(write_config):
    answered = []

    def slow(environ):
        result = delayed(2.0)(environ)
        answered.append(True)
        return result

    with HTTPFarm({"/slow": slow, "/fast": reply()}) as farm:
        path = write_config(config_text([{"name": "slow", "url": farm.url("/slow")},
                                         {"name": "fast", "url": farm.url("/fast")}], timeout=4.0))
        with start_cli("--config", str(path), "--once", "--format", "jsonl") as process:
            try:
                first = process.stdout.readline()
                slow_answered_before_first_line = bool(answered)
                rest = process.stdout.read()
                process.wait(timeout=10)
            finally:
                process.kill()
    assert json.loads(first)["target"] == "fast"
    assert not slow_answered_before_first_line, "the fast result was printed only after the slow check"
    assert [json.loads(line)["target"] for line in rest.splitlines()] == ["slow"]
    assert answered and process.returncode == 0


@pytest.mark.parametrize("output_format", ["json", "jsonl", "table"])
def test_output_writes_the_report_to_a_file(write_config, tmp_path, output_format):
    report = tmp_path / f"report.{output_format}"
    with HTTPFarm({"/a": reply()}) as farm:
        run = once(write_config, [{"name": "a", "url": farm.url("/a")},
                                  {"name": "refused", "url": refused_url()}],
                   "--format", output_format, "--output", str(report))
    assert run.returncode == 1, run.stderr
    assert run.stdout == ""
    text = report.read_text(encoding="utf-8")
    if output_format == "json":
        assert [r["target"] for r in json.loads(text)["results"]] == ["a", "refused"]
    elif output_format == "jsonl":
        assert sorted(json.loads(line)["target"] for line in text.splitlines()) == ["a", "refused"]
    else:
        assert "refused" in text and "2 targets: 1 up, 1 down" in text


@pytest.mark.parametrize("count", [0, 1, 3])
def test_json_report_is_the_document_with_one_result_per_line(count):
    results = [MonitorResult(target=f"t{i}", url=f"http://127.0.0.1/{i}", method="GET", ok=i != 1,
                             status_code=200, latency_s=0.25, elapsed_s=0.25, attempts=1,
                             error_class=None, detail=None, error=None, breaker="closed",
                             checked_at=1_700_000_000.0, body_bytes=2, labels={"team": "a\n\"b"})
               for i in range(count)]
    summary = summarize(results, 1.0, 2.0)
    out = io.StringIO()
    write_json(out, results, summary)
    text = out.getvalue()
    assert json.loads(text) == json_document(results, summary)
    lines = text.splitlines()
    result_lines = [line for line in lines if line.startswith('    {"target": ')]
    assert [json.loads(line.rstrip(","))["target"] for line in result_lines] == [r.target for r in results]
    assert text.endswith("}\n")


def test_table_on_a_pipe_is_the_report_and_nothing_else(write_config):
    with HTTPFarm({"/a": reply(), "/b": reply("503 Service Unavailable")}) as farm:
        run = once(write_config, [{"name": "a", "url": farm.url("/a")},
                                  {"name": "b", "url": farm.url("/b")}])
    assert run.returncode == 1
    lines = run.stdout.split("\n")
    # header, one row per target (failures first), a blank line, the summary, the final newline
    assert len(lines) == 6, run.stdout
    assert lines[0].split()[:2] == ["STATE", "TARGET"]
    assert lines[1].split()[:3] == ["DOWN", "b", "503"]
    assert lines[2].split()[:3] == ["UP", "a", "200"]
    assert lines[3] == "" and lines[5] == ""
    assert lines[4].startswith("2 targets: 1 up, 1 down (0 skipped)")
    for stream in (run.stdout, run.stderr):
        assert "\r" not in stream and "\x1b" not in stream and "checked " not in stream


def test_progress_goes_to_a_terminal_on_stderr_never_to_stdout(write_config):
    """A sweep longer than a second on a TTY shows progress on stderr; stdout (a pipe) stays clean JSON."""
    master, slave = pty.openpty()
    try:
        with HTTPFarm({"/slow": delayed(1.8)}) as farm:
            path = write_config(config_text([{"name": "slow", "url": farm.url("/slow")}], timeout=4.0))
            run = run_cli("--config", str(path), "--once", "--format", "json", stderr=slave)
        os.set_blocking(master, False)  # the child has exited: read what the terminal got
        terminal = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # nothing more (EAGAIN), or the other end is gone (EIO)
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(slave)
        os.close(master)
    assert run.returncode == 0
    assert b"checked 0/1" in terminal
    document = json.loads(run.stdout)
    assert document["summary"]["up"] == 1
    assert "checked 0/1" not in run.stdout and "\r" not in run.stdout


# --- flags override the config ----------------------------------------------

def test_timeout_flag_overrides_monitor_timeout_but_not_a_target_timeout(write_config):
    with HTTPFarm({"/slow": delayed(1.0)}) as farm:
        started = time.monotonic()
        run = once(write_config, [{"name": "inherits", "url": farm.url("/slow")},
                                  {"name": "own-timeout", "url": farm.url("/slow"), "timeout": 4.0}],
                   "--timeout", "0.3", "--format", "json", timeout=5.0)
        took = time.monotonic() - started
    assert run.returncode == 1, run.stderr
    results = {r["target"]: r for r in json.loads(run.stdout)["results"]}
    inherits, own = results["inherits"], results["own-timeout"]
    assert (inherits["error_class"], inherits["detail"], inherits["attempts"]) == ("timeout", "read", 1)
    assert inherits["latency_s"] < 0.9          # the 5 s of the config did not apply
    assert own["ok"] is True and own["latency_s"] >= 0.9
    assert took < 10


def test_concurrency_flag_overrides_monitor_concurrency(write_config):
    slow = InFlight(0.25)
    with HTTPFarm({f"/t{i}": slow for i in range(4)}) as farm:
        targets = [{"name": f"t{i}", "url": farm.url(f"/t{i}")} for i in range(4)]
        path = write_config(config_text(targets))
        run = run_cli("--config", str(path), "--once")
        assert run.returncode == 0, run.stderr
        assert slow.peak == 4   # the config's default concurrency checks all at once
        slow.peak = 0
        run = run_cli("--config", str(path), "--once", "--concurrency", "1")
        assert run.returncode == 0, run.stderr
        assert slow.peak == 1
        assert sum(farm.hits(f"/t{i}") for i in range(4)) == 8


def test_apply_overrides_changes_only_the_flags_given():
    config = parse_config(config_text([{"url": "http://127.0.0.1:9/"}], timeout=7.0), "<test>")
    parser = build_parser()
    unchanged = apply_overrides(config, parser.parse_args(["--once"]))
    assert unchanged.monitor == config.monitor
    changed = apply_overrides(config, parser.parse_args(["--timeout", "0.5", "--concurrency", "3"]))
    assert (changed.monitor.timeout, changed.monitor.concurrency) == (0.5, 3)
    assert changed.monitor.interval == config.monitor.interval
    assert changed.targets == config.targets
    assert config.monitor.timeout == 7.0


@pytest.mark.parametrize("config_location, flags, shown", [
    (None, [], ""),                                      # none set: the label is there, empty
    ("lab-a", [], "lab-a"),                              # [monitor] location
    ("lab-a", ["--location", "lab-b"], "lab-b"),         # the flag wins over the config
    (None, ["--location", "eu-west-1"], "eu-west-1"),
])
def test_location_is_the_label_of_build_info(write_config, tmp_path, config_location, flags, shown):
    from prometheus_client.parser import text_string_to_metric_families

    textfile = tmp_path / "greenmon.prom"
    with HTTPFarm({"/a": reply()}) as farm:
        text = config_text([{"name": "a", "url": farm.url("/a")}])
        if config_location:
            text = text.replace("[monitor]\n", f'[monitor]\nlocation = "{config_location}"\n', 1)
        path = write_config(text)
        run = run_cli("--config", str(path), "--once", "--textfile", str(textfile), *flags)
    assert run.returncode == 0, run.stderr
    [build] = [family for family in text_string_to_metric_families(textfile.read_text())
               if family.name == "greenmon_build_info"]
    assert [sample.labels for sample in build.samples] == [
        {"location": shown, "version": greenmon.__version__}]


@pytest.mark.parametrize("value", ["eu west", "-eu", "eu/fra", "x" * 64])
def test_exit_2_for_a_location_flag_that_is_not_a_name(write_config, value):
    with HTTPFarm({"/a": reply()}) as farm:
        run = once(write_config, [{"name": "a", "url": farm.url("/a")}], f"--location={value}")
        assert farm.hits("/a") == 0
    assert run.returncode == 2
    assert "argument --location: must be a name of at most 63 letters" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


# --- the demo ---------------------------------------------------------------

def test_demo_once_shows_every_error_class(tmp_path):
    # An unrelated, broken ./greenmon.toml and $GREENMON_CONFIG must not matter to the demo.
    (tmp_path / "greenmon.toml").write_text("not toml [", encoding="utf-8")
    # No time bound but against a hang (run_cli raises after it): the demo's slowest target takes
    # three 1 s attempts, and how fast a sweep is belongs to benchmarks/.
    run = run_cli("--demo", "--once", "--format", "json", cwd=tmp_path, timeout=60,
                  env={"GREENMON_CONFIG": str(tmp_path / "missing.toml")})
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    document = json.loads(run.stdout)
    results = {r["target"]: r for r in document["results"]}
    classes = {r["error_class"] for r in results.values() if not r["ok"]}
    assert set(ERROR_CLASSES) <= classes, classes
    assert results["demo-authorized"]["ok"] is True
    flow = results["demo-flow"]
    assert flow["ok"] is True and [step["name"] for step in flow["steps"]] == ["login", "orders"]
    assert results["demo-unauthorized"]["error_class"] == "auth"
    assert all(r["url"].startswith("http://127.0.0.1:") for r in results.values())
    assert all(document["summary"]["errors"][name] >= 1 for name in ERROR_CLASSES)


# --- Ad-hoc checks: --target and --url -------------------------------------------------------

def test_target_checks_only_the_named_targets_globs_and_disabled_ones_included(write_config):
    with HTTPFarm({"/a": reply(), "/b": reply(), "/c": reply()}) as farm:
        targets = [{"name": "users-api", "url": farm.url("/a")},
                   {"name": "users-db", "url": farm.url("/b"), "enabled": False},
                   {"name": "orders-api", "url": farm.url("/c")}]
        run = once(write_config, targets, "--format", "json", "--target", "users-*")
        hits = {path: farm.hits(path) for path in ("/a", "/b", "/c")}
    assert run.returncode == 0, run.stderr
    assert [r["target"] for r in json.loads(run.stdout)["results"]] == ["users-api", "users-db"]
    assert hits == {"/a": 1, "/b": 1, "/c": 0}


def test_an_unknown_target_is_a_usage_error_naming_the_closest(write_config):
    with HTTPFarm({"/a": reply()}) as farm:
        targets = [{"name": "users-api", "url": farm.url("/a")},
                   {"name": "orders-api", "url": farm.url("/a")}]
        run = once(write_config, targets, "--target", "users-api", "--target", "usres-api")
        hits = farm.hits("/a")
    assert run.returncode == 2 and hits == 0
    assert "--target 'usres-api' matches no target" in run.stderr and "closest: users-api" in run.stderr
    assert "Traceback" not in run.stderr


def test_url_checks_one_url_without_a_config(tmp_path):
    with HTTPFarm({"/health": reply(body="fine")}) as farm:
        run = run_cli("--once", "--format", "json", "--url", farm.url("/health"), cwd=tmp_path,
                      env={"GREENMON_CONFIG": ""})
        hits = farm.hits("/health")
    assert run.returncode == 0, run.stderr
    (result,) = json.loads(run.stdout)["results"]
    assert (result["target"], result["ok"], hits) == (f"GET {farm.url('/health')}", True, 1)
    assert set(result["timings"]) == {"dns", "connect", "tls", "processing", "transfer"}


def test_url_uses_the_monitor_settings_of_the_config_and_none_of_its_targets(write_config):
    with HTTPFarm({"/slow": delayed(1.0), "/listed": reply()}) as farm:
        path = write_config(config_text([{"name": "listed", "url": farm.url("/listed")}], timeout=0.2))
        run = run_cli("--config", str(path), "--once", "--format", "json", "--url", farm.url("/slow"))
        hits = (farm.hits("/slow"), farm.hits("/listed"))
    assert run.returncode == 1
    (result,) = json.loads(run.stdout)["results"]
    assert (result["error_class"], result["detail"]) == ("timeout", "read")   # the config's 0.2 s
    assert hits == (1, 0)


def test_url_takes_a_config_of_settings_only(write_config):
    with HTTPFarm({"/health": delayed(1.0)}) as farm:
        path = write_config("[monitor]\ntimeout = 0.2\n")
        run = run_cli("--config", str(path), "--once", "--format", "json", "--url", farm.url("/health"))
    assert run.returncode == 1, run.stderr
    (result,) = json.loads(run.stdout)["results"]
    assert (result["error_class"], result["detail"]) == ("timeout", "read")


@pytest.mark.parametrize("flags, words", [
    (["--once", "--url", "ftp://127.0.0.1/"], "--url scheme must be http or https"),
    (["--once", "--url", "http://.example.com/"], "--url is not a usable URL"),
    (["--target", "x"], "--target and --url need --once"),
    (["--once", "--target", "x", "--url", "http://127.0.0.1:9/"], "exclude each other"),
], ids=["scheme", "host", "no-once", "both"])
def test_bad_ad_hoc_flags_are_usage_errors(tmp_path, flags, words):
    run = run_cli(*flags, cwd=tmp_path, env={"GREENMON_CONFIG": ""})
    assert run.returncode == 2, run.stderr
    assert words in run.stderr and "Traceback" not in run.stderr
