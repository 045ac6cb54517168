"""Objectives people can see (README, same title): the SLI that tells the truth during outages,
the kept history and /api/history, and the config's bad values (the status page that shows
them: test_statuspage.py).

Real servers on 127.0.0.1 for everything that speaks HTTP; hand-built results
where a test needs exact outcomes.
"""

from __future__ import annotations


import pytest

from greenmon.config import parse_config
from greenmon.history import History
from greenmon.result import MonitorResult
from greenmon.schema import ConfigError
from support.configs import config_text
from support.daemon_helpers import running_daemon, value
from support.helpers import wait_until
from support.servers import HTTPFarm, closed_port, reply
from test_metrics import result, scrape, store_with

OPENS_AT_ONCE = "[breaker]\nfailure_threshold = 1\nrecovery_timeout = 300\n"


# --- The SLI ---------------------------------------------------------------------------

def test_the_sli_counts_every_scheduled_check_a_skipped_one_as_bad():
    store = store_with("a")
    store.observe(result("a"))
    store.observe(result("a", ok=False, error_class="http", status=503, breaker="open"))
    for _ in range(3):   # the breaker is open: not contacted, not a check, still a bad turn
        store.observe(result("a", ok=False, error_class="http", attempts=0, breaker="open"))
    found = scrape(store)
    assert value(found, "greenmon_slo_checks_total", target="a", result="good") == 1
    assert value(found, "greenmon_slo_checks_total", target="a", result="bad") == 4
    assert value(found, "greenmon_checks_total", target="a") == 2   # what contacted the target


def test_the_sli_keeps_counting_while_a_real_breaker_is_open():
    config = parse_config(config_text([{"name": "down", "url": f"http://127.0.0.1:{closed_port()}/"}],
                                      extra=OPENS_AT_ONCE), "<test>").replace("monitor", interval=0.1)
    with running_daemon(config) as running:
        wait_until(lambda: running.daemon.store.series["down"].bad >= 5, 5,
                   message="five bad turns of the down target")
        text = running.metrics()
    assert value(text, "greenmon_breaker_state", target="down") == 1
    assert value(text, "greenmon_checks_total", target="down") == 1          # contacted once
    assert value(text, "greenmon_slo_checks_total", target="down", result="bad") >= 5
    assert value(text, "greenmon_slo_checks_total", target="down", result="good") == 0


def test_the_objective_is_exported_per_target():
    config = parse_config('[monitor]\nslo_availability = 0.99\n\n'
                          '[[targets]]\nname = "a"\nurl = "http://127.0.0.1:9/"\n\n'
                          '[[targets]]\nname = "b"\nurl = "http://127.0.0.1:9/"\nslo_availability = 0.9995\n',
                          "greenmon.toml")
    from greenmon.store import store_for
    found = scrape(store_for(config, config.enabled_targets))
    assert value(found, "greenmon_slo_objective", target="a") == 0.99
    assert value(found, "greenmon_slo_objective", target="b") == 0.9995


def test_the_error_budget_window_is_exported_per_target():
    """slo_window_days is what scales the burn-rate alerts (deploy/prometheus/slo.yml and its
    promtool tests): the monitor's for a target without its own."""
    config = parse_config('[monitor]\nslo_window_days = 28\n\n'
                          '[[targets]]\nname = "a"\nurl = "http://127.0.0.1:9/"\n\n'
                          '[[targets]]\nname = "b"\nurl = "http://127.0.0.1:9/"\nslo_window_days = 7\n',
                          "greenmon.toml")
    from greenmon.store import store_for
    found = scrape(store_for(config, config.enabled_targets))
    assert value(found, "greenmon_slo_window_seconds", target="a") == 28 * 86400
    assert value(found, "greenmon_slo_window_seconds", target="b") == 7 * 86400


# --- History -----------------------------------------------------------------------------

def outcome(i: int, ok: bool = True, skipped: bool = False) -> MonitorResult:
    return MonitorResult(
        target="t", url="u", method="GET", ok=ok, status_code=None if skipped else (200 if ok else 503),
        latency_s=None if skipped else 0.01 * i, elapsed_s=0.0, attempts=0 if skipped else 1,
        error_class=None if ok else "http", detail=None if ok else "503", error=None,
        breaker="closed", checked_at=1_800_000_000.0 + i, body_bytes=None)


