"""Bad config input: whatever the file holds, loading it either succeeds or raises greenmon's
ConfigError naming the file (and the CLI exits 2 without a traceback); docs/reliability.md,
"Bad config input".

- property tests (hypothesis, under the profile conftest.py loads: by default ``ci``,
  derandomized, so every run checks the same examples; ``HYPOTHESIS_PROFILE=explore`` looks
  at ten times as many random ones): random TOML documents shaped like a greenmon config,
  random lines of TOML-looking text, random bytes, and one-value mutations of a full valid
  config;
- a few runs of the real command on fuzzed files (exit 2, one clean message);
- the inputs greenmon once got wrong (NUL in paths, unusable hosts, non-latin-1 headers, ...).

The targets refused at load time with their name (schemes, hosts, ports, absurd header
values) are test_targets.py's.

The generated TOML is written by tomli-w (``tomli_w.dumps``, or support/configs.py's
``toml_key``/``toml_value`` for documents written inline and for single lines); a test checks
that tomllib reads back exactly the document written, so a failure can only come from greenmon.
"""

from __future__ import annotations

import datetime
import random
import string
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import event, given, settings
from hypothesis import strategies as st

from greenmon.config import load_config, parse_config
from greenmon.schema import ConfigError
from support.configs import config_text, toml_key, toml_value
from support.helpers import run_cli
from support.servers import closed_port

FILENAME = "fuzz.toml"
# Sizes relative to the loaded profile (conftest.py): 200 and 100 examples under ``ci``,
# 2000 and 1000 under ``explore``. Everything else (derandomized or not, the database, no
# deadline) is the profile's.
FUZZ = settings(max_examples=2 * settings.default.max_examples)
SMALL_FUZZ = settings(max_examples=settings.default.max_examples)

SECTIONS = {
    "monitor": ["concurrency", "timeout", "interval", "max_body_bytes", "verify_tls", "ca_file",
                "follow_redirects", "user_agent", "slo_p95_seconds", "state_file"],
    "retry": ["retries", "backoff", "max_backoff", "jitter"],
    "breaker": ["failure_threshold", "recovery_timeout"],
    "server": ["listen"],
    "metrics": ["buckets", "per_target_histograms", "phase_gauges", "all_error_classes"],
}
TARGET_KEYS = ["name", "url", "method", "headers", "body", "body_file", "expect_status", "expect_body",
               "reject_body", "expect_header", "reject_header", "timeout", "verify_tls", "ca_file",
               "auth", "labels", "enabled"]
AUTH_KEYS = ["type", "token", "token_env", "token_file", "username", "password", "password_env",
             "password_file", "name", "value", "value_env", "value_file"]
FILE_KEYS = {"ca_file", "state_file", "token_file", "password_file", "value_file", "body_file"}


# --- Strategies ----------------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=24)
_INTERESTING = st.sampled_from([
    "", " ", "0", "-1", "1e999", "http://127.0.0.1:1/", "https://example.invalid/", "ftp://127.0.0.1/",
    "file:///etc/passwd", "http://", "http:///x", "http://[::1", "http://127.0.0.1:99999/",
    "http://127.0.0.1:0/", "http://u:p@127.0.0.1:1/", "${GM_FUZZ_UNSET}", "${}", "$${HOME}", "2xx",
    "6xx", "200", "bearer", "basic", "header", "127.0.0.1:9715", "127.0.0.1:0", ":80", "x:99999",
    "/nonexistent/file", ".", "tests", "GET", "get", "G E T", "a\r\nb", "(", "[a-", "*", "é", "\u2028",
    "X-Api-Key", "Authorization", "main",
])
_SCALAR = st.one_of(
    st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1), st.integers(-3, 70000),
    st.floats(allow_nan=True, allow_infinity=True), _TEXT, _INTERESTING,
    st.sampled_from([datetime.date(2026, 11, 27), datetime.time(10, 0, 0),
                     datetime.datetime(2026, 11, 27, 10, 0, tzinfo=datetime.timezone.utc),
                     datetime.datetime(2026, 11, 27, 10, 0)]),
)
_KEY = st.one_of(st.sampled_from(sorted({k for keys in SECTIONS.values() for k in keys}
                                        | set(TARGET_KEYS) | set(AUTH_KEYS))),
                 st.text(min_size=1, max_size=8))
VALUES = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(_KEY, inner, max_size=4), max_leaves=8)


