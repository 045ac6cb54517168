"""The target model (greenmon.targets): a [[targets]] entry parsed into a Target, its defaults,
the errors that name the file, line, key and target, the URL shown in place of the one sent,
and the shard hash.

Configs are only loaded here: no URL is ever contacted (test_check.py and test_errors.py
check what a target's settings do to its checks). Invalid entries are tables; in the TOML
ones the line the error must point at carries a ``# <-`` marker (support.invalid_configs).
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenmon.config import load_config, parse_config
from greenmon.schema import ConfigError
from greenmon.targets import Target, check_url, redact_url
from greenmon.urls import unsendable
from support.configs import config_text
from support.helpers import requests_refuses
from support.invalid_configs import MARKER, assert_refused_at_marked_line, invalid_case

URL = "http://127.0.0.1:9/"  # never contacted
FILENAME = "targets.toml"


def one_target(entry: dict) -> Target:
    (target,) = parse_config(config_text([entry]), FILENAME).targets
    return target


# --- Invalid entries: file, line, key --------------------------------------------------------

INVALID = [
    # --- unknown keys and wrong types ---
    invalid_case("unknown-key-in-second-target", f"""
        [[targets]]
        name = "a"
        url = "{URL}a"

        [[targets]]
        name = "b"
        url = "{URL}b"
        expect = 200  {MARKER}
        """, "targets[1].expect", "unknown key"),
    invalid_case("bad-header-name-in-target-subtable", f"""
        [[targets]]
        url = "{URL}a"

        [[targets]]
        url = "{URL}b"

        [targets.headers]  {MARKER}
        Accept = "text/plain"
        "X Bad" = "1"
        """, "targets[1].headers", "not a valid HTTP header name"),
    invalid_case("target-enabled-int", f"""
        [[targets]]
        url = "{URL}"
        enabled = 1  {MARKER}
        """, "targets[0].enabled", "must be true or false"),
    invalid_case("target-headers-string", f"""
        [[targets]]
        url = "{URL}"
        headers = "Accept: */*"  {MARKER}
        """, "targets[0].headers", "must be a table of strings"),
    invalid_case("target-label-value-int", f"""
        [[targets]]
        url = "{URL}"
        labels = {{ team = 7 }}  {MARKER}
        """, "targets[0].labels", "team: must be a string"),
    # Label names that would collide with greenmon's own labels (target, url, method, class),
    # with Prometheus' (le, instance, job: renamed exported_*) or its reserved __ prefix.
    *[invalid_case(f"target-label-name-{name}", f"""
        [[targets]]
        url = "{URL}"
        labels = {{ {name} = "x" }}  {MARKER}
        """, "targets[0].labels", f"'{name}' is not a usable label name")
      for name in ("target", "url", "method", "class", "version", "le", "instance", "job", "__meta",
                   "1team")],
    invalid_case("target-url-int", f"""
        [[targets]]
        url = 8080  {MARKER}
        """, "targets[0].url", "must be a string"),
    invalid_case("target-not-a-table", f"""
        targets = [1]  {MARKER}
        """, "targets[0]", "must be a table"),

    # --- timeouts and intervals ---
    invalid_case("target-timeout-string", f"""
        [[targets]]
        url = "{URL}"
        timeout = "5"  {MARKER}
        """, "targets[0].timeout", "must be a number, got a string"),
    invalid_case("target-timeout-zero", f"""
        [monitor]
        timeout = 1.0

        [[targets]]
        url = "{URL}a"

        [[targets]]
        url = "{URL}b"
        timeout = 0  {MARKER}
        """, "targets[1].timeout", "must be > 0, got 0"),
    invalid_case("target-timeout-negative", f"""
        [[targets]]
        url = "{URL}"
        timeout = -2  {MARKER}
        """, "targets[0].timeout", "must be > 0, got -2"),
    invalid_case("target-interval-zero", f"""
        [[targets]]
        url = "{URL}"
        interval = 0  {MARKER}
        """, "targets[0].interval", "must be > 0, got 0"),
    invalid_case("target-interval-negative", f"""
        [[targets]]
        url = "{URL}"
        interval = -5.0  {MARKER}
        """, "targets[0].interval", "must be > 0, got -5"),
    invalid_case("target-interval-string", f"""
        [[targets]]
        url = "{URL}"
        interval = "15s"  {MARKER}
        """, "targets[0].interval", "must be a number, got a string"),

    # --- bad URLs ---
    invalid_case("url-ftp", f"""
        [[targets]]
        name = "files"
        url = "ftp://127.0.0.1/pub"  {MARKER}
        """, "targets[0].url", "scheme must be http or https, got 'ftp'"),
    invalid_case("url-file", f"""
        [[targets]]
        url = "file:///etc/passwd"  {MARKER}
        """, "targets[0].url", "scheme must be http or https, got 'file'"),
    invalid_case("url-no-scheme", f"""
        [[targets]]
        url = "/health"  {MARKER}
        """, "targets[0].url", "scheme must be http or https"),
    invalid_case("url-no-host", f"""
        [[targets]]
        url = "http:///health"  {MARKER}
        """, "targets[0].url", "has no host"),
    invalid_case("url-port-70000", f"""
        [[targets]]
        url = "{URL}"
        name = "first"

        [[targets]]
        url = "http://127.0.0.1:70000/health"  {MARKER}
        """, "targets[1].url", "Port out of range"),
    invalid_case("url-port-0", f"""
        [[targets]]
        url = "http://127.0.0.1:0/health"  {MARKER}
        """, "targets[0].url", "port must be in 1-65535"),
    invalid_case("url-port-not-a-number", f"""
        [[targets]]
        url = "http://127.0.0.1:http/"  {MARKER}
        """, "targets[0].url", "is not a valid URL"),
    invalid_case("url-bad-ipv6", f"""
        [[targets]]
        url = "http://[::1/"  {MARKER}
        """, "targets[0].url", "IPv6"),
    invalid_case("url-empty", f"""
        [[targets]]
        url = ""  {MARKER}
        """, "targets[0].url", "must not be empty"),
    invalid_case("url-missing", f"""
        [[targets]]
        url = "{URL}a"

        [[targets]]  {MARKER}
        name = "nameless"
        """, "targets[1]", "url is required"),

    # --- expect_status ---
    invalid_case("expect-status-word", f"""
        [[targets]]
        url = "{URL}"
        expect_status = ["ok"]  {MARKER}
        """, "targets[0].expect_status", "'ok' is neither a status code nor a class"),
    invalid_case("expect-status-700", f"""
        [[targets]]
        url = "{URL}"
        expect_status = [200, 700]  {MARKER}
        """, "targets[0].expect_status", "status code must be in 100-599, got 700"),
    invalid_case("expect-status-6xx", f"""
        [[targets]]
        url = "{URL}"
        expect_status = ["6xx"]  {MARKER}
        """, "targets[0].expect_status", "neither a status code nor a class"),
    invalid_case("expect-status-empty", f"""
        [[targets]]
        url = "{URL}"
        expect_status = []  {MARKER}
        """, "targets[0].expect_status", "non-empty array"),
    invalid_case("expect-status-not-array", f"""
        [[targets]]
        url = "{URL}"
        expect_status = "2xx"  {MARKER}
        """, "targets[0].expect_status", "non-empty array"),
    invalid_case("expect-status-boolean", f"""
        [[targets]]
        url = "{URL}"
        expect_status = [true]  {MARKER}
        """, "targets[0].expect_status", "neither a status code nor a class"),
    invalid_case("expect-status-multiline-array", f"""
        [[targets]]
        url = "{URL}"
        expect_status = [  {MARKER}
            200,
            "2yy",
        ]
        """, "targets[0].expect_status", "'2yy'"),

    # --- regexes ---
    invalid_case("expect-body-bad-regex", f"""
        [[targets]]
        url = "{URL}"
        expect_body = "(unclosed"  {MARKER}
        """, "targets[0].expect_body", "is not a valid regular expression"),
    invalid_case("reject-body-bad-regex", f"""
        [[targets]]
        name = "api"
        url = "{URL}"
        reject_body = "[a-"  {MARKER}
        """, "targets[0].reject_body", "is not a valid regular expression"),

    # --- auth ---
    invalid_case("unknown-auth-reference", f"""
        [auth.main]
        type = "bearer"
        token = "abc"

        [[targets]]
        url = "{URL}"
        auth = "mian"  {MARKER}
        """, "targets[0].auth", "no [auth.mian] table is defined"),
    invalid_case("method-not-a-word", f"""
        [[targets]]
        url = "{URL}"
        method = "g3t"  {MARKER}
        """, "targets[0].method", "is not an HTTP method: 'g3t'"),
]


@pytest.mark.parametrize("text, key, problem", INVALID)
def test_invalid_target_names_file_line_and_key(write_config, text, key, problem):
    assert_refused_at_marked_line(write_config(text), text, key, problem)


def test_error_in_a_named_target_also_names_the_target():
    text = f'[[targets]]\nname = "users-api"\nurl = "{URL}"\ntimeout = 0\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, FILENAME)
    assert str(raised.value) == ("targets.toml:4: targets[0].timeout: must be > 0, got 0 "
                                 "(target 'users-api')")


def test_the_error_about_a_bad_url_never_shows_its_password():
    text = '[[targets]]\nurl = "http://user:hunter2@127.0.0.1:70000/"\n'
    with pytest.raises(ConfigError) as raised:
        parse_config(text, FILENAME)
    assert f"{FILENAME}:2: targets[0].url:" in str(raised.value)
    assert "hunter2" not in str(raised.value)


# --- Refused with the target's name: URLs and headers --------------------------------------------

URL_CASES = [
    pytest.param("ftp://127.0.0.1/pub", "scheme must be http or https, got 'ftp'", id="ftp"),
    pytest.param("file:///etc/passwd", "scheme must be http or https, got 'file'", id="file"),
    pytest.param("gopher://127.0.0.1/", "scheme must be http or https", id="gopher"),
    pytest.param("ws://127.0.0.1/socket", "scheme must be http or https", id="websocket"),
    pytest.param("javascript:alert(1)", "scheme must be http or https", id="javascript"),
    pytest.param("127.0.0.1:8080/health", "scheme must be http or https", id="no-scheme"),
    pytest.param("http:///health", "has no host", id="empty-host"),
    pytest.param("http://:8080/health", "has no host", id="port-without-host"),
    pytest.param("http://user:pw@/health", "has no host", id="userinfo-without-host"),
    pytest.param("http://127.0.0.1:0/", "port must be in 1-65535", id="port-0"),
    pytest.param("http://127.0.0.1:65536/", "is not a valid URL", id="port-65536"),
    pytest.param("http://127.0.0.1:99999999999/", "is not a valid URL", id="port-huge"),
    pytest.param("http://127.0.0.1:-1/", "is not a valid URL", id="port-negative"),
    pytest.param("http://127.0.0.1:http/", "is not a valid URL", id="port-not-a-number"),
    pytest.param("http://[::1/", "is not a valid URL", id="ipv6-unclosed"),
    pytest.param("http://exa mple.com/", "must not contain whitespace", id="space-in-host"),
    pytest.param("http://127.0.0.1/a\r\nX-Injected: 1", "must not contain whitespace", id="crlf"),
    pytest.param("", "must not be empty", id="empty"),
]


@pytest.mark.parametrize("url, problem", URL_CASES)
def test_bad_target_url_is_refused_with_the_target_name(url, problem):
    text = config_text([{"name": "ok-one", "url": "http://127.0.0.1:1/"}, {"name": "users-api", "url": url}])
    with pytest.raises(ConfigError) as raised:
        parse_config(text, FILENAME)
    message = str(raised.value)
    assert message.startswith(f"{FILENAME}:"), message
    assert "targets[1].url: " in message and problem in message, message
    assert message.endswith("(target 'users-api')"), message


HEADER_CASES = [
    pytest.param({"X-A": "a\r\nX-Injected: 1"}, "must be one line", id="crlf-injection"),
    pytest.param({"X-A": "a\nb"}, "must be one line", id="lf"),
    pytest.param({"X-A": "a\rb"}, "must be one line", id="cr"),
    pytest.param({"X-A": "a\u0000b"}, "must be one line", id="nul"),
    pytest.param({"X-A": "a" * 8193}, "at most 8192 characters", id="8193-chars"),
    pytest.param({"X-A": "a" * 1_000_000}, "at most 8192 characters", id="1MB"),
    pytest.param({"X-A": 1}, "must be a string", id="integer-value"),
    pytest.param({"X-A": ["a"]}, "must be a string", id="array-value"),
    pytest.param({"X-A": {"b": "c"}}, "must be a string", id="table-value"),
    pytest.param({"X A": "v"}, "not a valid HTTP header name", id="space-in-name"),
    pytest.param({"X:A": "v"}, "not a valid HTTP header name", id="colon-in-name"),
    pytest.param({"": "v"}, "not a valid HTTP header name", id="empty-name"),
    pytest.param({"X-É": "v"}, "not a valid HTTP header name", id="non-ascii-name"),
    pytest.param({"X-A\r\nX-B": "v"}, "not a valid HTTP header name", id="crlf-in-name"),
]


@pytest.mark.parametrize("headers, problem", HEADER_CASES)
def test_absurd_header_is_refused_with_the_target_name(headers, problem):
    text = config_text([{"name": "users-api", "url": "http://127.0.0.1:1/", "headers": headers}])
    with pytest.raises(ConfigError) as raised:
        parse_config(text, FILENAME)
    message = str(raised.value)
    assert "targets[0].headers: " in message and problem in message, message[:300]
    assert message.endswith("(target 'users-api')"), message[:300]
    assert len(message) < 500, "the error echoes the absurd value"


@pytest.mark.parametrize("url", ["http://.example.com/health", "http://*/health",
                                 "http://\u2603..example/health"],
                         ids=["leading-dot", "star", "bad-idna"])
def test_unusable_host_is_refused_at_load(url):
    """Specified: refused at load, naming the key and the target. (An accepted URL would fail
    every check as `connection`, as greenmon's own internal-error path does: such a failure
    cannot tell the two apart.)"""
    text = config_text([{"name": "ok-one", "url": "http://127.0.0.1:1/"}, {"name": "users-api", "url": url}])
    with pytest.raises(ConfigError) as raised:
        parse_config(text, FILENAME)
    message = str(raised.value)
    assert message.startswith(f"{FILENAME}:") and "targets[1].url: " in message, message
    assert "is not a usable URL" in message and message.endswith("(target 'users-api')"), message


# The config layer decides without requests (it loads no network library), by requests' own
# rule for hosts; this holds it to what requests really does with the same URL.
HOST_PARTS = st.sampled_from(["a", "xn--", "-", "*", ".", "..", "0", "\u2603", "\u00e9", "\u00df",
                              "\u0627", "\u200d", "\u3002", "\ufb01", "\u00c9", "A", "z9", "_", "%", "%41", "~", "#", "?"])


@given(st.lists(HOST_PARTS, min_size=1, max_size=6).map("".join))
def test_a_host_is_refused_exactly_when_requests_would_refuse_it(host):
    url = f"http://{host}:8080/health"
    refused = requests_refuses(url)
    try:
        check_url(url)
        accepted = True
    except ValueError:
        accepted = False
    assert not (accepted and refused), f"{url}: the config accepts what requests refuses"
    if not refused and urlsplit(url).hostname:
        assert unsendable(url) is None, f"{url}: the config refuses what requests sends"


# --- Defaults and the values given ---------------------------------------------------------------

def test_target_defaults():
    config = parse_config('[[targets]]\nurl = "https://api.example.com/users/health"\n', FILENAME)
    (target,) = config.targets
    assert target.name == "GET https://api.example.com/users/health"
    assert target.method == "GET"
    assert dict(target.headers) == {}
    assert target.body == ""
    assert all(code in target.expect_status for code in (200, 204, 299))
    assert not any(code in target.expect_status for code in (199, 301, 404, 500))
    assert target.expect_body is None and target.reject_body is None
    assert target.timeout is None       # monitor.timeout applies
    assert target.interval is None      # monitor.interval applies
    assert target.verify_tls is None    # monitor.verify_tls applies
    assert target.ca_file is None       # monitor.ca_file applies
    assert target.proxy is None and target.proxy_env is None    # the monitor's apply
    assert target.auth is None
    assert dict(target.labels) == {}
    assert target.enabled is True
    assert target.shown_url is None     # no ${VAR} in the URL: it is shown as it is
    assert config.enabled_targets == config.targets
    assert dict(config.auth) == {}


def test_values_given_are_kept():
    config = parse_config(config_text(
        [{"name": "users-api", "url": "http://127.0.0.1:8080/health", "method": "post",
          "headers": {"Accept": "application/json"}, "body": "{}", "expect_status": [200, "3xx", "404"],
          "expect_body": "ok", "reject_body": "degraded", "timeout": 5, "interval": 30,
          "labels": {"team": "identity"}},
         {"name": "off", "url": "http://127.0.0.1:8080/off", "enabled": False}]), FILENAME)
    target, off = config.targets
    assert (target.method, target.timeout, target.interval, target.body) == ("POST", 5.0, 30.0, "{}")
    assert dict(target.headers) == {"Accept": "application/json"}
    assert dict(target.labels) == {"team": "identity"}
    assert 200 in target.expect_status and 302 in target.expect_status and 404 in target.expect_status
    assert 201 not in target.expect_status
    assert target.expect_body.pattern == "ok" and target.reject_body.pattern == "degraded"
    assert config.enabled_targets == (target,)
    assert off.enabled is False


@pytest.mark.parametrize("expect_status, inside, outside", [
    (["2xx"], [200, 204, 299], [199, 300, 404, 500]),
    (["2XX", "404"], [200, 250, 404], [403, 405, 301]),      # a class in capitals, a code as a string
    ([301, 302], [301, 302], [200, 303]),                    # codes only: not their class
    (["3xx", 200], [200, 301, 399], [201, 404]),
    (["5xx"], [500, 503, 599], [200, 499]),
], ids=["default-class", "capital-class-and-string-code", "codes-only", "class-and-code", "5xx"])
def test_expect_status_matches_its_codes_and_classes(expect_status, inside, outside):
    target = one_target({"url": URL, "expect_status": expect_status})
    assert [code for code in inside if code not in target.expect_status] == []
    assert [code for code in outside if code in target.expect_status] == []


@pytest.mark.parametrize("method, sent", [("post", "POST"), ("Head", "HEAD"), ("PURGE", "PURGE")])
def test_the_method_is_upper_case(method, sent):
    assert one_target({"url": URL, "method": method}).method == sent


@pytest.mark.parametrize("entry, name", [
    ({"url": "http://127.0.0.1:8080/health"}, "GET http://127.0.0.1:8080/health"),
    ({"url": "http://127.0.0.1:8080/items", "method": "post"}, "POST http://127.0.0.1:8080/items"),
    ({"url": "https://api.example.com/", "method": "HEAD"}, "HEAD https://api.example.com/"),
    ({"url": "http://ops:hunter2@127.0.0.1/x"}, "GET http://ops:***@127.0.0.1/x"),
    ({"url": "http://127.0.0.1/x?key=${GM_TEST_TARGET_KEY}"}, "GET http://127.0.0.1/x?key=***"),
    ({"url": "http://127.0.0.1/x", "name": "explicit"}, "explicit"),
])
def test_default_target_name_is_method_and_url(monkeypatch, entry, name):
    monkeypatch.setenv("GM_TEST_TARGET_KEY", "k3y-value")
    assert one_target(entry).name == name


# --- The URL shown and exported, and the one sent -------------------------------------------------

@pytest.mark.parametrize("url, shown", [
    ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"),
    ("http://127.0.0.1/a@b?c=@", "http://127.0.0.1/a@b?c=@"),          # an @ outside the user info
    ("http://ops@127.0.0.1/", "http://ops@127.0.0.1/"),                # a user without a password
    ("http://ops:pw@127.0.0.1:8080/x?y=1", "http://ops:***@127.0.0.1:8080/x?y=1"),
    ("https://ops:@127.0.0.1/", "https://ops:***@127.0.0.1/"),         # an empty password
    ("http://a:b@[::1]:80/", "http://a:***@[::1]:80/"),
    ("http://ops:p%40ss@127.0.0.1/", "http://ops:***@127.0.0.1/"),     # an escaped @ in the password
])
def test_redact_url_masks_only_a_password(url, shown):
    assert redact_url(url) == shown


def test_a_url_with_a_variable_is_sent_with_its_value_and_shown_masked(monkeypatch):
    monkeypatch.setenv("GM_TEST_TARGET_KEY", "k3y-value")
    monkeypatch.setenv("GM_TEST_TARGET_PASSWORD", "pa55word")
    config = parse_config(config_text([
        {"name": "query", "url": "http://127.0.0.1:1/x?key=${GM_TEST_TARGET_KEY}&v=1"},
        {"name": "userinfo", "url": "http://ops:${GM_TEST_TARGET_PASSWORD}@127.0.0.1:1/"},
        {"name": "both", "url": "http://ops:hunter2@127.0.0.1:1/${GM_TEST_TARGET_KEY}/x"},
    ]), FILENAME)
    query, userinfo, both = config.targets
    assert query.url == "http://127.0.0.1:1/x?key=k3y-value&v=1"            # what is sent
    assert query.display_url == "http://127.0.0.1:1/x?key=***&v=1"          # what is shown
    assert userinfo.url == "http://ops:pa55word@127.0.0.1:1/"
    assert userinfo.display_url == "http://ops:***@127.0.0.1:1/"
    assert both.display_url == "http://ops:***@127.0.0.1:1/***/x"            # password and value
    for target in config.targets:
        assert "k3y-value" not in target.display_url + target.name + repr(target.shown_url)
        assert "pa55word" not in target.display_url and "hunter2" not in target.display_url


# --- The shard hash ------------------------------------------------------------------------------

def test_shard_hash_is_the_sha256_of_the_name():
    for name in ("api-1", "checkout", "GET http://127.0.0.1:8080/healthz", "ünïcode"):
        expected = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
        assert Target(name=name, url="http://127.0.0.1/").shard_hash() == expected
    # Pinned: the same in every process and every version (a change would reshuffle replicas).
    assert Target(name="api-1", url="http://127.0.0.1/").shard_hash() == 17978681371066702477


# --- body_file -----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, files, key, problem", [
    ({"body_file": "missing.json"}, {}, "body_file", "cannot read"),
    ({"body_file": "login.json", "body": "{}"}, {"login.json": b"{}"}, "body_file", "body or body_file, not both"),
    ({"body_file": "bad.bin"}, {"bad.bin": b"\xff\xfe"}, "body_file", "not UTF-8 text"),
    ({"body_file": "."}, {}, "body_file", "cannot read"),
], ids=["missing", "both", "not-utf8", "a-folder"])
def test_a_body_file_that_cannot_be_sent_is_a_config_error(tmp_path, entry, files, key, problem):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    config = tmp_path / "greenmon.toml"
    config.write_text(config_text([{"name": "login", "url": "http://127.0.0.1:9/", **entry}]), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    message = str(raised.value)
    assert message.startswith(f"{config}:") and f"targets[0].{key}: " in message, message
    assert problem in message, message


def test_expect_header_refuses_a_bad_name_or_pattern():
    for rules, problem in [({"Bad Name": "x"}, "targets[0].expect_header"),
                           ({"X-Ok": "("}, "X-Ok: is not a valid regular expression")]:
        with pytest.raises(ConfigError) as raised:
            parse_config(config_text([{"url": "http://127.0.0.1:9/", "expect_header": rules}]), FILENAME)
        assert problem in str(raised.value), str(raised.value)
