"""The Grafana dashboard and several locations, against the real Prometheus (README, "Several locations").

The dashboard (deploy/grafana/greenmon.json) is read as Grafana would import it: its
variables, its panels and their datasource. Then one stack, shared by this module's
end-to-end tests: target servers on 127.0.0.1 (a healthy one, an HTTPS one behind a trustme
CA, a refused port, one whose checks fail their first attempt and pass their retry, one whose
500s open its breaker, a flow whose second step gets those 500s, one up but degraded), two greenmon daemons at two locations (lab-a named by
``[monitor] location``, lab-b by ``--location``), and a real Prometheus scraping them
through the shipped ``greenmon-locations`` job and evaluating the shipped alerts.yml. Every
query of every panel, its variables filled in the way Grafana fills them, must be valid
and return data; the variables' own queries list the real names; every series of a replica
carries its location; the quorum rule pages on the targets down from both locations only.

A missing Prometheus skips the end-to-end tests, or fails them when
GREENMON_REQUIRE_PROMETHEUS=1 (CI). Every process is stopped when the module ends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import trustme
import yaml

from support.configs import config_text
from support.helpers import wait_until
from support.prom_helpers import (DEPLOY, NOT_YET, REPO, Budget, Processes, find_binary, greenmon_argv,
                                  http_get, is_ready, prom_query, shorten_for_durations, write_yaml)
from support.servers import HTTPFarm, closed_port, reply, tls_server_context

DASHBOARD_JSON = DEPLOY / "grafana" / "greenmon.json"
ALERTS_YML = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"

STACK_BUDGET_S = 50.0      # start everything and see every query return data (typically ~15 s)
LOCATIONS = ("lab-a", "lab-b")
# What Grafana would put in place of its built-in variables for a 1 s scrape interval:
# $__rate_interval is at least 4 scrape intervals; 10 s leaves room on a loaded machine.
BUILT_INS = {"__rate_interval": "10s", "__interval": "2s", "__range": "1m"}
TARGET_NAMES = ("healthy", "api.tls", "refused", "retried", "breaker", "flow", "sluggish")   # "." is a regex character
DOWN_FROM_EVERY_LOCATION = {"refused", "breaker", "flow"}


def load_dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text(encoding="utf-8"))


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside (collapsed) rows included."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def panel_queries(dashboard: dict) -> list[tuple[str, str, str, bool]]:
    """(panel title, refId, expr, instant) of every query of every panel."""
    return [(panel["title"], target["refId"], target["expr"], bool(target.get("instant")))
            for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def variables(dashboard: dict) -> dict[str, dict]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


# --- The dashboard as Grafana imports it -------------------------------------------------------

def test_the_dashboard_is_an_importable_grafana_model():
    dashboard = load_dashboard()
    assert dashboard["uid"] == "greenmon" and dashboard["title"] and dashboard["id"] is None
    assert isinstance(dashboard["schemaVersion"], int)
    found = variables(dashboard)
    # The data source is picked at import (__inputs) and can be switched (a datasource variable).
    assert found["datasource"]["type"] == "datasource" and found["datasource"]["query"] == "prometheus"
    assert [item["pluginId"] for item in dashboard["__inputs"]] == ["prometheus"]
    target = found["target"]
    assert target["type"] == "query"
    assert target["definition"] == target["query"]["query"] == "label_values(greenmon_up, target)"
    assert target["multi"] is True and target["includeAll"] is True and target["allValue"] == ".*"
    location = found["location"]
    assert location["query"]["query"] == "label_values(greenmon_build_info, location)"
    assert location["multi"] is True and location["includeAll"] is True and location["allValue"] == ".*"
    assert found["objective"]["query"] == "2"   # monitor.slo_p95_seconds' default

    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), ids
    cells = set()
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for query in panel["targets"]:
            assert query["datasource"] == panel["datasource"], (panel["title"], query["refId"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


@pytest.mark.parametrize("subject, pattern", [
    ("targets down", r"greenmon_up\{[^}]*\} == 0"),
    ("P95 per target", r"histogram_quantile\(0\.95, sum by \(le, target\) \(rate\("
                       r"greenmon_check_duration_seconds_bucket"),
    ("the objective", r"vector\(\$objective\)"),
    ("error classes", r"sum by \(class\) \(rate\(greenmon_check_errors_total"),
    ("retries", r"greenmon_check_retries_total"),
    ("breaker states", r"greenmon_breaker_state"),
    ("phase timings", r"greenmon_check_phase_seconds"),
    ("certificate days left", r"greenmon_tls_cert_expiry_timestamp_seconds\{[^}]*\} - time\(\)\) / 86400"),
    ("event loop lag", r"greenmon_event_loop_lag_seconds_bucket"),
    ("schedule lag", r"greenmon_schedule_lag_seconds_bucket"),
    ("failing steps of flows", r"greenmon_step_up\{[^}]*\} == 0"),
    ("degraded targets", r"greenmon_degraded\{[^}]*\} == 1"),
])
def test_the_dashboard_shows(subject, pattern):
    assert any(re.search(pattern, expr) for _, _, expr, _ in panel_queries(load_dashboard())), subject


# --- Grafana's variable interpolation ------------------------------------------------------------

_REGEX_SPECIAL = re.compile(r"[\\$^*{}\[\]'+?.()|]")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


def grafana_regex(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a Prometheus query: each value
    regex-escaped (a backslash doubled, for the PromQL string), joined as (a|b)."""
    escaped = [_REGEX_SPECIAL.sub(lambda m: "\\\\" + m[0], value) for value in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interpolate(expr: str, values: dict[str, str]) -> str:
    """``expr`` with every $name, ${name} and [[name]] replaced; an unknown variable fails."""
    def replace(match: re.Match) -> str:
        name = match[1] or match[2] or match[3]
        assert name in values, f"no value for ${name} in {expr!r}"
        return values[name]
    return _VARIABLE.sub(replace, expr)


def test_grafana_regex_escapes_like_grafana():
    assert grafana_regex(["api.tls", "a|b"]) == r"(api\\.tls|a\\|b)"
    assert grafana_regex(["one"]) == "one"
    assert interpolate('x{t=~"$target"}[$__rate_interval] ${objective}', {
        "target": "(a|b)", "__rate_interval": "10s", "objective": "2"}) == 'x{t=~"(a|b)"}[10s] 2'


# --- The stack -----------------------------------------------------------------------------

class FailsFirstAttempt:
    """503 to every other request: with one retry, each check fails its first attempt (a
    retry counted under `http`) and passes its second."""

    def __init__(self):
        self.requests = 0

    def __call__(self, environ):
        self.requests += 1
        if self.requests % 2:
            return "503 Service Unavailable", [], b"busy"
        return "200 OK", [], b"ok"


@dataclass
class Stack:
    prom_url: str
    greenmon_ports: dict[str, int]
    processes: Processes
    budget: Budget

    def wait(self, probe, what: str, timeout: float = 30.0, interval: float = 0.25):
        return wait_until(self.processes.watching(probe), min(timeout, self.budget.left()),
                          interval=interval, ignoring=NOT_YET, message=what)


def shipped_locations_job() -> dict:
    document = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    [job] = [job for job in document["scrape_configs"] if job["job_name"] == "greenmon-locations"]
    return job


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prometheus = find_binary("prometheus")
    tmp_path = tmp_path_factory.mktemp("grafana")
    logs = tmp_path / "logs"
    logs.mkdir()
    budget = Budget(STACK_BUDGET_S)
    ca = trustme.CA()
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    routes = {"/ok": reply(), "/broken": reply("500 Internal Server Error", b"broken")}
    routes.update({f"/retried/{location}": FailsFirstAttempt() for location in LOCATIONS})
    refused = closed_port()

    with HTTPFarm(routes) as farm, \
            HTTPFarm({"/tls": reply()}, ssl_context=tls_server_context(ca, "127.0.0.1")) as tls_farm, \
            Processes(logs) as processes:
        ports = {}
        for location in LOCATIONS:
            targets = [
                {"name": "healthy", "url": farm.url("/ok")},
                {"name": "api.tls", "url": tls_farm.url("/tls"), "ca_file": str(ca_pem)},
                {"name": "refused", "url": f"http://127.0.0.1:{refused}/"},
                {"name": "retried", "url": farm.url(f"/retried/{location}")},
                {"name": "breaker", "url": farm.url("/broken")},
                {"name": "flow", "interval": 2.0, "steps": [{"name": "login", "url": farm.url("/ok")},
                                           {"name": "call", "url": farm.url("/broken")}]},
                # Up, and degraded on every check: no check answers in a microsecond.
                {"name": "sluggish", "url": farm.url("/ok"), "degraded_latency": 0.000001},
            ]
            assert tuple(t["name"] for t in targets) == TARGET_NAMES
            monitor = {}
            flags = []
            if location == "lab-a":
                monitor["location"] = location          # from the config ...
            else:
                flags = ["--location", location]        # ... and from the command line
            config = tmp_path / f"{location}.toml"
            config.write_text(config_text(
                targets, timeout=1.0, interval=1.0, retries=1, backoff=0.05, monitor=monitor,
                breaker={"failure_threshold": 2, "recovery_timeout": 2.0}), encoding="utf-8")
            ports[location] = closed_port()
            processes.start(f"greenmon-{location}", greenmon_argv(config, ports[location], *flags), cwd=REPO)

        def every_target_checked(port):
            text = http_get(f"http://127.0.0.1:{port}/metrics").text
            return all(f'greenmon_up{{target="{name}"}}' in text for name in TARGET_NAMES)

        for location, port in ports.items():
            wait_until(processes.watching(lambda: every_target_checked(port)), min(20.0, budget.left()),
                       interval=0.25, ignoring=NOT_YET, message=f"greenmon at {location} to check every target")

        # The shipped rules, every `for:` cut to 3s: long enough that a target seen from one
        # location for the first scrape only (the other's comes within a second) never fires.
        rules_text, replaced = shorten_for_durations(ALERTS_YML.read_text(encoding="utf-8"), "3s")
        assert replaced > 0
        rules = tmp_path / "alerts.yml"
        rules.write_text(rules_text, encoding="utf-8")
        job = shipped_locations_job()
        job = {**job, "static_configs": [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"location": location}}
            for location, port in ports.items()]}
        prom_port = closed_port()
        prom_url = f"http://127.0.0.1:{prom_port}"
        prom_config = write_yaml(tmp_path / "prometheus.yml", {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [job],
        })
        (tmp_path / "prom-data").mkdir()
        processes.start("prometheus", [
            prometheus, f"--config.file={prom_config}", f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}", f"--web.external-url={prom_url}/",
        ])
        stack = Stack(prom_url, ports, processes, budget)
        stack.wait(lambda: is_ready(f"{prom_url}/-/ready"), "Prometheus ready")
        yield stack