def _table_of(keys: list[str]):
    return st.dictionaries(st.one_of(st.sampled_from(keys), _KEY), VALUES, max_size=len(keys) // 2 + 2)


_URLS = st.one_of(_INTERESTING, st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https", "HTTP", "ftp", "", "gopher"]),
    st.one_of(st.sampled_from(["127.0.0.1", "localhost", "[::1]", "", "u:p@127.0.0.1", ".x", "a..b"]),
              st.text(string.ascii_letters + string.digits + ".-_~%@:[]", max_size=12)),
    st.one_of(st.just(""), st.integers(-1, 70000).map(lambda p: f":{p}"), st.just(":x")),
    st.one_of(st.just("/"), _TEXT.map(lambda t: "/" + t))))


@st.composite
def targets(draw):
    target = draw(_table_of(TARGET_KEYS))
    if draw(st.booleans()):
        target["url"] = draw(_URLS)
    return target


@st.composite
def documents(draw):
    """A dict shaped like a greenmon config: known sections and keys mostly, random ones too."""
    document = {}
    for section, keys in SECTIONS.items():
        if draw(st.booleans()):
            document[section] = draw(st.one_of(_table_of(keys), VALUES))
    if draw(st.booleans()):
        document["auth"] = draw(st.one_of(
            st.dictionaries(st.sampled_from(["main", "other", ""]), _table_of(AUTH_KEYS), max_size=2),
            VALUES))
    if draw(st.integers(0, 9)):
        document["targets"] = draw(st.one_of(st.lists(targets(), max_size=4), VALUES))
    for key in draw(st.lists(_KEY, max_size=2)):
        document[key] = draw(VALUES)
    return document


def toml_document(document: dict, tables: bool = True) -> str:
    """``document`` as TOML: with ``tables`` as tomli-w lays it out ([table], [[array]]), else
    every top-level key on one ``key = value`` line, tables and arrays of tables inline."""
    if tables:
        return tomli_w.dumps(document)
    return "".join(f"{toml_key(key)} = {toml_value(value)}\n" for key, value in document.items())


def _comparable(value):
    """``value`` with NaN made equal to itself and tuples as lists, to compare a document
    with what tomllib read back."""
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    return value


def assert_config_error_is_clear(error: ConfigError, filename: str = FILENAME) -> None:
    message = str(error)
    assert type(error) is ConfigError
    assert message.startswith(filename), message
    assert "Traceback" not in message


def load_or_config_error(text: str, filename: str = FILENAME):
    """parse_config, where the only acceptable failure is a ConfigError naming the file."""
    try:
        config = parse_config(text, filename)
    except ConfigError as error:
        assert_config_error_is_clear(error, filename)
        event("refused: " + ("TOML syntax" if "TOML syntax error" in str(error) else "validation"))
        return None
    assert config.enabled_targets
    event("accepted")
    return config


# --- Properties --------------------------------------------------------------------------------------------

@FUZZ
@given(document=documents(), tables=st.booleans())
def test_random_config_documents_load_or_raise_config_error(document, tables):
    text = toml_document(document, tables)
    # The writer wrote this very document (a key "0\n" written bare would not read back):
    # any failure below is greenmon's.
    assert _comparable(tomllib.loads(text)) == _comparable(document), text
    load_or_config_error(text)


_LINES = st.one_of(
    st.sampled_from(["[monitor]", "[retry]", "[breaker]", "[server]", "[metrics]", "[[targets]]",
                     "[auth.main]", "[auth]", "[targets]", "[[auth]]", "[targets.headers]",
                     "[[targets.labels]]", "", "# comment", 'url = "http://127.0.0.1:1/"',
                     'type = "bearer"', 'token = "t"', 'name = "n"', "timeout = 0", "timeout = 1",
                     'auth = "main"', 'monitor.timeout = 2', 'body = """', '"""', "x = ", "= 1",
                     "[", "]]", 'headers = { "A" = "b" }', "enabled = false", "[[targets]] # x"]),
    st.builds(lambda key, value: f"{toml_key(key)} = {toml_value(value)}", _KEY, VALUES),
    _TEXT,
)


@FUZZ
@given(lines=st.lists(_LINES, max_size=14))
def test_random_toml_lines_load_or_raise_config_error(lines):
    load_or_config_error("\n".join(lines))


