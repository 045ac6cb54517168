"""Discovery sources at load time: [[openapi]] and [[file_sd]] against real files and servers
(README, "Targets from where they live").

OpenAPI documents are served by a local HTTPFarm and read from files, in JSON
and YAML; the targets they yield are checked against the same farm, so a
wrong URL shows as a 404. Bad input is a table: each case names the source,
the document and, where there is one, its line, and the command exits 2
without a traceback.
"""

from __future__ import annotations

import json
import re
import textwrap

import pytest
import yaml

from greenmon.config import load_config, parse_config
from greenmon.discovery.loading import discover
from greenmon.discovery import documents
from greenmon.discovery.values import SourceError
from greenmon.engine import sweep
from greenmon.schema import ConfigError

from support.helpers import run_cli
from support.servers import HTTPFarm, closed_port, reply


# --- An API described by its document --------------------------------------------------------

def api_document(servers=None) -> dict:
    """Operations that cover filling, skipping, filters and $ref (the expectations below)."""
    user_id = {"$ref": "#/components/parameters/userId"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "users", "version": "1"},
        "servers": servers if servers is not None else [{"url": "/v1"}],
        "components": {
            "parameters": {
                "userId": {"name": "id", "in": "path", "required": True,
                           "schema": {"type": "integer", "example": 7}},
                "alias": {"$ref": "#/components/parameters/userId"},
            },
            "examples": {"page": {"value": 2}},
        },
        "paths": {
            "/health": {"get": {"tags": ["ops"]}},
            "/users": {
                "get": {"tags": ["users"], "parameters": [
                    {"name": "limit", "in": "query", "required": True,
                     "schema": {"type": "integer", "default": 10}},
                    {"name": "q", "in": "query", "schema": {"type": "string"}}]},
                "post": {"tags": ["users"], "requestBody": {"required": True, "content": {}}},
            },
            "/users/{id}": {
                "parameters": [user_id],
                "get": {"tags": ["users"]},
                "delete": {"tags": ["users"]},
            },
            "/users/{id}/orders": {"get": {"tags": ["orders"], "parameters": [
                {"$ref": "#/components/parameters/alias"},
                {"name": "page", "in": "query", "required": True,
                 "examples": {"second": {"$ref": "#/components/examples/page"}}},
                {"name": "X-Tenant", "in": "header", "required": True, "example": "acme"}]}},
            "/search": {"get": {"tags": ["users"], "parameters": [
                {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}}]}},
            "/items/{sku}": {
                "parameters": [{"name": "sku", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "get": {"parameters": [{"name": "sku", "in": "path", "required": True,
                                        "example": "a b/c"}]},
            },
            "/external": {"get": {"parameters": [{"$ref": "other.yaml#/components/parameters/x"}]}},
            "/session": {"get": {"parameters": [
                {"name": "sid", "in": "cookie", "required": True, "example": "s"}]}},
            "x-internal": {"note": "an extension, not a path"},
        },
    }


# The GET operations the document yields, as paths under the server URL (/v1).
GET_TARGETS = {
    "GET /health": "/v1/health",
    "GET /users": "/v1/users?limit=10",
    "GET /users/{id}": "/v1/users/7",
    "GET /users/{id}/orders": "/v1/users/7/orders?page=2",
    "GET /items/{sku}": "/v1/items/a%20b%2Fc",
}
GET_SKIPPED = {
    "GET /search": "required query parameter 'q' has no example or default",
    "GET /external": "points outside the document",
    "GET /session": "cookie",
}


def served_routes(document: dict) -> dict:
    routes = {"/docs/openapi.json": reply(body=json.dumps(document),
                                          headers=[("Content-Type", "application/json")]),
              "/docs/openapi.yaml": reply(body=yaml.safe_dump(document),
                                          headers=[("Content-Type", "application/yaml")])}
    for path in GET_TARGETS.values():
        routes[path.split("?")[0].replace("%20", " ").replace("%2F", "/")] = reply()
    return routes


