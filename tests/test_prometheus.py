"""Prometheus integration with the real binaries (README, "Daemon, metrics and alerting"; docs/metrics.md).

promtool lints a real daemon's /metrics, the rules and their unit tests, and the
Prometheus config; amtool checks the Alertmanager config; one end-to-end run goes
from local targets through the greenmon daemon, a real Prometheus and a real
Alertmanager to a webhook in this process; another has the real Prometheus scrape a
greenmon served over TLS with basic auth, through the shipped job for that. A missing
binary skips these tests, or fails them when GREENMON_REQUIRE_PROMETHEUS=1 (CI). Every
process listens on 127.0.0.1 only and is stopped when its test ends, whatever happens.
"""

from __future__ import annotations

import math
import re
import secrets
import shutil
import sys

import bcrypt
import gevent
import pytest
import requests
import trustme
import yaml
from prometheus_client.parser import text_string_to_metric_families

from greenmon.settings import MonitorSettings
from support.configs import config_text
from support.helpers import wait_until
from support.prom_helpers import (DEPLOY, NOT_YET, REPO, REQUIRE_ENV, SKIP_REASON, Budget, Processes,
                                  WebhookRecorder, describe_run, find_binary, finite_value, greenmon_argv,
                                  http_get, is_ready, prom_query, run_tool, shorten_for_durations,
                                  write_yaml)
from support.servers import HTTPFarm, closed_port, reply

ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
SLO_YML = DEPLOY / "prometheus" / "slo.yml"
SLO_TEST_YML = DEPLOY / "prometheus" / "slo_test.yml"
ALERTS_TEST_YML = DEPLOY / "prometheus" / "alerts_test.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"

E2E_BUDGET_S = 90.0


# --- The binary finder itself ----------------------------------------------------

@pytest.mark.parametrize("require", ["", "0", "1"])
def test_missing_binary_skips_or_fails_by_environment(require, monkeypatch, tmp_path):
    """Not found on the search path: skip with the install hint, or fail naming it when required."""
    monkeypatch.setenv(REQUIRE_ENV, require)
    empty_path = str(tmp_path)  # a directory with no executables
    if require == "1":
        with pytest.raises(pytest.fail.Exception) as failed:
            find_binary("alertmanager", search_path=empty_path)
        assert "alertmanager or prometheus-alertmanager" in str(failed.value)
    else:
        with pytest.raises(pytest.skip.Exception) as skipped:
            find_binary("promtool", search_path=empty_path)
        assert str(skipped.value) == SKIP_REASON


def test_binary_found_under_its_debian_name(tmp_path):
    """alertmanager is found as prometheus-alertmanager (Debian) when no `alertmanager` exists."""
    fake = tmp_path / "prometheus-alertmanager"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert find_binary("alertmanager", search_path=str(tmp_path)) == str(fake)


# --- promtool check metrics on a real daemon's /metrics ----------------------------

def wait_for_sweeps(base_url: str, processes: Processes, count: int, timeout: float = 20.0) -> str:
    """The /metrics text once greenmon has finished ``count`` sweeps."""
    def metrics_after_sweeps():
        response = http_get(f"{base_url}/metrics")
        if response.status_code != 200:
            return None
        for family in text_string_to_metric_families(response.text):
            if family.name == "greenmon_sweeps":
                if family.samples and family.samples[0].value >= count:
                    return response.text
        return None

    return wait_until(processes.watching(metrics_after_sweeps), timeout, interval=0.25, ignoring=NOT_YET,
                      message=f"{count} greenmon sweeps at {base_url}/metrics")


