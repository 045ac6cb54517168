"""Secrets given in the config never leave greenmon (docs/reliability.md, "Secrets"): not on stdout
or stderr (at --log-level debug), not in logs, JSON or JSONL results, --output and --textfile files, the
state file, /api/results, /metrics, the status page, nor in exception messages, whether
the target is up or errors (401, 403, 500 echoing the request, refused, timeout).

Each secret carries a random core (hex) that any escaping keeps (HTML, JSON, Prometheus
labels, percent-encoding): searching for the cores finds every escaped form; the base64
forms (a basic credential, or a secret someone base64-encoded) are searched for as well.
test_auth.py covers the header each kind sends and the --once report; here every other
output channel is searched too.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import secrets as random_secrets
import signal
import subprocess
import sys

import pytest

from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.schema import ConfigError
from greenmon.transport import Transport
from support.configs import config_text, toml_value
from support.daemon_helpers import DaemonProcess, running_daemon, value
from support.servers import HTTPFarm, RawServer, closed_port, reply, require_header, send_raw

USERNAME = "ops"


def _secret(prefix: str) -> tuple[str, str]:
    """(core, secret): the secret wraps a random core in characters that every format escapes."""
    core = random_secrets.token_hex(6)
    return core, f'{prefix}-{core}-<&">'


BEARER_CORE, BEARER = _secret("tok")                 # [auth.tok] type = "bearer", token = ...
PASSWORD_CORE, PASSWORD = _secret("pw")              # [auth.pw] type = "basic", password = ...
PASSWORD += "\u00e9"                                 # (basic: sent as UTF-8 inside base64)
HEADER_CORE, HEADER_VALUE = _secret("key")           # [auth.key] type = "header", value = ...
PLAIN_CORE, PLAIN_AUTHZ = _secret("plain")           # a target's own headers = { Authorization = ... }


def _base64_forms(raw: str) -> list[str]:
    data = raw.encode()
    forms = []
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        text = encode(data).decode("ascii")
        forms += [text, text.rstrip("=")]
    return forms


FORBIDDEN = sorted({BEARER_CORE, PASSWORD_CORE, HEADER_CORE, PLAIN_CORE,
                    *_base64_forms(f"{USERNAME}:{PASSWORD}"), *_base64_forms(PASSWORD),
                    *_base64_forms(BEARER), *_base64_forms(HEADER_VALUE), *_base64_forms(PLAIN_AUTHZ)})


def assert_no_secret(text: str, where: str) -> None:
    for form in FORBIDDEN:
        assert form not in text, f"a secret ({form[:6]}...) leaked into {where}"


def test_the_search_finds_every_form_a_secret_may_take():
    """The search itself: escaped, encoded and embedded forms of each secret are all caught."""
    import html
    import urllib.parse
    forms = []
    for secret in (BEARER, PASSWORD, HEADER_VALUE, PLAIN_AUTHZ):
        forms += [secret, html.escape(secret), json.dumps(secret), json.dumps(secret, ensure_ascii=False),
                  urllib.parse.quote(secret, safe=""), secret.replace('"', '\\"'),   # Prometheus label
                  *_base64_forms(secret)]
    forms += _base64_forms(f"{USERNAME}:{PASSWORD}")
    for form in forms:
        with pytest.raises(AssertionError):
            assert_no_secret(f"prefix {form} suffix", "a test string")
    assert_no_secret("nothing to see: " + " ".join(sorted(KINDS)), "a clean string")


AUTH_TABLES = (
    f'[auth.tok]\ntype = "bearer"\ntoken = {toml_value(BEARER)}\n\n'
    f'[auth.pw]\ntype = "basic"\nusername = "{USERNAME}"\npassword = {toml_value(PASSWORD)}\n\n'
    f'[auth.key]\ntype = "header"\nname = "X-Api-Key"\nvalue = {toml_value(HEADER_VALUE)}\n\n'
)
# How each kind authenticates: the auth table it names, or its own Authorization header.
KINDS = {"bearer": {"auth": "tok"}, "basic": {"auth": "pw"}, "header": {"auth": "key"},
         "plain": {"headers": {"Authorization": PLAIN_AUTHZ}}}
FAILURES = ("denied", "forbidden", "echo", "refused", "timeout")
TIMEOUT_S = 0.5
SETTINGS = {"retries": 1, "backoff": 0.01, "timeout": TIMEOUT_S}   # of every config below: one retry


def _basic_header() -> str:
    return "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode("ascii")


def _echo(environ):
    """A 500 whose body and headers hold the request's credentials, as careless error pages do."""
    credentials = " ".join(f"{k}={v}" for k, v in environ.items() if k.startswith("HTTP_"))
    return "500 Internal Server Error", [("X-Echo", credentials.encode("latin-1", "replace").decode("latin-1"))], \
        credentials.encode("utf-8", "replace")


