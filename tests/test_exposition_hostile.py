"""Nothing reaches /metrics, --textfile or --pushgateway that breaks them (issue 19;
docs/metrics.md, "Label names and values").

Targets are made here directly (``Target(...)``), past config validation on purpose: this is
the defence behind it. Their names, URLs, methods, label names and values, and their results
(error details, TLS version, phases), hold newlines, CR, quotes, backslashes, NUL, lone
surrogates, right-to-left marks, ``#{}=,``, spaces, long and non-ASCII text. What greenmon
writes must still parse, as Prometheus parses it:

- property test (Hypothesis, under the profile conftest.py loads): the cached exposition is
  byte for byte what prometheus_client writes for the same store (``generate_latest``, and
  ``write_to_textfile`` as --textfile calls it: StoreCollector), valid UTF-8; prometheus_client's
  parser reads one sample per line, only Prometheus label names, and every target, label value
  and location as it was given (a lone surrogate as U+FFFD, a label name Prometheus cannot
  carry dropped), never the URL's password;
- the real promtool (skipped without it unless GREENMON_REQUIRE_PROMETHEUS=1) on one store made
  of many generated ones and a fixed corpus: no parse error, and no problem that a tame store of
  the same shape does not have (today: none at all);
- the real command, ``--once --textfile --pushgateway``, with a config and a file_sd file of
  hostile but valid values, against servers on 127.0.0.1: the same checks on the file it writes
  and the body it pushes.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from greenmon.settings import DEFAULT_BUCKETS, MonitorSettings
from greenmon.metrics import build_registry
from greenmon.store import MetricsStore
from greenmon.exposition import MARK, Exposition, keep, kept_piece, kept_updated
from greenmon.result import MonitorResult
from greenmon.targets import RESERVED_LABELS, Target
from greenmon.result import TLSFacts
from support.configs import config_text
from support.helpers import run_cli
from support.prom_helpers import find_binary, subprocess_env
from support.servers import HTTPFarm, closed_port, reply

PASSWORD = "hunter2-secret"
BASE_URL = "http://127.0.0.1:9/"
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
SURROGATE = re.compile("[\ud800-\udfff]")

PIECES = ["\n", "\r", "\r\n", '"', "\\", "\\n", '\\"', '"}', "\0", "\ud800", "\udfff", "\udc80",
          "\ud83d", "\u202e", "\u200f", "\u2066", "\u2028", "\x85", "\ufeff", "\t", "#", "# HELP",
          "{", "}", "=", ",", " ", "é", "日本", "😀", "x", "_", "__", "le", "target", "a\\\"b"]


# --- What the exposition must show -------------------------------------------------------

def shown(value: str) -> str:
    """The test's own oracle of a string as exported: each lone surrogate as U+FFFD."""
    return SURROGATE.sub("\ufffd", value)


def exportable(name) -> bool:
    """A target label name greenmon_target_info may carry (the config's rule)."""
    return (isinstance(name, str) and LABEL_NAME.fullmatch(name) is not None
            and not name.startswith("__") and name not in RESERVED_LABELS)


# --- Strategies ----------------------------------------------------------------------------

piece = st.sampled_from(PIECES)
hostile = st.one_of(
    st.lists(st.one_of(piece, st.text(max_size=4), st.integers(0xD800, 0xDFFF).map(chr)),
             max_size=10).map("".join),
    st.text(max_size=16),
    st.builds(lambda part, times: part * times, piece, st.integers(300, 3000)),   # long
)
label_names = st.one_of(
    st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),    # valid, or __-prefixed
    st.sampled_from(["team\n", "team", "target", "url", "method", "job", "le", "__meta_x", "",
                     "1abc", "a-b", "a b", "a.b", "日本", "café", "a\ud800", "\u202eteam"]),
    hostile,
)
urls = st.one_of(
    hostile.map(lambda path: BASE_URL + path),   # shown exactly (the host part is fixed)
    st.sampled_from([f"http://user:{PASSWORD}@127.0.0.1:9/x", f"http://user:{PASSWORD}@[::1/",
                     f"http://user:{PASSWORD}@a\uff03b/", f"http://user:{PASSWORD}@h\ud800/",
                     f"https://u:{PASSWORD}@127.0.0.1:9/\n\"", "", "not a url"]),
    hostile,
)


@dataclass
class Example:
    targets: list[Target]
    results: list[MonitorResult]
    location: str
    discovery: dict[str, tuple[int, int]]