def grafana_values(dashboard: dict) -> dict[str, str]:
    """Every variable as Grafana would fill it in this stack: the real target names and
    locations (as multi-value regexes), the objective's default, concrete durations."""
    return {"target": grafana_regex(list(TARGET_NAMES)), "location": grafana_regex(list(LOCATIONS)),
            "objective": variables(dashboard)["objective"]["query"],
            "datasource": "prometheus", **BUILT_INS}


def api_query(prom_url: str, expr: str) -> dict:
    """/api/v1/query's whole document, an invalid query's error included (HTTP 400)."""
    response = http_get(f"{prom_url}/api/v1/query", query=expr)
    document = response.json()
    assert document.get("status") in ("success", "error"), response.text[:500]
    return document


def test_every_panel_query_is_valid_and_returns_data(stack):
    dashboard = load_dashboard()
    values = grafana_values(dashboard)
    pending = {}
    for title, ref_id, expr, _ in panel_queries(dashboard):
        query = interpolate(expr, values)
        assert "$" not in query, query
        pending[f"{title} [{ref_id}]"] = query
        # A count that falls back to 0 must also find its series (this stack has them).
        if query.endswith(" or vector(0)"):
            pending[f"{title} [{ref_id}] without its fallback"] = query[:-len(" or vector(0)")]
    assert len(pending) >= 15, pending

    def all_have_data():
        for name, query in list(pending.items()):
            document = api_query(stack.prom_url, query)
            assert document["status"] == "success", f"{name}: {query}\n{document}"
            if document["data"]["result"]:
                del pending[name]
        return not pending

    try:
        stack.wait(all_have_data, "every panel query to return data", timeout=40, interval=0.5)
    except AssertionError as problem:
        raise AssertionError(f"{problem}\nno data from:\n" + "\n".join(
            f"  {name}: {query}" for name, query in pending.items())) from None