class SecretFarm:
    """The routes that need each credential, the failures, a refused port and a silent server."""

    def __enter__(self) -> "SecretFarm":
        self.farm = HTTPFarm({
            "/bearer": require_header("Authorization", f"Bearer {BEARER}"),
            "/basic": require_header("Authorization", _basic_header()),
            "/header": require_header("X-Api-Key", HEADER_VALUE),
            "/plain": require_header("Authorization", PLAIN_AUTHZ),
            "/denied": reply("401 Unauthorized", b"who are you"),
            "/forbidden": reply("403 Forbidden", b"no"),
            "/echo": _echo,
        }).__enter__()
        self.silent = RawServer(send_raw(b"", then_sleep=TIMEOUT_S * 6)).__enter__()
        self.refused = closed_port()
        return self

    def __exit__(self, *exc_info) -> None:
        self.silent.__exit__(*exc_info)
        self.farm.__exit__(*exc_info)

    def targets(self) -> list[dict]:
        out = []
        for kind, how in KINDS.items():
            out.append({"name": f"up-{kind}", "url": self.farm.url(f"/{kind}"), **how})
            for failure in FAILURES:
                if failure == "refused":
                    url = f"http://127.0.0.1:{self.refused}/{kind}"
                elif failure == "timeout":
                    url = self.silent.url(f"/{kind}")
                else:
                    url = self.farm.url(f"/{failure}")
                out.append({"name": f"{failure}-{kind}", "url": url, **how})
        return out


EXPECTED = {"denied": ("auth", "401"), "forbidden": ("auth", "403"), "echo": ("http", "500"),
            "refused": ("connection", "refused"), "timeout": ("timeout", "read")}


def assert_checks_really_ran(results: dict) -> None:
    """Every credential was accepted by its route, and every failure is the expected one."""
    for kind in KINDS:
        assert results[f"up-{kind}"]["ok"], results[f"up-{kind}"]
        for failure, (error_class, detail) in EXPECTED.items():
            result = results[f"{failure}-{kind}"]
            assert (result["error_class"], result["detail"]) == (error_class, detail), result


# --- In-process: results, logs and exception messages ---------------------------------------------------

def test_results_logs_and_exception_messages_hold_no_secret(monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)   # greenmon, urllib3 and gevent, all at DEBUG
    raised: list[BaseException] = []
    original_send = Transport.send

    def send(self, request):
        try:
            return original_send(self, request)
        except BaseException as error:
            raised.append(error)
            raise
    monkeypatch.setattr(Transport, "send", send)

    with SecretFarm() as farm:
        config = parse_config(config_text(farm.targets(), extra=AUTH_TABLES, **SETTINGS), "secrets.toml")
        engine = Engine(config)
        try:
            results = engine.sweep()
        finally:
            engine.close()
        echoed = farm.farm.hits("/echo")

    assert_checks_really_ran({r.target: r.to_dict() for r in results})
    # Each kind reached it (a 500 is not retried; on a loaded machine an attempt that timed
    # out before the echo answered is, and reaches it again).
    assert echoed >= 4, "the echoing 500 was not reached by every kind"
    for result in results:
        for field in dataclasses.fields(result):
            assert_no_secret(repr(getattr(result, field.name)), f"{result.target}.{field.name}")
        assert_no_secret(json.dumps(result.to_dict()), f"the JSON of {result.target}")
    assert raised, "no attempt raised: the exception messages were not exercised"
    for error in raised:
        chain, seen = [error], set()
        while chain:   # the error, and everything it was raised from or while handling
            item = chain.pop()
            if id(item) in seen:
                continue
            seen.add(id(item))
            assert_no_secret(f"{item!s} {item!r}", f"the exception {type(item).__name__}")
            chain += [x for x in (item.__cause__, item.__context__) if x is not None]
    assert any("check failed" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"the log record of {record.name}")
        assert_no_secret(repr(record.args), f"the log arguments of {record.name}")
    assert_no_secret(caplog.text, "the formatted log")
    assert_no_secret(repr(config.auth), "the repr of the auth sources")


