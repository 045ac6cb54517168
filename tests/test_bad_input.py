"""Bad input, key by key: every validated value is checked whole, in TOML, in file_sd and in
OpenAPI documents (README, "Targets from where they live"; docs/configuration.md).

A value with a trailing newline once passed (``re.match`` with ``$`` matches before a final
newline), and one file_sd label key ``"team\\n"`` then broke the whole /metrics. Each case
here is the real command, ``--check-config``: exit 2, one line naming the file, the line and
the key (for a discovery document, the source, the document and its entry), no traceback.
The live case: a file_sd file that turns bad in the running daemon keeps its last good
targets, counts the failed load, and /metrics stays valid for promtool.
"""

from __future__ import annotations

import json

import pytest

from greenmon.config import load_config
from greenmon.discovery.loading import discover
from support.daemon_helpers import running_daemon, value
from support.helpers import run_cli, wait_until
from support.prom_helpers import describe_run, find_binary, run_tool
from support.servers import HTTPFarm, reply

URL = "http://127.0.0.1:9/"   # never contacted: --check-config only loads


def target(extra: str) -> str:
    return f'[[targets]]\nname = "api"\nurl = "{URL}"\n{extra}\n'


def file_sd(document: str, name: str = "sd.json") -> dict:
    return {"toml": f'[[file_sd]]\nfiles = ["{name}"]\n', name: document}


def openapi(document: dict) -> dict:
    return {"toml": '[[openapi]]\nspec = "api.json"\n', "api.json": json.dumps(document)}


def spec(**fields) -> dict:
    return {"openapi": "3.0.3", "info": {"title": "t", "version": "1"},
            "servers": [{"url": URL}], "paths": {"/health": {"get": {}}}} | fields


# (case, the files: "toml" is greenmon.toml, the others sit beside it; what the one line of
# the message must hold, in order after "greenmon.toml:LINE: ")
CASES = [
    # --- [[targets]] and the tables of greenmon.toml ---
    ("label-name-newline", {"toml": target('labels = { "team\\n" = "a" }')},
     (":4: targets[0].labels: ", "'team\\n' is not a usable label name")),
    ("label-name-dash", {"toml": target('labels = { "te-am" = "a" }')},
     (":4: targets[0].labels: ", "'te-am' is not a usable label name")),
    ("method-newline", {"toml": target('method = "GET\\n"')},
     (":4: targets[0].method: ", "is not an HTTP method")),
    ("status-class-newline", {"toml": target('expect_status = ["2xx\\n"]')},
     (":4: targets[0].expect_status: ", "is neither a status code nor a class")),
    ("header-name-newline", {"toml": target('headers = { "X-Api\\n" = "1" }')},
     (":4: targets[0].headers: ", "is not a valid HTTP header name: 'X-Api\\n'")),
    ("header-name-space", {"toml": target('headers = { "X Api" = "1" }')},
     (":4: targets[0].headers: ", "is not a valid HTTP header name: 'X Api'")),
    ("header-value-newline", {"toml": target('headers = { "X-Api" = "1\\n" }')},
     (":4: targets[0].headers: ", "X-Api: must be one line")),
    ("location-newline", {"toml": '[monitor]\nlocation = "eu-west-1\\n"\n' + target("")},
     (":2: monitor.location: ", "must be a name of at most 63")),
    ("user-agent-newline", {"toml": '[monitor]\nuser_agent = "gm\\n"\n' + target("")},
     (":2: monitor.user_agent: ", "must be one line")),
    ("auth-header-name-newline",
     {"toml": '[auth.key]\ntype = "header"\nname = "X-Key\\n"\nvalue = "s"\n' + target('auth = "key"')},
     (":3: auth.key.name: ", "is not a valid HTTP header name")),
    ("unknown-key-newline", {"toml": target('"timeout\\n" = 1')},
     (":4: targets[0].\"timeout\\n\": ", "unknown key")),
    ("entry-label-newline", {"toml": '[[file_sd]]\nfiles = ["sd.json"]\nlabels = { "a\\n" = "x" }\n',
                             "sd.json": "[]"},
     (":3: file_sd[0].labels: ", "'a\\n' is not a usable label name")),
    ("entry-method-newline", {"toml": '[[openapi]]\nspec = "api.json"\nmethods = ["GET\\n"]\n',
                              "api.json": json.dumps(spec())},
     (":3: openapi[0].methods: ", "is not an HTTP method")),

    # --- file_sd documents: the source, the document (and its line), the entry ---
    ("sd-label-key-newline", file_sd('[{"targets": ["127.0.0.1:9"], "labels": {"team\\n": "a"}}]'),
     (":2: file_sd[0].files: cannot load ", "sd.json:1: [0].labels.\"team\\n\": ",
      "is not a usable label name")),
    ("sd-label-key-reserved", file_sd('[{"targets": ["127.0.0.1:9"], "labels": {"job": "a"}}]'),
     (":2: file_sd[0].files: cannot load ", "sd.json:1: [0].labels.job: ", "is not a usable label name")),
    ("sd-label-key-number", file_sd("- targets: ['127.0.0.1:9']\n  labels:\n    8080: a\n", "sd.yml"),
     (":2: file_sd[0].files: cannot load ", "sd.yml:3: [0].labels.8080: ", "is not a usable label name")),
    ("sd-label-value-surrogate", file_sd('[{"targets": ["127.0.0.1:9"], "labels": {"team": "\\ud800"}}]'),
     (":2: file_sd[0].files: cannot load ", "sd.json", ": [0].labels.team: ", "is not Unicode text")),
    ("sd-name-surrogate", file_sd('[{"targets": ["127.0.0.1:9"], "labels": {"name": "a\\udc00"}}]'),
     (":2: file_sd[0].files: cannot load ", "sd.json", ": [0].labels.name: ", "is not Unicode text")),
    ("sd-target-newline", file_sd('[{"targets": ["127.0.0.1:9\\n"]}]'),
     (":2: file_sd[0].files: cannot load ", "sd.json:1: [0].targets[0]: ", "url ")),
    ("sd-label-value-not-a-string", file_sd('[{"targets": ["127.0.0.1:9"], "labels": {"team": 1}}]'),
     (":2: file_sd[0].files: cannot load ", "sd.json:1: [0].labels.team: ", "must be a string")),

    # --- OpenAPI documents ---
    ("openapi-version-newline", openapi(spec(openapi="3.0.3\n")),
     (":2: openapi[0].spec: cannot load ", "api.json: openapi '3.0.3\\n': not an OpenAPI 3.x")),
    ("openapi-server-newline", openapi(spec(servers=[{"url": URL + "\n"}])),
     (":2: openapi[0].spec: cannot load ", "api.json: the base URL")),
    ("openapi-server-surrogate", openapi(spec(servers=[{"url": "http://127.0.0.1:9/\ud800"}])),
     (":2: openapi[0].spec: cannot load ", "api.json: the base URL", "is not Unicode text")),
]


