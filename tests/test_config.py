"""Config loading: every invalid config names file, line and key; defaults; ${VAR}; the CLI's config errors.

Invalid configs are a table (support.invalid_configs): in each TOML text the line the message
must point at carries a ``# <-`` marker. What a [[targets]] entry may hold, and the errors
about it, are test_targets.py's.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

import greenmon
from greenmon.config import Config, load_config, parse_config
from greenmon.discovery.loading import discover
from greenmon.schema import ConfigError

from support.helpers import run_cli
from support.invalid_configs import MARKER, assert_refused_at_marked_line, invalid_case
from support.servers import RawServer, never_answer

URL = "http://127.0.0.1:9/"  # never contacted: these tests only load configs


INVALID = [
    # --- unknown keys ---
    invalid_case("unknown-top-level-key", f"""
        colour = "blue"  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "colour", "unknown key"),
    invalid_case("unknown-top-level-table", f"""
        [[targets]]
        url = "{URL}"

        [monitors]  {MARKER}
        timeout = 1.0
        """, "monitors", "unknown key"),
    invalid_case("unknown-key-in-monitor", f"""
        [monitor]
        timeout = 1.0
        timout = 2.0  {MARKER}

        [[targets]]
        url = "{URL}"
        """, "monitor.timout", "unknown key"),
    invalid_case("unknown-key-in-retry", f"""
        [retry]
        retry = 2  {MARKER}

        [[targets]]
        url = "{URL}"
        """, "retry.retry", "unknown key"),
    invalid_case("unknown-key-in-auth", f"""
        [auth.main]
        type = "bearer"
        tokn = "abc"  {MARKER}

        [[targets]]
        url = "{URL}"
        auth = "main"
        """, "auth.main.tokn", "unknown key"),

    # --- wrong types ---
    invalid_case("monitor-not-a-table", f"""
        monitor = 5  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "monitor", "must be a table"),
    invalid_case("targets-not-an-array", f"""
        targets = "all"  {MARKER}
        """, "targets", "must be an array"),
    invalid_case("concurrency-string", f"""
        [monitor]
        concurrency = "10"  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "monitor.concurrency", "must be an integer, got a string"),
    invalid_case("retries-float", f"""
        [retry]
        backoff = 0.5
        retries = 1.5  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "retry.retries", "must be an integer, got a number"),
    invalid_case("verify-tls-string", f"""
        [monitor]
        verify_tls = "yes"  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "monitor.verify_tls", "must be true or false"),
    invalid_case("buckets-not-increasing", f"""
        [metrics]
        buckets = [0.1, 0.5, 0.2]  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "metrics.buckets", "strictly increasing"),
    # monitor.location becomes a label value: a plain name (as a cloud region or site is written).
    *[invalid_case(f"location-{case_id}", f"""
        [monitor]
        location = {value}  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "monitor.location", problem)
      for case_id, value, problem in (
          ("int", "3", "must be a string, got an integer"),
          ("space", '"eu west"', "must be a name of at most 63 letters, digits"),
          ("leading-dash", '"-eu"', "that starts with a letter or digit, such as \"eu-west-1\"; got '-eu'"),
          ("quote", "'eu\"1'", "got 'eu\"1'"),
          ("slash", '"eu/fra"', "must be a name of"),
          ("non-ascii", '"zürich"', "must be a name of"),
          ("too-long", '"' + "a" * 64 + '"', "at most 63"),
      )],
    invalid_case("listen-without-port", f"""
        [server]
        listen = "0.0.0.0"  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "server.listen", "HOST:PORT"),

    # --- duplicate names ---
    invalid_case("duplicate-explicit-names", f"""
        [[targets]]
        name = "api"
        url = "{URL}a"

        [[targets]]
        name = "api"  {MARKER}
        url = "{URL}b"
        """, "targets[1].name", "duplicate target name 'api' (also targets[0])"),
    invalid_case("duplicate-default-names", f"""
        [[targets]]
        url = "{URL}"

        [[targets]]  {MARKER}
        url = "{URL}"
        """, "targets[1].name", f"duplicate target name 'GET {URL}'"),

    # --- zero and negative timeouts ---
    invalid_case("monitor-timeout-zero", f"""
        [monitor]
        timeout = 0  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "monitor.timeout", "must be > 0, got 0"),
    invalid_case("monitor-timeout-negative", f"""
        [monitor]
        concurrency = 10
        timeout = -1.5  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "monitor.timeout", "must be > 0, got -1.5"),
    invalid_case("interval-zero", f"""
        [monitor]
        interval = 0.0  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "monitor.interval", "must be > 0"),

    # --- an interval shorter than the timeout: the check could still run when due again ---
    invalid_case("target-interval-shorter-than-target-timeout", f"""
        [[targets]]
        name = "api"
        url = "{URL}"
        timeout = 10.0
        interval = 5.0  {MARKER}
        """, "targets[0].interval",
        "interval 5 s is shorter than the timeout 10 s of target 'api': its check could still "
        "run when it is due again (make interval >= timeout, or leave timeout unset: it then "
        "fits the interval)"),
    invalid_case("target-timeout-longer-than-monitor-interval", f"""
        [monitor]
        interval = 30.0
        [[targets]]
        name = "api"
        url = "{URL}"
        timeout = 45.0  {MARKER}
        """, "targets[0].timeout", "interval 30 s is shorter than the timeout 45 s of target 'api'"),
    invalid_case("monitor-interval-shorter-than-monitor-timeout", f"""
        [monitor]
        timeout = 10.0
        interval = 5.0  {MARKER}
        [[targets]]
        name = "api"
        url = "{URL}"
        """, "monitor.interval", "interval 5 s is shorter than the timeout 10 s of the targets that use [monitor]'s"),
    invalid_case("monitor-timeout-longer-than-default-interval", f"""
        [monitor]
        timeout = 90.0  {MARKER}
        [[targets]]
        name = "api"
        url = "{URL}"
        """, "monitor.timeout", "interval 60 s is shorter than the timeout 90 s of the targets that use [monitor]'s"),
    invalid_case("recovery-timeout-negative", f"""
        [breaker]
        recovery_timeout = -1  {MARKER}
        [[targets]]
        url = "{URL}"
        """, "breaker.recovery_timeout", "must be > 0"),

    # --- ${VAR} ---
    invalid_case("missing-var-in-url", f"""
        [[targets]]
        name = "api"
        url = "http://${{GM_TEST_UNSET_HOST}}/health"  {MARKER}
        """, "targets[0].url", "environment variable ${GM_TEST_UNSET_HOST} is not set"),
    invalid_case("missing-var-in-header", f"""
        [[targets]]
        url = "{URL}"
        headers = {{ X-Tenant = "${{GM_TEST_UNSET_TENANT}}" }}  {MARKER}
        """, "targets[0].headers.X-Tenant", "${GM_TEST_UNSET_TENANT} is not set"),
    invalid_case("missing-var-in-auth-token", f"""
        [auth.main]
        type = "bearer"
        token = "${{GM_TEST_UNSET_TOKEN}}"  {MARKER}

        [[targets]]
        url = "{URL}"
        auth = "main"
        """, "auth.main.token", "${GM_TEST_UNSET_TOKEN} is not set"),
    invalid_case("missing-token-env", f"""
        [auth.main]
        type = "bearer"
        token_env = "GM_TEST_UNSET_TOKEN"  {MARKER}

        [[targets]]
        url = "{URL}"
        auth = "main"
        """, "auth.main.token_env", "GM_TEST_UNSET_TOKEN is not set"),

    # --- auth ---
    invalid_case("auth-bad-type", f"""
        [auth.main]
        type = "oauth"  {MARKER}
        token = "abc"

        [[targets]]
        url = "{URL}"
        """, "auth.main.type", "must be one of bearer, basic, header"),
    invalid_case("auth-two-token-sources", f"""
        [auth.main]
        type = "bearer"
        token = "abc"
        token_env = "HOME"  {MARKER}

        [[targets]]
        url = "{URL}"
        """, "auth.main.token_env", "give exactly one of token, token_env, token_file"),
    invalid_case("auth-basic-without-username", f"""
        [auth.main]  {MARKER}
        type = "basic"
        password = "abc"

        [[targets]]
        url = "{URL}"
        """, "auth.main.username", "is required for basic auth"),
    invalid_case("auth-token-file-missing", f"""
        [auth.main]
        type = "bearer"
        token_file = "/nonexistent/greenmon/token"  {MARKER}

        [[targets]]
        url = "{URL}"
        """, "auth.main.token_file", "cannot read /nonexistent/greenmon/token"),

    # --- no enabled targets (no single line to point at: the message names the key) ---
    invalid_case("no-targets", """
        [monitor]
        timeout = 1.0
        """, "targets", "no enabled targets"),
    invalid_case("all-targets-disabled", f"""
        [[targets]]
        url = "{URL}"
        enabled = false
        """, "targets", "no enabled targets"),

    # --- lines that are easy to miscount ---
    invalid_case("comment-with-triple-quotes", f"""
        [[targets]]
        url = "{URL}"
        body = ""  # long bodies: use \"\"\"
        timeout = 0  {MARKER}
        """, "targets[0].timeout", "must be > 0"),
    invalid_case("line-separator-in-comment", f"""
        # maintained by the platform team\u2028(see the wiki)
        [[targets]]
        url = "{URL}"
        timeout = 0  {MARKER}
        """, "targets[0].timeout", "must be > 0"),
    invalid_case("dotted-keys", f"""
        [auth]
        main.type = "bearer"
        main.token = "${{GM_TEST_UNSET_TOKEN}}"  {MARKER}

        [[targets]]
        url = "{URL}"
        """, "auth.main.token", "is not set"),
]


