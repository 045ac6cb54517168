"""Live discovery in the daemon: changes applied without a restart, failures keep the last good
targets (README, "Targets from where they live").

A Daemon runs in this process (``running_daemon``) against file_sd files
and an OpenAPI document served by a local farm; one test runs the real
command (``DaemonProcess``) with SIGHUP. Waits are bounded polls: a file change is
seen within FILE_POLL_S (1 s) and a source is read again at its
refresh_interval.
"""

from __future__ import annotations

import json
import signal
import time

import gevent

from greenmon.config import load_config, parse_config
from greenmon.discovery.loading import discover

from support.configs import config_text
from support.daemon_helpers import DaemonProcess, running_daemon, value
from support.helpers import wait_until
from support.servers import HTTPFarm, reply
from test_scheduler import GENEROUS_HOLD_S, Ticker, frozen_gc

DAEMON = ("[monitor]\ninterval = 0.3\ntimeout = 0.3\n\n[retry]\nretries = 0\n\n"
          "[breaker]\nfailure_threshold = 1\nrecovery_timeout = 300\n\n")


def write_sd(path, named: dict[str, str]) -> None:
    """A file_sd file with one group per target, named by its name label."""
    path.write_text(json.dumps([{"targets": [url], "labels": {"name": name, "zone": "z1"}}
                                for name, url in named.items()]), encoding="utf-8")


def discovery(text: str, source: str) -> tuple:
    return (value(text, "greenmon_discovered_targets", source=source),
            value(text, "greenmon_discovery_errors_total", source=source))


def test_a_changed_file_is_applied_live_and_a_broken_one_keeps_the_last_good_targets(tmp_path):
    routes = {"/a": reply("500 Internal Server Error"), "/b": reply(), "/c": reply(), "/d": reply()}
    with HTTPFarm(routes) as farm:
        sd = tmp_path / "sd.json"
        write_sd(sd, {"a": farm.url("/a"), "b": farm.url("/b")})
        path = tmp_path / "greenmon.toml"
        path.write_text(DAEMON + '[[file_sd]]\nfiles = ["sd.json"]\nlabels = { tier = "sd" }\n',
                        encoding="utf-8")
        config = discover(load_config(path))
        with running_daemon(config, loader=lambda: load_config(path)) as running:
            monitor = running.daemon
            wait_until(lambda: farm.hits("/b") >= 1 and "a" in monitor.engine.breakers
                       and monitor.engine.breakers["a"].state == "open", 5,
                       message="b checked, a's breaker open")
            series_a, hits_a = monitor.store.series["a"], farm.hits("/a")
            assert discovery(running.metrics(), "file_sd[0]") == (2, 0)

            write_sd(sd, {"a": farm.url("/a"), "c": farm.url("/c")})   # b goes, c comes
            wait_until(lambda: farm.hits("/c") >= 1, 6, message="the added target c checked")
            assert list(monitor.store.series) == ["a", "c"]
            assert monitor.store.series["a"] is series_a           # a's series kept
            assert monitor.engine.breakers["a"].state == "open"    # and its breaker
            assert farm.hits("/a") == hits_a                       # (so it was not contacted)
            assert monitor.config.targets[1].labels == {"tier": "sd", "zone": "z1"}
            text = running.metrics()
            assert discovery(text, "file_sd[0]") == (2, 0)
            assert value(text, "greenmon_breaker_state", target="a") == 1
            assert value(text, "greenmon_checks_total", target="b") is None   # b's series gone

            sd.write_text('[{"targets": ', encoding="utf-8")      # broken
            wait_until(lambda: discovery(running.metrics(), "file_sd[0]") == (2, 1), 6,
                       message="the failed load counted")
            hits_c = farm.hits("/c")
            wait_until(lambda: farm.hits("/c") >= hits_c + 2, 3, message="c still checked")
            assert list(monitor.store.series) == ["a", "c"]
            # Counted once for the broken file, not once per poll.
            gevent.sleep(2.5)
            assert discovery(running.metrics(), "file_sd[0]")[1] == 1
            # A reload (SIGHUP) keeps the source's last good load.
            assert monitor.reload() is True
            assert list(monitor.store.series) == ["a", "c"]

            write_sd(sd, {"a": farm.url("/a"), "c": farm.url("/c"), "d": farm.url("/d")})
            wait_until(lambda: farm.hits("/d") >= 1, 6, message="d checked once the file is good")
            assert discovery(running.metrics(), "file_sd[0]") == (3, 1)
            assert monitor.store.series["a"] is series_a


