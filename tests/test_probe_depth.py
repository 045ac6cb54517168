"""Probe depth: phase timings, TLS facts, min_cert_days and expect_json (README, "Where the
time went, what the certificate says").

Real servers on 127.0.0.1: a WSGI farm (plain and TLS with a trustme CA) and
raw sockets that stall at a chosen point. Durations are asserted only where
a server makes one long on purpose (300 ms of processing), with wide bounds.
"""

from __future__ import annotations

import datetime
import json

import pytest

from greenmon.config import parse_config
from greenmon.errors import CONNECTION, CONTENT, TIMEOUT
from greenmon.store import store_for
from greenmon.schema import ConfigError
from greenmon.trace import PHASES
from support.configs import config_text
from support.daemon_helpers import value
from support.helpers import check_one, sweep_config
from support.servers import HTTPFarm, RawServer, closed_port, delayed, reply, tls_server_context
from test_metrics import scrape

WAIT_S = 0.3


def assert_adds_up(result) -> None:
    assert set(result.timings) == set(PHASES)
    assert sum(result.timings.values()) == pytest.approx(result.latency_s, abs=1e-6)


# --- Phase timings -------------------------------------------------------------------

def test_a_plain_check_has_dns_zero_for_an_ip_a_connect_no_tls_and_adds_up():
    with HTTPFarm({"/t": reply()}) as farm:
        result = check_one({"url": farm.url("/t")})
    assert result.ok, result
    assert result.timings["dns"] == 0.0     # an IP literal: nothing to resolve
    assert result.timings["connect"] > 0
    assert result.timings["tls"] == 0.0     # plain HTTP
    assert result.timings["processing"] > 0
    assert result.timings["transfer"] >= 0
    assert_adds_up(result)
    assert result.tls is None
    assert result.to_dict()["timings"] == {p: round(s, 6) for p, s in result.timings.items()}
    assert result.to_dict()["tls"] is None


def test_a_server_that_waits_300ms_shows_it_in_processing():
    with HTTPFarm({"/slow": delayed(WAIT_S)}) as farm:
        result = check_one({"url": farm.url("/slow")})
    assert result.ok, result
    assert result.timings["processing"] >= WAIT_S
    assert result.timings["processing"] > 0.8 * result.latency_s
    assert result.timings["connect"] < WAIT_S
    assert_adds_up(result)


def test_https_has_a_tls_phase_and_a_reused_connection_has_no_setup_phases(ca, ca_pem):
    with HTTPFarm({"/t": reply(body="secure")}, ssl_context=tls_server_context(ca, "127.0.0.1")) as farm:
        config = parse_config(config_text([{"name": "tls", "url": farm.url("/t"), "ca_file": ca_pem}]),
                              "<test>")
        from greenmon.engine import Engine
        engine = Engine(config)
        try:
            [first] = engine.sweep()
            [second] = engine.sweep()     # the same keep-alive connection
        finally:
            engine.close()
    assert first.ok and second.ok, (first, second)
    assert first.timings["tls"] > 0 and first.timings["connect"] > 0
    assert_adds_up(first)
    assert (second.timings["dns"], second.timings["connect"], second.timings["tls"]) == (0.0, 0.0, 0.0)
    assert second.timings["processing"] > 0
    assert_adds_up(second)
    assert second.tls == first.tls   # the facts of the session it reused


def test_a_refused_connection_reached_connect_and_nothing_after():
    result = check_one({"url": f"http://127.0.0.1:{closed_port()}/"})
    assert (result.error_class, result.detail) == (CONNECTION, "refused")
    assert result.timings["dns"] == 0.0 and result.timings["connect"] is not None
    assert result.timings["tls"] is None and result.timings["processing"] is None
    assert result.timings["transfer"] is None


def test_a_deadline_while_waiting_for_the_head_is_read_and_while_the_body_trickles_is_deadline():
    def stall_after_head(sock):
        sock.recv(65536)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        import gevent
        gevent.sleep(5)

    def no_head(sock):
        sock.recv(65536)
        import gevent
        gevent.sleep(5)

    with RawServer(no_head) as silent, RawServer(stall_after_head) as trickle:
        waiting = check_one({"url": silent.url("/")}, timeout=0.4)
        cut = check_one({"url": trickle.url("/")}, timeout=0.4)
    assert (waiting.error_class, waiting.detail) == (TIMEOUT, "read")
    assert waiting.timings["processing"] >= 0.3 and waiting.timings["transfer"] is None
    assert (cut.error_class, cut.detail) == (TIMEOUT, "deadline")
    assert cut.timings["transfer"] >= 0.3


def test_phases_are_exported_for_the_last_contacted_check():
    with HTTPFarm({"/t": reply()}) as farm:
        config = parse_config(config_text([{"name": "t", "url": farm.url("/t")}]), "<test>")
        from greenmon.engine import Engine
        store = store_for(config, config.enabled_targets)
        engine = Engine(config, listeners=[store.observe])
        try:
            [result] = engine.sweep()
        finally:
            engine.close()
    found = scrape(store)
    for phase in PHASES:
        assert value(found, "greenmon_check_phase_seconds", target="t", phase=phase) == \
            pytest.approx(result.timings[phase])


# --- TLS facts ----------------------------------------------------------------------

