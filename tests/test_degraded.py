"""Degraded (SPEC 15): a success slower than its degraded_latency is up, and marked.

Real servers on 127.0.0.1: one answers at once, one after SLOW_S, one fails after
SLOW_S. The threshold sits halfway, so a loaded machine moves neither side over it
(a check of the fast one would have to take LIMIT_S on loopback).
"""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.exposition import generate_latest

from greenmon.config import parse_config
from greenmon.metrics import build_registry
from greenmon.schema import ConfigError
from greenmon.store import store_for

from support.configs import config_text
from support.daemon_helpers import daemon_config, running_daemon, value
from support.helpers import run_cli, sweep_config
from support.servers import HTTPFarm, delayed, reply

SLOW_S, LIMIT_S = 1.0, 0.5


@pytest.fixture(scope="module")
def farm():
    routes = {"/fast": reply(), "/slow": delayed(SLOW_S),
              "/slow-broken": delayed(SLOW_S, reply("500 Internal Server Error")),
              "/step": delayed(0.3)}
    with HTTPFarm(routes) as server:
        yield server


def targets(farm, *names: str) -> list[dict]:
    every = {"slow": {"url": farm.url("/slow")}, "fast": {"url": farm.url("/fast")},
             "slow-broken": {"url": farm.url("/slow-broken")},
             "slow-exempt": {"url": farm.url("/slow"), "degraded_latency": 0},
             "slow-flow": {"steps": [{"url": farm.url("/step")}, {"url": farm.url("/step")}]}}
    return [{"name": name, **every[name]} for name in names or every]


def slo_counts(text: str, target: str) -> dict[str, float]:
    return {result: value(text, "greenmon_slo_checks_total", target=target, result=result)
            for result in ("good", "slow", "bad")}


def test_a_slow_success_is_up_degraded_and_counted_slow_never_bad(farm):
    config = parse_config(config_text(targets(farm), monitor={"degraded_latency": LIMIT_S}), "<test>")
    store = store_for(config, config.enabled_targets)
    results = {r.target: r for r in sweep_config(config, listeners=[store.observe])}
    seen = {name: (r.ok, r.degraded, r.breaker) for name, r in results.items()}
    assert seen == {"slow": (True, True, "closed"), "fast": (True, False, "closed"),
                    "slow-broken": (False, False, "closed"), "slow-exempt": (True, False, "closed"),
                    "slow-flow": (True, True, "closed")}
    # A flow is degraded by the sum of its steps: each took 0.3 s, under the threshold.
    assert results["slow-flow"].latency_s == pytest.approx(sum(s.latency_s for s in results["slow-flow"].steps))
    assert results["slow"].to_dict()["degraded"] is True and results["fast"].to_dict()["degraded"] is False
    text = generate_latest(build_registry(store)).decode()
    assert value(text, "greenmon_up", target="slow") == 1
    # Only targets with a degraded_latency have the series (slow-exempt turned it off).
    assert {name: value(text, "greenmon_degraded", target=name) for name in results} == {
        "slow": 1, "fast": 0, "slow-broken": 0, "slow-exempt": None, "slow-flow": 1}
    assert value(text, "greenmon_slo_checks_total", target="slow-exempt", result="slow") is None
    assert slo_counts(text, "slow") == {"good": 0, "slow": 1, "bad": 0}
    assert slo_counts(text, "fast") == {"good": 1, "slow": 0, "bad": 0}
    assert slo_counts(text, "slow-broken") == {"good": 0, "slow": 0, "bad": 1}


def test_once_exits_0_when_degraded_targets_are_the_only_problem(farm, write_config):
    path = write_config(config_text(targets(farm, "slow", "fast"), monitor={"degraded_latency": LIMIT_S}))
    table = run_cli("--config", str(path), "--once")
    assert table.returncode == 0, table.stdout + table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split()[:2] == ["DEGRADED", "slow"] and lines[2].split()[:2] == ["UP", "fast"], lines
    assert "2 up (1 degraded), 0 down" in table.stdout
    document = json.loads(run_cli("--config", str(path), "--once", "--format", "json").stdout)
    assert {r["target"]: r["degraded"] for r in document["results"]} == {"slow": True, "fast": False}
    assert (document["summary"]["up"], document["summary"]["degraded"]) == (2, 1)
    broken = write_config(config_text(targets(farm, "slow", "slow-broken"),
                                      monitor={"degraded_latency": LIMIT_S}), name="broken.toml")
    assert run_cli("--config", str(broken), "--once").returncode == 1


def test_the_status_page_shows_degraded_in_its_colour_and_filters_by_state(farm):
    config = daemon_config(targets(farm, "fast", "slow", "slow-broken"), interval=5.0,
                           monitor={"degraded_latency": LIMIT_S})
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        page = running.get("/").text
        only = running.get("/?state=degraded").text
        history = running.get("/api/history?target=slow").json()
    rows = re.findall(r"<tr data-search=\"([^\"]*)\"><td class='([a-z]*)'>([A-Z]+)</td>", page)
    # Failing first, then degraded, then the rest.
    assert [(search.split()[0], css, state) for search, css, state in rows] == [
        ("slow-broken", "down", "DOWN"), ("slow", "degraded", "DEGRADED"), ("fast", "up", "UP")]
    assert ".degraded{color:" in page and re.search(r"class='d'><title>\S+ degraded: \d+\.\d+ s</title>", page)
    assert "2 up (1 degraded), 1 down" in page
    assert "degraded (1)</b>" not in page and "state=degraded'>degraded (1)</a>" in page
    assert [search.split()[0] for search, _, _ in re.findall(
        r"<tr data-search=\"([^\"]*)\"><td class='([a-z]*)'>([A-Z]+)</td>", only)] == ["slow"]
    assert "<b>degraded (1)</b>" in only and 'name="state" value="degraded"' in only
    assert history and {(item["ok"], item["degraded"], item["error_class"]) for item in history} == {
        (True, True, None)}


@pytest.mark.parametrize("where, text", [
    ("monitor.degraded_latency", "[monitor]\ndegraded_latency = -1\n[[targets]]\nurl = \"http://127.0.0.1:9/\"\n"),
    ("targets[0].degraded_latency", "[[targets]]\nurl = \"http://127.0.0.1:9/\"\ndegraded_latency = \"1s\"\n"),
])
def test_a_bad_degraded_latency_is_a_config_error_naming_the_key(where, text):
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert re.match(rf"greenmon\.toml:\d+: {re.escape(where)}: ", str(raised.value)), str(raised.value)
