"""The operator's reference cannot drift from the code: every config key, table, flag and
metric the code has is in docs/configuration.md or docs/metrics.md (and nothing there is
missing from the code), with the code's defaults, types and labels."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from greenmon import __version__, auth, config, flows, oauth2, webconfig
from greenmon.cli import build_parser
from greenmon.discovery import file_sd, sources
from greenmon.metrics import GLOBAL_METRICS, TARGET_METRICS, build_registry
from greenmon.store import MetricsStore
from greenmon.result import AddressResult, MonitorResult, StepResult
from greenmon.targets import TARGET_CHECKS, Target
from greenmon.result import TLSFacts

DOCS = Path(__file__).resolve().parent.parent / "docs"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|(.*)$")


def tables(path: Path) -> dict[str, list[tuple[str, list[str]]]]:
    """The rows of the tables under each heading: heading -> [(first cell, other cells)]."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    heading = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            out.setdefault(heading, [])
            continue
        row = ROW.match(line)
        if row:
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.group(2))][:-1]
            out.setdefault(heading, []).append((row.group(1), cells))
    return out


CONFIG_DOC = tables(DOCS / "configuration.md")


def keys_under(heading: str) -> set[str]:
    assert heading in CONFIG_DOC, f"docs/configuration.md has no heading {heading!r}"
    return {key for key, _ in CONFIG_DOC[heading]}


# --- docs/configuration.md --------------------------------------------------------------

SECTIONS = sorted(config._SECTION_CHECKS)


@pytest.mark.parametrize("section", SECTIONS)
def test_every_key_of_a_section_is_documented(section):
    assert keys_under(f"`[{section}]`") == set(config._SECTION_CHECKS[section][1])


@pytest.mark.parametrize("section", SECTIONS)
def test_a_sections_documented_defaults_are_the_codes(section):
    settings = config._SECTION_CHECKS[section][0]()
    for key, cells in CONFIG_DOC[f"`[{section}]`"]:
        default = cells[0].strip("`").replace("VERSION", __version__)
        code = getattr(settings, key)
        documented = tomllib.loads(f"value = {default}")["value"]
        assert documented == (list(code) if isinstance(code, tuple) else code), (section, key)


def test_every_top_level_table_has_a_heading():
    headings = " ".join(CONFIG_DOC)
    for table in config._TOP_LEVEL:
        assert f"[{table}" in headings, table


def test_every_target_key_is_documented():
    assert keys_under("`[[targets]]`") == set(TARGET_CHECKS)


def test_every_step_key_is_documented():
    assert keys_under("`[[targets.steps]]`") == set(flows.STEP_CHECKS)


@pytest.mark.parametrize("kind", sorted(auth._CHECKS) + ["oauth2"])
def test_every_auth_key_is_documented(kind):
    expected = oauth2._CHECKS if kind == "oauth2" else auth._CHECKS[kind]
    assert keys_under(f'`type = "{kind}"`') == set(expected)


def test_every_auth_type_is_documented():
    documented = {heading[len('`type = "'):-2] for heading in CONFIG_DOC if heading.startswith("`type = ")}
    assert documented == set(auth.AUTH_TYPES)


@pytest.mark.parametrize("kind", sources.SOURCE_KINDS)
def test_every_discovery_key_is_documented(kind):
    assert keys_under(f"`[[{kind}]]`") - set(file_sd.GROUP_KEYS) == set(sources._OWN_CHECKS[kind])