NOT_AFTER = datetime.datetime(2031, 5, 17, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("verify", [True, False], ids=["verified", "verify_tls-false"])
def test_tls_facts_of_a_certificate_with_a_known_not_after(ca, ca_pem, verify):
    context = tls_server_context(ca, "127.0.0.1", not_after=NOT_AFTER)
    with HTTPFarm({"/t": reply()}, ssl_context=context) as farm:
        keys = {"ca_file": ca_pem} if verify else {"verify_tls": False}
        config = parse_config(config_text([{"name": "tls", "url": farm.url("/t"), **keys}]), "<test>")
        store = store_for(config, config.enabled_targets)
        [result] = sweep_config(config, listeners=[store.observe])
    assert result.ok, result
    assert result.tls.cert_not_after == NOT_AFTER.timestamp()
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")
    assert "127.0.0.1" in result.tls.cert_subject or result.tls.cert_subject  # trustme's subject
    assert result.tls.cert_issuer
    assert result.to_dict()["tls"]["cert_not_after"] == "2031-05-17T12:00:00.000Z"
    found = scrape(store)
    assert value(found, "greenmon_tls_cert_expiry_timestamp_seconds", target="tls") == NOT_AFTER.timestamp()
    assert value(found, "greenmon_tls_version_info", target="tls", version=result.tls.version) == 1


@pytest.mark.parametrize("days_left, min_days, ok", [(3, 14, False), (30, 14, True), (3, 0, True)])
def test_min_cert_days(ca, ca_pem, days_left, min_days, ok):
    not_after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days_left)
    context = tls_server_context(ca, "127.0.0.1", not_after=not_after)
    with HTTPFarm({"/t": reply()}, ssl_context=context) as farm:
        result = check_one({"url": farm.url("/t"), "ca_file": ca_pem, "min_cert_days": min_days},
                           retries=2)
        hits = farm.hits("/t")
    assert result.ok is ok, result
    if not ok:
        assert (result.error_class, result.detail) == (CONNECTION, "cert_expiring")
        assert "expires in 2." in result.error or "expires in 3." in result.error
        assert result.attempts == 1   # not retried
        assert hits == 1


def test_min_cert_days_on_the_monitor_applies_to_every_target(ca, ca_pem):
    not_after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=5)
    context = tls_server_context(ca, "127.0.0.1", not_after=not_after)
    with HTTPFarm({"/t": reply()}, ssl_context=context) as farm:
        result = check_one({"url": farm.url("/t"), "ca_file": ca_pem}, monitor={"min_cert_days": 7})
    assert (result.error_class, result.detail) == (CONNECTION, "cert_expiring")


# --- expect_json ----------------------------------------------------------------------

DOC = {"status": "UP", "items": [{"state": "ok", "n": 3}, {"state": "degraded"}], "ready": True,
       "ratio": 1.0, "secret": "s3cr3t-value"}


@pytest.mark.parametrize("expected, problem", [
    ({"status": "UP"}, None),
    ({"items.0.state": "ok", "items.0.n": 3, "ready": True, "ratio": 1}, None),
    ({"items": {"1": {"state": "degraded"}}}, None),              # nested TOML tables are paths
    ({"status": "DOWN"}, 'status: expected "DOWN", got a different string'),
    ({"items.5.state": "ok"}, 'items.5.state: missing (expected "ok")'),
    ({"ready": 1}, "ready: expected 1, got a boolean"),
    ({"items.0.n": "3"}, 'items.0.n: expected "3", got a number'),
    ({"secret": "other"}, 'secret: expected "other", got a different string'),
])
def test_expect_json(expected, problem):
    with HTTPFarm({"/j": reply(body=json.dumps(DOC))}) as farm:
        result = check_one({"url": farm.url("/j"), "expect_json": expected})
    if problem is None:
        assert result.ok, result
    else:
        assert (result.error_class, result.detail) == (CONTENT, "expect_json")
        assert result.error == f"expect_json: {problem}"
        assert "s3cr3t" not in result.error   # the message never quotes the body


def test_expect_json_on_a_body_that_is_not_json():
    with HTTPFarm({"/html": reply(body="<html>ok</html>")}) as farm:
        result = check_one({"url": farm.url("/html"), "expect_json": {"status": "UP"}})
    assert (result.error_class, result.detail, result.error) == (CONTENT, "expect_json",
                                                                 "expect_json: body is not JSON")


@pytest.mark.parametrize("toml, problem", [
    ('expect_json = "UP"', "targets[0].expect_json: must be a table of dotted paths to values, got a string"),
    ('expect_json = {}', "targets[0].expect_json: must hold at least one path"),
    ('expect_json = { "" = "UP" }', "targets[0].expect_json: path '' has an empty part"),
    ('expect_json = { "a..b" = 1 }', "targets[0].expect_json: path 'a..b' has an empty part"),
    ('expect_json = { status = ["UP"] }', "targets[0].expect_json: status: the expected value must be a "
                                           "string, a number or a boolean, got an array"),
    ('min_cert_days = -1', "targets[0].min_cert_days: must be >= 0, got -1"),
])
def test_config_errors_name_the_key_and_line(toml, problem):
    from greenmon.config import parse_config
    text = f'[[targets]]\nname = "j"\nurl = "http://127.0.0.1:9/"\n{toml}\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert str(raised.value).startswith(f"greenmon.toml:4: {problem}"), str(raised.value)
