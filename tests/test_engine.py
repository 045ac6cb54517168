"""Sweeps on the gevent pool (greenmon.engine) and the sweep summary (greenmon.summary)."""

from __future__ import annotations

import gc
import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import gevent
import pytest

import greenmon
from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.result import MonitorResult
from greenmon.summary import percentile, summarize
from support.configs import config_text
from support.servers import HTTPFarm, delayed, reply

PROJECT = Path(__file__).resolve().parent.parent


def _slow_targets(farm: HTTPFarm, count: int) -> list[dict]:
    return [{"name": f"slow-{i:03d}", "url": farm.url(f"/slow/{i}")} for i in range(count)]


def _timed_sweep(config, **engine_kwargs):
    engine = Engine(config, **engine_kwargs)
    try:
        started = time.monotonic()
        results = engine.sweep()
        return results, time.monotonic() - started
    finally:
        engine.close()


# --- Concurrency -------------------------------------------------------------------------

def test_checks_run_concurrently():
    count = 200
    with HTTPFarm({f"/slow/{i}": delayed(1.0) for i in range(count)}) as farm:
        config = parse_config(config_text(_slow_targets(farm, count), timeout=10.0), "<test>")
        config = config.replace("monitor", concurrency=count)
        results, elapsed = _timed_sweep(config)
        hits = sum(farm.hits(f"/slow/{i}") for i in range(count))
    assert len(results) == count
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert hits == count
    assert elapsed < 4.0  # one at a time would take 200 s


def test_concurrency_bounds_checks_in_flight():
    count, concurrency = 50, 10
    in_flight = {"now": 0, "max": 0}

    def counting(environ):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        try:
            return delayed(1.0)(environ)
        finally:
            in_flight["now"] -= 1

    with HTTPFarm({f"/slow/{i}": counting for i in range(count)}) as farm:
        config = parse_config(config_text(_slow_targets(farm, count), timeout=10.0), "<test>")
        config = config.replace("monitor", concurrency=concurrency)
        results, elapsed = _timed_sweep(config)
    assert all(r.ok for r in results)
    assert in_flight["max"] == concurrency
    assert 4.5 <= elapsed < 5.0 + 2.5  # 50 checks of 1 s, 10 at a time: 5 rounds


def test_a_check_waiting_for_its_reply_holds_no_response_reader():
    """Memory per check in flight: http.client's reader (an 8 KiB buffer and its objects) is made
    only once the reply has begun, not for the whole wait."""
    count = 100
    with HTTPFarm({f"/slow/{i}": delayed(1.0) for i in range(count)}) as farm:
        config = parse_config(config_text(_slow_targets(farm, count), timeout=10.0), "<test>")
        engine = Engine(config.replace("monitor", concurrency=count))
        sweep = gevent.spawn(engine.sweep)
        deadline = time.monotonic() + 5
        while engine.inflight < count and time.monotonic() < deadline:
            gevent.sleep(0.01)
        waiting = engine.inflight
        readers = [reader for reader in gc.get_objects()
                   if isinstance(reader, io.BufferedReader) and _peer_port(reader) == farm.port]
        results = sweep.get(timeout=10)
        engine.close()
    assert waiting == count
    assert readers == []
    assert len(results) == count and all(r.ok for r in results)


def _peer_port(reader: io.BufferedReader) -> int | None:
    """The remote port of a reader over a client socket, else None."""
    sock = getattr(reader.raw, "_sock", None)
    try:
        return sock.getpeername()[1] if sock is not None else None
    except (OSError, IndexError, TypeError):
        return None


# --- Order and listeners --------------------------------------------------------------------

def test_results_in_target_order_listeners_in_completion_order():
    # Target i answers after (5 - i) * 0.1 s: the last target finishes first.
    count = 5
    routes = {f"/t/{i}": delayed((count - i) * 0.1, reply(body=f"target {i}")) for i in range(count)}
    seen: list[MonitorResult] = []
    with HTTPFarm(routes) as farm:
        targets = [{"name": f"t{i}", "url": farm.url(f"/t/{i}")} for i in range(count)]
        results, _ = _timed_sweep(parse_config(config_text(targets), "<test>"), listeners=[seen.append])
    names = [f"t{i}" for i in range(count)]
    assert [r.target for r in results] == names
    assert [r.target for r in seen] == list(reversed(names))
    assert {id(r) for r in seen} == {id(r) for r in results}  # the same objects, each once


def test_every_listener_receives_every_result_including_failures_and_skips():
    first: list[MonitorResult] = []
    second: list[MonitorResult] = []
    with HTTPFarm({"/ok": reply(), "/bad": reply("500 Internal Server Error")}) as farm:
        config = parse_config(config_text([{"name": "ok", "url": farm.url("/ok")},
                                           {"name": "bad", "url": farm.url("/bad")}],
                                          extra="[breaker]\nfailure_threshold = 1\n"), "<test>")
        engine = Engine(config, listeners=[first.append])
        engine.listeners.append(second.append)
        try:
            engine.sweep()
            engine.sweep()  # "bad" is skipped by its open breaker this time
        finally:
            engine.close()
    for received in (first, second):
        assert sorted((r.target, r.attempts) for r in received) == [
            ("bad", 0), ("bad", 1), ("ok", 1), ("ok", 1)]


def test_sweep_of_a_subset_of_targets():
    with HTTPFarm({"/a": reply(), "/b": reply()}) as farm:
        config = parse_config(config_text([{"name": "a", "url": farm.url("/a")},
                                           {"name": "b", "url": farm.url("/b")}]), "<test>")
        engine = Engine(config)
        try:
            results = engine.sweep([config.targets[1]])
            nothing = engine.sweep([])
        finally:
            engine.close()
        hits = (farm.hits("/a"), farm.hits("/b"))
    assert [r.target for r in results] == ["b"]
    assert nothing == []
    assert hits == (0, 1)


