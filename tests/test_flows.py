"""Flows (SPEC 14): a target of several steps against a real login server.

The server issues a fresh token, session and cookie on every login, and its
API answers only a request that carries all three from the same login. It
records what it received, so a test sees what reached it, not what greenmon
says it sent.
"""

from __future__ import annotations

import json
import logging
import secrets as random_secrets
import time

import pytest
from prometheus_client.exposition import generate_latest

from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.metrics import build_registry
from greenmon.schema import ConfigError
from greenmon.statuspage import row
from greenmon.store import store_for

from support.configs import config_text
from support.daemon_helpers import daemon_config, running_daemon
from support.helpers import run_cli, sweep_config
from support.servers import HTTPFarm, redirect, reply, sequence

FAST_BACKOFF = 0.01


class LoginServer:
    """/login issues (token, session, cookie); /items answers a request holding one login's three."""

    def __init__(self):
        self.core = random_secrets.token_hex(5)
        self.logins = 0
        self.sessions: dict[str, tuple[str, str]] = {}   # session -> (token, cookie)
        self.login_cookies: list[str] = []               # the Cookie header each login got
        self.refuse = False

    def login(self, environ):
        self.login_cookies.append(environ.get("HTTP_COOKIE", ""))
        if self.refuse:
            return "401 Unauthorized", [], b"no"
        self.logins += 1
        token, session, cookie = (f"tok-{self.core}-{self.logins}", f"ses-{self.core}-{self.logins}",
                                  f"ck-{self.core}-{self.logins}")
        self.sessions[session] = (token, cookie)
        return "200 OK", [("Content-Type", "application/json"), ("X-Session", session),
                          ("Set-Cookie", f"sid={cookie}; Path=/")], \
            json.dumps({"access_token": token, "build": "build=42"}).encode()

    def items(self, environ):
        session = environ.get("QUERY_STRING", "").removeprefix("session=")
        token, cookie = self.sessions.get(session, (None, None))
        if token is None or environ.get("HTTP_AUTHORIZATION") != f"Bearer {token}":
            return "401 Unauthorized", [], b"who are you"
        if f"sid={cookie}" not in environ.get("HTTP_COOKIE", ""):
            return "403 Forbidden", [], b"no session cookie"
        return "200 OK", [("Content-Type", "application/json")], json.dumps({"items": [{"id": 7}]}).encode()

    def secrets(self) -> list[str]:
        return [self.core]


@pytest.fixture
def server():
    login = LoginServer()
    with HTTPFarm({"/login": login.login, "/items": login.items}) as farm:
        farm.login = login
        yield farm


def flow(farm, list_step: dict | None = None, login_step: dict | None = None, **target) -> dict:
    return {"name": "shop", **target, "steps": [
        {"name": "login", "url": farm.url("/login"), "method": "POST",
         "extract": {"token": "json:access_token", "session": "header:X-Session"}, **(login_step or {})},
        {"name": "list", "url": farm.url("/items") + "?session={{session}}",
         "headers": {"Authorization": "Bearer {{token}}"}, **(list_step or {})}]}


def checked(targets: list[dict], sweeps: int = 1, **kwargs) -> list:
    config = parse_config(config_text(targets, **kwargs), "<test>")
    results = []
    for _ in range(sweeps):
        results += sweep_config(config)
    return results


def test_a_flow_logs_in_and_calls_with_the_token_session_and_cookie(server):
    (result,) = checked([flow(server, {"expect_json": {"items.0.id": 7}})])
    assert result.ok, result.error
    assert [(s.name, s.ok, s.status_code) for s in result.steps] == [("login", True, 200), ("list", True, 200)]
    assert result.step is None and result.attempts == 2
    assert result.latency_s == pytest.approx(sum(s.latency_s for s in result.steps))
    document = result.to_dict()
    assert [step["name"] for step in document["steps"]] == ["login", "list"] and document["step"] is None


def test_a_wrong_value_in_step_two_names_the_step(server):
    (result,) = checked([flow(server, {"expect_json": {"items.0.id": 8}})])
    assert (result.ok, result.error_class, result.detail, result.step) == (False, "content", "expect_json", "list")
    assert result.error.startswith("list: ")


def test_a_refused_login_ends_the_flow_at_step_one(server):
    server.login.refuse = True
    (result,) = checked([flow(server)])
    assert (result.error_class, result.detail, result.step) == ("auth", "401", "login")
    assert [s.name for s in result.steps] == ["login"] and server.hits("/items") == 0


def test_a_value_that_cannot_be_extracted_fails_as_content_extract(server):
    (result,) = checked([flow(server, login_step={"extract": {"token": "json:no.such.path"}},
                              list_step={"headers": {"Authorization": "Bearer {{token}}"},
                                         "url": server.url("/items")})])
    assert (result.error_class, result.detail, result.step) == ("content", "extract", "login")
    assert "token" in result.error and server.login.core not in result.error