def families_by_name(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


NOTE_NEEDING_ESCAPES = 'a "quoted" word, a back\\slash, ünïcode'  # escaped in the exposition


@pytest.mark.parametrize("per_target_histograms", [None, False], ids=["default", "shared-histogram"])
def test_promtool_check_metrics_on_daemon_output(per_target_histograms, tmp_path):
    promtool = find_binary("promtool")
    refused = closed_port()
    with HTTPFarm({"/ok": reply(), "/unavailable": reply("503 Service Unavailable", "down")}) as farm:
        targets = [
            {"name": "healthy", "url": farm.url("/ok")},
            {"name": "unavailable", "url": farm.url("/unavailable")},
            # No name: the default "GET http://127.0.0.1:PORT/" (spaces, colons, slashes) is the label.
            {"url": f"http://127.0.0.1:{refused}/"},
            {"name": "labelled", "url": farm.url("/ok"),
             "labels": {"team": "identity", "note": NOTE_NEEDING_ESCAPES}},
        ]
        tables = {} if per_target_histograms is None else {
            "metrics": {"per_target_histograms": per_target_histograms}}
        config = tmp_path / "greenmon.toml"
        config.write_text(config_text(targets, timeout=1.0, interval=1.0, **tables), encoding="utf-8")
        port = closed_port()
        with Processes(tmp_path) as processes:
            processes.start("greenmon", greenmon_argv(config, port), cwd=REPO)
            text = wait_for_sweeps(f"http://127.0.0.1:{port}", processes, count=2)

            result = run_tool([promtool, "check", "metrics"], input_text=text)
            assert result.returncode == 0 and result.stdout == "" and result.stderr == "", (
                describe_run(result) + "\n--- /metrics ---\n" + text)

            # And the linted text is the one the contract describes.
            families = families_by_name(text)
            up = {s.labels["target"]: s.value for s in families["greenmon_up"].samples}
            assert up == {"healthy": 1, "unavailable": 0, f"GET http://127.0.0.1:{refused}/": 0,
                          "labelled": 1}
            info = {s.labels["target"]: s.labels for s in families["greenmon_target_info"].samples}
            assert info["labelled"]["team"] == "identity"
            assert info["labelled"]["note"] == NOTE_NEEDING_ESCAPES
            assert info["labelled"]["url"] == farm.url("/ok") and info["labelled"]["method"] == "GET"
            errors = {(s.labels["target"], s.labels["class"]): s.value
                      for s in families["greenmon_check_errors"].samples}
            assert errors[("unavailable", "http")] >= 1
            assert errors[(f"GET http://127.0.0.1:{refused}/", "connection")] >= 1

            buckets = [s for s in families["greenmon_check_duration_seconds"].samples
                       if s.name.endswith("_bucket")]
            assert {"2.0", "+Inf"} <= {s.labels["le"] for s in buckets}
            if per_target_histograms is False:
                assert all(set(s.labels) == {"le"} for s in buckets), buckets[:3]
            else:
                assert {s.labels["target"] for s in buckets} == set(up)


def test_promtool_check_metrics_on_textfile_output(tmp_path):
    """`--once --textfile` writes what node_exporter's textfile collector accepts."""
    promtool = find_binary("promtool")
    refused = closed_port()
    with HTTPFarm({"/ok": reply()}) as farm:
        config = tmp_path / "greenmon.toml"
        config.write_text(config_text(
            [{"name": "healthy", "url": farm.url("/ok"), "labels": {"team": "identity"}},
             {"name": "refused", "url": f"http://127.0.0.1:{refused}/"}],
            timeout=1.0), encoding="utf-8")
        textfile = tmp_path / "greenmon.prom"
        once = run_tool([sys.executable, "-m", "greenmon", "--config", str(config), "--once",
                         "--textfile", str(textfile)], cwd=REPO)
    assert once.returncode == 1, describe_run(once)  # one target down
    text = textfile.read_text(encoding="utf-8")
    result = run_tool([promtool, "check", "metrics"], input_text=text)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", (
        describe_run(result) + "\n--- textfile ---\n" + text)
    up = {s.labels["target"]: s.value for s in families_by_name(text)["greenmon_up"].samples}
    assert up == {"healthy": 1, "refused": 0}


# --- The deploy/ files ------------------------------------------------------------

def test_promtool_check_rules_passes():
    promtool = find_binary("promtool")
    result = run_tool([promtool, "check", "rules", str(ALERTS_YML)])
    assert result.returncode == 0, describe_run(result)
    assert f"SUCCESS: {ALERTS_RULE_COUNT} rules found" in result.stdout, describe_run(result)