def test_a_name_clash_at_runtime_keeps_the_running_targets(tmp_path):
    with HTTPFarm({"/a": reply(), "/b": reply()}) as farm:
        sd = tmp_path / "sd.json"
        write_sd(sd, {"b": farm.url("/b")})
        path = tmp_path / "greenmon.toml"
        path.write_text(DAEMON + f'[[targets]]\nname = "a"\nurl = "{farm.url("/a")}"\n\n'
                        '[[file_sd]]\nfiles = ["sd.json"]\n', encoding="utf-8")
        with running_daemon(discover(load_config(path))) as running:
            wait_until(lambda: farm.hits("/b") >= 1, 5, message="b checked")
            write_sd(sd, {"a": farm.url("/b"), "b": farm.url("/b")})   # "a" is [[targets]]' name
            wait_until(lambda: discovery(running.metrics(), "file_sd[0]") == (1, 1), 6,
                       message="the clash counted as a failed load")
            assert list(running.daemon.store.series) == ["a", "b"]
            assert running.daemon.config.targets[0].url == farm.url("/a")


def test_an_openapi_document_is_fetched_again_at_its_refresh_interval():
    served = {"status": "200 OK", "paths": {"/one": {"get": {}}}}

    def spec(environ):
        return served["status"], [("Content-Type", "application/json")], json.dumps(
            {"openapi": "3.0.0", "paths": served["paths"]})

    with HTTPFarm({"/openapi.json": spec, "/one": reply(), "/two": reply()}) as farm:
        config = discover(parse_config(f'{DAEMON}[[openapi]]\nspec = "{farm.url("/openapi.json")}"\n'
                                       'refresh_interval = 0.5\n', "<test>"))
        with running_daemon(config) as running:
            wait_until(lambda: farm.hits("/one") >= 1, 5, message="GET /one checked")
            served["paths"] = {"/one": {"get": {}}, "/two": {"get": {}}}
            wait_until(lambda: farm.hits("/two") >= 1, 5, message="the new operation checked")
            assert set(running.daemon.store.series) == {"GET /one", "GET /two"}
            served["status"] = "503 Service Unavailable"
            wait_until(lambda: discovery(running.metrics(), "openapi[0]")[1] >= 1, 5,
                       message="the failed fetch counted")
            hits = farm.hits("/two")
            wait_until(lambda: farm.hits("/two") >= hits + 2, 3, message="GET /two still checked")
            assert discovery(running.metrics(), "openapi[0]")[0] == 2


