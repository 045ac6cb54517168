"""The real command as a subprocess: daemon, signals, reload, --textfile, --pushgateway (README,
"Daemon, metrics and alerting").

The daemon listens on a free 127.0.0.1 port and watches servers run by this
test process; every wait is a bounded poll with gevent.sleep (the target
servers share this process's hub), and every process is killed in the end.
"""

from __future__ import annotations

import signal
import socket
import time

import pytest

from support.configs import config_text
from support.daemon_helpers import DaemonProcess, samples, select, targets_in, value
from support.helpers import run_cli, wait_until
from support.servers import HTTPFarm, RawServer, closed_port, never_answer, reply

CHECK_TIMEOUT_S = 1.5


@pytest.fixture
def farm():
    with HTTPFarm({"/a": reply(), "/b": reply()}) as server:
        yield server


def up(name: str):
    """A /metrics predicate: greenmon_up of ``name`` is 1."""
    return lambda text: value(text, "greenmon_up", target=name) == 1


# --- Serving and stopping --------------------------------------------------------------

def test_daemon_serves_metrics_and_stops_on_sigterm(farm, write_config, tmp_path):
    path = write_config(config_text([{"name": "a", "url": farm.url("/a")}], timeout=0.5, interval=0.5))
    with DaemonProcess(path, tmp_path) as daemon:
        daemon.wait_ready()
        text = daemon.wait_metric(up("a"), message="greenmon_up{target=a} 1")
        assert value(text, "greenmon_targets") == 1
        assert daemon.get("/healthz").status_code == 200
        # Sweeps repeat every interval.
        daemon.wait_metric(lambda t: value(t, "greenmon_checks_total", target="a") >= 3,
                           message="3 checks of a")
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(CHECK_TIMEOUT_S + 2) == 0
    assert "Traceback" not in daemon.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_exits_0_while_a_check_hangs(sig, write_config, tmp_path):
    with RawServer(never_answer) as hang:
        path = write_config(config_text([{"name": "hang", "url": hang.url("/")}],
                                        timeout=CHECK_TIMEOUT_S, retries=2, interval=CHECK_TIMEOUT_S))
        with DaemonProcess(path, tmp_path) as daemon:
            daemon.wait_ready()
            daemon.wait_metric(lambda t: value(t, "greenmon_inflight_checks") == 1,
                               message="the hanging check in flight")
            wait_until(lambda: hang.connections >= 1, 5.0, message="the hanging check's connection")
            sent = time.monotonic()
            daemon.send(sig)
            code = daemon.wait_exit(CHECK_TIMEOUT_S + 2)
            took = time.monotonic() - sent
            assert code == 0, f"exit {code} after {took:.1f}s:\n{daemon.stderr()}"
        # No retry was started after the signal: one attempt, at most one more
        # connection if the signal arrived just as a retry began.
        assert hang.connections <= 2
    assert "Traceback" not in daemon.stderr()


def test_a_busy_listen_address_is_a_clean_error(farm, write_config):
    path = write_config(config_text([{"name": "a", "url": farm.url("/a")}], timeout=0.5, interval=0.5))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = run_cli("--config", str(path), "--listen", f"127.0.0.1:{port}", timeout=8)
    assert done.returncode != 0
    assert f"127.0.0.1:{port}" in done.stderr or str(port) in done.stderr
    assert "Traceback" not in done.stderr


# --- SIGHUP reload ------------------------------------------------------------------------

def test_sighup_reloads_a_rewritten_config(farm, write_config, tmp_path):
    path = write_config(config_text([{"name": "a", "url": farm.url("/a")}], timeout=0.5, interval=0.5))
    with DaemonProcess(path, tmp_path) as daemon:
        daemon.wait_ready()
        daemon.wait_metric(up("a"), message="a up")
        assert farm.hits("/b") == 0
        write_config(config_text([{"name": "a", "url": farm.url("/a")},
                                  {"name": "b", "url": farm.url("/b")}], timeout=0.5, interval=0.5))
        daemon.send(signal.SIGHUP)
        text = daemon.wait_metric(up("b"), message="the new target b up after SIGHUP")
        assert targets_in(text) == {"a", "b"}
        assert value(text, "greenmon_targets") == 2
        assert farm.hits("/b") >= 1
        assert daemon.alive()


