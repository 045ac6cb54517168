"""With --workers, /metrics is the workers' shares joined (exposition.SharedExposition): the same
document, series for series, as one process's, gzipped as one member.

The results are real (a sweep against local servers); they are fed once to a
one-process store, and, split as the daemon splits its targets, to one store
per worker, whose ``Text.share`` is what the worker process sends. Here the
shares are handed over in-process; tests/test_workers.py and
tests/test_prometheus.py take them through the real pipes, to a real
Prometheus.
"""

from __future__ import annotations

import zlib

import pytest
from prometheus_client.parser import text_string_to_metric_families

from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.exposition import INFLATE_CHUNK, Exposition, SharedExposition
from greenmon.metrics import TARGET_METRICS
from greenmon.store import store_for
from greenmon.workers.parent import assign, share_config
from support.configs import config_text
from support.prom_helpers import find_binary, run_tool
from support.servers import HTTPFarm, reply

WORKERS = 3


def families(text: str) -> list[tuple[str, list[str]]]:
    """(family header, its sample lines sorted) in the order of the text."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            out.append((line, []))
        elif not line.startswith("#"):
            out[-1][1].append(line)
    return [(header, sorted(lines)) for header, lines in out]


@pytest.fixture(scope="module")
def farm():
    with HTTPFarm({"/ok": reply(), "/broken": reply("500 Internal Server Error", "no"),
                   "/login": reply(body='{"token": "t"}', headers=[("Content-Type", "application/json")])}) as farm:
        yield farm


def swept(farm, metrics: dict) -> tuple:
    targets = [{"name": f"ok-{i}", "url": farm.url("/ok"), "labels": {"team": f"t{i % 3}"}}
               for i in range(7)]
    targets += [{"name": "broken", "url": farm.url("/broken"), "labels": {"tier": "gold"}},
                {"name": "slowish", "url": farm.url("/ok"), "degraded_latency": 0.000001},
                {"name": "quoted \"name\"", "url": farm.url("/ok")},
                {"name": "flow", "steps": [
                    {"name": "login", "url": farm.url("/login"), "extract": {"token": "json:token"}},
                    {"name": "use", "url": farm.url("/ok"), "headers": {"X-T": "{{token}}"}}]}]
    config = parse_config(config_text(targets, timeout=2.0, metrics=metrics), "<test>")
    engine = Engine(config)
    try:
        results = engine.sweep()
    finally:
        engine.close()
    assert len(results) == len(targets)
    return config, results


def worker_stores(config, results):
    """A store per worker, as greenmon.workerprocess keeps one: its share, all label names."""
    assigned = assign(config.enabled_targets, {}, WORKERS)
    stores = []
    for index in range(WORKERS):
        share = [t for t in config.enabled_targets if assigned[t.name] == index]
        own = share_config(config, share, 10)
        store = store_for(own, ())
        store.set_targets(own.enabled_targets, label_names=config.label_names)
        stores.append(store)
        for result in results:
            if assigned[result.target] == index:
                store.observe(result)
    return stores


@pytest.mark.parametrize("metrics", [{}, {"per_target_histograms": False, "phase_gauges": False}],
                         ids=["defaults", "lean"])
def test_the_joined_shares_are_one_process_exposition_series_for_series(farm, metrics, tmp_path):
    config, results = swept(farm, metrics)
    whole = store_for(config, config.enabled_targets)
    for result in results:
        whole.observe(result)
    expected = b"".join(Exposition(whole).render()).decode()

    expositions = [Exposition(store) for store in worker_stores(config, results)]
    parent = store_for(config, config.enabled_targets)   # the daemon's: fed the same results
    for result in results:
        parent.observe(result)
    shared = SharedExposition(parent, lambda: [e.render().share() for e in expositions])

    body, gzipped = shared.document(False)
    assert not gzipped
    chunks = list(body)   # inflated as it is written, a chunk at a time
    plain = b"".join(chunks).decode()
    assert len(body) == len(plain.encode())   # the Content-Length it is sent with
    assert max(map(len, chunks)) <= INFLATE_CHUNK
    assert families(plain) == families(expected)

    pieces, gzipped = shared.document(True)
    assert gzipped
    reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert reader.decompress(b"".join(pieces)).decode() == plain
    assert reader.eof and reader.unused_data == b""   # one member: curl --compressed reads it all

    parsed = {family.name: family for family in text_string_to_metric_families(plain)}
    info = {s.labels["target"]: s.labels for s in parsed["greenmon_target_info"].samples}
    assert info["ok-0"]["tier"] == "" and info["broken"]["tier"] == "gold"   # every label name
    assert {s.labels["step"] for s in parsed["greenmon_step_up"].samples} == {"login", "use"}

    promtool = find_binary("promtool")
    checked = run_tool([promtool, "check", "metrics"], input_text=plain)
    assert checked.returncode == 0 and checked.stdout == checked.stderr == "", checked


def test_a_share_holds_only_the_families_shown_and_compresses_each_lines_once(farm):
    config, results = swept(farm, {"phase_gauges": False})
    (store, *_) = worker_stores(config, results)
    exposition = Exposition(store)
    first = exposition.render().share()
    names = [row.name for row in TARGET_METRICS]
    assert first[names.index("greenmon_check_phase_seconds")] is None
    assert first[names.index("greenmon_up")].size > 0
    # A target checked again: the families it changes are compressed again, the others kept.
    store.observe(next(r for r in results if r.target == next(iter(store.series))))
    again = exposition.render().share()
    for name in ("greenmon_target_info", "greenmon_slo_objective", "greenmon_check_errors_total"):
        assert again[names.index(name)] is first[names.index(name)], name
    for name in ("greenmon_up", "greenmon_checks_total", "greenmon_last_check_timestamp_seconds"):
        assert again[names.index(name)] is not first[names.index(name)], name
    assert again[names.index("greenmon_checks_total")] != first[names.index("greenmon_checks_total")]
