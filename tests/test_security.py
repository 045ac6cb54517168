"""Security and enterprise networks (README, same title; issue 14), against real servers on 127.0.0.1.

- The daemon's endpoints behind an exporter-toolkit web config (``webconfig``,
  ``webauth``, ``web``): TLS, bcrypt basic-auth users compared in constant
  time and checked off the event loop, mutual TLS towards the scraper, bad
  web configs named by file, line and key, reloads that keep a running config
  when the new one is broken. In process (a Daemon and its WebServer, as
  ``daemon_helpers.running_daemon`` serves them) and as the real command.
- Targets reached through a forward proxy (``proxy_server.ForwardProxy``,
  which counts requests and CONNECTs): ``proxy``, ``proxy_env`` with
  NO_PROXY, proxy failures as ``connection``/``proxy``, the deadline over the
  proxy hop, and pools that never mix proxied and direct traffic.
- Targets that ask for a client certificate (an mTLS server made with
  trustme), and the config errors of a client certificate and key.
- A ``${VAR}`` in a target URL is sent, and shown nowhere: results, /metrics,
  /api/results, the status page, config errors, ``--check-config``, and the
  daemon's log at debug level.
- ``nosniff`` and a Content-Security-Policy whose style and script hashes are the page's.

The end-to-end scrape by the real Prometheus over TLS with basic auth is in
test_prometheus.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import gevent
import gevent.event
import pytest
import requests
import trustme

from greenmon import webauth, webconfig
from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.schema import ConfigError
from greenmon.webconfig import WebConfig
from support.configs import config_text
from support.daemon_helpers import HTTP_TIMEOUT_S, DaemonProcess, running_daemon, select, value
from support.daemon_helpers import daemon_config as base_daemon_config   # this file's own wraps it
from support.helpers import check_one, run_cli, sweep_config, wait_until
from support.proxy_server import ForwardProxy
from support.servers import HTTPFarm, RawServer, closed_port, reply, tls_handshake, tls_server_context

USER = "prometheus"
PASSWORD = "pässwörd-" + secrets.token_hex(6)   # non-ASCII: sent as UTF-8 (RFC 7617 charset)
INTERVAL_S = 0.3
TIMEOUT_S = 0.5
SLACK_S = 0.5   # a failed check ends within its deadline plus this


# --- Small tools -----------------------------------------------------------------------------------

def basic(user: str, password: str) -> str:
    """An Authorization header for basic auth (UTF-8 inside base64)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def hashed(password: str, cost: int = 4) -> str:
    """A bcrypt hash at a low cost (4): the tests pay microseconds, not 250 ms, per check."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode("ascii")


def fetch(url: str, authorization: str | None = None, *, verify: bool | str = True,
          cert: tuple[str, str] | None = None, method: str = "GET") -> requests.Response:
    """One request on a new connection (a new session), never through a proxy."""
    with requests.Session() as session:
        session.trust_env = False
        headers = {"Authorization": authorization} if authorization else {}
        return session.request(method, url, headers=headers, verify=verify, cert=cert,
                               timeout=HTTP_TIMEOUT_S)


def web_yaml(*, cert: str | None = None, key: str | None = None, client_auth: str | None = None,
             client_ca: str | None = None, users: dict[str, str] | None = None) -> str:
    """An exporter-toolkit web config: ``users`` maps names to bcrypt hashes."""
    lines = []
    if cert or key:
        lines.append("tls_server_config:")
        lines += [f"  {name}: {item}" for name, item in (
            ("cert_file", cert), ("key_file", key), ("client_auth_type", client_auth),
            ("client_ca_file", client_ca)) if item]
    if users:
        lines.append("basic_auth_users:")
        lines += [f"  {user}: {hashed_password}" for user, hashed_password in users.items()]
    return "\n".join(lines) + "\n"


def daemon_config(targets: list[dict], **kwargs):
    return base_daemon_config(targets, interval=INTERVAL_S, timeout=TIMEOUT_S, **kwargs)


# --- TLS material ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TLSFiles:
    ca: trustme.CA
    ca_pem: str
    server_cert: str          # for 127.0.0.1, by ca
    server_key: str
    other_key: str            # the key of another certificate: a mismatched pair with server_cert
    client_ca: trustme.CA     # the CA that issues client certificates
    client_ca_pem: str
    client_cert: str          # for "greenmon-client.example", by client_ca
    client_key: str
    stranger_cert: str        # a client certificate from a CA nobody trusts
    stranger_key: str
    not_pem: str              # a file that is no PEM at all


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TLSFiles:
    folder = tmp_path_factory.mktemp("tls")

    def write(name: str, blob) -> str:
        path = folder / name
        blob.write_to_path(str(path))
        return str(path)

    ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server, other = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    client, stranger = client_ca.issue_cert("greenmon-client.example"), stranger_ca.issue_cert("x.example")
    not_pem = folder / "not.pem"
    not_pem.write_text("this is not a certificate\n", encoding="utf-8")
    return TLSFiles(
        ca=ca, ca_pem=write("ca.pem", ca.cert_pem),
        server_cert=write("server.crt", server.cert_chain_pems[0]),
        server_key=write("server.key", server.private_key_pem),
        other_key=write("other.key", other.private_key_pem),
        client_ca=client_ca, client_ca_pem=write("client-ca.pem", client_ca.cert_pem),
        client_cert=write("client.crt", client.cert_chain_pems[0]),
        client_key=write("client.key", client.private_key_pem),
        stranger_cert=write("stranger.crt", stranger.cert_chain_pems[0]),
        stranger_key=write("stranger.key", stranger.private_key_pem),
        not_pem=str(not_pem),
    )


def tls_web_config(tls: TLSFiles, folder: Path, **keys) -> WebConfig:
    """A web config file with TLS (and ``keys``: users, client_auth, client_ca), loaded."""
    path = folder / "web.yml"
    path.write_text(web_yaml(cert=tls.server_cert, key=tls.server_key, **keys), encoding="utf-8")
    return webconfig.load(str(path))


# --- A served Daemon with a web config --------------------------------------------------------------

class Served:
    """A Daemon sweeping in a greenlet and its WebServer on 127.0.0.1 (HTTPS with a TLS config)."""

    def __init__(self, daemon, server, ca_pem: str | None):
        self.daemon = daemon
        self.server = server
        self.ca_pem = ca_pem   # the CA the server's certificate is checked against

    def url(self, path: str, scheme: str | None = None) -> str:
        scheme = scheme or ("https" if self.daemon.web.tls else "http")
        return f"{scheme}://127.0.0.1:{self.server.port}{path}"

    def get(self, path: str, authorization: str | None = None, **kwargs) -> requests.Response:
        return fetch(self.url(path), authorization, verify=self.ca_pem or True, **kwargs)


@contextlib.contextmanager
def served(config, web: WebConfig, *, loader=None, ca_pem: str | None = None):
    """running_daemon with a web config: Daemon(config, web=web) + WebServer, always stopped."""
    from greenmon.daemon import Daemon
    from greenmon.web import WebServer

    daemon = Daemon(config, loader=loader, web=web)
    server = WebServer(daemon, "127.0.0.1:0")
    server.start()
    greenlet = gevent.spawn(daemon.run)
    try:
        yield Served(daemon, server, ca_pem)
    finally:
        daemon.stop()
        try:
            greenlet.join(timeout=8)
            if not greenlet.dead:
                greenlet.kill(block=True, timeout=1)
                raise AssertionError("Daemon.run did not return within 8 s of stop()")
        finally:
            server.stop()
            daemon.engine.close()


@pytest.fixture(scope="module")
def ok_farm():
    with HTTPFarm({"/ok": reply(body=b"fine")}) as farm:
        yield farm


@pytest.fixture(scope="module")
def guarded(tls, ok_farm, tmp_path_factory):
    """One TLS + basic-auth monitor for the table of requests below (module-wide: nothing
    these tests do changes it)."""
    web = tls_web_config(tls, tmp_path_factory.mktemp("web"), users={USER: hashed(PASSWORD)})
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    with served(config, web, ca_pem=tls.ca_pem) as running:
        wait_until(lambda: running.daemon.store.sweeps >= 1, 5, message="first sweep")
        yield running


# --- Basic auth: every path but /healthz ---------------------------------------------------------------

PATHS = ["/metrics", "/api/results", "/", "/nope", "/metrics?name[]=greenmon_up"]
WRONG_CREDENTIALS = {
    "none": None,
    "wrong-password": basic(USER, "not-" + PASSWORD),
    "password-prefix": basic(USER, PASSWORD[:-1]),
    "password-longer": basic(USER, PASSWORD + "x"),
    "empty-password": basic(USER, ""),
    "unknown-user": basic("intruder", PASSWORD),
    "user-case": basic(USER.upper(), PASSWORD),
    "latin-1-password": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode("latin-1")).decode(),
    "no-colon": "Basic " + base64.b64encode(USER.encode()).decode(),
    "not-base64": "Basic %%%not-base64%%%",
    "bearer": f"Bearer {PASSWORD}",
    "empty": "Basic ",
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", sorted(WRONG_CREDENTIALS))
def test_a_missing_or_wrong_credential_gets_401_with_www_authenticate(guarded, path, case):
    response = guarded.get(path, WRONG_CREDENTIALS[case])
    assert response.status_code == 401, (case, path, response.status_code)
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert 'realm="' in response.headers["WWW-Authenticate"]
    assert "greenmon_" not in response.text


@pytest.mark.parametrize("path, status", [("/metrics", 200), ("/api/results", 200), ("/", 200),
                                          ("/nope", 404), ("/healthz", 200)])
def test_the_right_credential_opens_every_path(guarded, path, status):
    response = guarded.get(path, basic(USER, PASSWORD))
    assert response.status_code == status
    assert "WWW-Authenticate" not in response.headers
    if path == "/metrics":
        assert value(response.text, "greenmon_up", target="ok") == 1


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_healthz_needs_no_credential(guarded, method):
    response = fetch(guarded.url("/healthz"), verify=guarded.ca_pem, method=method)
    assert response.status_code == 200
    assert "WWW-Authenticate" not in response.headers


def test_head_requests_need_credentials_too(guarded):
    response = fetch(guarded.url("/metrics"), verify=guarded.ca_pem, method="HEAD")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")


def test_credentials_are_never_logged(ok_farm, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + secrets.token_hex(8)
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    with served(config, WebConfig(users={USER: hashed(PASSWORD).encode()})) as running:
        assert running.get("/metrics", basic(USER, wrong)).status_code == 401
        assert running.get("/metrics", basic("intruder-" + wrong, wrong)).status_code == 401
        assert running.get("/metrics", basic(USER, PASSWORD)).status_code == 200
    out, err = capfd.readouterr()
    for where, text in (("the log records", caplog.text), ("stdout", out), ("stderr", err)):
        for secret in (wrong, PASSWORD, basic(USER, wrong)[6:], basic(USER, PASSWORD)[6:]):
            assert secret not in text, f"a credential is in {where}"
        assert "Traceback" not in text


# --- Constant time, and bcrypt off the loop -------------------------------------------------------------

def test_remembered_credentials_are_compared_in_constant_time():
    assert webauth.compare is hmac.compare_digest


def test_the_cached_path_uses_the_constant_time_comparison_and_skips_bcrypt(ok_farm, monkeypatch):
    compared: list[tuple] = []
    bcrypt_checks: list[bytes] = []
    checks_out = webauth._checks_out

    def spy_compare(remembered, offered):
        result = hmac.compare_digest(remembered, offered)
        compared.append((type(remembered), len(remembered), len(offered), result))
        return result

    def spy_bcrypt(password, hashed_password):   # runs in a thread: a list append is safe
        bcrypt_checks.append(hashed_password)
        return checks_out(password, hashed_password)

    monkeypatch.setattr(webauth, "compare", spy_compare)
    monkeypatch.setattr(webauth, "_checks_out", spy_bcrypt)
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    user_hash = hashed(PASSWORD)
    with served(config, WebConfig(users={USER: user_hash.encode()})) as running:
        assert running.get("/metrics", basic(USER, PASSWORD)).status_code == 200
        assert (compared, bcrypt_checks) == ([], [user_hash.encode()])   # first time: bcrypt

        assert running.get("/metrics", basic(USER, PASSWORD)).status_code == 200
        assert compared == [(bytes, 32, 32, True)]     # remembered: compare_digest, no bcrypt
        assert len(bcrypt_checks) == 1

        assert running.get("/metrics", basic(USER, "wrong")).status_code == 401
        assert compared[-1] == (bytes, 32, 32, False)  # compared, did not match: bcrypt decides
        assert len(bcrypt_checks) == 2

        assert running.get("/metrics", basic("intruder", PASSWORD)).status_code == 401
        assert len(bcrypt_checks) == 3                 # an unknown user costs a bcrypt check too
        assert bcrypt_checks[-1] != user_hash.encode()

        assert running.get("/metrics", basic(USER, PASSWORD)).status_code == 200
        assert compared[-1] == (bytes, 32, 32, True) and len(bcrypt_checks) == 3


def test_a_first_bcrypt_check_at_cost_12_does_not_hold_the_event_loop(ok_farm):
    password = "slow-" + secrets.token_hex(6)
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    with served(config, WebConfig(users={USER: hashed(password, cost=12).encode()})) as running:
        gaps: list[float] = []
        done = gevent.event.Event()

        def tick():
            last = time.perf_counter()
            for _ in range(5000):   # bounded; ends when the request is answered
                if done.is_set():
                    return
                gevent.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = gevent.spawn(tick)
        gevent.sleep(0.02)
        started = time.perf_counter()
        response = running.get("/metrics", basic(USER, password))
        took = time.perf_counter() - started
        done.set()
        ticker.join(timeout=2)
    assert response.status_code == 200
    assert took >= 0.05, f"a cost-12 bcrypt check took only {took:.3f}s: was it run?"
    assert len(gaps) >= 5, gaps
    assert max(gaps) < 0.1, f"the loop stalled {max(gaps) * 1000:.0f} ms during the bcrypt check"


# --- TLS --------------------------------------------------------------------------------------------------

def test_tls_is_served_and_plain_http_to_the_tls_port_is_not(tls, ok_farm, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    web = tls_web_config(tls, tmp_path, users={USER: hashed(PASSWORD)})
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    with served(config, web, ca_pem=tls.ca_pem) as running:
        response = running.get("/metrics", basic(USER, PASSWORD))
        assert response.status_code == 200
        assert response.url.startswith("https://")

        with socket.create_connection(("127.0.0.1", running.server.port), timeout=3) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                         + basic(USER, PASSWORD).encode() + b"\r\nConnection: close\r\n\r\n")
            answer = b""
            with contextlib.suppress(OSError):
                for _ in range(100):   # until the server closes (bounded)
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
        assert not answer.startswith(b"HTTP/"), answer[:200]
        assert b"greenmon_" not in answer
        with pytest.raises(requests.exceptions.ConnectionError):
            fetch(running.url("/healthz", scheme="http"))

        assert running.get("/metrics", basic(USER, PASSWORD)).status_code == 200   # still serving
    out, err = capfd.readouterr()
    assert "Traceback" not in caplog.text + out + err, (caplog.text + err)[-3000:]


def test_tls_without_users_needs_no_credential_but_a_trusted_certificate(tls, ok_farm, tmp_path):
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    with served(config, tls_web_config(tls, tmp_path), ca_pem=tls.ca_pem) as running:
        assert running.get("/metrics").status_code == 200
        with pytest.raises(requests.exceptions.SSLError):   # a client that trusts another CA
            fetch(running.url("/metrics"), verify=tls.client_ca_pem)


@pytest.mark.parametrize("client_auth, without_cert_ok", [
    ("RequireAndVerifyClientCert", False),
    ("VerifyClientCertIfGiven", True),
])
def test_mutual_tls_towards_the_scraper(tls, ok_farm, tmp_path, capfd, client_auth, without_cert_ok):
    web = tls_web_config(tls, tmp_path, client_auth=client_auth, client_ca=tls.client_ca_pem,
                         users={USER: hashed(PASSWORD)})
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    credential = basic(USER, PASSWORD)
    with served(config, web, ca_pem=tls.ca_pem) as running:
        assert running.get("/metrics", credential, cert=(tls.client_cert, tls.client_key)).status_code == 200
        if without_cert_ok:
            assert running.get("/metrics", credential).status_code == 200
        else:
            with pytest.raises(requests.exceptions.ConnectionError):
                running.get("/metrics", credential)
        with pytest.raises(requests.exceptions.ConnectionError):   # a certificate nobody vouches for
            running.get("/metrics", credential, cert=(tls.stranger_cert, tls.stranger_key))
        # The rejected handshakes cost nothing: the next client is served.
        assert running.get("/metrics", credential, cert=(tls.client_cert, tls.client_key)).status_code == 200
    assert "Traceback" not in "".join(capfd.readouterr())


def test_silent_clients_cannot_hold_the_tls_server(tls, ok_farm, tmp_path, monkeypatch):
    """Clients that connect and never start the TLS handshake are dropped after the client
    timeout, as silent plain-HTTP clients are: they cannot fill the server's connection slots."""
    from greenmon import web
    monkeypatch.setattr(web, "MAX_CONNECTIONS", 4)
    monkeypatch.setattr(web, "CLIENT_TIMEOUT_S", 0.5)
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    with served(config, tls_web_config(tls, tmp_path), ca_pem=tls.ca_pem) as running:
        silent = [socket.create_connection(("127.0.0.1", running.server.port), timeout=5)
                  for _ in range(4)]
        try:
            gevent.sleep(0.1)   # every slot is taken by a silent client
            started = time.monotonic()
            assert running.get("/healthz").status_code == 200
            assert time.monotonic() - started < 2.5
        finally:
            for sock in silent:
                sock.close()


