"""OAuth2 client credentials against a real token server that counts its requests (README,
"Tokens from where they are issued").

The token server issues short-lived tokens and the API accepts only tokens
it issued that have not expired or been revoked. The source's clock is
replaced by a FakeClock where a test needs a token to age, so no test waits
for a lifetime to pass.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets as random_secrets
import time
from urllib.parse import parse_qs

import gevent
import pytest
import trustme

from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.report import result_json

from support.configs import config_text, toml_value
from support.daemon_helpers import running_daemon
from support.helpers import FakeClock, run_cli, wait_until
from support.servers import HTTPFarm, RawServer, closed_port, never_answer, tls_server_context

CLIENT_ID = "greenmon"
SECRET_CORE = random_secrets.token_hex(6)
SECRET = f"cs-{SECRET_CORE}"


class TokenServer:
    """/token issues ``tok-<core>-<n>`` tokens valid for ``lifetime`` seconds to the right client;
    /api/* accepts exactly those (the handler of every API route)."""

    def __init__(self, lifetime: float = 10.0, delay: float = 0.0):
        self.lifetime = lifetime
        self.delay = delay
        self.core = random_secrets.token_hex(6)
        self.requests = 0
        self.forms: list[dict] = []
        self.issued: dict[str, float] = {}   # token -> expires at (monotonic)
        self.revoked: set[str] = set()
        self.answer = "token"                # or "no-token", "refuse"

    def token(self, environ):
        self.requests += 1
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode()
        form = {key: values[0] for key, values in parse_qs(body).items()}
        self.forms.append(form)
        if self.delay:
            gevent.sleep(self.delay)
        client = environ.get("HTTP_AUTHORIZATION", "")
        basic = "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
        posted = form.get("client_id") == CLIENT_ID and form.get("client_secret") == SECRET
        if self.answer == "refuse" or not (client == basic or posted):
            return "401 Unauthorized", [], json.dumps({"error": "invalid_client"})
        if form.get("grant_type") != "client_credentials":
            return "400 Bad Request", [], json.dumps({"error": "unsupported_grant_type"})
        if self.answer == "no-token":
            return "200 OK", [("Content-Type", "application/json")], json.dumps({"token_type": "bearer"})
        token = f"tok-{self.core}-{self.requests}"
        self.issued[token] = time.monotonic() + self.lifetime
        return "200 OK", [("Content-Type", "application/json")], json.dumps(
            {"access_token": token, "token_type": "Bearer", "expires_in": self.lifetime})

    def api(self, environ):
        sent = environ.get("HTTP_AUTHORIZATION", "")
        token = sent[len("Bearer "):] if sent.startswith("Bearer ") else ""
        if token in self.revoked or self.issued.get(token, 0) < time.monotonic():
            return "401 Unauthorized", [], b"expired or unknown token"
        return "200 OK", [], b"ok"


def oauth2_table(token_url: str, *, origin: str = "inline", extra: str = "", tmp_path=None,
                 monkeypatch=None) -> str:
    lines = ["[auth.api]", 'type = "oauth2"', f"token_url = {toml_value(token_url)}",
             f'client_id = "{CLIENT_ID}"', 'scopes = ["health:read", "metrics"]',
             'params = { audience = "https://api.example" }']
    if origin == "inline":
        lines.append(f'client_secret = "{SECRET}"')
    elif origin == "env":
        monkeypatch.setenv("GM_TEST_OAUTH_SECRET", SECRET)
        lines.append('client_secret_env = "GM_TEST_OAUTH_SECRET"')
    else:
        (tmp_path / "client.secret").write_text(SECRET + "\n", encoding="utf-8")
        lines.append(f"client_secret_file = {toml_value(str(tmp_path / 'client.secret'))}")
    return "\n".join(lines) + "\n" + extra + "\n"


def api_config(farm, count: int, token_url: str, **kwargs):
    targets = [{"name": f"api-{i}", "url": farm.url(f"/api/{i}"), "auth": "api"} for i in range(count)]
    return parse_config(config_text(targets, extra=oauth2_table(token_url, **kwargs)), "<test>")


@pytest.fixture
def server():
    tokens = TokenServer()
    routes = {"/token": tokens.token, **{f"/api/{i}": tokens.api for i in range(50)}}
    with HTTPFarm(routes) as farm:
        farm.tokens = tokens
        yield farm


def swept(config, sweeps: int = 1, clock=None, step: float = 0.0) -> list:
    engine = Engine(config)
    if clock is not None:
        engine.checker.credentials.clock = clock   # the clock of the token clients
    results = []
    try:
        for _ in range(sweeps):
            results.append(engine.sweep())
            if clock is not None:
                clock.advance(step)
    finally:
        engine.close()
    return results


def test_many_targets_waiting_at_once_share_one_token_request(server):
    server.tokens.delay = 0.3   # every check waits for the one request in flight
    config = api_config(server, 50, server.url("/token"))
    (results,) = swept(config)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert server.tokens.requests == 1
    sent = {headers["Authorization"] for i in range(50) for _, headers in server.requests[f"/api/{i}"]}
    assert sent == {f"Bearer tok-{server.tokens.core}-1"}
    form = server.tokens.forms[0]
    assert form == {"grant_type": "client_credentials", "scope": "health:read metrics",
                    "audience": "https://api.example"}   # the secret went in the Basic header


@pytest.mark.parametrize("origin", ["inline", "env", "file"])
@pytest.mark.parametrize("client_auth", ["basic", "post"])
def test_the_client_secret_from_each_origin_and_either_client_auth(server, tmp_path, monkeypatch,
                                                                   origin, client_auth):
    config = api_config(server, 2, server.url("/token"), origin=origin, tmp_path=tmp_path,
                        monkeypatch=monkeypatch, extra=f'client_auth = "{client_auth}"')
    (results,) = swept(config)
    assert all(r.ok for r in results), [r.error for r in results]
    assert server.tokens.requests == 1
    assert ("client_secret" in server.tokens.forms[0]) == (client_auth == "post")


def test_a_short_lived_token_is_renewed_before_it_expires_not_per_check(server):
    """A 10 s token and checks every second for 30 s: four token requests for 300 checks."""
    config = api_config(server, 10, server.url("/token"))
    clock = FakeClock()
    sweeps = swept(config, sweeps=30, clock=clock, step=1.0)
    assert all(r.ok for results in sweeps for r in results)
    # Fetched at 0, renewed at 9 s and 18 s and 27 s (a tenth of the lifetime early).
    assert server.tokens.requests == 4
    first_of = {}
    for number, results in enumerate(sweeps):
        first_of.setdefault(server.requests["/api/0"][number][1]["Authorization"], number)
    assert sorted(first_of.values()) == [0, 9, 18, 27]


def test_a_refused_token_is_fetched_again_once_before_the_check_is_auth(server):
    config = api_config(server, 10, server.url("/token"), extra="")
    config = config.replace("retry", retries=2)
    engine = Engine(config)
    try:
        first = engine.sweep()
        server.tokens.revoked.add(f"tok-{server.tokens.core}-1")   # the API no longer takes it
        second = engine.sweep()
        assert server.tokens.requests == 2      # one new token for the ten 401s
        assert all(r.ok and r.attempts == 2 for r in second), second
        server.tokens.answer = "refuse"          # refused again, and no token to be had
        server.tokens.revoked.add(f"tok-{server.tokens.core}-2")
        third = engine.sweep()
    finally:
        engine.close()
    assert all(r.ok and r.attempts == 1 for r in first)
    assert server.tokens.requests == 3          # one more try for all ten, then the hold
    for result in third:
        assert not result.ok
        assert (result.error_class, result.detail, result.attempts) == ("auth", "token", 2)
        assert result.error == "token endpoint answered HTTP 401 (invalid_client)"


def test_a_refusal_of_a_token_already_replaced_keeps_the_new_one(server):
    """Two checks refused with the same old token: the first one's refresh fetches a new token;
    the second, refused later, must not drop that new one (one token request, not two)."""
    def slow(environ):
        gevent.sleep(0.5)
        return server.tokens.api(environ)

    server.routes["/slow"] = slow
    config = parse_config(config_text([{"name": "fast", "url": server.url("/api/0"), "auth": "api"},
                                       {"name": "slow", "url": server.url("/slow"), "auth": "api"}],
                                      extra=oauth2_table(server.url("/token"))), "<test>")
    engine = Engine(config)
    try:
        engine.sweep()
        server.tokens.revoked.add(f"tok-{server.tokens.core}-1")
        results = engine.sweep()
    finally:
        engine.close()
    assert all(r.ok and r.attempts == 2 for r in results), results
    assert server.tokens.requests == 2


@pytest.mark.parametrize("kind, words", [
    ("refused", "token request failed: connection/refused: connection refused"),
    ("timeout", "token request failed: timeout/read: no response within 0.3s"),
    ("no-token", "token endpoint answered without an access_token"),
    ("wrong-secret", "token endpoint answered HTTP 401 (invalid_client)"),
])
def test_a_token_endpoint_that_fails_fails_the_checks_as_auth_token(server, kind, words, caplog):
    with RawServer(never_answer) as silent:
        token_url = {"refused": f"http://127.0.0.1:{closed_port()}/token",
                     "timeout": silent.url("/token")}.get(kind, server.url("/token"))
        extra = "timeout = 0.3\n"
        if kind == "no-token":
            server.tokens.answer = "no-token"
        config = api_config(server, 3, token_url, extra=extra)
        if kind == "wrong-secret":
            config.auth["api"].secret._value = "not-the-secret"
        caplog.set_level(logging.DEBUG)
        started = time.monotonic()
        (results,) = swept(config)
        took = time.monotonic() - started
    for result in results:
        assert (result.ok, result.error_class, result.detail) == (False, "auth", "token"), result
        assert result.error == words
        assert result.attempts == 1   # not asked again at once: the answer would be the same
        assert (result.status_code, result.latency_s, result.timings) == (None, None, None)
    assert not any(server.requests[f"/api/{i}"] for i in range(3))   # targets never contacted
    assert took < 5   # the deadline of the token request, not a hang
    text = caplog.text + "".join(result_json(r) for r in results)
    assert SECRET_CORE not in text and server.tokens.core not in text


def test_token_requests_use_tls_with_the_sources_ca_file(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tokens = TokenServer()
    with HTTPFarm({"/token": tokens.token}, ssl_context=tls_server_context(ca, "127.0.0.1")) as issuer, \
            HTTPFarm({"/api/0": tokens.api}) as api:
        trusted = api_config(api, 1, issuer.url("/token"), extra=f"ca_file = {toml_value(str(ca_file))}")
        untrusted = api_config(api, 1, issuer.url("/token"))
        engine = Engine(trusted)
        try:   # the CA is loaded before the first check, as the targets' own are
            assert str(ca_file) in engine.transport.adapter.trust.loaded()
        finally:
            engine.close()
        (good,) = swept(trusted)[0]
        (bad,) = swept(untrusted)[0]
    assert good.ok, good
    assert (bad.error_class, bad.detail) == ("auth", "token")
    assert bad.error.startswith("token request failed: connection/tls: TLS certificate rejected")


def test_the_daemon_renews_a_short_lived_token_and_no_secret_leaves(server, caplog):
    """Real time, in the daemon: tokens of 1.5 s, checks every 0.2 s."""
    server.tokens.lifetime = 1.5
    config = api_config(server, 5, server.url("/token")).replace("monitor", interval=0.2, timeout=0.2)
    caplog.set_level(logging.DEBUG)
    with running_daemon(config) as running:
        wait_until(lambda: server.tokens.requests >= 3, 10, message="three tokens")
        checks = sum(len(server.requests[f"/api/{i}"]) for i in range(5))
        text = running.metrics() + running.get("/api/results").text + running.get("/").text
    assert checks > 3 * 5 * 2   # many checks per token
    assert all(headers.get("Authorization", "").startswith(f"Bearer tok-{server.tokens.core}-")
               for i in range(5) for _, headers in server.requests[f"/api/{i}"])
    assert all(r.ok for r in running.daemon.store.latest_results())
    for leak in (SECRET_CORE, server.tokens.core):
        assert leak not in text and leak not in caplog.text


def test_once_at_debug_level_shows_neither_secret_nor_token(server, write_config):
    targets = [{"name": f"api-{i}", "url": server.url(f"/api/{i}"), "auth": "api"} for i in range(3)]
    path = write_config(config_text(targets, extra=oauth2_table(server.url("/token"))))
    run = run_cli("--config", str(path), "--once", "--format", "json", "--log-level", "debug")
    assert run.returncode == 0, run.stderr
    assert server.tokens.requests == 1
    assert SECRET_CORE not in run.stdout + run.stderr
    assert server.tokens.core not in run.stdout + run.stderr
    check = run_cli("--config", str(path), "--check-config")
    assert check.returncode == 0 and SECRET_CORE not in check.stdout + check.stderr


@pytest.mark.parametrize("table, key, problem", [
    ('type = "oauth2"\nclient_id = "x"\nclient_secret = "s"', "auth.api", "token_url is required"),
    ('type = "oauth2"\ntoken_url = "ftp://x/"\nclient_id = "x"\nclient_secret = "s"', "auth.api.token_url",
     "scheme must be http or https"),
    ('type = "oauth2"\ntoken_url = "http://x/"\nclient_id = "x"', "auth.api.client_secret",
     "give exactly one of client_secret, client_secret_env, client_secret_file"),
    ('type = "oauth2"\ntoken_url = "http://x/"\nclient_id = "x"\nclient_secret = "s"\nclient_auth = "jwt"',
     "auth.api.client_auth", "must be one of basic, post"),
    ('type = "oauth2"\ntoken_url = "http://x/"\nclient_id = "x"\nclient_secret = "s"\nscopes = "a b"',
     "auth.api.scopes", "must be an array of scope names"),
])
def test_bad_oauth2_tables_are_config_errors(table, key, problem):
    from greenmon.config import parse_config
    from greenmon.schema import ConfigError
    text = f'[auth.api]\n{table}\n\n[[targets]]\nurl = "http://127.0.0.1:9/"\nauth = "api"\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "g.toml")
    assert f"{key}: " in str(raised.value) and problem in str(raised.value), str(raised.value)