def huge_document(operations: int = 5_000, size: int = 10_000_000) -> str:
    filler = "x" * (size // operations)
    paths = {f"/r{i}/{{id}}": {"get": {"description": filler, "tags": ["huge"], "parameters": [
        {"name": "id", "in": "path", "required": True, "example": i}]}} for i in range(operations)}
    return json.dumps({"openapi": "3.0.3", "servers": [{"url": "http://127.0.0.1:9"}], "paths": paths})


def test_a_10mb_document_of_5000_operations_loads_without_holding_the_loop(tmp_path):
    spec = tmp_path / "api.json"
    spec.write_text(json.dumps({"openapi": "3.0.3", "servers": [{"url": "http://127.0.0.1:9"}],
                                "paths": {"/small": {"get": {}}}}), encoding="utf-8")
    config = discover(parse_config('[monitor]\ninterval = 60.0\n\n[[openapi]]\nspec = "api.json"\n',
                                   str(tmp_path / "g.toml")))
    text = huge_document()
    assert len(text) >= 10_000_000
    gaps = []

    def watch_wall_clock():
        while True:
            started = time.monotonic()
            gevent.sleep(0.005)
            gaps.append(time.monotonic() - started)

    with running_daemon(config) as running, frozen_gc():
        watcher = gevent.spawn(watch_wall_clock)
        try:
            with Ticker() as ticker:
                spec.write_text(text, encoding="utf-8")
                wait_until(lambda: len(running.daemon.store.series) == 5_000, 120, interval=0.2,
                           message="5,000 targets from the new document")
        finally:
            watcher.kill()
        assert "GET /r4999/{id}" in running.daemon.store.series
        assert running.daemon.config.targets[-1].url == "http://127.0.0.1:9/r4999/4999"
    assert ticker.longest < GENEROUS_HOLD_S, ticker.longest
    # Wall time too: a parse of the whole document in one C call would hold it for seconds (YAML)
    # or a tenth of one (JSON); a busy machine may add to this, not that much.
    assert max(gaps) < 1.0, max(gaps)


def test_the_daemon_discovers_live_and_a_sighup_keeps_the_sources(tmp_path, write_config):
    with HTTPFarm({"/a": reply(), "/b": reply()}) as farm:
        sd = tmp_path / "sd.json"
        write_sd(sd, {"a": farm.url("/a")})
        path = write_config(config_text([], extra='[[file_sd]]\nfiles = ["sd.json"]\n', timeout=0.5,
                                        interval=0.5))
        with DaemonProcess(path, tmp_path) as daemon:
            daemon.wait_ready()
            daemon.wait_metric(lambda t: value(t, "greenmon_up", target="a") == 1, message="a up")
            write_sd(sd, {"a": farm.url("/a"), "b": farm.url("/b")})
            daemon.wait_metric(lambda t: value(t, "greenmon_up", target="b") == 1, 6, message="b up")
            sd.write_text("not json", encoding="utf-8")
            daemon.wait_metric(lambda t: discovery(t, "file_sd[0]") == (2, 1), 6,
                               message="the broken file counted")
            assert "discovery file_sd[0] failed, keeping its 2 last good targets" in daemon.stderr()
            daemon.send(signal.SIGHUP)
            checks = value(daemon.metrics(), "greenmon_checks_total", target="b")
            daemon.wait_metric(lambda t: value(t, "greenmon_checks_total", target="b") >= checks + 3, 5,
                               message="b still checked after SIGHUP")
            assert "reload failed" not in daemon.stderr()
            daemon.send(signal.SIGTERM)
            assert daemon.wait_exit(5) == 0
    assert "Traceback" not in daemon.stderr()


def test_with_worker_processes_a_discovered_change_reaches_the_workers(tmp_path, write_config):
    with HTTPFarm({"/a": reply(), "/b": reply(), "/c": reply()}) as farm:
        sd = tmp_path / "sd.yaml"
        sd.write_text(f"- targets: ['{farm.url('/a')}', '{farm.url('/b')}']\n", encoding="utf-8")
        path = write_config(config_text([], extra='[[file_sd]]\nfiles = ["sd.yaml"]\n', timeout=0.5,
                                        interval=0.5))
        with DaemonProcess(path, tmp_path, "--workers", "2") as daemon:
            daemon.wait_ready()
            daemon.wait_metric(lambda t: value(t, "greenmon_up", target=farm.url("/b")) == 1, 6,
                               message="b up")
            sd.write_text(f"- targets: ['{farm.url('/a')}', '{farm.url('/c')}']\n", encoding="utf-8")
            text = daemon.wait_metric(lambda t: value(t, "greenmon_up", target=farm.url("/c")) == 1, 6,
                                      message="c up, from a worker")
            assert value(text, "greenmon_targets") == 2
            hits = farm.hits("/b")
            gevent.sleep(1.5)
            assert farm.hits("/b") <= hits + 1   # b no longer checked (one may have been in flight)
            daemon.send(signal.SIGTERM)
            assert daemon.wait_exit(5) == 0
    assert "Traceback" not in daemon.stderr()