def test_a_flaky_step_two_is_retried_without_logging_in_again():
    login = LoginServer()
    with HTTPFarm({"/login": login.login,
                   "/items": sequence(reply("503 Service Unavailable"), login.items)}) as farm:
        (result,) = checked([flow(farm)], retries=2, backoff=FAST_BACKOFF)
        hits = (farm.hits("/login"), farm.hits("/items"))
    assert result.ok, result.error
    assert hits == (1, 2) and result.attempts == 3


def test_cookies_carry_over_within_a_check_never_between_checks(server):
    """Two checks by one engine (as the daemon runs them): the second login carries no cookie."""
    engine = Engine(parse_config(config_text([flow(server)]), "<test>"))
    try:
        results = engine.sweep() + engine.sweep()
    finally:
        engine.close()
    assert all(r.ok for r in results), [r.error for r in results]
    assert server.login.login_cookies == ["", ""]


def recorded(into: list[dict]):
    """A handler that keeps the X- headers of every request it answers."""
    def handler(environ):
        into.append({k: v for k, v in environ.items() if k.startswith("HTTP_X_")})
        return "200 OK", [], b"ok"
    return handler


def test_a_header_filled_from_a_value_is_dropped_on_a_redirect_to_another_origin():
    """As an auth header is: the token goes to the origin the step named, not to where it
    is sent on. A redirect within the origin keeps it."""
    login, elsewhere, here = LoginServer(), [], []
    with HTTPFarm({"/landing": recorded(elsewhere)}) as other, HTTPFarm({
            "/login": login.login, "/away": redirect(other.url("/landing")),
            "/near": redirect("/landing"), "/landing": recorded(here)}) as farm:
        hop = {"headers": {"X-Token": "{{token}}", "X-Plain": "kept"}}
        results = checked([flow(farm, {**hop, "url": farm.url("/away")}, name="away"),
                           flow(farm, {**hop, "url": farm.url("/near")}, name="near")])
    assert [r.ok for r in results] == [True, True], [r.error for r in results]
    assert elsewhere == [{"HTTP_X_PLAIN": "kept"}]
    assert [sorted(h) for h in here] == [["HTTP_X_PLAIN", "HTTP_X_TOKEN"]]
    assert here[0]["HTTP_X_TOKEN"].startswith(f"tok-{login.core}-")


def test_a_step_that_does_not_follow_redirects_reads_the_redirect_itself():
    """A login whose answer is its 302: with follow_redirects = false the step keeps the
    redirect and reads it; followed, it would end at a page that is not there."""
    login_redirect = reply("302 Found", b"", [("Location", "/gone"), ("X-Next", "items")])
    with HTTPFarm({"/login": login_redirect, "/items": reply()}) as farm:
        def target(**login_step):
            return {"name": f"kept-{len(login_step)}", "steps": [
                {"name": "login", "url": farm.url("/login"), "extract": {"next": "header:X-Next"},
                 **login_step},
                {"name": "next", "url": farm.url("/") + "{{next}}"}]}
        kept, followed = checked([target(follow_redirects=False, expect_status=["302"]), target()])
        single, = checked([{"name": "one", "url": farm.url("/login"), "follow_redirects": False,
                            "expect_status": ["302"]}])
        gone = farm.hits("/gone")
    assert kept.ok and [s.status_code for s in kept.steps] == [302, 200], kept.error
    assert (followed.ok, followed.step, followed.error_class, followed.detail) == (False, "login", "http", "404")
    assert single.ok and single.status_code == 302
    assert gone == 1


def test_extracted_values_appear_nowhere(server, write_config):
    """The real command at --log-level debug, in every format: the token, session and cookie
    of every login are in no output, log line or error (the server saw them: they were sent)."""
    path = write_config(config_text([flow(server, {"expect_json": {"items.0.id": 8}}),
                                     flow(server, name="ok")]))
    outputs = [run_cli("--config", str(path), "--once", "--format", fmt, "--log-level", "debug")
               for fmt in ("json", "jsonl", "table")]
    assert server.login.logins == 6
    for run in outputs:
        assert run.returncode == 1, run.stderr
        assert server.login.core not in run.stdout + run.stderr
    document = json.loads(outputs[0].stdout)
    assert [r["url"] for r in document["results"]] == [server.url("/login")] * 2
    assert {r["step"] for r in document["results"]} == {"list", None}