def panel_query(dashboard: dict, title: str, ref_id: str = "A") -> str:
    """The query ``ref_id`` of the panel called ``title``, its variables filled in for this stack."""
    [expr] = [expr for panel_title, panel_ref, expr, _ in panel_queries(dashboard)
              if panel_title == title and panel_ref == ref_id]
    return interpolate(expr, grafana_values(dashboard))


def by_label(stack: Stack, query: str, label: str) -> dict[str, float]:
    return {item["metric"].get(label, ""): float(item["value"][1])
            for item in prom_query(stack.prom_url, query)}


def test_the_panels_show_what_the_targets_do(stack):
    """Not only data: the numbers this stack makes. Three targets down from both locations,
    their breakers open (their half-open trials still fail: connection and http errors),
    retries of the target that fails each first attempt, a P95 for the healthy one under
    the objective, the certificate's days, the one failing step of the flow, the degraded target."""
    dashboard = load_dashboard()
    objective = float(variables(dashboard)["objective"]["query"])

    def single(title):
        [value] = by_label(stack, panel_query(dashboard, title), "").values()
        return value

    def expected_state():
        breakers = by_label(stack, panel_query(dashboard, "Breaker states (targets in each)"), "state")
        retries = by_label(stack, panel_query(dashboard, "Retries by the class that caused them (per second)"),
                           "class")
        errors = by_label(stack, panel_query(dashboard, "Error classes (failed checks per second)"), "class")
        return (single("Targets down") == 3 and single("Down from 2+ locations") == 3
                and breakers.get("closed") == 2 * 4
                and breakers.get("open", 0) + breakers.get("half-open", 0) == 2 * 3
                and retries.get("http", 0) > 0   # "retried", every check (refused's stop once its breaker opens)
                and errors.get("http", 0) > 0 and errors.get("connection", 0) > 0
                and errors.get("timeout", 0) == errors.get("auth", 0) == errors.get("content", 0) == 0)

    stack.wait(expected_state, "the counts, breakers, retries and errors this stack makes")
    p95 = stack.wait(lambda: {name: value for name, value in by_label(
        stack, panel_query(dashboard, "P95 per target against the objective"), "target").items()
        if value == value}.get("healthy"), "a P95 for the healthy target")
    assert 0 < p95 < objective, p95
    assert by_label(stack, panel_query(dashboard, "P95 per target against the objective", "B"), "") == {
        "": objective}
    failing = sorted((item["metric"]["target"], item["metric"]["step"], item["metric"]["location"])
                     for item in prom_query(stack.prom_url, panel_query(dashboard, "Failing steps of flows")))
    assert failing == [("flow", "call", location) for location in LOCATIONS], failing
    degraded = sorted((item["metric"]["target"], item["metric"]["location"])
                      for item in prom_query(stack.prom_url, panel_query(dashboard, "Degraded now (up, but slow)")))
    assert degraded == [("sluggish", location) for location in LOCATIONS], degraded
    days = by_label(stack, panel_query(dashboard, "Certificate days left"), "target")
    assert set(days) == {"api.tls"} and days["api.tls"] > 30, days   # trustme's certificates last years


