"""The daemon's endpoints: Daemon + WebServer in this process, on 127.0.0.1:0.

Each test runs Daemon.run() in a greenlet with a short interval against
local target servers, talks HTTP to the WebServer, and always stops both
(daemon_helpers.running_daemon).
"""

from __future__ import annotations

import re

import pytest
import requests

from greenmon.schema import ConfigError
from support.configs import BREAKER_OPENS_AT_ONCE
from support.daemon_helpers import HTTP_TIMEOUT_S, daemon_config, running_daemon, targets_in, value
from support.helpers import wait_until
from support.servers import HTTPFarm, InFlight, RawServer, delayed, never_answer, reply

RESULT_KEYS = {"target", "url", "method", "ok", "status_code", "latency_s", "elapsed_s", "attempts",
               "error_class", "detail", "error", "breaker", "checked_at", "body_bytes", "labels",
               "timings", "tls", "degraded"}
SUMMARY_KEYS = {"targets", "up", "down", "skipped", "duration_s", "p50_s", "p95_s", "max_s",
                "slo_p95_s", "slo_met", "errors", "degraded"}


@pytest.fixture
def farm():
    routes = {"/ok": reply(body=b"fine"), "/broken": reply("500 Internal Server Error")}
    with HTTPFarm(routes) as server:
        yield server


# --- /metrics ------------------------------------------------------------------------