ALERT_NAMES = ("GreenmonTargetDown", "GreenmonLatencyP95High", "GreenmonErrorRateHigh",
               "GreenmonBreakerOpen", "GreenmonAbsent", "GreenmonCertExpiringSoon",
               "GreenmonLocationFailing", "GreenmonTargetDownQuorum", "GreenmonTargetDegraded")
ALERTS_RULE_COUNT = len(ALERT_NAMES) + 1   # and the recording rule the location alerts read


def test_alert_rules_exist_as_the_readme_names_them():
    document = yaml.safe_load(ALERTS_YML.read_text(encoding="utf-8"))
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert sorted(rule["alert"] for rule in rules if "alert" in rule) == sorted(ALERT_NAMES)
    assert [rule["record"] for rule in rules if "record" in rule] == [
        "greenmon:down_here_up_elsewhere:ratio"]


def test_the_location_rules_read_their_recording_rule_after_it_is_evaluated():
    """Rules of a group run in order: the recording rule comes before the alerts that read it
    (else they would read the previous evaluation's value)."""
    document = yaml.safe_load(ALERTS_YML.read_text(encoding="utf-8"))
    [group] = [group for group in document["groups"]
               if any(rule.get("record") == "greenmon:down_here_up_elsewhere:ratio"
                      for rule in group["rules"])]
    names = [rule.get("record") or rule.get("alert") for rule in group["rules"]]
    assert names[0] == "greenmon:down_here_up_elsewhere:ratio", names
    for rule in group["rules"][1:]:
        assert "greenmon:down_here_up_elsewhere:ratio" in rule["expr"], rule


def test_the_shipped_scrape_config_labels_each_location_replica():
    """The greenmon-locations job: one static_configs entry per replica, each with its own
    `location` label (a name --location accepts), so every series of a replica carries it."""
    from greenmon.schema import location_name

    document = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    [job] = [job for job in document["scrape_configs"] if job["job_name"] == "greenmon-locations"]
    groups = job["static_configs"]
    locations = [group["labels"]["location"] for group in groups]
    assert len(groups) >= 2 and all(len(group["targets"]) == 1 for group in groups), groups
    assert len(set(locations)) == len(locations), locations
    assert all(location_name(location) == location for location in locations)
    assert "honor_labels" not in job   # the target's label wins; greenmon's is exported_location


def test_promtool_test_rules_passes(tmp_path):
    promtool = find_binary("promtool")
    # alerts_test.yml names alerts.yml relative to itself: run it from a copy of both.
    for source in (ALERTS_YML, ALERTS_TEST_YML):
        shutil.copy(source, tmp_path / source.name)
    result = run_tool([promtool, "test", "rules", ALERTS_TEST_YML.name], cwd=tmp_path)
    assert result.returncode == 0, describe_run(result)
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout, describe_run(result)


def test_slo_rules_pass_promtool_check_and_their_unit_tests(tmp_path):
    promtool = find_binary("promtool")
    result = run_tool([promtool, "check", "rules", str(SLO_YML)])
    assert result.returncode == 0, describe_run(result)
    assert "SUCCESS: 10 rules found" in result.stdout, describe_run(result)
    for source in (SLO_YML, SLO_TEST_YML):
        shutil.copy(source, tmp_path / source.name)
    result = run_tool([promtool, "test", "rules", SLO_TEST_YML.name], cwd=tmp_path)
    assert result.returncode == 0, describe_run(result)
    assert "SUCCESS" in result.stdout and "FAILED" not in result.stdout, describe_run(result)
    text = SLO_YML.read_text(encoding="utf-8")
    for window in ("5m", "30m", "1h", "6h", "1d", "3d"):
        assert f"record: greenmon:slo_error_ratio:rate{window}\n" in text, window
    for name in ("GreenmonErrorBudgetBurnFast", "GreenmonErrorBudgetBurnSlow"):
        assert f"alert: {name}\n" in text, name