@pytest.mark.parametrize("files, expected", [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_a_bad_value_is_exit_2_naming_where_it_is(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / ("greenmon.toml" if name == "toml" else name)).write_text(text, encoding="utf-8")
    run = run_cli("--config", "greenmon.toml", "--check-config", cwd=tmp_path)
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr   # one line: a key's newline is shown escaped
    message = lines[0]
    assert message.startswith("greenmon: config error: greenmon.toml:"), message
    position = 0
    for part in expected:   # in order
        found = message.find(part, position)
        assert found >= 0, f"{part!r} not in {message[position:]!r}"
        position = found + len(part)


def test_a_file_sd_key_that_turns_bad_live_keeps_the_targets_and_the_scrape_valid(tmp_path):
    """The file's generator writes a label key with a trailing newline into the running daemon's
    file_sd file: the load fails and is counted, the last good targets stay checked, and the
    /metrics Prometheus scrapes still passes promtool (before the fix, the key reached it)."""
    promtool = find_binary("promtool")
    with HTTPFarm({"/a": reply(), "/b": reply()}) as farm:
        sd = tmp_path / "sd.json"
        sd.write_text(json.dumps([{"targets": [farm.url("/a")], "labels": {"name": "a", "team": "x"}}]),
                      encoding="utf-8")
        path = tmp_path / "greenmon.toml"
        path.write_text('[monitor]\ninterval = 0.3\n[retry]\nretries = 0\n'
                        '[[file_sd]]\nfiles = ["sd.json"]\n', encoding="utf-8")
        with running_daemon(discover(load_config(path)), loader=lambda: load_config(path)) as running:
            wait_until(lambda: value(running.metrics(), "greenmon_up", target="a") == 1, 30,
                       message="a checked")
            sd.write_text(json.dumps([{"targets": [farm.url("/a")], "labels": {"name": "a", "team": "x"}},
                                      {"targets": [farm.url("/b")], "labels": {"name": "b", "team\n": "y"}}]),
                          encoding="utf-8")
            wait_until(lambda: value(running.metrics(), "greenmon_discovery_errors_total",
                                     source="file_sd[0]") == 1, 30, message="the failed load counted")
            hits = farm.hits("/a")
            wait_until(lambda: farm.hits("/a") > hits, 30, message="a still checked")
            text = running.metrics()
    assert list(running.daemon.store.series) == ["a"]
    assert farm.hits("/b") == 0
    assert value(text, "greenmon_discovered_targets", source="file_sd[0]") == 1
    assert "team\n" not in text
    result = run_tool([promtool, "check", "metrics"], input_text=text)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", (
        describe_run(result) + "\n--- /metrics ---\n" + text)


@pytest.mark.parametrize("servers", ["127.0.0.1:5353", "dns.example", "127.0.0.1,ns1"])
def test_a_name_server_that_is_not_an_address_is_exit_2_without_a_traceback(write_config, servers):
    """gevent's resolver takes addresses only, and fails with a traceback at the first lookup
    on anything else: the command says so before anything runs."""
    path = write_config('[[targets]]\nurl = "http://127.0.0.1:9/"\n')
    run = run_cli("--config", str(path), "--once", env={"GEVENT_RESOLVER_NAMESERVERS": servers})
    assert run.returncode == 2, describe_run(run)
    assert "GEVENT_RESOLVER_NAMESERVERS" in run.stderr and "is not an IP address" in run.stderr
    assert "Traceback" not in run.stderr