def test_sighup_with_an_invalid_config_keeps_the_old_targets(farm, write_config, tmp_path):
    path = write_config(config_text([{"name": "a", "url": farm.url("/a")}], timeout=0.5, interval=0.5))
    with DaemonProcess(path, tmp_path) as daemon:
        daemon.wait_ready()
        daemon.wait_metric(up("a"), message="a up")
        write_config('[monitor]\ninterval = 0.3\n\n[[targets]]\nname = "b"\nurl = 42\n')
        daemon.send(signal.SIGHUP)
        wait_until(lambda: "reload failed" in daemon.stderr(), 5, message="an error about the reload on stderr")
        errors = [line for line in daemon.stderr().splitlines() if "reload failed" in line]
        assert "ERROR" in errors[0]
        assert str(path) in errors[0] and "url" in errors[0]
        # Still sweeping the old targets.
        checks = value(daemon.metrics(), "greenmon_checks_total", target="a")
        text = daemon.wait_metric(lambda t: value(t, "greenmon_checks_total", target="a") >= checks + 2,
                                  message="more checks of a after the failed reload")
        assert targets_in(text) == {"a"}
        assert daemon.alive()
        daemon.send(signal.SIGTERM)
        assert daemon.wait_exit(CHECK_TIMEOUT_S + 2) == 0


# --- --once with --textfile / --pushgateway ------------------------------------------------

def test_once_textfile_writes_metrics_atomically(farm, write_config, tmp_path):
    path = write_config(config_text([{"name": "a", "url": farm.url("/a")},
                                     {"name": "down", "url": f"http://127.0.0.1:{closed_port()}/"}]))
    out_dir = tmp_path / "textfiles"
    out_dir.mkdir()
    prom = out_dir / "greenmon.prom"
    done = run_cli("--config", str(path), "--once", "--textfile", str(prom), timeout=20)
    assert done.returncode == 1, done.stderr  # one target down
    assert [p.name for p in out_dir.iterdir()] == ["greenmon.prom"]  # no temporary file left over
    text = prom.read_text(encoding="utf-8")
    assert value(text, "greenmon_up", target="a") == 1
    assert value(text, "greenmon_up", target="down") == 0
    assert value(text, "greenmon_check_errors_total", target="down", **{"class": "connection"}) == 1
    assert value(text, "greenmon_sweeps_total") == 1
    assert select(text, "greenmon_build_info")


def test_once_textfile_in_a_missing_folder_is_reported_and_keeps_the_exit_code(farm, write_config, tmp_path):
    path = write_config(config_text([{"name": "a", "url": farm.url("/a")}]))
    prom = tmp_path / "missing" / "greenmon.prom"
    done = run_cli("--config", str(path), "--once", "--textfile", str(prom), timeout=20)
    assert done.returncode == 0
    assert "textfile" in done.stderr
    assert "Traceback" not in done.stderr
    assert not prom.parent.exists()


def test_once_pushgateway_pushes_the_metrics(farm, write_config, tmp_path):
    pushes = []

    def gateway(environ):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        pushes.append((environ["REQUEST_METHOD"], environ["wsgi.input"].read(length).decode()))
        return "200 OK", [], b""

    with HTTPFarm({"/metrics/job/greenmon": gateway}) as pushgateway:
        path = write_config(config_text([{"name": "a", "url": farm.url("/a")},
                                         {"name": "b", "url": farm.url("/b")}]))
        done = run_cli("--config", str(path), "--once", "--pushgateway", f"http://127.0.0.1:{pushgateway.port}",
                       timeout=20)
    assert done.returncode == 0, done.stderr
    assert len(pushes) == 1
    method, body = pushes[0]
    assert method in ("PUT", "POST")
    assert value(body, "greenmon_up", target="a") == 1
    assert value(body, "greenmon_up", target="b") == 1
    assert {s.labels["target"] for s in samples(body) if s.name == "greenmon_checks_total"} == {"a", "b"}


def test_once_pushgateway_failure_is_reported_and_keeps_the_exit_code(farm, write_config):
    path = write_config(config_text([{"name": "a", "url": farm.url("/a")}]))
    done = run_cli("--config", str(path), "--once", "--pushgateway", f"http://127.0.0.1:{closed_port()}",
                   timeout=20)
    assert done.returncode == 0
    assert "pushgateway" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("flag", ["--textfile", "--pushgateway"])
def test_publishing_flags_need_once(flag, farm, write_config, tmp_path):
    path = write_config(config_text([{"name": "a", "url": farm.url("/a")}]))
    where = str(tmp_path / "greenmon.prom") if flag == "--textfile" else "http://127.0.0.1:9/"
    done = run_cli("--config", str(path), flag, where, "--listen", f"127.0.0.1:{closed_port()}", timeout=20)
    assert done.returncode == 2
    assert "--once" in done.stderr
    assert "Traceback" not in done.stderr
    assert farm.hits("/a") == 0  # it exited before any sweep
    assert not (tmp_path / "greenmon.prom").exists()