# --- Web config files -------------------------------------------------------------------------------------

# (id, YAML with {cert} {key} {other_key} {client_ca} {not_pem} {hash} {hash_cut} {plain} filled in,
#  the line the message names (None: none), the key it names, what it says)
BAD_WEB_CONFIGS = [
    ("unknown-top-key", "tls_config:\n  cert_file: {cert}\n", 1, "tls_config",
     "unknown key (known: basic_auth_users, http_server_config, tls_server_config)"),
    ("unknown-tls-key", "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  ca_file: {client_ca}\n",
     4, "tls_server_config.ca_file", "unknown key (known: cert_file, client_auth_type, client_ca_file, "),
    ("tls-not-a-mapping", "tls_server_config: yes\n", 1, "tls_server_config", "must be a mapping"),
    ("no-key-file", "tls_server_config:\n  cert_file: {cert}\n", 1, "tls_server_config",
     "key_file is required (TLS needs a certificate and its key)"),
    ("no-cert-file", "tls_server_config:\n  key_file: {key}\n", 1, "tls_server_config",
     "cert_file is required"),
    ("cert-file-not-found", "tls_server_config:\n  cert_file: /nonexistent/server.crt\n  key_file: {key}\n",
     2, "tls_server_config.cert_file", "file not found: /nonexistent/server.crt"),
    ("mismatched-pair", "tls_server_config:\n  cert_file: {cert}\n  key_file: {other_key}\n",
     3, "tls_server_config.key_file", "certificate and key do not load as a pair"),
    ("key-not-pem", "tls_server_config:\n  cert_file: {cert}\n  key_file: {not_pem}\n",
     3, "tls_server_config.key_file", "certificate and key do not load as a pair"),
    ("unknown-client-auth-type",
     "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: Sometimes\n",
     4, "tls_server_config.client_auth_type",
     "must be one of NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert, got 'Sometimes'"),
    ("unverified-client-auth-type",
     "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: RequireAnyClientCert\n"
     "  client_ca_file: {client_ca}\n",
     4, "tls_server_config.client_auth_type",
     "RequireAnyClientCert (a client certificate that is not verified) is not supported"),
    ("client-auth-without-ca",
     "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: RequireAndVerifyClientCert\n",
     1, "tls_server_config", "client_ca_file is required with client_auth_type RequireAndVerifyClientCert"),
    ("client-ca-not-pem",
     "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  client_auth_type: VerifyClientCertIfGiven\n"
     "  client_ca_file: {not_pem}\n",
     5, "tls_server_config.client_ca_file", "not a PEM CA bundle"),
    ("unknown-min-version", "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS14\n",
     4, "tls_server_config.min_version", "must be one of TLS10, TLS11, TLS12, TLS13"),
    ("users-not-a-mapping", "basic_auth_users:\n  - prometheus\n", 1, "basic_auth_users",
     "must be a mapping of user names to bcrypt hashes"),
    ("plaintext-password", "basic_auth_users:\n  prometheus: {plain}\n", 2, "basic_auth_users.prometheus",
     "must be a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters)"),
    ("truncated-hash", "basic_auth_users:\n  prometheus: {hash_cut}\n", 2, "basic_auth_users.prometheus",
     "must be a bcrypt hash"),
    ("user-with-colon", "basic_auth_users:\n  \"ops:x\": {hash}\n", 2, "basic_auth_users.ops:x",
     "a user name must be a non-empty string without ':'"),
    ("not-a-mapping", "- tls_server_config\n", None, "",
     "must be a mapping of tls_server_config, basic_auth_users"),
    ("yaml-syntax", "basic_auth_users:\n  prometheus: [unclosed\n", None, "", "YAML syntax error"),
]
PLAINTEXT = "hunter2-" + secrets.token_hex(4)