def test_history_keeps_the_last_n_outcomes_oldest_first():
    history = History(5)
    for i in range(12):
        history.add(outcome(i, ok=i % 3 != 0, skipped=i == 9))
    kept = history.outcomes()
    assert [item["checked_at"] for item in kept] == [
        f"2027-01-15T08:00:{7 + i:02d}.000Z" for i in range(5)]
    assert [item["ok"] for item in kept] == [True, True, False, True, True]
    assert kept[2] == {"checked_at": "2027-01-15T08:00:09.000Z", "ok": False, "latency_s": None,
                       "error_class": "http", "detail": "503", "degraded": False}
    assert kept[0]["latency_s"] == pytest.approx(0.07, abs=1e-6)
    assert history.availability() == 0.8
    assert len(history.latencies()) == 4   # the skipped one has none


def test_history_memory_per_target_is_bounded():
    import sys
    history = History(60)
    for i in range(10_000):
        history.add(outcome(i, ok=i % 7 != 0))
    size = (sys.getsizeof(history.started) + sys.getsizeof(history.latency) + sys.getsizeof(history.code)
            + sys.getsizeof(history.detail))
    assert len(history) == 60
    assert size < 2_000   # bytes, for 60 outcomes (a detail string is shared, not counted)


def test_history_keeps_a_detail_only_where_an_outcome_has_one():
    """A healthy target's ring holds no detail at all; a failure's detail leaves the ring with
    the failure (overwritten by later outcomes), and a resize keeps it in its place."""
    history = History(4)
    for i in range(4):
        history.add(outcome(i))
    assert history.detail is None
    history.add(outcome(4, ok=False))
    assert [item["detail"] for item in history.outcomes()] == [None, None, None, "503"]
    history.resize(2)
    assert [item["detail"] for item in history.outcomes()] == [None, "503"]
    history.add(outcome(5))
    history.add(outcome(6))
    assert [item["detail"] for item in history.outcomes()] == [None, None] and not history.detail


def test_history_shrinks_on_a_reload_that_lowers_it():
    history = History(10)
    for i in range(10):
        history.add(outcome(i))
    history.resize(3)
    assert [item["latency_s"] for item in history.outcomes()] == pytest.approx([0.07, 0.08, 0.09])
    history.add(outcome(10))
    assert [item["latency_s"] for item in history.outcomes()] == pytest.approx([0.08, 0.09, 0.10])


# --- /api/history ---------------------------------------------------------------------------

def test_api_history_serves_a_targets_outcomes_and_refuses_the_rest():
    with HTTPFarm({"/ok": reply(), "/bad": reply("500 Internal Server Error")}) as farm:
        config = parse_config(config_text([{"name": "ok", "url": farm.url("/ok")},
                                           {"name": "bad", "url": farm.url("/bad")}]),
                              "<test>").replace("monitor", interval=0.1)
        with running_daemon(config) as running:
            wait_until(lambda: len(running.daemon.store.series["bad"].history) >= 3, 5,
                       message="three outcomes of bad")
            good = running.get("/api/history?target=ok")
            bad = running.get("/api/history", params={"target": "bad"})
            missing = running.get("/api/history")
            unknown = running.get("/api/history?target=nope")
    assert good.status_code == 200 and good.headers["Content-Type"].startswith("application/json")
    assert all(item["ok"] and item["latency_s"] > 0 for item in good.json())
    items = bad.json()
    assert len(items) >= 3
    assert {(item["ok"], item["error_class"], item["detail"]) for item in items} == {(False, "http", "500")}
    assert items == sorted(items, key=lambda item: item["checked_at"])
    assert (missing.status_code, unknown.status_code) == (400, 404)
    assert "Traceback" not in missing.text + unknown.text


# --- Bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("toml, problem", [
    ("[monitor]\nslo_availability = 1.0", "monitor.slo_availability: must be between 0 and 1 (exclusive), got 1"),
    ("[monitor]\nslo_availability = 0", "monitor.slo_availability: must be between 0 and 1 (exclusive), got 0"),
    ("[monitor]\nslo_window_days = 0", "monitor.slo_window_days: must be > 0, got 0"),
    ("[monitor]\nhistory = 0", "monitor.history: must be >= 1, got 0"),
])
def test_bad_objectives_name_the_key_and_line(toml, problem):
    text = f'{toml}\n\n[[targets]]\nurl = "http://127.0.0.1:9/"\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert str(raised.value) == f"greenmon.toml:2: {problem}"


def test_a_targets_objective_is_checked_too():
    text = '[[targets]]\nurl = "http://127.0.0.1:9/"\nslo_availability = 1.5\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert str(raised.value).startswith("greenmon.toml:3: targets[0].slo_availability: must be between 0 and 1")
