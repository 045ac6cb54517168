"""Auth sources against a real local server: headers sent, token sources, rotation, refresh-once, redaction."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os

import pytest

import greenmon
from greenmon.config import parse_config
from greenmon.engine import Engine, sweep

from support.configs import config_text, toml_value
from support.helpers import run_cli
from support.servers import HTTPFarm, closed_port, redirect, reply, require_header


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def auth_table(kind: str, origin: str, secret: str, tmp_path, monkeypatch, name: str = "main") -> str:
    """An [auth.NAME] table of ``kind`` whose secret is given ``origin`` (inline, env or file)."""
    key = {"bearer": "token", "basic": "password", "header": "value"}[kind]
    lines = [f"[auth.{name}]", f'type = "{kind}"']
    if kind == "basic":
        lines.append('username = "ops"')
    if kind == "header":
        lines.append('name = "X-Api-Key"')
    if origin == "inline":
        lines.append(f"{key} = {toml_value(secret)}")
    elif origin == "env":
        variable = f"GM_TEST_{name.upper()}_SECRET"
        monkeypatch.setenv(variable, secret)
        lines.append(f'{key}_env = "{variable}"')
    else:
        path = tmp_path / f"{name}.secret"
        path.write_text(secret + "\n", encoding="utf-8")  # the trailing newline is not part of it
        lines.append(f"{key}_file = {toml_value(str(path))}")
    return "\n".join(lines) + "\n"


def expected_header(kind: str, secret: str) -> tuple[str, str]:
    if kind == "bearer":
        return "Authorization", f"Bearer {secret}"
    if kind == "basic":
        return "Authorization", basic("ops", secret)
    return "X-Api-Key", secret


def sent(farm: HTTPFarm, path: str, header: str = "Authorization") -> list:
    return [headers.get(header) for _, headers in farm.requests[path]]


def rewrite_keeping_stamp(path, text: str) -> None:
    """Replace the file's content with text of the same size and put its mtime back.

    The auth source's stat-based cache (mtime, size) then still believes it
    holds the current value: only an explicit refresh reads the new one.
    """
    before = os.stat(path)
    assert len(text.encode()) == before.st_size
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


# --- the header each kind sends, from each origin -------------------------

@pytest.mark.parametrize("origin", ["inline", "env", "file"])
@pytest.mark.parametrize("kind", ["bearer", "basic", "header"])
def test_auth_sends_the_right_header(tmp_path, monkeypatch, kind, origin):
    secret = f"s3cret-{kind}-{origin}"
    header, value = expected_header(kind, secret)
    with HTTPFarm({"/private": require_header(header, value)}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table(kind, origin, secret, tmp_path, monkeypatch)),
                              "<test>")
        (result,) = sweep(config.targets, config)
    assert result.ok, result
    assert (result.status_code, result.attempts) == (200, 1)
    assert sent(farm, "/private", header) == [value]


def test_a_target_without_auth_sends_no_credentials(tmp_path, monkeypatch):
    with HTTPFarm({"/open": reply(), "/private": require_header("Authorization", "Bearer t")}) as farm:
        config = parse_config(config_text([{"name": "open", "url": farm.url("/open")},
                                           {"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table("bearer", "inline", "t", tmp_path, monkeypatch)),
                              "<test>")
        results = greenmon.sweep(config.targets, config)
    assert [r.ok for r in results] == [True, True]
    assert sent(farm, "/open") == [None]
    assert sent(farm, "/private") == ["Bearer t"]


def test_auth_header_replaces_a_configured_header_of_the_same_name(tmp_path, monkeypatch):
    with HTTPFarm({"/private": require_header("Authorization", "Bearer right")}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main",
                                            "headers": {"Authorization": "Bearer wrong", "X-Extra": "1"}}],
                                          extra=auth_table("bearer", "inline", "right", tmp_path, monkeypatch)),
                              "<test>")
        (result,) = sweep(config.targets, config)
    assert result.ok
    assert sent(farm, "/private") == ["Bearer right"]
    assert sent(farm, "/private", "X-Extra") == ["1"]


# --- rotation and refresh ---------------------------------------------------

def test_token_file_rewritten_between_sweeps_is_picked_up(tmp_path, monkeypatch):
    token_file = tmp_path / "main.secret"
    with HTTPFarm({"/private": reply()}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table("bearer", "file", "token-A", tmp_path, monkeypatch)),
                              "<test>")
        engine = Engine(config)
        try:
            first = engine.sweep()
            token_file.write_text("token-BBBB\n", encoding="utf-8")   # a new size
            second = engine.sweep()
            stamp = os.stat(token_file)
            token_file.write_text("token-CCCC\n", encoding="utf-8")   # same size, later mtime
            os.utime(token_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 2_000_000_000))
            third = engine.sweep()
        finally:
            engine.close()
        # The Python API with the same (unchanged) config object sees the file too.
        token_file.write_text("token-D\n", encoding="utf-8")
        fourth = sweep(config.targets, config)
    assert all(r.ok and r.attempts == 1 for r in first + second + third + fourth)
    assert sent(farm, "/private") == ["Bearer token-A", "Bearer token-BBBB", "Bearer token-CCCC",
                                      "Bearer token-D"]


def test_stale_file_token_is_refreshed_once_on_401(tmp_path, monkeypatch):
    token_file = tmp_path / "main.secret"
    with HTTPFarm({"/private": require_header("Authorization", "Bearer token-B")}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table("bearer", "file", "token-A", tmp_path, monkeypatch),
                                          retries=2), "<test>")
        rewrite_keeping_stamp(token_file, "token-B\n")
        (result,) = sweep(config.targets, config)
    assert sent(farm, "/private") == ["Bearer token-A", "Bearer token-B"]
    assert result.ok, result
    assert (result.attempts, result.status_code, result.error_class) == (2, 200, None)


def test_env_token_is_refreshed_once_on_403(tmp_path, monkeypatch):
    accept = require_header("Authorization", "Bearer token-B", denied="403 Forbidden")
    with HTTPFarm({"/private": accept}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table("bearer", "env", "token-A", tmp_path, monkeypatch),
                                          retries=2), "<test>")
        monkeypatch.setenv("GM_TEST_MAIN_SECRET", "token-B")
        (result,) = sweep(config.targets, config)
    assert sent(farm, "/private") == ["Bearer token-A", "Bearer token-B"]
    assert result.ok and result.attempts == 2


def test_refreshed_value_is_kept_for_later_checks(tmp_path, monkeypatch):
    token_file = tmp_path / "main.secret"
    with HTTPFarm({"/private": require_header("Authorization", "Bearer token-B")}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table("bearer", "file", "token-A", tmp_path, monkeypatch)),
                              "<test>")
        rewrite_keeping_stamp(token_file, "token-B\n")
        engine = Engine(config)
        try:
            first, = engine.sweep()
            second, = engine.sweep()
        finally:
            engine.close()
    assert (first.ok, first.attempts, second.ok, second.attempts) == (True, 2, True, 1)
    assert sent(farm, "/private") == ["Bearer token-A", "Bearer token-B", "Bearer token-B"]


@pytest.mark.parametrize("kind", ["bearer", "basic", "header"])
def test_inline_secret_is_not_refreshed(tmp_path, monkeypatch, kind):
    header, _ = expected_header(kind, "x")
    with HTTPFarm({"/private": require_header(header, "never")}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table(kind, "inline", "wrong", tmp_path, monkeypatch),
                                          retries=2), "<test>")
        (result,) = sweep(config.targets, config)
    assert farm.hits("/private") == 1
    assert not result.ok
    assert (result.error_class, result.detail, result.attempts, result.status_code) == (
        "auth", "401", 1, 401)


@pytest.mark.parametrize("denied, detail", [("401 Unauthorized", "401"), ("403 Forbidden", "403")])
@pytest.mark.parametrize("origin", ["env", "file"])
def test_refreshable_secret_still_refused_after_refresh(tmp_path, monkeypatch, origin, denied, detail):
    accept = require_header("Authorization", "Bearer token-C", denied=denied)
    with HTTPFarm({"/private": accept}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table("bearer", origin, "token-A", tmp_path, monkeypatch),
                                          retries=3), "<test>")
        (result,) = sweep(config.targets, config)
    assert sent(farm, "/private") == ["Bearer token-A", "Bearer token-A"]  # one refresh, no retries
    assert not result.ok
    assert (result.error_class, result.detail, result.attempts) == ("auth", detail, 2)


def test_unreadable_token_file_keeps_the_last_value(tmp_path, monkeypatch, caplog):
    token_file = tmp_path / "main.secret"
    with HTTPFarm({"/private": require_header("Authorization", "Bearer token-A")}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table("bearer", "file", "token-A", tmp_path, monkeypatch)),
                              "<test>")
        token_file.unlink()
        with caplog.at_level(logging.WARNING):
            (result,) = sweep(config.targets, config)
    assert result.ok
    assert sent(farm, "/private") == ["Bearer token-A"]
    assert str(token_file) in caplog.text and "keeping the last value" in caplog.text
    assert "token-A" not in caplog.text


# --- credentials on the wire -------------------------------------------------

def test_url_userinfo_is_sent_as_basic_auth():
    with HTTPFarm({"/private": require_header("Authorization", basic("ops", "pw-url"))}) as farm:
        url = farm.url("/private").replace("//", "//ops:pw-url@")
        config = parse_config(config_text([{"name": "private", "url": url}]), "<test>")
        (result,) = sweep(config.targets, config)
    assert sent(farm, "/private") == [basic("ops", "pw-url")]
    assert result.ok


@pytest.mark.parametrize("kind", ["bearer", "basic"])
def test_authorization_is_not_forwarded_to_another_origin_on_redirect(tmp_path, monkeypatch, kind):
    with HTTPFarm({"/landing": reply()}) as other, \
            HTTPFarm({"/private": redirect(other.url("/landing"))}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table(kind, "inline", "s3cret", tmp_path, monkeypatch)),
                              "<test>")
        (result,) = sweep(config.targets, config)
    assert result.ok
    assert sent(farm, "/private") == [expected_header(kind, "s3cret")[1]]
    assert sent(other, "/landing") == [None]


def test_header_auth_secret_is_not_forwarded_to_another_origin_on_redirect(tmp_path, monkeypatch):
    with HTTPFarm({"/landing": reply()}) as other, \
            HTTPFarm({"/private": redirect(other.url("/landing"))}) as farm:
        config = parse_config(config_text([{"name": "private", "url": farm.url("/private"), "auth": "main"}],
                                          extra=auth_table("header", "inline", "s3cret", tmp_path, monkeypatch)),
                              "<test>")
        (result,) = sweep(config.targets, config)
    assert sent(farm, "/private", "X-Api-Key") == ["s3cret"]
    assert result.ok and other.hits("/landing") == 1
    assert sent(other, "/landing", "X-Api-Key") == [None]


# --- secrets never leave ----------------------------------------------------

SECRETS = {
    "bearer": "tok-BEARER-9d1f0c",
    "basic": "pw-BASIC-73ac2e",
    "header": "key-HEADER-51be7a",
    "userinfo": "pw-URL-08b3f1",
}
# Every form a secret may take on the wire, so a leak of the encoded form is caught too.
FORBIDDEN = list(SECRETS.values()) + [basic("ops", SECRETS["basic"]).split()[1],
                                      basic("ops", SECRETS["userinfo"]).split()[1]]


def secret_auth_tables(tmp_path, monkeypatch) -> str:
    return (auth_table("bearer", "file", SECRETS["bearer"], tmp_path, monkeypatch, name="tok")
            + auth_table("basic", "env", SECRETS["basic"], tmp_path, monkeypatch, name="pw")
            + auth_table("header", "inline", SECRETS["header"], tmp_path, monkeypatch, name="key"))


def secret_targets(farm: HTTPFarm) -> list[dict]:
    """Up, refused by auth, failing with 500 and unreachable, with each kind of secret."""
    refused = f"http://127.0.0.1:{closed_port()}"
    userinfo = farm.url("/userinfo").replace("http://", f"http://ops:{SECRETS['userinfo']}@")
    return [
        {"name": "up-bearer", "url": farm.url("/bearer"), "auth": "tok"},
        {"name": "up-basic", "url": farm.url("/basic"), "auth": "pw"},
        {"name": "up-header", "url": farm.url("/header"), "auth": "key"},
        {"url": userinfo},  # the default name holds the URL: its password must be masked
        {"name": "denied", "url": farm.url("/denied"), "auth": "tok"},
        {"name": "error", "url": farm.url("/error"), "auth": "pw"},
        {"name": "refused", "url": f"{refused}/", "auth": "key"},
        {"name": "refused-userinfo", "url": refused.replace("//", f"//ops:{SECRETS['userinfo']}@") + "/"},
    ]


def secret_farm() -> HTTPFarm:
    return HTTPFarm({
        "/bearer": require_header("Authorization", f"Bearer {SECRETS['bearer']}"),
        "/basic": require_header("Authorization", basic("ops", SECRETS["basic"])),
        "/header": require_header("X-Api-Key", SECRETS["header"]),
        "/userinfo": require_header("Authorization", basic("ops", SECRETS["userinfo"])),
        "/denied": reply("401 Unauthorized", b"no"),
        "/error": reply("500 Internal Server Error", b"boom"),
    })


def assert_no_secret(text: str, where: str) -> None:
    for secret in FORBIDDEN:
        assert secret not in text, f"a secret leaked into {where}"


def test_secrets_never_appear_in_results_or_logs(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    with secret_farm() as farm:
        config = parse_config(config_text(secret_targets(farm), extra=secret_auth_tables(tmp_path, monkeypatch),
                                          retries=1, backoff=0.01), "<test>")
        results = sweep(config.targets, config)
    by_name = {r.target: r for r in results}
    # The servers did get the secrets: the checks really authenticated.
    assert [by_name[n].ok for n in ("up-bearer", "up-basic", "up-header")] == [True] * 3
    userinfo = results[3]   # (whether it is up: see test_url_userinfo_is_sent_as_basic_auth)
    assert "***" in userinfo.target and "***" in userinfo.url
    assert (by_name["denied"].error_class, by_name["denied"].attempts) == ("auth", 2)
    assert by_name["error"].error_class == "http"
    assert by_name["refused"].error_class == "connection"
    assert by_name["refused-userinfo"].error_class == "connection"
    assert "***" in by_name["refused-userinfo"].url
    for result in results:
        for field in dataclasses.fields(result):
            assert_no_secret(repr(getattr(result, field.name)), f"{result.target}.{field.name}")
        assert_no_secret(repr(result), f"repr of {result.target}")
        assert_no_secret(json.dumps(result.to_dict()), f"JSON of {result.target}")
    logged = " ".join(r.getMessage() for r in caplog.records if "check failed" in r.getMessage())
    for name in ("denied", "error", "refused", "refused-userinfo"):   # the logs were captured
        assert f"target={name} " in logged
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"log record {record.name}")
        assert_no_secret(repr(record.args), f"log arguments {record.name}")
    assert_no_secret(repr(config.auth), "the repr of the auth sources")


@pytest.mark.parametrize("output_format", ["json", "table", "jsonl"])
def test_secrets_never_appear_in_cli_output(tmp_path, monkeypatch, write_config, output_format):
    with secret_farm() as farm:
        text = config_text(secret_targets(farm), extra=secret_auth_tables(tmp_path, monkeypatch),
                           retries=1, backoff=0.01)
        path = write_config(text)
        run = run_cli("--config", str(path), "--once", "--format", output_format,
                      "--log-level", "debug",
                      env={"GM_TEST_PW_SECRET": SECRETS["basic"]})
        seen = {route: farm.hits(route) for route in ("/bearer", "/basic", "/header")}
    assert run.returncode == 1, run.stderr
    assert set(seen.values()) == {1}, seen   # every check was made
    assert "denied" in run.stdout and "refused" in run.stdout
    assert "DEBUG" in run.stderr and "check failed" in run.stderr
    assert_no_secret(run.stdout, f"stdout ({output_format})")
    assert_no_secret(run.stderr, f"stderr ({output_format})")