def test_disabled_targets_are_not_swept():
    with HTTPFarm({"/on": reply(), "/off": reply()}) as farm:
        config = parse_config(config_text([{"name": "on", "url": farm.url("/on")},
                                           {"name": "off", "url": farm.url("/off"), "enabled": False}]),
                              "<test>")
        results, _ = _timed_sweep(config)
        hits = (farm.hits("/on"), farm.hits("/off"))
    assert [r.target for r in results] == ["on"]
    assert hits == (1, 0)


def test_result_fields_of_a_successful_check():
    with HTTPFarm({"/t": reply(body="hello")}) as farm:
        config = parse_config(config_text([{"name": "api", "url": farm.url("/t"), "labels": {"team": "core"}}]),
                              "<test>")
        before = time.time()
        [result] = greenmon.sweep(config.targets, config)
        after = time.time()
    assert (result.target, result.url, result.method, result.ok) == ("api", farm.url("/t"), "GET", True)
    assert (result.status_code, result.attempts, result.body_bytes) == (200, 1, 5)
    assert (result.error_class, result.detail, result.error, result.breaker) == (None, None, None, "closed")
    assert before <= result.checked_at <= after
    assert 0 < result.latency_s <= result.elapsed_s < 1.0
    assert dict(result.labels) == {"team": "core"}


# --- Without monkey-patching ---------------------------------------------------------------

def test_sweep_without_monkey_patching_raises_not_patched_error():
    script = textwrap.dedent("""
        import greenmon
        from greenmon.config import parse_config
        from greenmon.engine import NotPatchedError

        config = parse_config('[[targets]]\\nurl = "http://127.0.0.1:9/"\\n', "<test>")
        try:
            greenmon.sweep(config.targets, config)
        except NotPatchedError as error:
            print("NotPatchedError:", error)
            raise SystemExit(3)
        print("sweep ran unpatched")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=str(PROJECT))
    assert run.returncode == 3, (run.stdout, run.stderr)
    assert "NotPatchedError:" in run.stdout
    assert "patch_all" in run.stdout  # the message says how to fix it


# --- Summary ----------------------------------------------------------------------------------

@pytest.mark.parametrize("values, fraction, expected", [
    ([], 0.5, None),
    ([7.0], 0.5, 7.0),
    ([7.0], 0.95, 7.0),
    ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
    ([1.0, 2.0, 3.0, 4.0], 0.95, 4.0),
    ([float(v) for v in range(1, 11)], 0.5, 5.0),
    ([float(v) for v in range(1, 11)], 0.9, 9.0),
    ([float(v) for v in range(1, 11)], 0.95, 10.0),
    ([float(v) for v in range(1, 21)], 0.95, 19.0),
    ([float(v) for v in range(1, 101)], 0.95, 95.0),
    ([float(v) for v in range(1, 101)], 0.99, 99.0),
    ([float(v) for v in range(1, 101)], 1.0, 100.0),
    ([float(v) for v in range(1, 101)], 0.0, 1.0),
])
def test_percentile_nearest_rank(values, fraction, expected):
    assert percentile(values, fraction) == expected


def _result(name: str, ok: bool, latency: float | None, error_class: str | None = None,
            attempts: int = 1) -> MonitorResult:
    return MonitorResult(
        target=name, url=f"http://127.0.0.1/{name}", method="GET", ok=ok,
        status_code=200 if ok else None, latency_s=latency, elapsed_s=latency or 0.0,
        attempts=attempts, error_class=error_class, detail=None, error=None,
        breaker="open" if attempts == 0 else "closed", checked_at=0.0, body_bytes=None)


def test_summarize_known_values():
    results = [_result(f"up{i}", True, latency) for i, latency in
               enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5,
                          1.6, 1.7, 1.8])]
    results += [_result("slow", False, 3.0, "timeout"),
                _result("broken", False, 0.05, "http"),
                _result("skipped", False, None, "connection", attempts=0)]
    summary = summarize(results, 12.3456, slo_p95_s=2.0)
    # 20 contacted latencies: 0.05, 0.1 ... 1.8, 3.0; skipped has none.
    assert summary["targets"] == 21
    assert (summary["up"], summary["down"], summary["skipped"]) == (18, 3, 1)
    assert summary["duration_s"] == 12.346
    assert summary["p50_s"] == 0.9   # rank 10 of 20
    assert summary["p95_s"] == 1.8   # rank 19 of 20
    assert summary["max_s"] == 3.0
    assert (summary["slo_p95_s"], summary["slo_met"]) == (2.0, True)
    assert summary["errors"] == {"timeout": 1, "connection": 1, "auth": 0, "http": 1, "content": 0}


def test_summarize_slo_missed():
    results = [_result(f"t{i}", True, latency) for i, latency in enumerate([0.5] * 18 + [2.5, 3.0])]
    summary = summarize(results, 1.0, slo_p95_s=2.0)
    assert (summary["p95_s"], summary["slo_met"]) == (2.5, False)


def test_summarize_without_contacted_targets():
    summary = summarize([_result("skipped", False, None, "http", attempts=0)], 0.0, slo_p95_s=2.0)
    assert (summary["p50_s"], summary["p95_s"], summary["max_s"], summary["slo_met"]) == (
        None, None, None, None)
    assert (summary["down"], summary["skipped"], summary["errors"]["http"]) == (1, 1, 1)


def test_summarize_nothing():
    summary = summarize([], 0.0, slo_p95_s=2.0)
    assert (summary["targets"], summary["up"], summary["down"], summary["slo_met"]) == (0, 0, 0, None)