def fill_web(template: str, tls: TLSFiles) -> str:
    good = hashed("x")
    return template.format(cert=tls.server_cert, key=tls.server_key, other_key=tls.other_key,
                           client_ca=tls.client_ca_pem, not_pem=tls.not_pem, hash=good,
                           hash_cut=good[:-1], plain=PLAINTEXT)


@pytest.mark.parametrize("template, line, key, problem",
                         [case[1:] for case in BAD_WEB_CONFIGS], ids=[case[0] for case in BAD_WEB_CONFIGS])
def test_a_bad_web_config_names_file_line_key_and_problem(tls, tmp_path, template, line, key, problem):
    path = tmp_path / "web.yml"
    path.write_text(fill_web(template, tls), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        webconfig.load(str(path))
    message = str(raised.value)
    where = f"{path}:{line}" if line else f"{path}"
    assert message.startswith(f"{where}: {key}: " if key else f"{where}"), message
    assert problem in message, message
    assert PLAINTEXT not in message   # a password written where a hash belongs is never echoed


def test_an_unreadable_web_config_file_is_a_config_error(tmp_path):
    missing = tmp_path / "missing.yml"
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: cannot read web config file: ")):
        webconfig.load(str(missing))


def test_a_valid_web_config_with_relative_paths_2y_hashes_and_http_server_config(tls, tmp_path):
    """Paths are relative to the file's folder; ``$2y$`` hashes (htpasswd's) work; the
    http_server_config section of the shared format is accepted."""
    for name in ("server.crt", "server.key"):
        shutil.copy(Path(tls.server_cert).parent / name, tmp_path / name)
    two_y = "$2y$" + hashed(PASSWORD)[4:]
    path = tmp_path / "web.yml"
    path.write_text(web_yaml(cert="server.crt", key="server.key", users={USER: two_y})
                    + "http_server_config:\n  http2: false\n", encoding="utf-8")
    loaded = webconfig.load(str(path))
    assert loaded.tls and loaded.ssl_context.verify_mode == ssl.CERT_NONE
    assert loaded.ssl_context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert loaded.users == {USER: two_y.encode()}
    auth = webauth.BasicAuth(loaded.users)
    assert auth.required and auth.allows(basic(USER, PASSWORD))
    assert not auth.allows(basic(USER, "wrong"))

    empty = tmp_path / "empty.yml"
    empty.write_text("", encoding="utf-8")
    assert webconfig.load(str(empty)) == WebConfig(str(empty))
    assert not webauth.BasicAuth(webconfig.load(str(empty)).users).required


def test_a_missing_web_config_file_in_the_toml_is_a_config_error():
    text = '[server]\nweb_config_file = "/nonexistent/web.yml"\n\n[[targets]]\nurl = "http://127.0.0.1:1/"\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert str(raised.value) == "greenmon.toml:2: server.web_config_file: file not found: /nonexistent/web.yml"


def test_the_command_exits_2_naming_file_line_and_key_for_a_broken_web_config(tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {PLAINTEXT}\n", encoding="utf-8")
    config = tmp_path / "greenmon.toml"
    config.write_text(config_text([{"name": "t", "url": f"http://127.0.0.1:{closed_port()}/"}]),
                      encoding="utf-8")
    started = time.monotonic()
    run = run_cli("--config", str(config), "--web-config-file", str(web),
                  "--listen", f"127.0.0.1:{closed_port()}", timeout=30)
    assert run.returncode == 2, run.stderr
    assert (f"\ngreenmon: config error: {web}:2: basic_auth_users.prometheus: must be a bcrypt hash"
            in "\n" + run.stderr), run.stderr
    assert "Traceback" not in run.stderr and PLAINTEXT not in run.stderr
    assert time.monotonic() - started < 20   # it never started serving

    # --check-config checks the web config too: a broken one fails the check.
    check = run_cli("--config", str(config), "--web-config-file", str(web), "--check-config", timeout=30)
    assert check.returncode == 2, (check.stdout, check.stderr)
    assert f"{web}:2: basic_auth_users.prometheus" in check.stderr
    assert "Traceback" not in check.stderr


# --- Reloads ----------------------------------------------------------------------------------------------

def test_a_reload_keeps_the_running_web_config_when_the_new_one_is_broken(tls, ok_farm, tmp_path):
    first, second, third = ("pw-" + secrets.token_hex(4) for _ in range(3))
    path = tmp_path / "web.yml"
    path.write_text(web_yaml(cert=tls.server_cert, key=tls.server_key, users={USER: hashed(first)}),
                    encoding="utf-8")
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}]).replace(
        "server", web_config_file=str(path))
    with served(config, webconfig.load(str(path)), loader=lambda: config, ca_pem=tls.ca_pem) as running:
        assert running.get("/metrics", basic(USER, first)).status_code == 200

        for broken in (f"basic_auth_users:\n  {USER}: {first}\n",
                       f"tls_server_config:\n  cert_file: {tls.server_cert}\n  key_file: {tls.other_key}\n"):
            path.write_text(broken, encoding="utf-8")
            running_web = running.daemon.web
            assert running.daemon.reload() is False
            assert running.daemon.web is running_web
            assert running.get("/metrics", basic(USER, first)).status_code == 200

        # A valid one: new users at once, and a certificate from another CA for new connections.
        new_ca = trustme.CA()
        leaf = new_ca.issue_cert("127.0.0.1")
        leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "new.crt"))
        leaf.private_key_pem.write_to_path(str(tmp_path / "new.key"))
        new_ca.cert_pem.write_to_path(str(tmp_path / "new-ca.pem"))
        path.write_text(web_yaml(cert="new.crt", key="new.key",
                                 users={USER: hashed(second), "grafana": hashed(third)}), encoding="utf-8")
        assert running.daemon.reload() is True
        running.ca_pem = str(tmp_path / "new-ca.pem")
        assert running.get("/metrics", basic(USER, first)).status_code == 401
        assert running.get("/metrics", basic(USER, second)).status_code == 200
        assert running.get("/metrics", basic("grafana", third)).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):   # the old certificate is gone
            fetch(running.url("/healthz"), verify=tls.ca_pem)