def test_promtool_check_config_passes(tmp_path):
    promtool = find_binary("promtool")
    # prometheus.yml loads alerts.yml and slo.yml beside it: check a copy of them in one directory.
    for source in (PROMETHEUS_YML, ALERTS_YML, SLO_YML):
        shutil.copy(source, tmp_path / source.name)
    result = run_tool([promtool, "check", "config", str(tmp_path / "prometheus.yml")], cwd=tmp_path)
    assert result.returncode == 0, describe_run(result)
    assert "2 rule files found" in result.stdout, describe_run(result)
    found = dict(re.findall(r"Checking \S*/(\w+\.yml)\s+SUCCESS: (\d+) rules found", result.stdout))
    assert found == {"alerts.yml": str(ALERTS_RULE_COUNT), "slo.yml": "10"}, describe_run(result)


def test_amtool_check_config_passes():
    amtool = find_binary("amtool")
    result = run_tool([amtool, "check-config", str(ALERTMANAGER_YML)])
    assert result.returncode == 0, describe_run(result)
    assert "SUCCESS" in result.stdout, describe_run(result)


# --- End to end: targets -> greenmon -> Prometheus -> Alertmanager -> webhook -------------

class Switch:
    """A handler answering 200 until ``fail()``, 500 after."""

    def __init__(self):
        self.failing = False

    def fail(self) -> None:
        self.failing = True

    def __call__(self, environ):
        if self.failing:
            return "500 Internal Server Error", [], b"broken"
        return "200 OK", [], b"ok"


def alert_expression(name: str) -> str:
    """The one-line ``expr:`` of the alert rule ``name`` in deploy/prometheus/alerts.yml."""
    text = ALERTS_YML.read_text(encoding="utf-8")
    rule = text.split(f"- alert: {name}\n", 1)[1].split("- alert:", 1)[0]
    match = re.search(r"^\s*expr:\s*(\S.*)$", rule, re.MULTILINE)
    assert match and match[1] not in ("|", ">"), f"{name}: no one-line expr in\n{rule}"
    return match[1].strip()


def readme_p95_expression() -> str:
    """The P95 PromQL of the README (the contract): the code block after "P95 per target"."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.split(r"P95\s+per\s+target\s+in\s+PromQL:", text, maxsplit=1)[1].split("```", 2)[1]
    [expression] = [line.strip() for line in block.splitlines() if line.strip()]
    return expression


def p95_alert_parts() -> tuple[str, float]:
    """GreenmonLatencyP95High's expression as written in alerts.yml: (P95 query, threshold)."""
    query, threshold = alert_expression("GreenmonLatencyP95High").rsplit(" > ", 1)
    return query, float(threshold)


# The e2e test's P95: the alert rule's own query, over 1m (the test runs for about a minute).
P95_QUERY = p95_alert_parts()[0].replace("[5m]", "[1m]")


