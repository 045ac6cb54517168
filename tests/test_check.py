"""Retries, backoff, expected statuses, the per-target deadline and the body cap of one check (greenmon.check).

The server counts what the prober really sent: HTTPFarm.hits for requests that
reached HTTP, RawServer.connections for attempts that never got that far.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from greenmon import check
from greenmon.config import load_config, parse_config
from greenmon.engine import Engine
from greenmon.errors import CONNECTION, CONTENT, HTTP, TIMEOUT
from greenmon.judges import JUDGES, Expectations
from greenmon.settings import MonitorSettings
from greenmon.targets import TARGET_CHECKS, StatusMatcher, Target
from support.configs import config_text
from support.helpers import check_one, sweep_config
from support.servers import (HTTPFarm, RawServer, closed_port, never_answer, redirect, reply,
                             reset_after_head, sequence, streamed, tls_handshake, tls_server_context)

FAST_BACKOFF = 0.01


# --- Which classes are retried -------------------------------------------------

STATUS_RETRIES = [
    # (status line, retried?, class)
    ("503 Service Unavailable", True, HTTP),
    ("429 Too Many Requests", True, HTTP),
    ("502 Bad Gateway", True, HTTP),
    ("504 Gateway Timeout", True, HTTP),
    ("500 Internal Server Error", False, HTTP),
    ("404 Not Found", False, HTTP),
    ("401 Unauthorized", False, "auth"),
    ("403 Forbidden", False, "auth"),
]


@pytest.mark.parametrize("status, retried, error_class", STATUS_RETRIES,
                         ids=[s.split()[0] for s, _, _ in STATUS_RETRIES])
def test_only_retryable_statuses_are_retried(status, retried, error_class):
    retries = 3
    with HTTPFarm({"/t": reply(status, "nope")}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=retries, backoff=FAST_BACKOFF)
        hits = farm.hits("/t")
    expected = retries + 1 if retried else 1
    assert hits == expected
    assert result.attempts == expected
    assert (result.ok, result.error_class, result.detail) == (False, error_class, status.split()[0])
    assert result.retried_classes == (error_class,) * (expected - 1)


@pytest.mark.parametrize("target_keys, detail", [
    ({"expect_body": "healthy"}, "expect_body"),
    ({"reject_body": "sick"}, "reject_body"),
])
def test_content_failures_are_not_retried(target_keys, detail):
    with HTTPFarm({"/t": reply(body="sick")}) as farm:
        result = check_one({"url": farm.url("/t"), **target_keys}, retries=3, backoff=FAST_BACKOFF)
        hits = farm.hits("/t")
    assert (result.error_class, result.detail) == (CONTENT, detail)
    assert hits == 1
    assert result.attempts == 1


@pytest.mark.parametrize("body, ok", [
    ('{"version": 3, "status": "ok"}', True),        # anywhere in the body, not only at its start
    ('{"status":\n  "ok"}', True),
    ('{"status": "degraded"}', False),
])
def test_expect_body_is_searched_in_the_whole_body(body, ok):
    # The README's example pattern.
    with HTTPFarm({"/t": reply(body=body)}) as farm:
        result = check_one({"url": farm.url("/t"), "expect_body": r'"status":\s*"ok"'})
    assert (result.ok, result.error_class, result.detail) == (
        (True, None, None) if ok else (False, CONTENT, "expect_body")), result


def test_body_too_large_is_not_retried():
    with HTTPFarm({"/t": reply(body=b"x" * 5000)}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=3, backoff=FAST_BACKOFF,
                           monitor={"max_body_bytes": 1000})
        hits = farm.hits("/t")
    assert (result.error_class, result.detail, hits) == (CONTENT, "body_too_large", 1)


def test_503_with_a_large_body_is_still_retried():
    with HTTPFarm({"/t": reply("503 Service Unavailable", b"m" * 5000)}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=2, backoff=FAST_BACKOFF,
                           monitor={"max_body_bytes": 1000})
        hits = farm.hits("/t")
    assert hits == 3
    assert (result.error_class, result.detail, result.attempts) == (HTTP, "503", 3)


def test_redirect_loop_is_not_retried():
    with HTTPFarm({"/t": redirect("/t")}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=3, backoff=FAST_BACKOFF)
        hits = farm.hits("/t")
    assert (result.error_class, result.detail) == (CONTENT, "redirects")
    assert hits == 11  # one check: the first request and 10 redirects, never a second round
    assert result.attempts == 1


def test_tls_failures_are_not_retried():
    ca = trustme.CA()  # not trusted by the prober
    with RawServer(tls_handshake(tls_server_context(ca, "127.0.0.1"))) as server:
        result = check_one({"url": f"https://127.0.0.1:{server.port}/t"}, retries=3,
                           backoff=FAST_BACKOFF)
        connections = server.connections
    assert (result.error_class, result.detail) == (CONNECTION, "tls")
    assert connections == 1
    assert result.attempts == 1


def test_refused_is_retried():
    result = check_one({"url": f"http://127.0.0.1:{closed_port()}/t"}, retries=3, backoff=FAST_BACKOFF)
    assert (result.error_class, result.detail) == (CONNECTION, "refused")
    assert result.attempts == 4
    assert result.retried_classes == (CONNECTION,) * 3


def test_reset_is_retried():
    with RawServer(reset_after_head) as server:
        result = check_one({"url": server.url("/t")}, retries=2, backoff=FAST_BACKOFF)
        connections = server.connections
    assert (result.error_class, result.detail) == (CONNECTION, "reset")
    assert connections == 3
    assert result.attempts == 3


def test_timeouts_are_retried():
    with RawServer(never_answer) as server:
        result = check_one({"url": server.url("/t")}, retries=1, backoff=FAST_BACKOFF, timeout=0.3)
        connections = server.connections
    assert (result.error_class, result.detail) == (TIMEOUT, "read")
    assert connections == 2
    assert result.attempts == 2
    assert result.elapsed_s >= 2 * 0.9 * 0.3  # two full deadlines
    # latency is the last attempt only: the first one's deadline is not in it
    assert 0.9 * 0.3 <= result.latency_s <= result.elapsed_s - 0.9 * 0.3


def test_retries_zero_means_one_attempt():
    with HTTPFarm({"/t": reply("503 Service Unavailable")}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=0)
        hits = farm.hits("/t")
    assert (hits, result.attempts, result.retried_classes) == (1, 1, ())


def test_flaky_endpoint_recovers_on_retry():
    with HTTPFarm({"/t": sequence(reply("503 Service Unavailable"), reply(body="fine"))}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=3, backoff=FAST_BACKOFF)
        hits = farm.hits("/t")
    assert result.ok, result
    assert (result.status_code, result.attempts, hits) == (200, 2, 2)
    assert result.retried_classes == ("http",)
    assert (result.error_class, result.detail, result.error) == (None, None, None)
    assert result.elapsed_s >= result.latency_s


def test_a_retry_can_end_in_a_different_failure_class():
    # 503 (retried) then 500 (not retried): the last attempt decides the result.
    handler = sequence(reply("503 Service Unavailable"), reply("500 Internal Server Error"))
    with HTTPFarm({"/t": handler}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=3, backoff=FAST_BACKOFF)
        hits = farm.hits("/t")
    assert (result.error_class, result.detail, result.status_code) == (HTTP, "500", 500)
    assert hits == 2
    assert result.retried_classes == ("http",)


# --- Backoff delays ----------------------------------------------------------------
#
# Order and lower bounds, not tight durations (docs/testing.md): a delay is never shorter
# than configured (a sleep cannot end early), the delays grow, and the upper bounds are
# several times the delay, far below what a wrong policy would wait (no cap, no jitter).

def _gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:])]


def test_backoff_delays_double():
    with HTTPFarm({"/t": reply("503 Service Unavailable")}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=3, backoff=0.2)
        gaps = _gaps(farm.hit_times("/t"))
    assert result.attempts == 4
    assert len(gaps) == 3
    for gap, nominal in zip(gaps, (0.2, 0.4, 0.8)):
        assert 0.9 * nominal <= gap < 3 * nominal, gaps
    assert gaps[0] < gaps[2], gaps      # 0.2 s, then 0.8 s: they grow
    assert result.elapsed_s >= 0.9 * 1.4


def test_max_backoff_caps_the_delay():
    # Uncapped the delays would be 0.2, 0.4, 0.8, 1.6 s.
    with HTTPFarm({"/t": reply("503 Service Unavailable")}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=4, backoff=0.2, extra="max_backoff = 0.3\n")
        gaps = _gaps(farm.hit_times("/t"))
    assert result.attempts == 5
    for gap, nominal in zip(gaps, (0.2, 0.3, 0.3, 0.3)):
        assert 0.9 * nominal <= gap < 2.5 * nominal, gaps


def test_jitter_keeps_delays_between_zero_and_the_nominal_delay():
    state = random.getstate()
    random.seed(20261127)  # backoff's full jitter draws from the random module
    try:
        with HTTPFarm({"/t": reply("503 Service Unavailable")}) as farm:
            result = check_one({"url": farm.url("/t")}, retries=4, backoff=0.1, extra="jitter = true\n")
            gaps = _gaps(farm.hit_times("/t"))
    finally:
        random.setstate(state)
    nominal = (0.1, 0.2, 0.4, 0.8)
    assert result.attempts == 5
    for gap, upper in zip(gaps, nominal):
        assert 0 <= gap < upper + 0.25, gaps   # the draw is at most the delay; the rest is the machine
    # Jittered, not the plain exponential sequence: some delay is well under its nominal value.
    assert any(gap < 0.75 * upper for gap, upper in zip(gaps, nominal)), gaps


def test_no_backoff_after_a_non_retryable_failure():
    with HTTPFarm({"/t": reply("500 Internal Server Error")}) as farm:
        result = check_one({"url": farm.url("/t")}, retries=3, backoff=2.0)
    assert result.attempts == 1
    assert result.elapsed_s < 2.0  # no 2 s sleep


# --- expect_status ----------------------------------------------------------------

@pytest.mark.parametrize("status, expect_status, ok", [
    ("503 Service Unavailable", [503], True),
    ("503 Service Unavailable", ["5xx"], True),
    ("503 Service Unavailable", [200, 204], False),
    ("204 No Content", ["2xx"], True),
    ("200 OK", [204], False),
    ("404 Not Found", [404, "2xx"], True),
])
def test_expect_status(status, expect_status, ok):
    with HTTPFarm({"/t": reply(status, "")}) as farm:
        result = check_one({"url": farm.url("/t"), "expect_status": expect_status},
                           retries=3, backoff=FAST_BACKOFF)
        hits = farm.hits("/t")
    code = int(status.split()[0])
    assert result.ok is ok, result
    assert result.status_code == code
    if ok:
        assert (result.error_class, hits) == (None, 1)  # an expected 503 is not retried either
    else:
        assert (result.error_class, result.detail) == (HTTP, str(code))


def test_expected_redirect_class_without_following():
    with HTTPFarm({"/old": redirect("/new"), "/new": reply(body="moved here")}) as farm:
        result = check_one({"url": farm.url("/old"), "expect_status": ["3xx"]},
                           monitor={"follow_redirects": False})
        hits = (farm.hits("/old"), farm.hits("/new"))
    assert result.ok, result
    assert result.status_code == 302
    assert hits == (1, 0)


def test_redirect_followed_by_default_so_3xx_is_not_seen():
    with HTTPFarm({"/old": redirect("/new"), "/new": reply(body="moved here")}) as farm:
        result = check_one({"url": farm.url("/old"), "expect_status": ["3xx"]})
        hits = (farm.hits("/old"), farm.hits("/new"))
    assert (result.ok, result.status_code, result.error_class, result.detail) == (False, 200, HTTP, "200")
    assert hits == (1, 1)


def test_unexpected_redirect_is_an_http_failure_when_not_following():
    with HTTPFarm({"/old": redirect("/new")}) as farm:
        result = check_one({"url": farm.url("/old")}, monitor={"follow_redirects": False})
    assert (result.error_class, result.detail, result.status_code) == (HTTP, "302", 302)


# --- Per-target deadline and body cap -----------------------------------------------
# (The total deadline against a trickling body: test_errors.py, one attempt, and
# test_hostile.py, each attempt of a retried check.)

def test_per_target_timeout_overrides_monitor_timeout():
    with RawServer(never_answer) as server:
        result = check_one({"url": server.url("/t"), "timeout": 0.3}, timeout=5.0)
    assert (result.error_class, result.detail) == (TIMEOUT, "read")
    assert 0.9 * 0.3 <= result.latency_s < 2.0   # the target's 0.3 s, far from the monitor's 5 s


def test_body_cap_stops_reading_a_streamed_body():
    produced: list[int] = []
    # 200 chunks of 1 KiB, one every 20 ms: 4 s to read to the end.
    handler = streamed(b"z" * 1024, 200, interval=0.02, produced=produced)
    with HTTPFarm({"/t": handler}) as farm:
        started = time.monotonic()
        result = check_one({"url": farm.url("/t")}, monitor={"max_body_bytes": 4096}, timeout=5.0)
        elapsed = time.monotonic() - started
        time.sleep(0.2)  # let the server notice the closed connection
        produced_after = len(produced)
    assert (result.error_class, result.detail, result.status_code) == (CONTENT, "body_too_large", 200)
    assert elapsed < 2.5   # the cap after about 5 chunks (0.1 s), not the 4 s of the whole body
    assert produced_after < 50  # the server was stopped long before the 200th chunk


# --- A check is a plan of requests ------------------------------------------------------------
# Today every target's plan is one step; a flow (several requests) or a check per address is a
# plan of several, run by the same code. These give a check a plan of two steps, built from two
# targets' own, and watch what reaches the server.

def two_step_engine(farm, first: str, second: str, **config_kwargs) -> tuple[Engine, Target]:
    """An engine whose checker plans, for the target "flow", its own step then the step of the
    (disabled) target "second"."""
    config = parse_config(config_text([{"name": "flow", "url": farm.url(first)},
                                       {"name": "second", "url": farm.url(second), "enabled": False}],
                                      **config_kwargs), "<test>")
    engine = Engine(config)
    steps = sum((check.plan(target, config.monitor, engine.transport) for target in config.targets), ())
    engine.checker.plan = lambda target: steps
    return engine, config.targets[0]


def checked(engine: Engine, target: Target):
    try:
        return engine.check(target)
    finally:
        engine.close()


def test_a_plan_of_two_steps_sends_both_in_order_and_passes_when_both_pass():
    with HTTPFarm({"/login": reply(body="token"), "/data": reply(body="rows")}) as farm:
        result = checked(*two_step_engine(farm, "/login", "/data"))
        times = farm.hit_times("/login") + farm.hit_times("/data")
    assert result.ok and result.attempts == 2, result
    assert len(times) == 2 and times[0] <= times[1]
    assert len(result.attempt_latencies) == 2


def test_the_first_step_that_fails_ends_the_check_after_its_own_retries():
    with HTTPFarm({"/login": reply("503 Service Unavailable"), "/data": reply()}) as farm:
        result = checked(*two_step_engine(farm, "/login", "/data", retries=2, backoff=FAST_BACKOFF))
        hits = (farm.hits("/login"), farm.hits("/data"))
    assert hits == (3, 0)   # retried as any check is; the step after it is never sent
    assert (result.ok, result.error_class, result.detail, result.attempts) == (False, HTTP, "503", 3)


def test_each_step_is_judged_by_its_own_expectations():
    with HTTPFarm({"/login": reply(body="token"), "/data": reply(body="empty")}) as farm:
        engine, target = two_step_engine(farm, "/login", "/data")
        login, data = engine.checker.plan(target)
        data = replace(data, expect=Expectations(StatusMatcher(), body=re.compile("rows")))
        engine.checker.plan = lambda target: (login, data)
        result = checked(engine, target)
        hits = (farm.hits("/login"), farm.hits("/data"))
    assert hits == (1, 1)
    assert (result.ok, result.error_class, result.detail, result.attempts) == (False, CONTENT,
                                                                               "expect_body", 2)


def test_every_judge_answers_to_a_documented_key():
    """A judge is one row: the key it enforces is a target key or a [monitor] key, and the
    configuration page documents it."""
    documented = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(
        encoding="utf-8")
    for key, _ in JUDGES:
        assert key in TARGET_CHECKS or key in MonitorSettings.__dataclass_fields__, key
        assert f"`{key}`" in documented, key


# --- Response headers and request bodies from files -------------------------------------------

SESSION = "sess-" + "7f3a9c"   # a value that must never be shown


@pytest.mark.parametrize("rules, ok, detail, named", [
    ({"expect_header": {"content-type": "^application/json"}}, True, None, None),
    ({"expect_header": {"X-Session": ""}}, True, None, None),
    ({"expect_header": {"Content-Type": "^text/html"}}, False, "expect_header", "Content-Type"),
    ({"expect_header": {"X-Missing": ""}}, False, "expect_header", "X-Missing"),
    ({"reject_header": {"X-Session": "^sess-"}}, False, "reject_header", "X-Session"),
    ({"reject_header": {"X-Missing": ""}}, True, None, None),
    ({"reject_header": {"Content-Type": "xml"}}, True, None, None),
], ids=["present-and-matching", "present", "mismatch", "missing", "rejected", "rejected-absent",
        "rejected-not-matching"])
def test_response_headers_are_judged_by_name_never_showing_a_value(rules, ok, detail, named):
    headers = [("Content-Type", "application/json"), ("X-Session", SESSION)]
    with HTTPFarm({"/t": reply(body='{"a": 1}', headers=headers)}) as farm:
        result = check_one({"url": farm.url("/t"), **rules}, retries=2, backoff=FAST_BACKOFF)
        hits = farm.hits("/t")
    assert result.ok is ok, result
    assert hits == 1   # a header that does not match is content: not retried
    if not ok:
        assert (result.error_class, result.detail) == (CONTENT, detail)
        assert named in result.error and SESSION not in result.error and "application" not in result.error


def test_headers_are_judged_after_the_status_and_before_the_body():
    with HTTPFarm({"/t": reply("503 Service Unavailable", body="down", headers=[("X-Mode", "maint")])}) as farm:
        status_first = check_one({"url": farm.url("/t"), "expect_header": {"X-Mode": "^live$"}})
    with HTTPFarm({"/t": reply(body="down", headers=[("X-Mode", "maint")])}) as farm:
        header_first = check_one({"url": farm.url("/t"), "expect_header": {"X-Mode": "^live$"},
                                  "expect_body": "up"})
    assert (status_first.error_class, status_first.detail) == (HTTP, "503")
    assert (header_first.error_class, header_first.detail) == (CONTENT, "expect_header")


def body_digest(environ):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    return "200 OK", [("Content-Type", "text/plain")], hashlib.sha256(body).hexdigest().encode()


def test_body_file_is_sent_as_written(tmp_path):
    payload = '{"user": "probe", "note": "h\u00e9llo"}\n'
    (tmp_path / "login.json").write_text(payload, encoding="utf-8")
    digest = hashlib.sha256(payload.encode()).hexdigest()
    with HTTPFarm({"/login": body_digest}) as farm:
        text = config_text([{"name": "login", "url": farm.url("/login"), "method": "POST",
                             "body_file": "login.json", "expect_body": f"^{digest}$"}])
        (tmp_path / "greenmon.toml").write_text(text, encoding="utf-8")
        config = load_config(tmp_path / "greenmon.toml")   # body_file: relative to the config
        (result,) = sweep_config(config)
    assert result.ok, result.error
    assert payload not in repr(result) and "h\u00e9llo" not in str(result.to_dict())