@pytest.mark.parametrize("text, key, problem", INVALID)
def test_invalid_config_names_file_line_and_key(write_config, monkeypatch, text, key, problem):
    for name in ("GM_TEST_UNSET_HOST", "GM_TEST_UNSET_TENANT", "GM_TEST_UNSET_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert_refused_at_marked_line(write_config(text), text, key, problem)


def test_toml_syntax_error_names_file_and_line(write_config):
    path = write_config('[monitor]\ntimeout = 1.0\ninterval = = 2\n\n[[targets]]\nurl = "http://x/"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}:3: TOML syntax error: "), message


def test_missing_and_unreadable_files_are_config_errors(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=f"{missing}: cannot read config file: No such file"):
        load_config(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[monitor]\ntimeout = 1\n# \xff\xfe\n")
    with pytest.raises(ConfigError, match=f"{binary}: not UTF-8 text"):
        load_config(binary)


def test_config_error_messages_never_carry_a_secret(monkeypatch):
    """A secret that makes a config invalid is named by its key, never echoed."""
    monkeypatch.setenv("GM_TEST_MULTILINE", "hunter2\nhunter3")
    text = ('[auth.main]\ntype = "bearer"\ntoken_env = "GM_TEST_MULTILINE"\n\n'
            f'[[targets]]\nurl = "{URL}"\nauth = "main"\n')
    with pytest.raises(ConfigError) as raised:
        parse_config(text, "greenmon.toml")
    assert "greenmon.toml:3: auth.main.token_env: the secret: must be one line of at most 8192 characters" == str(raised.value)
    assert "hunter" not in str(raised.value)


# --- defaults ---------------------------------------------------------------

# The defaults of every section, as docs/configuration.md lists them.
DEFAULTS = {
    "monitor": {
        "concurrency": 1000, "timeout": 10.0, "interval": 60.0, "location": "", "max_body_bytes": 1048576,
        "verify_tls": True, "ca_file": "", "follow_redirects": True,
        "user_agent": f"greenmon/{greenmon.__version__}", "slo_p95_seconds": 2.0, "state_file": "",
        "min_cert_days": 0.0, "slo_availability": 0.999, "slo_window_days": 30.0, "history": 60, "degraded_latency": 0.0, "addresses": "first",
        "ip_version": "any",
        "proxy": "", "proxy_env": False, "client_cert": "", "client_key": "",
    },
    "retry": {"retries": 3, "backoff": 1.0, "max_backoff": 30.0, "jitter": False},
    "breaker": {"failure_threshold": 3, "recovery_timeout": 300.0},
    "server": {"listen": "0.0.0.0:9715", "web_config_file": ""},
    "metrics": {
        "buckets": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0),
        "per_target_histograms": True, "phase_gauges": True, "all_error_classes": True,
    },
}


@pytest.fixture
def minimal_config() -> Config:
    return parse_config('[[targets]]\nurl = "https://api.example.com/users/health"\n', "greenmon.toml")


@pytest.mark.parametrize("section", sorted(DEFAULTS))
def test_section_defaults_are_the_documented_ones(minimal_config, section):
    settings = dataclasses.asdict(getattr(minimal_config, section))
    assert settings == DEFAULTS[section]


def test_empty_sections_keep_the_defaults():
    text = ("[monitor]\n[retry]\n[breaker]\n[server]\n[metrics]\n\n"
            '[[targets]]\nurl = "https://api.example.com/"\n')
    config = parse_config(text, "greenmon.toml")
    for section, expected in DEFAULTS.items():
        assert dataclasses.asdict(getattr(config, section)) == expected, section


@pytest.mark.parametrize("written, location", [
    ('"eu-west-1"', "eu-west-1"), ('"fra1"', "fra1"), ('"dc2.rack_4:b"', "dc2.rack_4:b"),
    ('"' + "z" * 63 + '"', "z" * 63), ('""', ""), ('"${GM_TEST_REGION}"', "ap-south-2"),
])
def test_location_names_are_kept(monkeypatch, written, location):
    monkeypatch.setenv("GM_TEST_REGION", "ap-south-2")
    config = parse_config(f'[monitor]\nlocation = {written}\n\n[[targets]]\nurl = "{URL}"\n', "g.toml")
    assert config.monitor.location == location


# --- ${VAR} -------------------------------------------------------------------

def test_environment_variables_are_interpolated(monkeypatch):
    monkeypatch.setenv("GM_TEST_HOST", "127.0.0.1")
    monkeypatch.setenv("GM_TEST_PORT", "8181")
    monkeypatch.setenv("GM_TEST_TEAM", "identity")
    monkeypatch.setenv("GM_TEST_TOKEN", "tok-123")
    text = textwrap.dedent("""
        [monitor]
        user_agent = "probe/${GM_TEST_TEAM}"

        [auth.main]
        type = "bearer"
        token = "${GM_TEST_TOKEN}"

        [[targets]]
        name = "${GM_TEST_TEAM}-api"
        url = "http://${GM_TEST_HOST}:${GM_TEST_PORT}/health"
        headers = { X-Team = "${GM_TEST_TEAM}" }
        labels = { team = "${GM_TEST_TEAM}" }
        expect_status = ["2xx", "${GM_TEST_PORT}"]
        timeout = 3
        auth = "main"
        """)
    with pytest.raises(ConfigError, match="status code must be in 100-599, got 8181"):
        parse_config(text, "greenmon.toml")  # interpolated before validation
    config = parse_config(text.replace(', "${GM_TEST_PORT}"', ""), "greenmon.toml")
    (target,) = config.targets
    assert config.monitor.user_agent == "probe/identity"
    assert target.name == "identity-api"
    assert target.url == "http://127.0.0.1:8181/health"
    assert dict(target.headers) == {"X-Team": "identity"}
    assert dict(target.labels) == {"team": "identity"}
    assert target.timeout == 3.0
    assert target.auth.header() == ("Authorization", "Bearer tok-123")


def test_interpolation_is_not_recursive(monkeypatch):
    monkeypatch.setenv("GM_TEST_OUTER", "${GM_TEST_UNSET_INNER}")
    monkeypatch.delenv("GM_TEST_UNSET_INNER", raising=False)
    config = parse_config('[[targets]]\nname = "x${GM_TEST_OUTER}"\nurl = "http://127.0.0.1/"\n', "g.toml")
    assert config.targets[0].name == "x${GM_TEST_UNSET_INNER}"


# --- replace ----------------------------------------------------------------

def test_replace_returns_a_new_config(minimal_config):
    changed = minimal_config.replace("monitor", timeout=2.5, concurrency=7)
    assert changed.monitor.timeout == 2.5 and changed.monitor.concurrency == 7
    assert changed.monitor.interval == minimal_config.monitor.interval
    assert changed.retry == minimal_config.retry and changed.targets == minimal_config.targets
    assert minimal_config.monitor.timeout == 10.0 and minimal_config.monitor.concurrency == 1000
    top = minimal_config.replace(source="other.toml")
    assert top.source == "other.toml" and minimal_config.source == "greenmon.toml"
    with pytest.raises(TypeError):
        minimal_config.replace("monitor", timeuot=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        minimal_config.monitor.timeout = 1.0  # type: ignore[misc]


def test_public_api_loads_configs(write_config):
    path = write_config('[[targets]]\nurl = "http://127.0.0.1:9/"\n')
    config = greenmon.load_config(path)
    assert isinstance(config, greenmon.Config)
    assert config.source == str(path)
    assert greenmon.ConfigError is ConfigError


# --- the same errors through the command line -------------------------------

BAD_CONFIG = textwrap.dedent(f"""
    [monitor]
    timeout = 1.0

    [[targets]]
    name = "a"
    url = "{URL}"

    [[targets]]
    name = "b"
    url = "{URL}"
    timeout = 0
    """).lstrip("\n")
GOOD_CONFIG = textwrap.dedent(f"""
    [auth.main]
    type = "bearer"
    token = "abc"

    [[targets]]
    name = "a"
    url = "{URL}a"
    auth = "main"

    [[targets]]
    name = "b"
    url = "{URL}b"
    enabled = false
    """).lstrip("\n")


@pytest.mark.parametrize("flags", [["--once"], ["--once", "--format", "json"], ["--check-config"]])
def test_cli_bad_config_exits_2_naming_file_line_and_key(write_config, flags):
    path = write_config(BAD_CONFIG)
    run = run_cli("--config", str(path), *flags)
    assert run.returncode == 2, run.stderr
    assert f"{path}:11: targets[1].timeout: must be > 0" in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stdout == ""


def test_cli_toml_syntax_error_exits_2_without_traceback(write_config):
    path = write_config('[[targets]\nurl = "http://127.0.0.1:9/"\n')
    run = run_cli("--config", str(path), "--once")
    assert run.returncode == 2
    assert str(path) in run.stderr and "line 1" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_check_config_prints_one_line_and_exits_0(write_config):
    path = write_config(GOOD_CONFIG)
    run = run_cli("--config", str(path), "--check-config")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 1, run.stdout
    assert str(path) in lines[0]
    assert "2 targets (1 enabled)" in lines[0] and "1 auth" in lines[0]


def test_cli_missing_config_file_exits_2(tmp_path):
    missing = tmp_path / "absent.toml"
    run = run_cli("--config", str(missing), "--once")
    assert run.returncode == 2
    assert f"{missing}: cannot read config file" in run.stderr
    assert "Traceback" not in run.stderr
    # No --config and no $GREENMON_CONFIG: ./greenmon.toml, absent here.
    run = run_cli("--once", cwd=tmp_path, env={"GREENMON_CONFIG": ""})
    assert run.returncode == 2
    assert "greenmon.toml: cannot read config file" in run.stderr


def test_cli_config_path_order(write_config, tmp_path):
    """--config, else $GREENMON_CONFIG, else ./greenmon.toml."""
    local = write_config(BAD_CONFIG)                  # ./greenmon.toml in tmp_path
    from_env = write_config(GOOD_CONFIG, "env.toml")
    explicit = write_config(GOOD_CONFIG.replace('enabled = false', 'enabled = true'), "explicit.toml")

    run = run_cli("--check-config", cwd=tmp_path, env={"GREENMON_CONFIG": str(from_env)})
    assert run.returncode == 0, run.stderr
    assert str(from_env) in run.stdout and "(1 enabled)" in run.stdout

    run = run_cli("--check-config", "--config", str(explicit), cwd=tmp_path,
                  env={"GREENMON_CONFIG": str(from_env)})
    assert run.returncode == 0, run.stderr
    assert str(explicit) in run.stdout and "(2 enabled)" in run.stdout

    run = run_cli("--check-config", cwd=tmp_path, env={"GREENMON_CONFIG": ""})
    assert run.returncode == 2
    assert "greenmon.toml:11: targets[1].timeout" in run.stderr
    assert local.name == "greenmon.toml"


def test_relative_file_paths_are_taken_from_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "token").write_text("t0ken\n", encoding="utf-8")
    path = folder / "greenmon.toml"
    path.write_text('[auth.main]\ntype = "bearer"\ntoken_file = "token"\n\n'
                    '[[targets]]\nurl = "http://127.0.0.1:1/"\nauth = "main"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    config = load_config("conf/greenmon.toml")
    assert config.auth["main"].header() == ("Authorization", "Bearer t0ken")


# --- A timeout left unset fits a shorter interval (as Prometheus fits scrape_timeout) ---------

FITTED = [
    # (TOML, the monitor's timeout, each target's own timeout, what --check-config names)
    ("[monitor]\ninterval = 5\n[[targets]]\nname = \"a\"\nurl = \"%s\"\n",
     5.0, [None], ["monitor.timeout 5 s"]),
    ("[[targets]]\nname = \"a\"\nurl = \"%s\"\ninterval = 2\n",
     10.0, [2.0], ["targets[0].timeout 2 s ('a')"]),
    # An explicit [monitor] timeout is still the default of a target that sets none: fitted.
    ("[monitor]\ntimeout = 8\n[[targets]]\nname = \"a\"\nurl = \"%s\"\ninterval = 3\n",
     8.0, [3.0], ["targets[0].timeout 3 s ('a')"]),
    # Nothing to fit: the timeout is shorter than the interval already.
    ("[monitor]\ntimeout = 1\n[[targets]]\nname = \"a\"\nurl = \"%s\"\ninterval = 2\n",
     1.0, [None], []),
    ("[[targets]]\nname = \"a\"\nurl = \"%s\"\ninterval = 2\ntimeout = 2\n", 10.0, [2.0], []),
]


@pytest.mark.parametrize("text, monitor_timeout, timeouts, fitted", FITTED)
def test_an_unset_timeout_fits_a_shorter_interval(text, monitor_timeout, timeouts, fitted):
    config = parse_config(text % URL, "<test>")
    assert config.monitor.timeout == monitor_timeout
    assert [t.timeout for t in config.targets] == timeouts
    assert list(config.fitted_timeouts) == fitted


def test_discovered_targets_get_the_fitted_timeout_of_their_entry(tmp_path):
    (tmp_path / "sd.json").write_text('[{"targets": ["127.0.0.1:9"]}]', encoding="utf-8")
    config = discover(parse_config('[[file_sd]]\nfiles = ["sd.json"]\ninterval = 2\n', "<test>",
                                   base_dir=str(tmp_path)))
    assert [t.timeout for t in config.targets] == [2.0]
    assert config.fitted_timeouts == ("file_sd[0].timeout 2 s",)


def test_cli_check_config_says_which_timeouts_were_fitted(write_config):
    path = write_config(f'[monitor]\ninterval = 5\n[[targets]]\nname = "a"\nurl = "{URL}"\n'
                        f'[[targets]]\nname = "b"\nurl = "{URL}b"\ninterval = 1\n')
    run = run_cli("--config", str(path), "--check-config")
    assert run.returncode == 0, run.stderr
    assert ("timeouts fitted to a shorter interval (unset, as Prometheus fits scrape_timeout): "
            "monitor.timeout 5 s, targets[1].timeout 1 s ('b')") in run.stdout


def test_a_fitted_timeout_is_the_deadline_of_the_check(write_config):
    """[monitor] interval = 1 with no timeout: a hanging target fails by the fitted 1 s deadline,
    not by greenmon's default 10 s (a bound several times the fitted one, below the default)."""
    with RawServer(never_answer) as hang:
        path = write_config(f'[monitor]\ninterval = 1\n[retry]\nretries = 0\n'
                            f'[[targets]]\nname = "hang"\nurl = "{hang.url()}"\n')
        run = run_cli("--config", str(path), "--once", "--format", "json")
    result, = json.loads(run.stdout)["results"]
    assert (result["ok"], result["error_class"]) == (False, "timeout"), result
    assert 1.0 <= result["latency_s"] < 6.0, result