def test_status_page_api_and_metrics_in_process_hold_no_secret(caplog):
    caplog.set_level(logging.DEBUG)
    with SecretFarm() as farm:
        config = parse_config(config_text(farm.targets(), extra=AUTH_TABLES, **SETTINGS),
                              "secrets.toml").replace("monitor", interval=0.2)
        with running_daemon(config) as running:
            running.wait_sweeps(2, timeout=15)
            pages = {path: running.get(path).text for path in ("/", "/metrics", "/api/results", "/healthz")}
    assert_checks_really_ran({r["target"]: r for r in json.loads(pages["/api/results"])["results"]})
    for path, text in pages.items():
        assert_no_secret(text, path)
    assert_no_secret(caplog.text, "the log")


# --- The real command ------------------------------------------------------------------------------------

def test_once_outputs_hold_no_secret(tmp_path):
    """--format json/jsonl/table, --output, --textfile and --state-file, at --log-level debug."""
    with SecretFarm() as farm:
        path = tmp_path / "greenmon.toml"
        path.write_text(config_text(farm.targets(), extra=AUTH_TABLES, breaker={"failure_threshold": 1},
                                    **SETTINGS), encoding="utf-8")
        runs = {}
        for fmt in ("json", "jsonl", "table"):
            files = {"output": tmp_path / f"report.{fmt}", "textfile": tmp_path / f"metrics-{fmt}.prom",
                     "state": tmp_path / f"state-{fmt}.json"}
            args = [sys.executable, "-m", "greenmon", "--config", str(path), "--once", "--format", fmt,
                    "--log-level", "debug", "--state-file", str(files["state"]),
                    "--textfile", str(files["textfile"])]
            if fmt != "table":
                args += ["--output", str(files["output"])]
            runs[fmt] = (files, subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                 text=True, stdin=subprocess.DEVNULL))
        outputs = {}
        for fmt, (files, process) in runs.items():
            try:
                outputs[fmt] = (files, *process.communicate(timeout=60), process.returncode)
            finally:
                process.kill()

    for fmt, (files, stdout, stderr, code) in outputs.items():
        assert code == 1, stderr[-2000:]
        assert "DEBUG" in stderr and "check failed" in stderr
        assert "Traceback" not in stderr
        assert_no_secret(stdout, f"stdout ({fmt})")
        assert_no_secret(stderr, f"stderr ({fmt})")
        for name, file in files.items():
            if name == "output" and fmt == "table":
                continue
            assert file.exists(), f"{name} ({fmt}) was not written"
            assert_no_secret(file.read_text(encoding="utf-8"), f"the {name} file ({fmt})")
    json_report = json.loads(outputs["json"][0]["output"].read_text(encoding="utf-8"))
    assert_checks_really_ran({r["target"]: r for r in json_report["results"]})
    state = json.loads(outputs["json"][0]["state"].read_text(encoding="utf-8"))
    assert len(state["breakers"]) == len(KINDS) * len(FAILURES)   # failures were recorded, errors and all