@st.composite
def results_for(draw, name: str) -> MonitorResult:
    kind = draw(st.sampled_from(["ok", "failed", "retried", "skipped"]))
    skipped = kind == "skipped"
    tls = draw(st.none() | st.builds(TLSFacts, st.one_of(st.just("TLSv1.3"), hostile),
                                     st.floats(1e9, 3e9), hostile, hostile))
    timings = draw(st.none() | st.dictionaries(
        st.one_of(st.sampled_from(["dns", "connect", "tls", "processing", "transfer"]), hostile),
        st.one_of(st.none(), st.floats(0, 5)), max_size=4))
    latencies = () if skipped else tuple(draw(st.lists(st.floats(0, 30), min_size=1, max_size=3)))
    return MonitorResult(
        target=name, url=draw(urls), method=draw(hostile), ok=kind in ("ok", "retried"),
        status_code=None if skipped else draw(st.sampled_from([200, 503, None])),
        latency_s=latencies[-1] if latencies else None, elapsed_s=sum(latencies),
        attempts=len(latencies), error_class=None if kind in ("ok", "retried") else
        draw(st.sampled_from(["timeout", "connection", "auth", "http", "content"])),
        detail=draw(hostile), error=draw(hostile), breaker="open" if skipped else "closed",
        checked_at=1_800_000_000.0, body_bytes=None if skipped else 2,
        labels=draw(st.dictionaries(label_names, hostile, max_size=2)),
        timings=None if skipped else timings, tls=None if skipped else tls,
        retried_classes=("timeout",) * (len(latencies) - 1) if kind == "retried" else (),
        attempt_latencies=latencies)


@st.composite
def examples(draw) -> Example:
    names = draw(st.lists(hostile, min_size=1, max_size=4, unique_by=shown))
    targets = [Target(name=name, url=draw(urls), method=draw(st.just("GET") | hostile),
                      labels=draw(st.dictionaries(label_names, hostile, max_size=4)))
               for name in names]
    results = [draw(results_for(target.name)) for target in targets
               for _ in range(draw(st.integers(0, 2)))]
    return Example(targets, results, draw(st.just("") | hostile),
                   draw(st.dictionaries(hostile, st.tuples(st.integers(0, 9), st.integers(0, 9)),
                                        max_size=2)))


# --- A fixed corpus, and a tame store of the same shape (what promtool says of normal output) --

CORPUS = [
    'say "hi"', "back\\slash", "end\\", "\\n literal, not a newline", "line\nbreak", "cr\rreturn",
    "crlf\r\n", "nul\0byte", "lone \ud800 high", "lone \udc80 low (surrogateescape)",
    "rtl \u202eevil\u202c", "rlm\u200f", "# HELP greenmon_up fake", "{a=\"b\"}", "=,=,", "  spaced  ",
    "日本語 ✓ café", "😀", "\ufeffbom", "\u2028sep\x85nel", "\t", '"' * 2000, "\\" * 2001,
    "\n" * 1000, "\ud800" * 500, "x" * 20_000,
]


def corpus_example() -> Example:
    targets = [Target(name=f"{index}:{text}", url=BASE_URL + text, method=text,
                      labels={text: text, "team": text, "team\n": "newline in the name",
                              "target": "not this target", "__meta_x": "x", "Team_2": text})
               for index, text in enumerate(CORPUS)]
    results = []
    for index, target in enumerate(targets):
        text = CORPUS[index]
        results.append(MonitorResult(
            target=target.name, url=text, method=text, ok=index % 2 == 0,
            status_code=200 if index % 2 == 0 else None, latency_s=0.01, elapsed_s=0.02, attempts=2,
            error_class=None if index % 2 == 0 else "connection", detail=text, error=text,
            breaker="closed", checked_at=1_800_000_000.0, body_bytes=2, labels={text: text},
            timings={"dns": 0.001, text: 0.002}, tls=TLSFacts(text, 2e9, text, text),
            retried_classes=("timeout",), attempt_latencies=(0.01, 0.01)))
    return Example(targets, results, CORPUS[4], {text: (1, 2) for text in CORPUS[:6]})