def write(path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def by_name(config) -> dict:
    return {t.name: t for t in config.targets}


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_an_openapi_document_served_over_http_yields_checked_targets(tmp_path, form):
    with HTTPFarm() as farm:
        farm.routes.update(served_routes(api_document()))
        path = write(tmp_path / "greenmon.toml", f"""
            [[openapi]]
            spec = "{farm.url('/docs/openapi.' + form)}"
            name_prefix = "users "
            labels = {{ team = "identity" }}
            timeout = 2.0
            """)
        config = discover(load_config(path))
        targets = by_name(config)
        assert set(targets) == {"users " + name for name in GET_TARGETS}
        for name, path_and_query in GET_TARGETS.items():
            target = targets["users " + name]
            assert target.url == farm.url(path_and_query)   # servers "/v1" against the document's URL
            assert (target.method, target.labels, target.timeout) == ("GET", {"team": "identity"}, 2.0)
        assert targets["users GET /users/{id}/orders"].headers == {"X-Tenant": "acme"}
        results = sweep(config.targets, config)
    assert all(r.ok for r in results), [(r.target, r.error) for r in results if not r.ok]
    assert farm.hits("/v1/items/a b/c") == 1   # the example, percent-encoded in the path
    assert [h["X-Tenant"] for _, h in farm.requests["/v1/users/7/orders"]] == ["acme"]
    skipped = {s.operation: s.reason for s in next(iter(config.discovered.values())).skipped}
    assert set(skipped) == set(GET_SKIPPED)
    for operation, reason in GET_SKIPPED.items():
        assert reason in skipped[operation]


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_an_openapi_document_read_from_a_file_needs_base_url_for_a_relative_server(tmp_path, form):
    document = api_document()
    text = json.dumps(document, indent=1) if form == "json" else yaml.safe_dump(document)
    write(tmp_path / "api" / f"openapi.{form}", text)
    with HTTPFarm(served_routes(document)) as farm:
        path = write(tmp_path / "greenmon.toml", f"""
            [[openapi]]
            spec = "api/openapi.{form}"
            base_url = "{farm.url('/v1')}"
            """)
        config = discover(load_config(path))   # spec relative to the config's folder
        assert {t.name: t.url for t in config.targets} == {
            name: farm.url(p) for name, p in GET_TARGETS.items()}
        assert all(r.ok for r in sweep(config.targets, config))
        write(tmp_path / "greenmon.toml", f'[[openapi]]\nspec = "api/openapi.{form}"\n')
        with pytest.raises(ConfigError, match=r"greenmon.toml:2: openapi\[0\]\.spec: cannot load .*"
                                              r"openapi\.\w+: the server URL '/v1' is relative"):
            discover(load_config(path))


def test_server_variables_take_their_defaults_and_an_absolute_server_wins(tmp_path):
    with HTTPFarm() as farm:
        servers = [{"url": "http://127.0.0.1:{port}/{base}",
                    "variables": {"port": {"default": str(farm.port)}, "base": {"default": "v1"}}},
                   {"url": "http://127.0.0.1:9/ignored"}]
        farm.routes.update(served_routes(api_document(servers)))
        config = discover(parse_config(f'[[openapi]]\nspec = "{farm.url("/docs/openapi.json")}"\n'
                                       'include_paths = "^/health$"\n', "<test>"))
        assert [t.url for t in config.targets] == [farm.url("/v1/health")]
        # No servers at all: "/" on the document's own host.
        farm.routes.update(served_routes(api_document(servers=[])))
        config = discover(parse_config(f'[[openapi]]\nspec = "{farm.url("/docs/openapi.json")}"\n'
                                       'include_paths = "^/health$"\n', "<test>"))
        assert [t.url for t in config.targets] == [farm.url("/health")]


FILTERS = [
    # (entry lines, the operations that become targets)
    ('methods = ["GET", "POST", "DELETE"]',
     set(GET_TARGETS) | {"DELETE /users/{id}"}),
    ('include_paths = "^/users"\nexclude_tags = ["orders"]', {"GET /users", "GET /users/{id}"}),
    ('include_tags = ["ops", "orders"]', {"GET /health", "GET /users/{id}/orders"}),
    ('exclude_paths = "[{]"', {"GET /health", "GET /users"}),
    ('methods = ["delete"]', {"DELETE /users/{id}"}),
]


@pytest.mark.parametrize("lines, expected", FILTERS, ids=[f"filter-{i}" for i in range(len(FILTERS))])
def test_methods_paths_and_tags_choose_the_operations(tmp_path, lines, expected):
    write(tmp_path / "api.json", json.dumps(api_document(servers=[{"url": "http://127.0.0.1:9/v1"}])))
    config = discover(parse_config(f'[[openapi]]\nspec = "api.json"\n{lines}\n', str(tmp_path / "g.toml")))
    assert {t.name for t in config.targets} == expected


def test_post_with_a_required_body_is_skipped_and_check_config_says_why(tmp_path):
    write(tmp_path / "api.yaml", yaml.safe_dump(api_document(servers=[{"url": "http://127.0.0.1:9/v1"}])))
    path = write(tmp_path / "greenmon.toml", """
        [[targets]]
        name = "static"
        url = "http://127.0.0.1:9/"

        [[openapi]]
        spec = "api.yaml"
        methods = ["GET", "POST"]
        """)
    run = run_cli("--config", str(path), "--check-config")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "6 targets (6 enabled)" in lines[0] and "1 discovery sources" in lines[0], lines
    assert "4 OpenAPI operations skipped" in lines[0], lines
    assert lines[1].strip().startswith("openapi[0]: 5 targets, 4 operations skipped:"), lines
    for words in ("requires a request body (1: POST /users)", "GET /search", "GET /external",
                  "cookie"):
        assert words in lines[1], lines


def test_operation_parameters_override_the_path_and_refs_loop_is_a_skip(tmp_path):
    document = {"openapi": "3.1.0", "servers": [{"url": "http://127.0.0.1:9"}], "paths": {
        "/a/{x}": {"parameters": [{"name": "x", "in": "path", "required": True, "example": "path"}],
                   "get": {"parameters": [{"name": "x", "in": "path", "required": True,
                                           "schema": {"examples": ["op"]}}]}},
        "/loop": {"get": {"parameters": [{"$ref": "#/x"}]}},
        "/b/{y}": {"get": {}},
    }, "x": {"$ref": "#/x"}}
    write(tmp_path / "api.json", json.dumps(document))
    config = discover(parse_config('[[openapi]]\nspec = "api.json"\n', str(tmp_path / "g.toml")))
    assert [t.url for t in config.targets] == ["http://127.0.0.1:9/a/op"]
    skipped = {s.operation: s.reason for s in next(iter(config.discovered.values())).skipped}
    assert "loops" in skipped["GET /loop"]
    assert "path parameter 'y' is not declared" in skipped["GET /b/{y}"]


# --- file_sd --------------------------------------------------------------------------------------

def test_file_sd_json_and_yaml_with_labels_and_entry_defaults(tmp_path):
    with HTTPFarm({"/a": reply(), "/b": reply(), "/": reply(), "/c": reply()}) as farm:
        host = f"127.0.0.1:{farm.port}"
        write(tmp_path / "sd" / "web.json", json.dumps([
            {"targets": [farm.url("/a"), host], "labels": {"team": "web", "__param_module": "http_2xx"}},
            {"targets": [farm.url("/b")], "labels": {"name": "bee", "env": "prod"}},
        ]))
        write(tmp_path / "sd" / "more.yaml", f"""
            - targets: ["{farm.url('/c')}"]
              labels:
                team: ops
            """)
        write(tmp_path / "sd" / "ignored.txt", "not a file_sd file")
        path = write(tmp_path / "greenmon.toml", """
            [[file_sd]]
            files = ["sd/*.json", "sd/*.yaml"]
            labels = { tier = "sd", team = "default" }
            expect_status = [200]
            """)
        config = discover(load_config(path))
        results = sweep(config.targets, config)
    targets = by_name(config)
    assert list(targets) == [farm.url("/c"), farm.url("/a"), f"http://{host}/", "bee"]   # files sorted
    assert targets[farm.url("/a")].labels == {"tier": "sd", "team": "web"}
    assert targets[f"http://{host}/"].url == f"http://{host}/"   # bare host:port
    assert targets["bee"].url == farm.url("/b")
    assert targets["bee"].labels == {"tier": "sd", "team": "default", "env": "prod"}
    assert targets[farm.url("/c")].labels == {"tier": "sd", "team": "ops"}
    assert all(t.expect_status.codes == {200} for t in targets.values())
    assert all(r.ok for r in results)


def test_a_config_with_only_discovered_targets_is_valid(tmp_path):
    write(tmp_path / "sd.yml", "- targets: ['127.0.0.1:9']\n")
    config = discover(parse_config('[[file_sd]]\nfiles = ["sd.yml"]\n', str(tmp_path / "g.toml")))
    assert [t.name for t in config.enabled_targets] == ["http://127.0.0.1:9/"]
    assert config.static_targets == ()


def test_a_wildcard_that_matches_nothing_is_an_empty_source(tmp_path):
    (tmp_path / "sd").mkdir()
    text = ('[[targets]]\nname = "static"\nurl = "http://127.0.0.1:9/"\n\n'
            '[[file_sd]]\nfiles = ["sd/*.json"]\n')
    config = discover(parse_config(text, str(tmp_path / "g.toml")))
    assert [t.name for t in config.targets] == ["static"]
    # Alone, it leaves nothing to check: that is an error naming the source.
    with pytest.raises(ConfigError, match=r"no enabled targets: .*file_sd\[0\]"):
        discover(parse_config('[[file_sd]]\nfiles = ["sd/*.json"]\n', str(tmp_path / "g.toml")))


def test_file_keys_of_an_entry_are_taken_from_the_configs_folder(tmp_path, ca, monkeypatch):
    """client_cert, client_key and ca_file of a discovery entry, like a [[targets]] entry's."""
    client = ca.issue_cert("greenmon-client")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    (tmp_path / "sd.yml").write_text("- targets: ['127.0.0.1:9']\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path.parent)   # not the config's folder
    config = discover(parse_config('[[file_sd]]\nfiles = ["sd.yml"]\nclient_cert = "client.pem"\n'
                                   'client_key = "client.key"\nca_file = "ca.pem"\n', str(tmp_path / "g.toml")))
    (target,) = config.targets
    assert (target.client_cert, target.client_key, target.ca_file) == (
        str(tmp_path / "client.pem"), str(tmp_path / "client.key"), str(tmp_path / "ca.pem"))


# --- Bad input: config errors naming the source, the document and its line ---------------------

SWAGGER = '{"swagger": "2.0", "paths": {}}'
BAD = [
    # (id, {file: text}, the entry, what the message must hold)
    ("not-openapi-3", {"api.json": SWAGGER}, '[[openapi]]\nspec = "api.json"',
     [r"g\.toml:\d+: openapi\[0\]\.spec: cannot load .*api\.json: swagger '2\.0' is OpenAPI 2"]),
    ("openapi-4", {"api.yaml": "openapi: '4.0'\npaths: {}\n"}, '[[openapi]]\nspec = "api.yaml"',
     [r"openapi\[0\]\.spec: .*api\.yaml: openapi '4\.0': not an OpenAPI 3"]),
    ("yaml-syntax", {"api.yaml": "openapi: 3.0.0\npaths:\n  /a:\n    get: [unclosed\n  /b: {}\n"},
     '[[openapi]]\nspec = "api.yaml"', [r"openapi\[0\]\.spec: .*api\.yaml:\d+: YAML syntax error"]),
    ("json-syntax", {"api.json": '{\n  "openapi": "3.0.0",\n  "paths": {,}\n}\n'},
     '[[openapi]]\nspec = "api.json"', [r"openapi\[0\]\.spec: .*api\.json:3: JSON syntax error"]),
    ("sd-json-syntax", {"sd.json": '[\n  {"targets": ["a:1"]}\n  {"targets": []}\n]'},
     '[[file_sd]]\nfiles = ["sd.json"]', [r"file_sd\[0\]\.files: .*sd\.json:3: JSON syntax error"]),
    ("sd-without-targets", {"sd.json": '[\n  {"targets": ["127.0.0.1:1"]},\n  {"labels": {"a": "b"}}\n]\n'},
     '[[file_sd]]\nfiles = ["sd.json"]', [r"file_sd\[0\]\.files: cannot load .*sd\.json:3: \[1\]: "
                                          r"the group has no targets"]),
    ("sd-url-cannot-be-sent", {"sd.yaml": "- targets:\n    - 127.0.0.1:1\n    - ftp://example.invalid/\n"},
     '[[file_sd]]\nfiles = ["sd.yaml"]', [r"sd\.yaml:3: \[0\]\.targets\[1\]: url scheme must be http"]),
    ("sd-bad-label", {"sd.yaml": "- targets: ['127.0.0.1:1']\n  labels:\n    target: x\n"},
     '[[file_sd]]\nfiles = ["sd.yaml"]', [r"sd\.yaml:3: \[0\]\.labels\.target: 'target' is not a usable"]),
    ("sd-name-for-two", {"sd.yaml": "- targets: ['127.0.0.1:1', '127.0.0.1:2']\n  labels: {name: x}\n"},
     '[[file_sd]]\nfiles = ["sd.yaml"]', [r"sd\.yaml:2: .*names a single target; the group has 2"]),
    ("sd-not-a-list", {"sd.json": '{"targets": ["a:1"]}'}, '[[file_sd]]\nfiles = ["sd.json"]',
     [r"sd\.json:1: the document: must be a list of groups"]),
    ("sd-missing-file", {}, '[[file_sd]]\nfiles = ["nope.json"]',
     [r"file_sd\[0\]\.files: cannot load .*nope\.json: no such file"]),
    ("sd-missing-folder", {}, '[[file_sd]]\nfiles = ["nope/*.json"]',
     [r"file_sd\[0\]\.files: cannot load .*nope/\*\.json: the folder .*nope does not exist"]),
    ("sd-extension", {}, '[[file_sd]]\nfiles = ["sd.txt"]', [r"file_sd\[0\]\.files: '.*sd\.txt': file_sd files end in \.json, \.yml or \.yaml"]),
    ("name-in-file-sd", {}, '[[file_sd]]\nfiles = ["sd.json"]\nname = "x"',
     [r"g\.toml:3: file_sd\[0\]\.name: not a key of \[\[file_sd\]\]"]),
    ("method-in-openapi", {}, '[[openapi]]\nspec = "api.json"\nmethod = "GET"',
     [r"g\.toml:3: openapi\[0\]\.method: not a key of \[\[openapi\]\].*methods"]),
    ("unknown-key", {}, '[[openapi]]\nspec = "api.json"\nmethod_s = ["GET"]',
     [r"g\.toml:3: openapi\[0\]\.method_s: unknown key"]),
    ("no-spec", {}, '[[openapi]]\nname_prefix = "x"', [r"g\.toml:1: openapi\[0\]: spec is required"]),
    ("unknown-auth", {}, '[[file_sd]]\nfiles = ["sd.json"]\nauth = "nope"',
     [r"g\.toml:3: file_sd\[0\]\.auth: no \[auth\.nope\] table"]),
    ("client-cert-without-key", {"cert.pem": "the pair is checked first\n"}, '[[file_sd]]\nfiles = ["sd.json"]\nclient_cert = "cert.pem"',
     [r"g\.toml:1: file_sd\[0\]\.client_key: is required with client_cert"]),
    ("interval-below-timeout", {}, '[[file_sd]]\nfiles = ["sd.json"]\ntimeout = 5.0\ninterval = 1.0',
     [r"g\.toml:4: file_sd\[0\]\.interval: interval 1 s is shorter than the timeout 5 s"]),
    ("bad-regex", {}, '[[openapi]]\nspec = "api.json"\ninclude_paths = "("',
     [r"g\.toml:3: openapi\[0\]\.include_paths: is not a valid regular expression"]),
    ("clash-with-targets", {"sd.yaml": "- targets: ['127.0.0.1:1']\n  labels: {name: static}\n"},
     '[[targets]]\nname = "static"\nurl = "http://127.0.0.1:2/"\n\n[[file_sd]]\nfiles = ["sd.yaml"]',
     [r"target name 'static' comes from both targets\[0\] \(line 1\) and file_sd\[0\] \(line 5\): "
      r".*sd\.yaml group 0"]),
    ("clash-between-sources", {"a.yml": "- targets: ['127.0.0.1:1']\n", "b.yml": "- targets: ['127.0.0.1:1']\n"},
     '[[file_sd]]\nfiles = ["a.yml"]\n\n[[file_sd]]\nfiles = ["b.yml"]',
     [r"'http://127\.0\.0\.1:1/' comes from both file_sd\[0\] \(line 1\): .*a\.yml group 0 and "
      r"file_sd\[1\] \(line 4\): .*b\.yml group 0"]),
]


@pytest.mark.parametrize("files, entry, patterns", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_discovery_input_is_a_config_error_naming_source_file_and_line(tmp_path, files, entry, patterns):
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        discover(parse_config(entry + "\n", str(tmp_path / "g.toml")))
    message = str(raised.value)
    for pattern in patterns:
        assert re.search(pattern, message), message


@pytest.mark.parametrize("problem, expected", [
    ("refused", r"openapi\[0\]\.spec: cannot load http://127\.0\.0\.1:\d+/api\.json: connection/refused"),
    ("404", r"openapi\[0\]\.spec: cannot load http://127\.0\.0\.1:\d+/api\.json: HTTP 404 Not Found"),
])
def test_a_spec_url_that_cannot_be_fetched_exits_2_naming_it(tmp_path, problem, expected):
    with HTTPFarm() as farm:
        port = closed_port() if problem == "refused" else farm.port
        path = write(tmp_path / "greenmon.toml", f'[[openapi]]\nspec = "http://127.0.0.1:{port}/api.json"\n')
        for flags in (["--once"], ["--check-config"]):
            run = run_cli("--config", str(path), *flags)
            assert run.returncode == 2, run.stderr
            assert re.search(f"{re.escape(str(path))}:2: {expected}", run.stderr), run.stderr
            assert "Traceback" not in run.stderr and run.stdout == ""


def test_a_broken_file_sd_file_exits_2_with_its_line(tmp_path):
    write(tmp_path / "sd.json", '[\n  {"targets": ["127.0.0.1:1"]},\n  {"labels": {}}\n]\n')
    path = write(tmp_path / "greenmon.toml", '[[file_sd]]\nfiles = ["sd.json"]\n')
    run = run_cli("--config", str(path), "--once")
    assert run.returncode == 2
    assert f"{path}:2: file_sd[0].files: cannot load {tmp_path / 'sd.json'}:3: [1]: the group has no targets" \
        in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


# --- Documents: the sliced JSON reader is json.loads, and errors have lines -----------------------

@pytest.mark.parametrize("text", [
    '{}', '[]', ' {"a": [1, 2, {"b": {"c": [true, false, null]}}], "d": "\\u00e9\\n"} ',
    '[[[[[[1]]]]], {"x": {"y": {"z": {"w": {}}}}}]', '"plain"', '3.5', '{"a": 1, "a": 2}',
])
def test_the_sliced_json_reader_reads_what_json_loads_reads(text):
    assert documents.loads_sliced(text) == json.loads(text)


@pytest.mark.parametrize("text", ['{"a": 1,}', '[1 2]', '{"a" 1}', '{"a": [1, 2}', '{} x', '{"a": tru}', ''])
def test_the_sliced_json_reader_refuses_what_json_loads_refuses_at_the_same_line(text):
    text = "\n" + text
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(SourceError, match=rf"doc\.json:{expected.value.lineno}: JSON syntax error"):
        documents.parse(text.encode(), "doc.json")


def test_a_document_that_is_not_utf8_is_refused():
    with pytest.raises(SourceError, match="api.json: not UTF-8 text"):
        documents.parse(b'{"a": "\xff"}', "api.json")


def test_the_discovery_families_are_the_text_prometheus_client_writes():
    from support.daemon_helpers import value
    from test_metrics import scrape, store_with

    store = store_with("a")
    store.discovery = {"openapi[0]": (12, 0), "file_sd[0]": (3, 2)}
    found = scrape(store)   # asserts the cached exposition is generate_latest's, byte for byte
    assert value(found, "greenmon_discovered_targets", source="openapi[0]") == 12
    assert value(found, "greenmon_discovery_errors_total", source="file_sd[0]") == 2
    assert {s.type for s in found if s.name.startswith("greenmon_discover")} == {"gauge", "counter"}