def test_the_variables_list_the_real_names(stack):
    """label_values(SELECTOR, LABEL), as Grafana asks Prometheus: the label's values on the
    series that SELECTOR selects."""
    expected = {"target": set(TARGET_NAMES), "location": set(LOCATIONS)}
    for name, variable in variables(load_dashboard()).items():
        if variable["type"] != "query":
            continue
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"]).groups()

        def listed():
            response = http_get(f"{stack.prom_url}/api/v1/label/{label}/values", **{"match[]": selector})
            found = set(response.json()["data"])
            return found if found == expected[name] else None

        stack.wait(listed, f"${name}: {sorted(expected[name])}")


def test_every_series_of_a_replica_carries_its_location(stack):
    """The shipped job's per-replica label is on every series; greenmon's own location, on
    greenmon_build_info, comes in as exported_location and agrees with it."""
    def every_location_scraped():
        found = prom_query(stack.prom_url, 'count by (location) ({__name__=~"greenmon_.+"})')
        return {item["metric"].get("location") for item in found} == set(LOCATIONS)

    stack.wait(every_location_scraped, "greenmon series from both locations")
    assert prom_query(stack.prom_url, '{__name__=~"greenmon_.+", location=""}') == []
    builds = prom_query(stack.prom_url, "greenmon_build_info")
    assert sorted((item["metric"]["location"], item["metric"]["exported_location"],
                   item["metric"]["instance"]) for item in builds) == sorted(
        (location, location, f"127.0.0.1:{port}") for location, port in stack.greenmon_ports.items())


def test_the_quorum_alert_pages_on_what_is_down_from_both_locations(stack):
    """Down from both locations: GreenmonTargetDownQuorum fires. GreenmonTargetDown stays
    quiet (every target is watched from two locations), and so does GreenmonLocationFailing
    (neither location fails what the other sees up)."""
    def quorum_firing():
        found = prom_query(stack.prom_url,
                           'ALERTS{alertname="GreenmonTargetDownQuorum", alertstate="firing"}')
        names = {item["metric"]["target"] for item in found}
        return found if names == DOWN_FROM_EVERY_LOCATION else None

    alerts = stack.wait(quorum_firing, "GreenmonTargetDownQuorum for refused, breaker and flow")
    for alert in alerts:
        assert alert["metric"]["severity"] == "page" and "location" not in alert["metric"], alert
    ever = prom_query(stack.prom_url, 'count_over_time(ALERTS{alertname=~"GreenmonTargetDown|'
                                      'GreenmonLocationFailing", alertstate="firing"}[10m])')
    assert ever == [], ever