def tame_store(label_names) -> MetricsStore:
    """Normal targets and results with every family greenmon has, and these label names."""
    store = MetricsStore(DEFAULT_BUCKETS, monitor=MonitorSettings(location="eu-west-1"))
    store.set_targets([Target(name=f"tame-{index}", url=f"{BASE_URL}{index}",
                              labels={name: "v" for name in label_names}) for index in range(3)])
    ok = MonitorResult(
        target="tame-0", url=BASE_URL, method="GET", ok=True, status_code=200, latency_s=0.01,
        elapsed_s=0.03, attempts=2, error_class=None, detail=None, error=None, breaker="closed",
        checked_at=1_800_000_000.0, body_bytes=2, timings={"dns": 0.001, "connect": 0.002},
        tls=TLSFacts("TLSv1.3", 2e9, "CN=a", "CN=ca"), retried_classes=("timeout",),
        attempt_latencies=(0.02, 0.01))
    store.observe(ok)
    store.observe(replace(ok, target="tame-1", ok=False, error_class="http", status_code=503,
                          detail="status", error="503", retried_classes=()))
    store.observe(replace(ok, target="tame-2", ok=False, error_class="connection", attempts=0,
                          breaker="open", status_code=None, timings=None, tls=None,
                          attempt_latencies=()))
    store.discovery = {"file_sd[0]": (1, 0)}
    store.sweep_finished(0.5)
    return store


# --- Building and reading ---------------------------------------------------------------------

def store_of(example: Example) -> MetricsStore:
    store = MetricsStore(DEFAULT_BUCKETS, monitor=MonitorSettings(location=example.location))
    store.set_targets(example.targets)
    store.discovery = dict(example.discovery)
    return store


def render(exposition: Exposition) -> bytes:
    text = exposition.render()
    data = b"".join(text)
    assert len(data) == len(text)   # the Content-Length /metrics sends
    return data


def check_text(data: bytes, what: str) -> list:
    """Valid UTF-8 that prometheus_client's parser reads as one sample per line, with only
    Prometheus label names; returns the samples."""
    text = data.decode("utf-8")   # strict: raises on anything but valid UTF-8
    families = list(text_string_to_metric_families(text))
    found = [sample for family in families for sample in family.samples]
    lines = [line for line in text.split("\n") if line and not line.startswith("#")]
    assert len(found) == len(lines), f"{what}: {len(lines)} sample lines but {len(found)} samples"
    names = {name for sample in found for name in sample.labels}
    assert all(LABEL_NAME.fullmatch(name) for name in names), (what, names)
    return found


def check_store(store: MetricsStore, exposition: Exposition, textfile) -> tuple[bytes, list]:
    """/metrics (the cache) is prometheus_client's text (generate_latest, --pushgateway's;
    write_to_textfile, --textfile's), and parses."""
    data = render(exposition)
    assert data == generate_latest(build_registry(store))
    write_to_textfile(str(textfile), build_registry(store))
    assert textfile.read_bytes() == data
    return data, check_text(data, "/metrics")


def check_example(example: Example, textfile) -> bytes:
    for labels_once in (False, True):   # one process's text; a worker's share (exposition.Keep)
        store = store_of(example)
        exposition = Exposition(store, labels_once=labels_once)
        check_store(store, exposition, textfile)   # before any result
        for result in example.results:
            store.observe(result)
        data, found = check_store(store, exposition, textfile)   # only the changed families anew
    assert PASSWORD.encode() not in data

    by_target = {shown(target.name): target for target in example.targets}
    checks = {s.labels["target"] for s in found if s.name == "greenmon_checks_total"}
    assert checks == set(by_target)
    assert {s.labels["target"] for s in found if "target" in s.labels} == set(by_target)
    valid = {name for target in example.targets for name in target.labels if exportable(name)}
    info = {s.labels["target"]: s.labels for s in found if s.name == "greenmon_target_info"}
    assert set(info) == set(by_target)
    for name, target in by_target.items():
        labels = dict(info[name])
        url = labels.pop("url")
        if target.url.startswith(BASE_URL):
            assert url == shown(target.url)
        assert labels == {"target": name, "method": shown(target.method)} | {
            label: shown(target.labels.get(label, "")) for label in valid}
    [build] = [s for s in found if s.name == "greenmon_build_info"]
    assert build.labels["location"] == shown(example.location)
    sources = {s.labels["source"] for s in found if s.name == "greenmon_discovered_targets"}
    assert sources == {shown(label) for label in example.discovery}
    return data


# --- Property test: prometheus_client's parser ------------------------------------------------------

@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@settings(max_examples=2 * settings.default.max_examples)   # 200 under the ci profile
@given(example=examples())
def test_hostile_targets_and_results_export_text_that_parses(example, scratch):
    check_example(example, scratch / "greenmon.prom")


def test_the_fixed_corpus_exports_text_that_parses(scratch):
    """Each hostile string everywhere at once, lone surrogates and long strings included."""
    data = check_example(corpus_example(), scratch / "corpus.prom")
    assert "\ufffd".encode() in data and b"\\n" in data and b'\\"' in data and b"\\\\" in data