def test_the_target_keys_a_source_decides_are_named():
    """An entry takes every target key but those its source decides: the page says which."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for kind, decided in sources._FROM_THE_SOURCE.items():
        section = text[text.index(f"## `[[{kind}]]`"):]
        sentence = section[:section.index("|")]
        for key in decided:
            assert f"`{key}`" in sentence, (kind, key)


def test_the_file_sd_group_keys_are_documented():
    assert set(file_sd.GROUP_KEYS) <= keys_under("`[[file_sd]]`")


def test_every_web_config_key_is_documented():
    heading = "The web config file (`web_config_file`, `--web-config-file`)"
    assert keys_under(heading) == webconfig._TOP_KEYS | webconfig._TLS_KEYS


def test_every_flag_is_documented():
    flags = {option for action in build_parser()._actions for option in action.option_strings
             if option.startswith("--") and option != "--help"}
    documented = {key.split()[0] for key in keys_under("Command line")}
    assert documented == flags


# --- docs/metrics.md -----------------------------------------------------------------------

def full_store() -> MetricsStore:
    """A store that exports every family: a checked HTTPS target with phases, retries and a
    failure, a discovery source, a configured shard."""
    store = MetricsStore((0.1, 1.0), True, shard=(0, 2))
    store.set_targets([Target(name="a", url="https://127.0.0.1:9/", labels={"team": "x"}, degraded_latency=1.0)])
    store.discovery = {"file_sd[0]": (1, 0)}
    store.observe(MonitorResult(
        target="a", url="https://127.0.0.1:9/", method="GET", ok=False, status_code=503,
        latency_s=0.2, elapsed_s=0.5, attempts=2, error_class="http", detail="503", error="HTTP 503",
        breaker="closed", checked_at=1_800_000_000.0, body_bytes=2, labels={"team": "x"},
        retried_classes=("http",), attempt_latencies=(0.3, 0.2),
        timings={"dns": 0.0, "connect": 0.01, "tls": 0.02, "processing": 0.16, "transfer": 0.01},
        tls=TLSFacts("TLSv1.3", 1_900_000_000.0, "CN=a", "CN=ca"), step="list",
        steps=(StepResult("login", True, 200, 0.1, None, None, None),
               StepResult("list", False, 503, 0.2, None, "http", "503")),
        addresses=(AddressResult("127.0.0.1", True, 200, 0.1, None, None),
                   AddressResult("::1", False, 503, 0.2, "http", "503"))))
    store.sweep_finished(0.5)
    return store


def exported() -> dict[str, tuple[str, set[str]]]:
    """Metric name (as queried: counters with _total) -> (type, label names)."""
    text = generate_latest(build_registry(full_store())).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        labels = set().union(*(sample.labels for sample in family.samples))
        assert family.samples, family.name
        out[name] = (family.type, labels)
    return out


def documented_metrics() -> dict[str, tuple[str, str]]:
    doc = tables(DOCS / "metrics.md")
    return {name: (cells[0], cells[1]) for heading, rows in doc.items()
            for name, cells in rows if name.startswith("greenmon_")}


def test_the_metric_table_and_the_metrics_page_agree():
    """Every row of the metric table is on docs/metrics.md with its type and labels, and the
    page lists nothing the table does not define."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for row in TARGET_METRICS + GLOBAL_METRICS:   # the duration histogram is in both
        kind, labels = rows.get(row.name, (row.kind, set()))
        assert kind == row.kind, row.name
        rows[row.name] = (kind, labels | set(row.labels))
    documented = documented_metrics()
    assert set(documented) == set(rows)
    for name, (kind, labels) in rows.items():
        doc_kind, doc_labels = documented[name]
        named = {label.strip() for label in doc_labels.split(",")}
        assert doc_kind == kind, name
        assert {label for label in named if re.fullmatch(r"[a-z_]+", label)} == labels, name


def test_every_exported_metric_is_documented_with_its_type_and_labels():
    documented = documented_metrics()
    for name, (kind, labels) in exported().items():
        assert name in documented, f"docs/metrics.md does not list {name}"
        doc_kind, doc_labels = documented[name]
        assert doc_kind == kind, name
        if name == "greenmon_target_info":   # target, url, method, and the target's own labels
            assert "the target's labels" in doc_labels
            labels -= {"team"}
        named = {label.strip() for label in doc_labels.split(",") if label.strip()}
        named = {label for label in named if re.fullmatch(r"[a-z_]+", label)}
        assert named == labels, name


def test_every_metric_name_in_the_code_is_documented():
    """Also those a store exports only in some setups: any greenmon_* name the code writes."""
    names = set()
    for path in (Path(__file__).resolve().parent.parent / "greenmon").rglob("*.py"):
        names |= set(re.findall(r'"(greenmon_[a-z_]+)"', path.read_text(encoding="utf-8")))
    names.discard("greenmon_trace")   # a context variable, not a metric
    documented = set(documented_metrics())
    missing = {name for name in names if name not in documented and f"{name}_total" not in documented}
    assert not missing, f"docs/metrics.md lacks {sorted(missing)}"


def test_nothing_documented_is_missing_from_the_code():
    assert set(documented_metrics()) == set(exported())


def test_the_metrics_page_gives_the_promql_for_p95_and_the_error_ratio():
    text = (DOCS / "metrics.md").read_text(encoding="utf-8")
    assert "histogram_quantile(0.95, sum by (le, target) (rate(greenmon_check_duration_seconds_bucket" in text
    assert 'greenmon_slo_checks_total{result="bad"}' in text