class TLSDaemon(DaemonProcess):
    """The real command with a web config: HTTPS, checked against ``ca_pem``, with a credential."""

    def __init__(self, config_path, workdir, *extra_args, ca_pem: str, authorization: str | None):
        super().__init__(config_path, workdir, *extra_args)
        self.ca_pem = ca_pem
        self.authorization = authorization

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> requests.Response:
        return fetch(self.url(path), self.authorization, verify=self.ca_pem)


def test_the_daemon_with_a_web_config_and_sighup(tls, ok_farm, tmp_path):
    """--web-config-file on the real command: HTTPS and 401s; SIGHUP with a broken file keeps
    the running users (logged with file, line and key), with a valid one applies new ones."""
    first, second = ("pw-" + secrets.token_hex(4) for _ in range(2))
    web = tmp_path / "web.yml"
    web.write_text(web_yaml(cert=tls.server_cert, key=tls.server_key, users={USER: hashed(first)}),
                   encoding="utf-8")
    config = tmp_path / "greenmon.toml"
    config.write_text(config_text([{"name": "ok", "url": ok_farm.url("/ok")}], interval=0.5, timeout=0.5),
                      encoding="utf-8")
    with TLSDaemon(config, tmp_path, "--web-config-file", str(web), ca_pem=tls.ca_pem,
                   authorization=basic(USER, first)) as daemon:
        daemon.wait_ready(timeout=15)
        daemon.wait_metric(lambda t: value(t, "greenmon_up", target="ok") == 1, message="ok up")
        assert fetch(daemon.url("/metrics"), verify=tls.ca_pem).status_code == 401
        assert fetch(daemon.url("/healthz"), verify=tls.ca_pem).status_code == 200
        with pytest.raises(requests.exceptions.ConnectionError):
            fetch(f"http://127.0.0.1:{daemon.port}/metrics", basic(USER, first))

        web.write_text(f"basic_auth_users:\n  {USER}: {PLAINTEXT}\n", encoding="utf-8")
        daemon.send(signal.SIGHUP)
        wait_until(lambda: "reload failed" in daemon.stderr(), 10, message="the failed reload logged")
        failed = [line for line in daemon.stderr().splitlines() if "reload failed" in line]
        assert f"{web}:2: basic_auth_users.{USER}: must be a bcrypt hash" in failed[0], failed
        assert daemon.get("/metrics").status_code == 200    # the running users still hold

        web.write_text(web_yaml(cert=tls.server_cert, key=tls.server_key, users={USER: hashed(second)}),
                       encoding="utf-8")
        daemon.send(signal.SIGHUP)
        daemon.authorization = basic(USER, second)
        wait_until(lambda: daemon.get("/metrics").status_code == 200, 10, message="the new password")
        assert fetch(daemon.url("/metrics"), basic(USER, first), verify=tls.ca_pem).status_code == 401
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(8) == 0
    stderr = daemon.stderr()
    assert "Traceback" not in stderr, stderr[-3000:]
    for secret in (first, second, PLAINTEXT):
        assert secret not in stderr