def test_a_label_name_prometheus_cannot_carry_is_dropped_and_logged(caplog):
    """The reported case: a file_sd generator wrote the key "team\\n"."""
    store = MetricsStore(DEFAULT_BUCKETS)
    store.set_targets([Target(name="a", url=BASE_URL, labels={"team\n": "web", "tier": "1",
                                                             "url": "http://elsewhere/"})])
    found = check_text(render(Exposition(store)), "/metrics")
    [info] = [s for s in found if s.name == "greenmon_target_info"]
    assert info.labels == {"target": "a", "url": BASE_URL, "method": "GET", "tier": "1"}
    assert "'team\\n'" in caplog.text and "'url'" in caplog.text
    assert store.series["a"].target.labels == {"tier": "1"}


# --- promtool ---------------------------------------------------------------------------------

def promtool_findings(promtool: str, data: bytes) -> tuple[int, set[str], str]:
    """``promtool check metrics`` on the bytes: exit code (0 clean, 3 lint problems, 1 an
    error), the problems it names (a line each), and all it said."""
    done = subprocess.run([promtool, "check", "metrics"], input=data, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=subprocess_env(), timeout=120)
    said = (done.stdout + done.stderr).decode("utf-8", "replace")
    return done.returncode, {line for line in said.splitlines() if line.strip()}, said


def assert_promtool_takes(promtool: str, data: bytes, label_names, what: str) -> None:
    """No parse error, and no problem a tame store with the same label names does not have."""
    tame = render(Exposition(tame_store(label_names)))
    tame_code, tame_problems, tame_said = promtool_findings(promtool, tame)
    assert tame_code in (0, 3), f"the tame store does not parse:\n{tame_said}"
    code, problems, said = promtool_findings(promtool, data)
    assert code in (0, 3) and "error while linting" not in said, (
        f"{what}: promtool failed:\n{said[:4000]}")
    assert problems <= tame_problems, f"{what}: {sorted(problems - tame_problems)[:20]}"


def test_promtool_takes_hostile_output(scratch):
    """Generated stores (their targets, results, locations and sources gathered into one store)
    and the fixed corpus: /metrics, and --textfile's file (the same bytes)."""
    promtool = find_binary("promtool")
    gathered: list[Example] = []

    @settings(max_examples=50)   # one store of them all: promtool reads it at once
    @given(example=examples())
    def gather(example):
        check_example(example, scratch / "gather.prom")
        gathered.append(example)

    gather()
    assert gathered
    corpus = corpus_example()
    targets, results = list(corpus.targets), list(corpus.results)
    for index, example in enumerate(gathered):   # names kept apart: one store, distinct series
        names = {target.name: f"e{index}:{target.name}" for target in example.targets}
        targets += [replace(target, name=names[target.name]) for target in example.targets]
        results += [replace(result, target=names[result.target]) for result in example.results]
    everything = Example(targets, results, gathered[-1].location,
                         {**corpus.discovery, **{k: v for e in gathered for k, v in e.discovery.items()}})
    store = store_of(everything)
    for result in results:
        store.observe(result)
    data, _ = check_store(store, Exposition(store), scratch / "everything.prom")
    assert len(data) > 100_000
    assert_promtool_takes(promtool, data, store.info_labels, "/metrics")
    assert_promtool_takes(promtool, (scratch / "everything.prom").read_bytes(), store.info_labels,
                          "--textfile")


def test_promtool_takes_tame_output_without_a_word():
    """The baseline the hostile output is held to: greenmon's normal output lints clean."""
    promtool = find_binary("promtool")
    code, problems, said = promtool_findings(promtool, render(Exposition(tame_store(["team"]))))
    assert (code, problems) == (0, set()), said


# --- The real command: --once --textfile --pushgateway ---------------------------------------

# Hostile but valid: config validation takes them (no lone surrogate, Prometheus label names).
CLI_NAMES = ['say "hi"', "back\\slash", "end\\", "\\n literal", "line\nbreak", "cr\rreturn",
             "nul\0byte", "rtl \u202eevil\u202c", "日本語 ✓ café", "# HELP x {a=\"b\"} =,", "  spaced  "]