def test_end_to_end_alert_reaches_alertmanager_webhook(tmp_path):
    prometheus = find_binary("prometheus")
    alertmanager = find_binary("alertmanager")
    budget = Budget(E2E_BUDGET_S)
    logs = tmp_path / "logs"
    logs.mkdir()

    switch = Switch()
    webhook = WebhookRecorder()
    # The farm runs on this process's gevent hub: every wait below yields to it.
    with HTTPFarm({"/healthy": reply(), "/switch": switch, "/webhook": webhook}) as farm, \
            Processes(logs) as processes:
        def wait(probe, what, timeout=30.0, interval=0.25):
            return wait_until(processes.watching(probe), min(timeout, budget.left()), interval=interval,
                              ignoring=NOT_YET, message=what)

        # greenmon: one sweep a second, no retries, short deadline; two worker processes, so
        # that Prometheus reads /metrics joined from the shares they render, gzipped.
        gm_port = closed_port()
        gm_config = tmp_path / "greenmon.toml"
        gm_config.write_text(config_text(
            [{"name": "healthy", "url": farm.url("/healthy")},
             {"name": "flaky", "url": farm.url("/switch")}],
            timeout=1.0, interval=1.0), encoding="utf-8")
        processes.start("greenmon", greenmon_argv(gm_config, gm_port, "--workers", "2"), cwd=REPO)
        wait_for_sweeps(f"http://127.0.0.1:{gm_port}", processes, count=1,
                        timeout=min(20.0, budget.left()))

        # Alertmanager: one route to the webhook, notifications within a second.
        am_port = closed_port()
        am_url = f"http://127.0.0.1:{am_port}"
        am_config = write_yaml(tmp_path / "alertmanager.yml", {
            "route": {"receiver": "webhook", "group_by": ["alertname", "target"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "webhook", "webhook_configs": [
                {"url": farm.url("/webhook"), "send_resolved": True}]}],
        })
        (tmp_path / "am-data").mkdir()
        processes.start("alertmanager", [
            alertmanager, f"--config.file={am_config}", f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}", f"--web.external-url={am_url}/",
            "--cluster.listen-address=",  # empty: no gossip cluster, nothing binds beyond loopback
        ])
        wait(lambda: is_ready(f"{am_url}/-/ready"), "Alertmanager ready", timeout=20)

        # The deploy rules, with every `for:` cut to 2s. The real durations (2m to 10m)
        # cannot elapse inside this test's 90 s bound; 2s still makes an alert pend
        # through two 1s evaluations before it fires, so `for` is exercised, not removed.
        rules_text, replaced = shorten_for_durations(ALERTS_YML.read_text(encoding="utf-8"), "2s")
        assert replaced == rules_text.count("- alert:") == len(ALERT_NAMES), rules_text
        rules = tmp_path / "alerts.yml"
        rules.write_text(rules_text, encoding="utf-8")
        slo_rules = tmp_path / "slo.yml"
        slo_rules.write_text(SLO_YML.read_text(encoding="utf-8"), encoding="utf-8")

        # Prometheus: scrapes only greenmon, alerts only to that Alertmanager, all on 127.0.0.1.
        prom_port = closed_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        prom_config = write_yaml(tmp_path / "prometheus.yml", {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules), str(slo_rules)],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]},
            "scrape_configs": [{"job_name": "greenmon",
                                "static_configs": [{"targets": [f"127.0.0.1:{gm_port}"]}]}],
        })
        (tmp_path / "prom-data").mkdir()
        processes.start("prometheus", [
            prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", f"--web.external-url={prom_url}/",
        ])
        wait(lambda: is_ready(f"{prom_url}/-/ready"), "Prometheus ready", timeout=30)

        def up_values():
            values = {item["metric"]["target"]: float(item["value"][1])
                      for item in prom_query(prom_url, "greenmon_up")}
            return values if values == {"healthy": 1.0, "flaky": 1.0} else None

        # Scraped, and both targets up in Prometheus.
        wait(up_values, "greenmon_up == 1 for both targets in Prometheus")
        scrape = prom_query(prom_url, 'up{job="greenmon"}')
        assert [float(item["value"][1]) for item in scrape] == [1.0], scrape
        # Every series of the joined document, each worker's targets' and the parent's own.
        def samples_read_whole():
            read = prom_query(prom_url, 'scrape_samples_scraped{job="greenmon"}')
            text = http_get(f"http://127.0.0.1:{gm_port}/metrics").text
            direct = sum(len(family.samples) for family in text_string_to_metric_families(text))
            return read and float(read[0]["value"][1]) == direct

        wait(samples_read_whole, "Prometheus reading as many samples as /metrics holds")
        for name in ("greenmon_target_info", "greenmon_slo_objective"):
            assert {item["metric"]["target"] for item in prom_query(prom_url, name)} == {"healthy", "flaky"}
        assert prom_query(prom_url, "greenmon_event_loop_lag_seconds_count") != []

        # The P95 expression of the contract (over 1m here) has a value for the healthy target.
        p95 = wait(lambda: finite_value(prom_query(prom_url, P95_QUERY), target="healthy"),
                   "a P95 value for the healthy target")
        assert 0 < p95 <= 1.0, p95  # a local 200 OK: under the 1 s deadline

        # The SLO recording rules run on greenmon's SLI: no errors yet, for both targets.
        # A ratio is NaN (0/0) until the rule's window holds two scrapes that differ; on a
        # loaded machine the first evaluations can see a counter that has not moved yet.
        def recorded_ratios():
            values = {item["metric"]["target"]: float(item["value"][1]) for item in
                      prom_query(prom_url, "greenmon:slo_error_ratio:rate5m")}
            settled = set(values) == {"healthy", "flaky"} and all(map(math.isfinite, values.values()))
            return values if settled else None

        ratios = wait(recorded_ratios, "the SLO error ratio recorded for both targets")
        assert all(v == 0 for v in ratios.values()), ratios

        # The switch: the flaky target answers 500 from now on.
        switch.fail()
        switched_at = budget.elapsed()

        def target_down_alert():
            return [alert for alert in webhook.alerts(alertname="GreenmonTargetDown", target="flaky")
                    if alert.get("status") == "firing"]

        fired = wait(target_down_alert, "GreenmonTargetDown for flaky at the webhook", timeout=60,
                     interval=0.2)
        alert = fired[0]
        assert alert["labels"]["severity"] == "page", alert
        assert alert["labels"]["job"] == "greenmon", alert
        assert alert["labels"]["instance"] == f"127.0.0.1:{gm_port}", alert
        assert alert["annotations"]["summary"] == "flaky is down", alert
        print(f"GreenmonTargetDown reached the webhook {budget.elapsed() - switched_at:.1f}s "
              f"after the switch")

        # Two more evaluation rounds, then: the healthy target never alerted, at the webhook
        # or even as a pending alert in Prometheus.
        gevent.sleep(2.5)
        assert webhook.errors == [], webhook.errors
        assert webhook.alerts(alertname="GreenmonTargetDown", target="healthy") == [], webhook.bodies
        ever = prom_query(prom_url, 'count_over_time(ALERTS{alertname="GreenmonTargetDown", '
                                    'target="healthy"}[10m])')
        assert ever == [], ever
        firing = prom_query(prom_url, 'ALERTS{alertname="GreenmonTargetDown", alertstate="firing"}')
        assert [item["metric"]["target"] for item in firing] == ["flaky"], firing
        assert budget.elapsed() < E2E_BUDGET_S + 5, budget.elapsed()