# --- Proxies ------------------------------------------------------------------------------------------------

class PeerRecorder:
    """A handler answering 200 that records, per request: its X-Route header, the peer's port
    (the connection it came on) and its query string."""

    def __init__(self):
        self.seen: list[tuple[str | None, int, str]] = []

    def __call__(self, environ):
        self.seen.append((environ.get("HTTP_X_ROUTE"), int(environ["REMOTE_PORT"]),
                          environ.get("QUERY_STRING", "")))
        return "200 OK", [], b"ok"

    def ports(self, route: str | None = None) -> list[int]:
        return [port for seen_route, port, _ in self.seen if route is None or seen_route == route]


@contextlib.contextmanager
def target_farm(tls: TLSFiles, scheme: str):
    """A farm at /t (a PeerRecorder), plain or HTTPS by the module's CA; yields (farm, recorder,
    the target keys its checks need)."""
    recorder = PeerRecorder()
    context = tls_server_context(tls.ca, "127.0.0.1") if scheme == "https" else None
    with HTTPFarm({"/t": recorder}, ssl_context=context) as farm:
        yield farm, recorder, ({"ca_file": tls.ca_pem} if scheme == "https" else {})


@pytest.mark.parametrize("where", ["target", "monitor"])
def test_a_plain_http_target_goes_through_the_proxy_in_absolute_form(tls, where):
    with target_farm(tls, "http") as (farm, recorder, keys), ForwardProxy() as proxy:
        url = farm.url("/t?q=1")
        if where == "target":
            result = check_one({"url": url, "proxy": proxy.url})
        else:
            result = check_one({"url": url}, monitor={"proxy": proxy.url})
    assert result.ok, result
    assert (proxy.requests, proxy.connects) == (1, 0)
    assert proxy.by_target == {f"127.0.0.1:{farm.port}": 1}
    assert proxy.request_lines == [f"GET {url} HTTP/1.1"]
    assert [(port in proxy.upstream_ports, query) for _, port, query in recorder.seen] == [(True, "q=1")]


@pytest.mark.parametrize("where", ["target", "monitor"])
def test_an_https_target_goes_through_a_connect_tunnel(tls, where):
    with target_farm(tls, "https") as (farm, recorder, keys), ForwardProxy() as proxy:
        target = {"url": farm.url("/t"), **keys}
        if where == "target":
            result = check_one({**target, "proxy": proxy.url})
        else:
            result = check_one(target, monitor={"proxy": proxy.url})
    assert result.ok, result
    assert (proxy.requests, proxy.connects) == (0, 1)
    assert [line.rpartition(" ")[0] for line in proxy.request_lines] == [f"CONNECT 127.0.0.1:{farm.port}"]
    assert result.tls is not None   # the target's certificate, verified through the tunnel
    assert [port in proxy.upstream_ports for port in recorder.ports()] == [True]


@pytest.mark.parametrize("scheme, failure", [("http", "down"), ("https", "down"),
                                             ("https", "refuses-connect")])
def test_a_proxy_that_is_down_or_refuses_is_connection_proxy(tls, scheme, failure):
    with target_farm(tls, scheme) as (farm, recorder, keys), \
            ForwardProxy(refuse_connect=True) as refusing:
        proxy = refusing.url if failure == "refuses-connect" else f"http://127.0.0.1:{closed_port()}"
        result = check_one({"url": farm.url("/t"), "proxy": proxy, **keys}, retries=0)
    assert (result.error_class, result.detail) == ("connection", "proxy"), result
    assert result.status_code is None
    assert recorder.seen == []
    assert refusing.connects == (1 if failure == "refuses-connect" else 0)


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_the_deadline_covers_a_proxy_that_never_answers(tls, scheme):
    with target_farm(tls, scheme) as (farm, recorder, keys), ForwardProxy(silent=True) as proxy:
        started = time.monotonic()
        result = check_one({"url": farm.url("/t"), "proxy": proxy.url, **keys}, retries=0,
                           timeout=TIMEOUT_S)
        took = time.monotonic() - started
    assert result.error_class == "timeout", result
    assert len(proxy.request_lines) == 1   # the proxy was reached, and said nothing
    assert result.latency_s <= TIMEOUT_S + SLACK_S and took <= TIMEOUT_S + SLACK_S + 1.0, (result, took)
    assert recorder.seen == []