@SMALL_FUZZ
@given(data=st.binary(max_size=200))
def test_random_bytes_load_or_raise_config_error(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("bytes") / FILENAME
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as error:
        assert_config_error_is_clear(error, str(path))


def valid_document(tmp: Path) -> dict:
    """Every section of the config and the keys of each (docs/configuration.md), with values
    greenmon accepts."""
    secret = tmp / "secret.txt"
    secret.write_text("s3cret\n", encoding="utf-8")
    return {
        "monitor": {"concurrency": 10, "timeout": 1.0, "interval": 5.0, "max_body_bytes": 1024,
                    "verify_tls": True, "ca_file": "", "follow_redirects": True,
                    "user_agent": "fuzz/1", "slo_p95_seconds": 2.0, "state_file": ""},
        "retry": {"retries": 1, "backoff": 0.1, "max_backoff": 1.0, "jitter": False},
        "breaker": {"failure_threshold": 3, "recovery_timeout": 30.0},
        "server": {"listen": "127.0.0.1:9715"},
        "metrics": {"buckets": [0.1, 1.0, 2.0], "per_target_histograms": True},
        "auth": {"main": {"type": "bearer", "token_file": str(secret)},
                 "pw": {"type": "basic", "username": "ops", "password": "pw"},
                 "key": {"type": "header", "name": "X-Api-Key", "value": "k"}},
        "targets": [
            {"name": "a", "url": "http://127.0.0.1:1/a", "method": "POST", "headers": {"Accept": "*/*"},
             "body": "{}", "expect_status": ["2xx", 418], "expect_body": "ok", "reject_body": "err",
             "expect_header": {"Content-Type": "^text/"}, "reject_header": {"X-Maintenance": "on"},
             "timeout": 0.5, "verify_tls": False, "ca_file": "", "auth": "main",
             "labels": {"team": "x"}, "enabled": True},
            {"url": "https://127.0.0.1:2/b", "auth": "pw"},
            {"name": "c", "url": "http://127.0.0.1:3/c", "auth": "key", "enabled": False},
        ],
    }


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _dotted_table(path: tuple) -> str:
    """How an error names the table holding ``path``: "monitor", "auth.main", "targets[1]"."""
    if not path:
        return ""
    if path[0] == "targets" and len(path) > 1:
        return f"targets[{path[1]}]"
    if path[0] == "auth" and len(path) > 1:
        return f"auth.{path[1]}"
    return str(path[0])


@FUZZ
@given(data=st.data())
def test_one_value_changed_in_a_valid_config_loads_or_names_its_table(data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mutate")
    document = valid_document(tmp)
    assert load_or_config_error(toml_document(document)) is not None   # the starting point is valid
    path = data.draw(st.sampled_from([p for p in _paths(document) if p]), label="path")
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    action = data.draw(st.sampled_from(["replace", "delete", "add-unknown"]), label="action")
    if action == "replace":
        parent[path[-1]] = data.draw(VALUES, label="value")
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(_KEY.filter(lambda k: k not in parent), label="key")] = data.draw(VALUES)
    try:
        parse_config(toml_document(document, data.draw(st.booleans(), label="tables")), FILENAME)
    except ConfigError as error:
        assert_config_error_is_clear(error)
        # The table changed: that of the value replaced or deleted; for a key added, the table
        # it was added to (a key added at the top level is in none: a clear error is enough).
        table = _dotted_table(path[:-1] if action == "add-unknown" else path)
        if table.startswith(("auth.", "targets[")) and action != "delete":
            table = table.split(".")[0].split("[")[0]   # a change may surface at a sibling or referrer
        assert table in str(error), f"{path} changed, but the error names: {error}"


# --- The real command on fuzzed files ----------------------------------------------------------------------

def fuzzed_files(folder: Path, count: int = 6) -> list[Path]:
    """Seeded mutations of a valid config that greenmon refuses: broken syntax, wrong types,
    unknown keys, bad URLs, missing variables, random bytes."""
    rng = random.Random(20261127)
    base = toml_document(valid_document(folder))
    mutations = [
        lambda text: text.replace("timeout = 1.0", f"timeout = {rng.choice(['-1', '0', 'true', '[]'])}", 1),
        lambda text: text.replace('"http://127.0.0.1:1/a"', '"ftp://127.0.0.1/a"', 1),
        lambda text: text.replace("[retry]", "[retry]\nretires = 3", 1),
        lambda text: text[:rng.randrange(len(text) // 3, len(text))] + '"unterminated',
        lambda text: text.replace('"fuzz/1"', '"${GM_FUZZ_UNSET_VARIABLE}"', 1),
        lambda text: text.replace("[[targets]]", "[targets]", 1),
    ]
    files = []
    for index in range(count):
        path = folder / f"fuzzed-{index}.toml"
        path.write_text(mutations[index % len(mutations)](base), encoding="utf-8")
        with pytest.raises(ConfigError):
            load_config(path)
        files.append(path)
    binary = folder / "binary.toml"
    binary.write_bytes(bytes(rng.randrange(256) for _ in range(300)))
    empty = folder / "empty.toml"
    empty.write_bytes(b"")
    return files + [binary, empty]


def test_cli_refuses_fuzzed_configs_with_exit_2_and_one_clean_message(tmp_path, monkeypatch):
    monkeypatch.delenv("GM_FUZZ_UNSET_VARIABLE", raising=False)
    files = fuzzed_files(tmp_path)
    runs = []
    for index, path in enumerate(files):
        flags = ("--check-config",) if index % 2 else ("--once", "--format", "json")
        runs.append((path, subprocess.Popen([sys.executable, "-m", "greenmon", "--config", str(path), *flags],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                            stdin=subprocess.DEVNULL)))
    for path, process in runs:
        try:
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 2, (path.name, stderr)
        assert stdout == "", (path.name, stdout)
        assert "Traceback" not in stderr, (path.name, stderr)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"greenmon: config error: {path}"), stderr


# --- Inputs greenmon once got wrong ---

@pytest.mark.parametrize("kind, key", [("bearer", "token_file"), ("basic", "password_file"),
                                       ("header", "value_file")])
def test_nul_in_a_secret_file_path_is_a_config_error(kind, key):
    extra = {"basic": 'username = "ops"\n', "header": 'name = "X-Api-Key"\n'}.get(kind, "")
    text = (f'[auth.main]\ntype = "{kind}"\n{extra}{key} = "/run/secrets/a\\u0000b"\n\n'
            '[[targets]]\nurl = "http://127.0.0.1:1/"\nauth = "main"\n')
    with pytest.raises(ConfigError, match=rf"auth\.main\.{key}"):
        parse_config(text, FILENAME)


@pytest.mark.parametrize("where", ["target-header", "bearer-token", "header-auth-value", "user-agent"])
def test_header_value_that_cannot_be_sent_is_refused_at_load(where):
    value = "caf\u00e9-\U0001F642"
    target = {"name": "users-api", "url": f"http://127.0.0.1:{closed_port()}/"}
    document: dict = {"monitor": {"timeout": 0.5}}
    if where == "target-header":
        target["headers"] = {"X-Mood": value}
    elif where == "user-agent":
        document["monitor"]["user_agent"] = value
    elif where == "bearer-token":
        document["auth"] = {"main": {"type": "bearer", "token": value}}
        target["auth"] = "main"
    else:
        document["auth"] = {"main": {"type": "header", "name": "X-Api-Key", "value": value}}
        target["auth"] = "main"
    document["targets"] = [target]
    with pytest.raises(ConfigError):
        parse_config(toml_document(document), FILENAME)


def test_user_agent_with_crlf_is_refused_at_load():
    text = ('[monitor]\nuser_agent = "greenmon\\r\\nX-Injected: 1"\n\n'
            '[[targets]]\nurl = "http://127.0.0.1:1/"\n')
    with pytest.raises(ConfigError, match=r"monitor\.user_agent"):
        parse_config(text, FILENAME)


def test_state_file_path_with_nul_is_refused_at_load(tmp_path):
    """Specified: refused at load, naming the key (not a failure at the first save)."""
    text = config_text([{"name": "users-api", "url": f"http://127.0.0.1:{closed_port()}/"}], timeout=0.5,
                       monitor={"state_file": f"{tmp_path}/state\0.json"})
    with pytest.raises(ConfigError) as raised:
        parse_config(text, FILENAME)
    message = str(raised.value)
    assert message.startswith(f"{FILENAME}:") and "monitor.state_file: " in message, message
    assert "NUL" in message, message


@pytest.mark.parametrize("where", ["unusable-host", "nul-in-state-file"])
def test_cli_refuses_them_with_exit_2_naming_the_key(where, tmp_path):
    """The command line: exit 2, one line naming the file, line and key."""
    if where == "unusable-host":
        text, key = config_text([{"name": "users-api", "url": "http://*/health"}]), "targets[0].url"
    else:
        text = config_text([{"name": "users-api", "url": f"http://127.0.0.1:{closed_port()}/"}],
                           monitor={"state_file": f"{tmp_path}/s\0.json"})
        key = "monitor.state_file"
    path = tmp_path / FILENAME
    path.write_text(text, encoding="utf-8")
    for flags in (("--check-config",), ("--once", "--format", "json")):
        run = run_cli("--config", str(path), *flags, timeout=60)
        assert run.returncode == 2, (flags, run.stderr)
        assert run.stdout == "" and "Traceback" not in run.stderr, (flags, run.stdout, run.stderr)
        [line] = run.stderr.strip().splitlines()
        assert line.startswith(f"greenmon: config error: {path}:") and f" {key}: " in line, line


@pytest.mark.parametrize("text", [
    '[server]\nlisten = "127.0.0.1:\u00b2"\n[[targets]]\nurl = "http://127.0.0.1:1/"\n',
    '[[targets]]\nurl = "http://127.0.0.1:1/"\nexpect_status = ["\u00b2"]\n',
], ids=["listen-port", "expect-status"])
def test_superscript_digits_get_greenmons_own_message(text):
    with pytest.raises(ConfigError) as raised:
        parse_config(text, FILENAME)
    assert "invalid literal" not in str(raised.value), str(raised.value)