def test_daemon_endpoints_logs_and_state_file_hold_no_secret(tmp_path):
    state = tmp_path / "state.json"
    with SecretFarm() as farm:
        path = tmp_path / "greenmon.toml"
        path.write_text(config_text(farm.targets(), extra=AUTH_TABLES, interval=0.5,
                                    monitor={"state_file": str(state)},
                                    breaker={"failure_threshold": 1, "recovery_timeout": 0.5}, **SETTINGS),
                        encoding="utf-8")
        with DaemonProcess(path, tmp_path, "--log-level", "debug") as daemon:
            daemon.wait_ready()
            # Two rounds of breaker trials: failures, open breakers and half-open trials all logged.
            daemon.wait_metric(lambda t: value(t, "greenmon_sweeps_total") >= 6, timeout=20,
                               message="6 sweeps")
            pages = {p: daemon.get(p).text for p in ("/", "/metrics", "/api/results", "/healthz", "/nope")}
            daemon.send(signal.SIGTERM)
            assert daemon.wait_exit(5) == 0
    results = {r["target"]: r for r in json.loads(pages["/api/results"])["results"]}
    assert all(results[f"up-{kind}"]["ok"] for kind in KINDS)
    for path, text in pages.items():
        assert_no_secret(text, path)
    stderr = daemon.stderr()
    assert "DEBUG" in stderr and "check failed" in stderr and "Traceback" not in stderr
    assert_no_secret(stderr, "the daemon's stderr")
    assert_no_secret(daemon.stdout_path.read_text(encoding="utf-8"), "the daemon's stdout")
    assert state.exists()
    assert_no_secret(state.read_text(encoding="utf-8"), "the state file")


# --- Config errors about a secret name the key, never the value -------------------------------------------

@pytest.mark.parametrize("table, key", [
    ('[auth.tok]\ntype = "bearer"\ntoken = "{s}\\nsecond-line"\n', "auth.tok.token"),
    ('[auth.tok]\ntype = "bearer"\ntoken = "{s}"\ntokne = "{s}"\n', "auth.tok.tokne"),
    ('[auth.tok]\ntype = "bearer"\ntoken = "{s}"\ntoken_env = "HOME"\n', "auth.tok"),
    ('[auth.pw]\ntype = "basic"\npassword = "{s}"\n', "auth.pw.username"),
    ('[auth.pw]\ntype = "basic"\nusername = "ops"\npassword = "{s}"\npassword_file = "/nonexistent/{s}"\n',
     "auth.pw"),
    ('[auth.key]\ntype = "header"\nname = "X-Api-Key"\nvalue = ["{s}"]\n', "auth.key.value"),
    ('[auth.key]\ntype = "headr"\nvalue = "{s}"\n', "auth.key.type"),
], ids=["multi-line-token", "misspelt-key", "two-sources", "basic-without-username", "password-twice",
        "value-not-a-string", "unknown-type"])
def test_config_errors_about_a_secret_do_not_echo_it(table, key):
    core = random_secrets.token_hex(6)
    text = table.format(s=f"s3cret-{core}") + '\n[[targets]]\nurl = "http://127.0.0.1:1/"\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    message = str(raised.value)
    assert key in message, message
    assert core not in message, f"the secret is in the error: {message}"


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer {s}\r\nX-Injected: 1"},
    {"Authorization": "Bearer {s}" + "a" * 9000},
], ids=["crlf", "too-long"])
def test_config_errors_about_a_plain_auth_header_do_not_echo_it(headers):
    core = random_secrets.token_hex(6)
    bad = {name: value.format(s=core) for name, value in headers.items()}
    text = ('[[targets]]\nname = "users-api"\nurl = "http://127.0.0.1:1/"\n'
            + "headers = { " + ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in bad.items()) + " }\n")
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert "targets[0].headers" in str(raised.value)
    assert core not in str(raised.value)


def test_password_in_url_of_an_unusable_host_never_reaches_stderr(tmp_path):
    core = random_secrets.token_hex(6)
    path = tmp_path / "greenmon.toml"
    path.write_text(f'[[targets]]\nname = "t"\nurl = "http://ops:pw-{core}@.example.com/"\n', encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "greenmon", "--config", str(path), "--once"],
                         capture_output=True, text=True, timeout=60)
    assert core not in run.stderr and core not in run.stdout
    assert "Traceback" not in run.stderr