def _clear_proxy_environment(monkeypatch) -> None:
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("proxy_env", [True, False])
def test_proxy_env_honours_http_proxy_https_proxy_and_no_proxy(tls, monkeypatch, proxy_env):
    _clear_proxy_environment(monkeypatch)
    with target_farm(tls, "http") as (plain, plain_seen, _), \
            target_farm(tls, "https") as (secure, secure_seen, keys), ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost,.internal.example")
        targets = [{"name": "via-proxy", "url": plain.url("/t")},
                   {"name": "via-connect", "url": secure.url("/t"), **keys},
                   {"name": "no-proxy", "url": plain.url("/t", host="localhost")}]
        config = parse_config(config_text(targets, timeout=2.0),
                              "<test>").replace("monitor", proxy_env=proxy_env)
        results = {r.target: r for r in sweep_config(config)}
    assert all(r.ok for r in results.values()), results
    if proxy_env:
        assert proxy.by_target == {f"127.0.0.1:{plain.port}": 1, f"127.0.0.1:{secure.port}": 1}
        assert (proxy.requests, proxy.connects) == (1, 1)
        through = sorted(port in proxy.upstream_ports for port in plain_seen.ports())
        assert through == [False, True]     # no-proxy went straight, via-proxy through
        assert [port in proxy.upstream_ports for port in secure_seen.ports()] == [True]
    else:   # the environment is ignored unless proxy_env = true
        assert proxy.request_lines == []


def test_proxy_env_on_a_target_overrides_the_monitor(tls, monkeypatch):
    _clear_proxy_environment(monkeypatch)
    with target_farm(tls, "http") as (farm, recorder, _), ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        result = check_one({"url": farm.url("/t"), "proxy_env": True})
    assert result.ok and proxy.requests == 1


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_proxied_and_direct_checks_of_one_url_never_share_a_connection(tls, scheme):
    with target_farm(tls, scheme) as (farm, recorder, keys), ForwardProxy() as proxy:
        targets = [{"name": "direct", "url": farm.url("/t"), "headers": {"X-Route": "direct"}, **keys},
                   {"name": "proxied", "url": farm.url("/t"), "headers": {"X-Route": "proxied"},
                    "proxy": proxy.url, **keys}]
        config = parse_config(config_text(targets, timeout=2.0), "<test>")
        by_name = {t.name: t for t in config.enabled_targets}
        engine = Engine(config)
        try:   # one after the other: each finds the other's idle connection in a shared pool
            results = [engine.check(by_name[name])
                       for name in ("direct", "proxied", "direct", "proxied", "direct")]
        finally:
            engine.close()
    assert all(r.ok for r in results), results
    direct, proxied = recorder.ports("direct"), recorder.ports("proxied")
    assert len(direct) == 3 and len(proxied) == 2
    assert not set(direct) & proxy.upstream_ports, "a direct check went through the proxy"
    assert set(proxied) <= proxy.upstream_ports, "a proxied check went straight to the target"
    assert len(set(direct)) == 1, "direct checks did not keep their connection: nothing was tested"
    if scheme == "https":   # the tunnel is kept alive too
        assert proxy.connects == 1 and len(set(proxied)) == 1


@pytest.mark.parametrize("proxy, problem", [
    ("socks5://127.0.0.1:1080", "must be http://host:port or https://host:port, got 'socks5://127.0.0.1:1080'"),
    ("127.0.0.1:3128", "must be http://host:port or https://host:port"),
    ("http://127.0.0.1:notaport", "is not a valid proxy URL"),
    ("http://ops:s3cret-pw@:3128", "must be http://host:port or https://host:port, got 'http://ops:***@:3128'"),
    (3128, "must be a string"),
])
def test_a_bad_proxy_is_a_config_error_naming_the_key(proxy, problem):
    text = config_text([{"name": "t", "url": "http://127.0.0.1:1/", "proxy": proxy}])
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert "targets[0].proxy: " in str(raised.value) and problem in str(raised.value), raised.value
    assert "s3cret" not in str(raised.value)


# --- Client certificates (mTLS targets) ------------------------------------------------------------------

OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


@contextlib.contextmanager
def mtls_server(tls: TLSFiles):
    """A TLS server (certificate by the module's CA) that requires a client certificate issued
    by the client CA; answers 200 to every request that gets through the handshake."""
    context = tls_server_context(tls.ca, "127.0.0.1")
    context.verify_mode = ssl.CERT_REQUIRED
    tls.client_ca.configure_trust(context)
    served_requests = []

    def answer(sock):
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk
        served_requests.append(data.split(b"\r\n", 1)[0])
        sock.sendall(OK_RESPONSE)

    with RawServer(tls_handshake(context, answer), ssl_context=context) as server:
        yield server, served_requests


@pytest.mark.parametrize("where", ["target", "monitor"])
def test_an_mtls_target_is_up_with_the_client_certificate(tls, where):
    keys = {"client_cert": tls.client_cert, "client_key": tls.client_key}
    with mtls_server(tls) as (server, served_requests):
        target = {"url": server.url("/t"), "ca_file": tls.ca_pem}
        if where == "target":
            result = check_one({**target, **keys})
        else:
            result = check_one(target, monitor=keys)
    assert result.ok, result
    assert served_requests == [b"GET /t HTTP/1.1"]


@pytest.mark.parametrize("keys", [{}, "stranger"], ids=["no-certificate", "untrusted-certificate"])
def test_an_mtls_target_rejecting_the_handshake_is_connection_tls_and_not_retried(tls, keys):
    if keys == "stranger":
        keys = {"client_cert": tls.stranger_cert, "client_key": tls.stranger_key}
    with mtls_server(tls) as (server, served_requests):
        result = check_one({"url": server.url("/t"), "ca_file": tls.ca_pem, **keys}, retries=2)
        connections = server.connections
    assert (result.error_class, result.detail) == ("connection", "tls"), result
    assert result.attempts == 1 and connections == 1   # a TLS failure is not retried
    assert served_requests == []


def _line_of(text: str, start: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if line.startswith(start))