CLI_VALUES = ['"}', "\\", "a\nb\r\nc", "\0", "\u202e\u200f", "😀 é", "# TYPE x counter", "x" * 5000]


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory):
    """One run of the real command: (what --textfile wrote, the body --pushgateway sent, the
    target names, each target's labels)."""
    workdir = tmp_path_factory.mktemp("cli")
    pushes = []

    def gateway(environ):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        pushes.append(environ["wsgi.input"].read(length))
        return "200 OK", [], b""

    with HTTPFarm({"/ok": reply(), "/sd": reply(), "/metrics/job/greenmon": gateway}) as farm:
        targets = [{"name": name, "url": farm.url("/ok"),
                    "labels": {"team": CLI_VALUES[index % len(CLI_VALUES)], "note": name}}
                   for index, name in enumerate(CLI_NAMES)]
        targets.append({"name": "refused \"\\\n", "url": f"http://127.0.0.1:{closed_port()}/",
                        "labels": {"team": "\u202e\\\"\n"}})
        sd_name = 'file_sd "\\ \u202e\n 日本'
        (workdir / "sd.json").write_text(json.dumps([{"targets": [farm.url("/sd")], "labels": {
            "name": sd_name, "team": CLI_VALUES[2], "zone": "\u202e\"\\"}}]), encoding="utf-8")
        config = workdir / "greenmon.toml"
        config.write_text(config_text(targets, timeout=2.0, extra='[[file_sd]]\nfiles = ["sd.json"]\n'),
                          encoding="utf-8")
        textfile = workdir / "greenmon.prom"
        done = run_cli("--config", str(config), "--once", "--textfile", str(textfile),
                       "--pushgateway", f"http://127.0.0.1:{farm.port}", timeout=60)
    assert done.returncode == 1, done.stderr   # the refused target is down
    assert "Traceback" not in done.stderr and "cannot" not in done.stderr, done.stderr
    assert len(pushes) == 1
    labels = {t["name"]: t["labels"] for t in targets} | {
        sd_name: {"team": CLI_VALUES[2], "zone": "\u202e\"\\"}}
    return textfile.read_bytes(), pushes[0], labels


def test_the_command_writes_and_pushes_hostile_values_that_parse(cli_outputs):
    written, pushed, labels = cli_outputs
    assert written == pushed   # the same text for both (label names need no quoting)
    found = check_text(written, "--textfile")
    up = {s.labels["target"]: s.value for s in found if s.name == "greenmon_up"}
    assert up == {name: 0.0 if name.startswith("refused") else 1.0 for name in labels}
    info = {s.labels["target"]: s.labels for s in found if s.name == "greenmon_target_info"}
    names = {name for written_labels in labels.values() for name in written_labels}
    for target, written_labels in labels.items():
        assert {name: info[target][name] for name in names} == {
            name: written_labels.get(name, "") for name in names}


def test_promtool_takes_what_the_command_writes_and_pushes(cli_outputs):
    promtool = find_binary("promtool")
    written, pushed, labels = cli_outputs
    names = sorted({name for given in labels.values() for name in given})
    assert_promtool_takes(promtool, written, names, "--textfile")
    assert_promtool_takes(promtool, pushed, names, "--pushgateway")


# --- The kept text: each target's label once (exposition.keep) -------------------------------

LABEL = b'target="GET http://127.0.0.1:9/x"'
LINES = [LABEL.join([b"greenmon_up{", b"} 1.0\n"]), b"",
         LABEL.join([b'greenmon_check_errors_total{class="http",', b"} 0.0\n"]) * 2]


def pieces(kept, count: int) -> list[bytes]:
    return [kept_piece(kept, index) for index in range(count)]


def test_a_targets_label_is_kept_as_one_byte_and_written_out_whole():
    kept = keep(LINES, LABEL)
    text, _, _, size = kept
    assert LABEL not in text and text.count(MARK) == 3
    assert pieces(kept, 3) == LINES and size == len(b"".join(LINES))
    fresh = [None, LABEL.join([b"greenmon_degraded{", b"} 0.0\n"]), None]
    again = kept_updated(kept, fresh)
    assert pieces(again, 3) == [LINES[0], fresh[1], LINES[2]]
    assert LABEL not in again[0] and again[3] == len(b"".join([LINES[0], fresh[1], LINES[2]]))


def test_lines_that_hold_the_mark_themselves_are_kept_whole():
    """Only a target's own strings can put a NUL in its lines: in its name (so in every line),
    or in a later result's (a TLS version): the lines are then kept as written."""
    named = b'target="nul\x00name"'
    kept = keep([named.join([b"greenmon_up{", b"} 1.0\n"])], named)
    assert kept[2] == MARK and pieces(kept, 1) == [named.join([b"greenmon_up{", b"} 1.0\n"])]
    later = [None, None, LABEL.join([b'greenmon_tls_version_info{', b',version="TLS\x00"} 1.0\n'])]
    again = kept_updated(keep(LINES, LABEL), later)
    assert again[2] == MARK
    assert pieces(again, 3) == [LINES[0], LINES[1], later[2]]
    assert again[3] == len(b"".join([LINES[0], LINES[1], later[2]]))