def test_the_daemon_shows_the_steps_never_a_value_in_any_endpoint_or_debug_log(server, caplog):
    """/metrics, /api/results, /api/history and the status page of a daemon that ran a failing
    and a passing flow, and greenmon's debug log: the steps are there, no token, session or
    cookie. (urllib3's own request lines, which hold query strings, are quieted by the command:
    limits.quiet_urllib3, proven by the CLI test above.)"""
    caplog.set_level(logging.DEBUG, logger="greenmon")
    config = daemon_config([flow(server, {"expect_json": {"items.0.id": 8}}), flow(server, name="ok")])
    with running_daemon(config) as running:
        running.wait_sweeps(2)
        pages = {path: running.get(path) for path in ("/metrics", "/api/results", "/", "/api/history?target=shop")}
    assert {path: page.status_code for path, page in pages.items()} == dict.fromkeys(pages, 200)
    assert server.login.logins >= 4
    for path, page in pages.items():
        assert server.login.core not in page.text, path
    assert server.login.core not in caplog.text and "list" in caplog.text
    results = {r["target"]: r for r in pages["/api/results"].json()["results"]}
    assert (results["shop"]["step"], [s["name"] for s in results["shop"]["steps"]]) == ("list", ["login", "list"])
    assert 'greenmon_step_up{step="list",target="shop"} 0.0' in pages["/metrics"].text


# --- Config errors, naming file, line and key ----------------------------------------------------

def steps(*tables: dict) -> list[dict]:
    return [{"name": f"s{i}", "url": f"http://127.0.0.1:9/{i}", **table} for i, table in enumerate(tables)]


@pytest.mark.parametrize("target, key, words", [
    ({"steps": steps({}, {"headers": {"X-A": "{{late}}"}}, {"extract": {"late": "header:X-L"}})},
     "targets[0].steps[1].headers.X-A", "uses {{late}} before steps[2] extracts it"),
    ({"steps": steps({}, {"url": "http://127.0.0.1:9/{{never}}"})},
     "targets[0].steps[1].url", "uses {{never}}, which no step extracts"),
    ({"steps": steps({"extract": {"x": "xpath://a"}}, {})},
     "targets[0].steps[0].extract", "unknown source 'xpath'"),
    ({"steps": steps({"name": "twice"}, {"name": "twice"})},
     "targets[0].steps[1].name", "duplicate step name 'twice'"),
    ({"url": "http://127.0.0.1:9/", "steps": steps({}, {})},
     "targets[0].url", "a target with steps has no url of its own"),
    ({"interval": 3.0, "timeout": 2.0, "steps": steps({}, {})},
     "targets[0].interval", "shorter than the 4 s the steps' timeouts add up to"),
], ids=["used-before", "never-extracted", "unknown-source", "duplicate-name", "url-and-steps",
        "interval-short"])
def test_a_flow_that_cannot_run_is_a_config_error(target, key, words):
    with pytest.raises(ConfigError) as raised:
        parse_config(config_text([{"name": "flow", **target}]), "greenmon.toml")
    message = str(raised.value)
    assert message.startswith("greenmon.toml:") and f" {key}: " in message, message
    assert words in message, message


def test_a_variable_extracted_again_later_is_usable_after_its_first_extraction():
    config = parse_config(config_text([{"name": "flow", "steps": steps(
        {"extract": {"token": "header:X-T"}}, {"headers": {"X-A": "{{token}}"}},
        {"extract": {"token": "header:X-T"}})}]), "greenmon.toml")
    assert [step.request.name for step in config.targets[0].steps] == ["s0", "s1", "s2"]


@pytest.mark.parametrize("kind, entry", [("openapi", 'spec = "api.json"'), ("file_sd", 'files = ["sd.json"]')])
def test_discovery_entries_take_no_steps(kind, entry):
    text = f'[[{kind}]]\n{entry}\n[[{kind}.steps]]\nurl = "http://127.0.0.1:9/"\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert f"{kind}[0].steps: not a key of [[{kind}]]: a flow is a [[targets]] entry" in str(raised.value)


def test_the_steps_are_exported_and_the_table_names_the_failing_step(server, write_config):
    path = write_config(config_text([flow(server, {"expect_json": {"items.0.id": 8}})]))
    table = run_cli("--config", str(path), "--once")
    assert table.returncode == 1 and "list: expect_json" in table.stdout, table.stdout
    config = parse_config(config_text([flow(server)]), "<test>")
    store = store_for(config, config.enabled_targets)
    results = sweep_config(config, listeners=[store.observe])
    assert results[0].ok
    text = generate_latest(build_registry(store)).decode()
    assert 'greenmon_step_up{step="login",target="shop"} 1.0' in text
    assert 'greenmon_step_up{step="list",target="shop"} 1.0' in text
    durations = {s.name: s.latency_s for s in results[0].steps}
    for step, seconds in durations.items():
        assert f'greenmon_step_duration_seconds{{step="{step}",target="shop"}}' in text
    assert server.login.core not in text


def test_the_status_page_row_shows_the_steps(server):
    config = parse_config(config_text([flow(server, {"expect_json": {"items.0.id": 8}})]), "<test>")
    store = store_for(config, config.enabled_targets)
    sweep_config(config, listeners=[store.observe])
    html = row(store.series["shop"], slo_p95_s=2.0, objective=0.999, now=time.time())
    assert "steps: login \u2713 list \u2717" in html and "list: content / expect_json" in html
    assert server.login.core not in html