# --- End to end: Prometheus scrapes a greenmon behind TLS and basic auth ------------------------------

TLS_E2E_BUDGET_S = 60.0


def shipped_tls_job() -> dict:
    """The job of deploy/prometheus/prometheus.yml that scrapes a greenmon with a web config."""
    document = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    jobs = [job for job in document["scrape_configs"] if job.get("scheme") == "https"]
    assert len(jobs) == 1, document["scrape_configs"]
    job = jobs[0]
    assert "ca_file" in job["tls_config"], job
    assert job["basic_auth"].get("username") and "password_file" in job["basic_auth"], job
    return job


def test_the_shipped_scrape_config_shows_https_tls_config_and_basic_auth():
    job = shipped_tls_job()
    assert job["scheme"] == "https"
    plain = [j for j in yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))["scrape_configs"]
             if j["job_name"] == "greenmon"]
    assert plain and "scheme" not in plain[0], "the plain example is still there"


def test_end_to_end_prometheus_scrapes_greenmon_over_tls_with_basic_auth(tmp_path):
    """The shipped scrape job (scheme: https, tls_config, basic_auth), pointed at this test's CA,
    password file and daemon, gets `up` 1 and greenmon's series; the same scrape without the
    credential gets `up` 0."""
    prometheus = find_binary("prometheus")
    budget = Budget(TLS_E2E_BUDGET_S)
    logs = tmp_path / "logs"
    logs.mkdir()
    job = shipped_tls_job()
    username = job["basic_auth"]["username"]

    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    ca_pem, cert, key = tmp_path / "ca.pem", tmp_path / "greenmon.crt", tmp_path / "greenmon.key"
    ca.cert_pem.write_to_path(str(ca_pem))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    password = secrets.token_urlsafe(18)
    password_file = tmp_path / "greenmon.password"
    password_file.write_text(password + "\n", encoding="utf-8")
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
        f"basic_auth_users:\n  {username}: {bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n",
        encoding="utf-8")

    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_pem)

    with HTTPFarm({"/healthy": reply()}) as farm, Processes(logs) as processes:
        def wait(probe, what, timeout=30.0):
            return wait_until(processes.watching(probe), min(timeout, budget.left()), interval=0.25,
                              ignoring=NOT_YET, message=what)

        gm_port = closed_port()
        gm_url = f"https://127.0.0.1:{gm_port}"
        gm_config = tmp_path / "greenmon.toml"
        gm_config.write_text(config_text(
            [{"name": "healthy", "url": farm.url("/healthy")}],
            timeout=1.0, interval=1.0), encoding="utf-8")
        processes.start("greenmon", greenmon_argv(gm_config, gm_port, "--web-config-file", str(web_config)),
                        cwd=REPO)
        wait(lambda: session.get(f"{gm_url}/metrics", auth=(username, password), timeout=3).status_code == 200,
             "greenmon serving /metrics over HTTPS", timeout=20)
        assert session.get(f"{gm_url}/metrics", timeout=3).status_code == 401

        scrape_job = {**job,
                      "tls_config": {**job["tls_config"], "ca_file": str(ca_pem)},
                      "basic_auth": {**job["basic_auth"], "password_file": str(password_file)},
                      "static_configs": [{"targets": [f"127.0.0.1:{gm_port}"]}]}
        without_credential = {"job_name": "no-credential", "scheme": "https",
                              "tls_config": {"ca_file": str(ca_pem)},
                              "static_configs": [{"targets": [f"127.0.0.1:{gm_port}"]}]}
        prom_port = closed_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        prom_config = write_yaml(tmp_path / "prometheus.yml", {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [scrape_job, without_credential],
        })
        (tmp_path / "prom-data").mkdir()
        processes.start("prometheus", [
            prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", f"--web.external-url={prom_url}/",
        ])
        wait(lambda: is_ready(f"{prom_url}/-/ready"), "Prometheus ready")

        def scraped(job_name, expected):
            result = prom_query(prom_url, f'up{{job="{job_name}"}}')
            return result if [float(item["value"][1]) for item in result] == [expected] else None

        wait(lambda: scraped(job["job_name"], 1.0), f"up{{job={job['job_name']!r}}} == 1")
        up = wait(lambda: prom_query(prom_url, f'greenmon_up{{job="{job["job_name"]}"}}'),
                  "greenmon_up in Prometheus")
        assert {item["metric"]["target"]: float(item["value"][1]) for item in up} == {"healthy": 1.0}, up
        assert prom_query(prom_url, f'greenmon_build_info{{job="{job["job_name"]}"}}'), "no greenmon_build_info"
        wait(lambda: scraped("no-credential", 0.0), "up{job='no-credential'} == 0")
        assert prom_query(prom_url, 'greenmon_up{job="no-credential"}') == []
        assert budget.elapsed() < TLS_E2E_BUDGET_S + 5, budget.elapsed()
    greenmon_log = processes.started[0].logs()
    assert "Traceback" not in greenmon_log and password not in greenmon_log, greenmon_log[-3000:]


def test_p95_query_in_the_readme_matches_the_alert_rule():
    """The README's P95 expression is the one GreenmonLatencyP95High alerts on (both read from
    their files), against the default objective (monitor.slo_p95_seconds); the e2e test above
    queries that same expression over a 1m window."""
    query, threshold = p95_alert_parts()
    assert query == readme_p95_expression()
    assert threshold == MonitorSettings().slo_p95_seconds
    assert P95_QUERY == query.replace("[5m]", "[1m]") and "[1m]" in P95_QUERY