def test_metrics_is_prometheus_text_with_every_target(farm):
    config = daemon_config([{"name": "ok", "url": farm.url("/ok")},
                             {"name": "broken", "url": farm.url("/broken")}])
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        response = running.get("/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.text
        assert value(text, "greenmon_up", target="ok") == 1
        assert value(text, "greenmon_up", target="broken") == 0
        assert value(text, "greenmon_check_errors_total", target="broken", **{"class": "http"}) >= 1
        assert value(text, "greenmon_targets") == 2
        assert value(text, "greenmon_sweeps_total") >= 1


def test_metrics_counters_grow_with_every_check(farm):
    config = daemon_config([{"name": "ok", "url": farm.url("/ok")}], interval=0.1)
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        first = value(running.metrics(), "greenmon_checks_total", target="ok")
        wait_until(lambda: value(running.metrics(), "greenmon_checks_total", target="ok") >= first + 2,
                   5, message="two more checks counted")
        assert farm.hits("/ok") >= first + 2


# --- /healthz ------------------------------------------------------------------------

def test_healthz_is_200_during_the_first_sweep_and_after_sweeps():
    with HTTPFarm({"/slow": delayed(0.6)}) as farm:
        config = daemon_config([{"name": "slow", "url": farm.url("/slow")}])
        with running_daemon(config) as running:
            wait_until(lambda: running.daemon.sweeping, 2, message="first sweep running")
            assert running.daemon.store.sweeps == 0
            assert running.get("/healthz").status_code == 200
            running.wait_sweeps(2)
            assert running.get("/healthz").status_code == 200


def test_healthz_is_503_for_a_monitor_that_never_ran(farm):
    config = daemon_config([{"name": "ok", "url": farm.url("/ok")}])
    with running_daemon(config, start=False) as idle:
        response = idle.get("/healthz")
        assert response.status_code == 503
        assert farm.hits("/ok") == 0


def test_healthz_turns_503_when_sweeps_stop(farm):
    # Allowed lateness: the 1 s interval + the 1 s longest timeout = 2 s past the next due check:
    # 200 for at least 2 s after the stop (room for a loaded machine to ask), 503 within 3 s.
    config = daemon_config([{"name": "ok", "url": farm.url("/ok")}], interval=1.0, timeout=1.0)
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        running.daemon.stop()
        running.greenlet.join(timeout=5)
        assert running.greenlet.dead
        assert running.get("/healthz").status_code == 200  # checks started moments ago
        wait_until(lambda: running.get("/healthz").status_code == 503, 10,
                   message="/healthz 503 once a due check is later than interval + timeout")


def test_healthz_is_200_while_a_check_runs_longer_than_its_interval():
    # One check: 3 attempts of a hanging target, 0.6 s each, plus backoff: about 2 s, while
    # the target falls due every 0.1 s. Those turns are skipped (overruns), and the schedule
    # itself keeps time: the allowance is interval + longest timeout = 0.7 s.
    with RawServer(never_answer) as hang:
        config = daemon_config([{"name": "hang", "url": hang.url("/")}], interval=0.1, timeout=0.6,
                                retries=2, backoff=0.1)
        with running_daemon(config) as running:
            # The third attempt starts about 1.5 s in, well past the 0.7 s allowance.
            wait_until(lambda: hang.connections >= 3, 8, message="third attempt of the first check")
            assert running.daemon.store.timing.overruns >= 5
            assert running.get("/healthz").status_code == 200


# --- /api/results ------------------------------------------------------------------------

def test_api_results_is_the_json_document(farm):
    config = daemon_config([{"name": "ok", "url": farm.url("/ok"), "labels": {"team": "identity"}},
                             {"name": "broken", "url": farm.url("/broken")}])
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        response = running.get("/api/results")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        document = response.json()
    assert set(document) == {"results", "summary"}
    results = {r["target"]: r for r in document["results"]}
    assert set(results) == {"ok", "broken"}
    for item in results.values():
        assert set(item) == RESULT_KEYS
    assert results["ok"]["ok"] is True
    assert results["ok"]["status_code"] == 200
    assert results["ok"]["body_bytes"] == 4
    assert results["ok"]["labels"] == {"team": "identity"}
    assert results["ok"]["url"] == farm.url("/ok")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", results["ok"]["checked_at"])
    assert results["broken"]["ok"] is False
    assert (results["broken"]["error_class"], results["broken"]["detail"]) == ("http", "500")
    summary = document["summary"]
    assert set(summary) == SUMMARY_KEYS
    assert (summary["targets"], summary["up"], summary["down"], summary["skipped"]) == (2, 1, 1, 0)
    assert summary["errors"] == {"timeout": 0, "connection": 0, "auth": 0, "http": 1, "content": 0}
    assert summary["slo_p95_s"] == 2.0


def test_api_results_keeps_the_latest_result_per_target(farm):
    config = daemon_config([{"name": "ok", "url": farm.url("/ok")}], interval=0.1)
    with running_daemon(config) as running:
        running.wait_sweeps(3)
        document = running.get("/api/results").json()
    assert [r["target"] for r in document["results"]] == ["ok"]
    assert document["summary"]["targets"] == 1


# --- Routing --------------------------------------------------------------------------

@pytest.fixture
def idle(farm):
    """A served monitor that never sweeps: routing does not depend on results."""
    config = daemon_config([{"name": "ok", "url": farm.url("/ok")}])
    with running_daemon(config, start=False) as server:
        yield server


@pytest.mark.parametrize("path", ["/nope", "/metrics/extra", "/api", "/index.html"])
def test_unknown_paths_are_404(idle, path):
    assert idle.get(path).status_code == 404


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/api/results", "/"])
def test_post_is_405(idle, path):
    response = requests.post(idle.url(path), data=b"x", timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 405


def test_405_names_the_allowed_methods(idle):
    response = requests.post(idle.url("/metrics"), data=b"x", timeout=HTTP_TIMEOUT_S)
    assert response.status_code == 405
    assert "GET" in response.headers.get("Allow", "")


# --- A target's checks never overlap -----------------------------------------------------

def test_a_targets_checks_never_overlap_and_skipped_turns_are_counted():
    slow = InFlight(delay=0.5)
    with HTTPFarm({"/slow": slow, "/ok": reply()}) as farm:
        config = daemon_config([{"name": "slow", "url": farm.url("/slow")},
                                 {"name": "ok", "url": farm.url("/ok")}], interval=0.1)
        with running_daemon(config) as running:
            inflight = []

            def three_checks_of_slow():
                text = running.metrics()
                inflight.append(value(text, "greenmon_inflight_checks"))
                return (value(text, "greenmon_checks_total", target="slow") or 0) >= 3
            wait_until(three_checks_of_slow, 10, interval=0.03, message="3 checks of slow")
            text = running.metrics()
            ok_checks = value(text, "greenmon_checks_total", target="ok")
    assert slow.peak == 1  # one check of the slow target at a time
    assert max(inflight) <= 2
    assert max(inflight) >= 1  # the gauge did see checks in flight
    # Every 0.5 s check of slow spans about 4 of its 0.1 s turns: those are skipped and counted.
    assert value(text, "greenmon_schedule_overruns_total") >= 6
    # The fast target is not held back by the slow one: it kept its own 0.1 s schedule.
    assert ok_checks >= 10
    assert value(text, "greenmon_schedule_lag_seconds_count") == \
        value(text, "greenmon_checks_total", target="slow") + ok_checks + value(text, "greenmon_inflight_checks")


# --- Reload -----------------------------------------------------------------------------

def test_reload_drops_a_removed_target_and_keeps_kept_breakers(farm):
    both = daemon_config([{"name": "down", "url": farm.url("/broken")},
                           {"name": "gone", "url": farm.url("/ok")}], extra=BREAKER_OPENS_AT_ONCE)
    only_down = daemon_config([{"name": "down", "url": farm.url("/broken")}], extra=BREAKER_OPENS_AT_ONCE)
    configs = [both]
    with running_daemon(both, loader=lambda: configs[-1]) as running:
        running.wait_sweeps(1)
        before = running.metrics()
        assert targets_in(before) == {"down", "gone"}
        assert value(before, "greenmon_breaker_state", target="down") == 1
        hits_before = farm.hits("/broken")
        assert hits_before == 1

        configs.append(only_down)
        assert running.daemon.reload() is True
        running.wait_sweeps(running.daemon.store.sweeps + 2)
        after = running.metrics()
    assert targets_in(after) == {"down"}
    assert value(after, "greenmon_targets") == 1
    assert value(after, "greenmon_breaker_state", target="down") == 1
    assert farm.hits("/broken") == hits_before  # the open breaker survived: not contacted again
    assert value(after, "greenmon_checks_total", target="down") == 1


def test_reload_with_an_invalid_config_keeps_the_running_one(farm):
    config = daemon_config([{"name": "a", "url": farm.url("/ok")}, {"name": "b", "url": farm.url("/ok")}])

    def broken_loader():
        raise ConfigError("greenmon.toml:3: targets[0].url: must be a string")

    with running_daemon(config, loader=broken_loader) as running:
        running.wait_sweeps(1)
        assert running.daemon.reload() is False
        swept = running.wait_sweeps(running.daemon.store.sweeps + 2)
        text = running.metrics()
        assert running.daemon.config is config
        assert swept >= 3
    assert targets_in(text) == {"a", "b"}
    assert value(text, "greenmon_up", target="a") == 1


def test_reload_without_a_loader_is_refused(farm):
    config = daemon_config([{"name": "a", "url": farm.url("/ok")}])
    with running_daemon(config, start=False) as idle:
        assert idle.daemon.reload() is False
        assert idle.daemon.config is config