@pytest.mark.parametrize("section, keys, key, problem", [
    ("target", {"client_cert": "{client_cert}"}, "client_key", "is required with client_cert"),
    ("target", {"client_key": "{client_key}"}, "client_cert", "is required with client_key"),
    ("target", {"client_cert": "{client_cert}", "client_key": "/nonexistent/client.key"},
     "client_key", "file not found: /nonexistent/client.key"),
    ("target", {"client_cert": "{client_cert}", "client_key": "{other_key}"},
     "client_key", "does not load with client_cert ("),
    ("target", {"client_cert": "{client_cert}", "client_key": "{not_pem}"},
     "client_key", "does not load with client_cert ("),
    ("target", {"client_cert": "{not_pem}", "client_key": "{client_key}"},
     "client_key", "does not load with client_cert ("),
    ("monitor", {"client_cert": "{client_cert}"}, "client_key", "is required with client_cert"),
    ("monitor", {"client_cert": "{client_cert}", "client_key": "{other_key}"},
     "client_key", "does not load with client_cert ("),
], ids=["cert-without-key", "key-without-cert", "key-file-missing", "mismatched-pair", "key-not-pem",
        "cert-not-pem", "monitor-cert-without-key", "monitor-mismatched-pair"])
def test_a_bad_client_certificate_is_a_config_error_naming_the_key(tls, section, keys, key, problem):
    files = {"client_cert": tls.client_cert, "client_key": tls.client_key, "other_key": tls.other_key,
             "not_pem": tls.not_pem}
    keys = {name: item.format(**files) for name, item in keys.items()}
    target = {"name": "mtls", "url": "https://127.0.0.1:1/", **(keys if section == "target" else {})}
    text = config_text([target], monitor=keys if section == "monitor" else {})
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    path = "targets[0]" if section == "target" else "monitor"
    line = _line_of(text, f"{key} = ") if key in keys else _line_of(
        text, "[[targets]]" if section == "target" else "[monitor]")
    message = str(raised.value)
    assert message.startswith(f"greenmon.toml:{line}: {path}.{key}: "), (message, text)
    assert problem in message, message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_an_unreadable_client_key_is_a_config_error(tls, tmp_path):
    key = tmp_path / "client.key"
    shutil.copy(tls.client_key, key)
    key.chmod(0)
    text = config_text([{"name": "mtls", "url": "https://127.0.0.1:1/", "client_cert": tls.client_cert,
                         "client_key": str(key)}])
    with pytest.raises(ConfigError, match=r"targets\[0\]\.client_key: cannot read it"):
        parse_config(text, "greenmon.toml")


@pytest.mark.parametrize("section", ["monitor", "target", "oauth2"])
def test_a_ca_file_that_is_no_pem_bundle_is_a_config_error_naming_the_key(tls, section):
    """Found at load time, not by the first HTTPS check (which would end in a traceback)."""
    target = {"name": "t", "url": "https://127.0.0.1:1/", **({"ca_file": tls.not_pem} if section == "target" else {})}
    text = config_text([target])
    if section == "monitor":
        text = text.replace("[monitor]\n", f'[monitor]\nca_file = "{tls.not_pem}"\n', 1)
    if section == "oauth2":
        text = text.replace("[[targets]]\n", "[[targets]]\nauth = \"api\"\n", 1) + (
            '[auth.api]\ntype = "oauth2"\ntoken_url = "https://127.0.0.1:1/token"\nclient_id = "gm"\n'
            f'client_secret = "s"\nca_file = "{tls.not_pem}"\n')
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    path = {"monitor": "monitor", "target": "targets[0]", "oauth2": "auth.api"}[section]
    message = str(raised.value)
    assert message.startswith(f"greenmon.toml:{_line_of(text, 'ca_file = ')}: {path}.ca_file: "), message
    assert "is not a PEM bundle of CA certificates" in message, message


def test_a_reload_takes_a_rotated_ca_bundle(tmp_path):
    """The same ca_file path with new contents: a reload builds the trust again from it."""
    old_ca, new_ca = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    old_ca.cert_pem.write_to_path(str(ca_file))
    with HTTPFarm({"/ok": reply()}, ssl_context=tls_server_context(new_ca, "127.0.0.1")) as farm:
        targets = [{"name": "tls", "url": farm.url("/ok"), "ca_file": str(ca_file)}]
        def load():   # a breaker that stays closed: the check after the reload is made
            return daemon_config(targets, extra="[breaker]\nfailure_threshold = 1000\n")

        with running_daemon(load(), loader=load) as running:
            series = running.daemon.store.series
            wait_until(lambda: series["tls"].last is not None, 5.0, message="a first check")
            assert (series["tls"].last.error_class, series["tls"].last.detail) == ("connection", "tls")
            new_ca.cert_pem.write_to_path(str(ca_file))   # rotated in place
            assert running.daemon.reload() is True
            wait_until(lambda: series["tls"].last.ok, 5.0, message="a check trusting the new CA")


# --- A ${VAR} in a URL is sent, never shown ------------------------------------------------------------

SECRET = "gm-" + secrets.token_hex(10)
SECRET_VAR = "GM_SECRET"


class QueryRecorder:
    """A handler recording each request's query string, answering ``status``."""

    def __init__(self, status: str = "200 OK"):
        self.status = status
        self.queries: list[str] = []

    def __call__(self, environ):
        self.queries.append(environ.get("QUERY_STRING", ""))
        return self.status, [], b"body"


@contextlib.contextmanager
def secret_farm():
    """/ok and /broken (a 500) recording their queries; yields (farm, ok, broken)."""
    ok, broken = QueryRecorder(), QueryRecorder("500 Internal Server Error")
    with HTTPFarm({"/ok": ok, "/broken": broken}) as farm:
        yield farm, ok, broken


def secret_targets(farm) -> list[dict]:
    """No names: the default name ("GET <url>") shows the URL too."""
    return [{"url": farm.url("/ok") + "?api_key=${GM_SECRET}"},
            {"url": farm.url("/broken") + "?user=ops&api_key=${GM_SECRET}&v=1"}]


def masked(farm) -> dict[str, str]:
    """What each URL may look like (by path), and what each target is called."""
    return {"/ok": farm.url("/ok") + "?api_key=***", "/broken": farm.url("/broken") + "?user=ops&api_key=***&v=1"}


def assert_no_secret(text: str, where: str) -> None:
    assert SECRET not in text, f"the URL secret is in {where}"
    assert SECRET[3:] not in text, f"part of the URL secret is in {where}"


def test_a_url_secret_is_sent_and_masked_in_results_metrics_api_and_status_page(monkeypatch):
    monkeypatch.setenv(SECRET_VAR, SECRET)
    with secret_farm() as (farm, ok, broken):
        config = parse_config(config_text(secret_targets(farm), timeout=TIMEOUT_S), "greenmon.toml")
        shown = masked(farm)
        results = sweep_config(config)
        with running_daemon(config.replace("monitor", interval=INTERVAL_S)) as running:
            running.wait_sweeps(1)
            pages = {path: running.get(path) for path in ("/", "/metrics", "/api/results")}
    # The requests carried the value.
    assert ok.queries[0] == f"api_key={SECRET}"
    assert broken.queries[0] == f"user=ops&api_key={SECRET}&v=1"
    # Every display shows *** in its place.
    documents = {r.target: r.to_dict() for r in results}
    assert set(documents) == {f"GET {shown['/ok']}", f"GET {shown['/broken']}"}
    assert [d["url"] for d in documents.values()] == [shown["/ok"], shown["/broken"]]
    for result in results:
        assert_no_secret(repr(result), f"the result of {result.target}")
        assert_no_secret(json.dumps(result.to_dict()), f"the JSON of {result.target}")
    for path, response in pages.items():
        assert response.status_code == 200
        assert_no_secret(response.text, path)
    api = {r["target"]: r["url"] for r in pages["/api/results"].json()["results"]}
    assert api == {f"GET {url}": url for url in shown.values()}
    info = {s.labels["target"]: s.labels["url"] for s in select(pages["/metrics"].text, "greenmon_target_info")}
    assert info == {f"GET {url}": url for url in shown.values()}
    assert "api_key=***" in pages["/"].text


@pytest.mark.parametrize("targets, fragment", [
    ([{"name": "t", "url": "http://:8080/x?api_key=${GM_SECRET}"}],
     "targets[0].url: has no host: 'http://:8080/x?api_key=***' (target 't')"),
    ([{"url": "http://127.0.0.1:1/x?api_key=${GM_SECRET}"}, {"url": "http://127.0.0.1:1/x?api_key=${GM_SECRET}"}],
     "targets[1].name: duplicate target name 'GET http://127.0.0.1:1/x?api_key=***'"),
    ([{"url": "http://127.0.0.1:1/${GM_SECRET}/x", "interval": 0.1, "timeout": 1.0}],
     "of target 'GET http://127.0.0.1:1/***/x'"),
], ids=["no-host", "duplicate-default-name", "interval-shorter-than-timeout"])
def test_config_errors_about_a_url_mask_its_secret(monkeypatch, targets, fragment):
    monkeypatch.setenv(SECRET_VAR, SECRET)
    with pytest.raises(ConfigError) as raised:
        parse_config(config_text(targets), "greenmon.toml")
    assert fragment in str(raised.value), raised.value
    assert_no_secret(str(raised.value), "the config error")


def test_check_config_and_once_outputs_hold_no_url_secret(tmp_path):
    env = {SECRET_VAR: SECRET}
    with secret_farm() as (farm, ok, broken):
        path = tmp_path / "greenmon.toml"
        path.write_text(config_text(secret_targets(farm), timeout=TIMEOUT_S), encoding="utf-8")
        check = run_cli("--config", str(path), "--check-config", env=env)
        once = run_cli("--config", str(path), "--once", "--format", "json", "--log-level", "debug", env=env)
        bad = tmp_path / "bad.toml"
        bad.write_text(config_text([{"name": "t", "url": "http://:8080/x?api_key=${GM_SECRET}"}]),
                       encoding="utf-8")
        bad_check = run_cli("--config", str(bad), "--check-config", env=env)
    assert check.returncode == 0 and "OK: 2 targets" in check.stdout, check
    assert once.returncode == 1, once.stderr[-2000:]
    assert bad_check.returncode == 2 and "api_key=***" in bad_check.stderr, bad_check
    for run, name in ((check, "--check-config"), (once, "--once"), (bad_check, "--check-config (error)")):
        assert_no_secret(run.stdout, f"the stdout of {name}")
        assert_no_secret(run.stderr, f"the stderr of {name}")
        assert "Traceback" not in run.stderr
    assert "DEBUG" in once.stderr and "check failed" in once.stderr and "api_key=***" in once.stderr
    assert sorted(r["url"] for r in json.loads(once.stdout)["results"]) == sorted(masked(farm).values())
    assert ok.queries == [f"api_key={SECRET}"]   # and the check sent it


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_daemon_at_debug_level_never_logs_a_url_secret(monkeypatch, tmp_path, workers):
    monkeypatch.setenv(SECRET_VAR, SECRET)   # the daemon inherits the environment
    with secret_farm() as (farm, ok, broken):
        path = tmp_path / "greenmon.toml"
        path.write_text(config_text(secret_targets(farm), interval=0.5, timeout=0.5),
                        encoding="utf-8")
        name = f"GET {masked(farm)['/broken']}"
        with DaemonProcess(path, tmp_path, "--log-level", "debug", "--workers", workers) as daemon:
            daemon.wait_ready(timeout=15)
            daemon.wait_metric(lambda t: (value(t, "greenmon_checks_total", target=name) or 0) >= 2,
                               timeout=15, message="two checks of the failing target")
            pages = {p: daemon.get(p).text for p in ("/", "/metrics", "/api/results")}
            daemon.send(signal.SIGHUP)   # a reload logs too
            wait_until(lambda: "config reloaded" in daemon.stderr(), 10, message="the reload")
            daemon.send(signal.SIGTERM)
            assert daemon.wait_exit(8) == 0
    stderr = daemon.stderr()
    assert "DEBUG" in stderr and "check failed" in stderr, stderr[-2000:]
    assert f"target={name} class=http" in stderr   # the failing target, shown masked
    assert "Traceback" not in stderr
    assert_no_secret(stderr, "the daemon's stderr")
    assert_no_secret(daemon.stdout_path.read_text(encoding="utf-8"), "the daemon's stdout")
    for page, text in pages.items():
        assert_no_secret(text, page)
    assert ok.queries and set(ok.queries) == {f"api_key={SECRET}"}


# --- nosniff and the Content-Security-Policy ---------------------------------------------------------

def _policy(header: str) -> dict[str, str]:
    directives = {}
    for part in header.split(";"):
        name, _, rest = part.strip().partition(" ")
        if name:
            directives[name] = rest.strip()
    return directives


def test_status_page_and_api_send_nosniff_and_a_csp_that_hashes_the_pages_style_and_script(ok_farm):
    config = daemon_config([{"name": "ok", "url": ok_farm.url("/ok")}])
    with running_daemon(config) as running:
        running.wait_sweeps(1)
        page, api = running.get("/"), running.get("/api/results")
    for response in (page, api):
        assert response.status_code == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        policy = _policy(response.headers["Content-Security-Policy"])
        assert policy["default-src"] == "'none'"
        assert policy["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    page_policy = _policy(page.headers["Content-Security-Policy"])
    styles = re.findall(r"<style>(.*?)</style>", page.text, re.S)
    assert len(styles) == 1, styles
    digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
    assert page_policy["style-src"] == f"'sha256-{digest}'"
    scripts = re.findall(r"<script>(.*?)</script>", page.text, re.S)   # the filter box's
    assert len(scripts) == 1 and len(re.findall(r"<script", page.text, re.I)) == 1, scripts
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert page_policy["script-src"] == f"'sha256-{digest}'"
    assert not re.search(r"\son[a-z]+\s*=", page.text, re.I)   # inline handlers would be blocked
    assert not re.search(r"\sstyle\s*=", page.text, re.I)   # inline style attributes would be blocked
