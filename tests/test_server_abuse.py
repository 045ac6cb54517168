"""The /metrics and status server under abuse (docs/reliability.md): unknown paths are 404, oversized
and slow requests get an error or are dropped, and none of it stops the sweeps or keeps
/metrics from answering everyone else quickly.

Most tests serve an in-process Daemon (daemon_helpers.running_daemon) on 127.0.0.1:0 and
talk to it over raw sockets; the last ones run the real daemon, to read its log and to
give it a small open-file limit.
"""

from __future__ import annotations

import resource
import signal
import socket
import subprocess
import time

import gevent
import pytest
from greenmon.config import parse_config

from support.configs import config_text
from support.daemon_helpers import DaemonProcess, running_daemon, value
from support.helpers import wait_until
from support.load_helpers import huge_header_request, raw_request, slow_client
from support.servers import HTTPFarm, reply

INTERVAL_S = 0.1
# "Not held up": one /metrics answer while the server is being abused comes long before any
# abuser lets go (slow clients drip for up to 30 s, silent ones are dropped after 10 s). A
# few milliseconds on idle cores; the bound is for a loaded machine.
FAST_S = 4.0
SILENT_DROPPED_S = 10.0   # greenmon.web.CLIENT_TIMEOUT_S: a wait for "still going" ends before


@pytest.fixture
def served():
    with HTTPFarm({"/ok": reply(body=b"fine")}) as farm:
        config = parse_config(config_text([{"name": f"ok-{i}", "url": farm.url(f"/ok?i={i}")} for i in range(5)],
                                          timeout=1.0), "<test>").replace("monitor", interval=INTERVAL_S)
        with running_daemon(config) as running:
            running.wait_sweeps(1)
            yield running


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP response, None if the server closed without one."""
    if not response.startswith(b"HTTP/"):
        return None
    return int(response.split(b" ", 2)[1])


def assert_still_serving(running, sweeps_before: int, more: int = 3, within: float = 30.0) -> None:
    """/metrics answers at once and the sweeps go on (``more`` of them, waited for at most
    ``within`` seconds: against a stall, generous for a loaded machine)."""
    started = time.monotonic()
    text = running.metrics()
    assert time.monotonic() - started < FAST_S
    assert value(text, "greenmon_up", target="ok-0") == 1
    running.wait_sweeps(sweeps_before + more, timeout=within)


# --- Unknown paths --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [
    b"/nope", b"/metrics/", b"/METRICS", b"//metrics", b"/metrics.txt", b"/../metrics", b"/%2e%2e/etc/passwd",
    b"/metrics%00", b"/api/results/../../etc/passwd", b"/healthz/x", b"/" + b"a" * 4000, b"*",
    b"/\xff\xfe", b"/status?x=<script>",
])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_unknown_paths_are_404(served, method, target):
    response, _ = raw_request(served.server.port, method + b" " + target + b" HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
    assert status_of(response) == 404, response[:200]
    assert b"<script>" not in response


def test_a_query_string_does_not_change_the_route(served):
    assert served.get("/metrics?debug=1&x=" + "y" * 1000).status_code == 200
    assert served.get("/nope?to=/metrics").status_code == 404


# --- Oversized requests ---------------------------------------------------------------------------------------------

OVERSIZED = {
    "header-64KiB": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 65536 + b"\r\n\r\n",
    "header-1MiB": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * (1 << 20) + b"\r\n\r\n",
    "2000-headers": b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
                    + b"".join(b"X-H%d: v\r\n" % i for i in range(2000)) + b"\r\n",
    "request-line-100KiB": b"GET /" + b"a" * 102400 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "body-announced-1TiB": b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1099511627776\r\n\r\nabc",
    "tls-hello-on-http": bytes.fromhex("16030100c4010000c00303") + b"\x00" * 200 + b"\r\n\r\n",
    "binary-garbage": bytes(range(256)) * 4 + b"\r\n\r\n",
    "http-9.9": b"GET /metrics HTTP/9.9\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(OVERSIZED))
def test_oversized_or_garbage_request_gets_an_error_and_sweeps_go_on(served, name):
    before = served.daemon.store.sweeps
    response, took = raw_request(served.server.port, OVERSIZED[name])
    status = status_of(response)
    assert status is None or 400 <= status < 500, response[:200]   # refused, or dropped
    assert took < FAST_S, f"no answer for {took:.1f}s"   # not left waiting for the 10 s silence drop
    assert_still_serving(served, before)


def test_64kib_header_request_is_refused_with_400_or_431(served):
    response = huge_header_request(served.server.port, 65536)
    assert status_of(response) in (400, 431), response[:200]


def test_twenty_huge_header_requests_at_once_do_not_stall_sweeps(served):
    before = served.daemon.store.sweeps
    requests_ = [gevent.spawn(huge_header_request, served.server.port, 1 << 20) for _ in range(20)]
    gevent.joinall(requests_, timeout=60)
    assert all(g.successful() for g in requests_)
    assert all(status_of(g.value) in (None, 400, 431) for g in requests_)
    assert_still_serving(served, before)


# --- Slow clients ------------------------------------------------------------------------------------------------------

SLOW_CLIENTS = 50
SLOW_BYTES = 30              # one byte per second, thirty of them: the request never completes
REQUEST = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
assert SLOW_BYTES < len(REQUEST)


def test_50_slow_clients_do_not_stall_metrics_or_sweeps(served):
    """While 50 clients drip their requests: 20 /metrics answers, each at once, and 10 sweeps.
    Counted, not timed: the clients drip for 30 s, however long the counts take to reach."""
    sent: list = []
    clients = [gevent.spawn(slow_client, served.server.port, REQUEST, 1.0, SLOW_BYTES, sent)
               for _ in range(SLOW_CLIENTS)]
    try:
        wait_until(lambda: len(sent) >= SLOW_CLIENTS, 30, message="every slow client connected")
        before = served.daemon.store.sweeps
        latencies = []
        while (len(latencies) < 20 or served.daemon.store.sweeps - before < 10) \
                and not any(c.dead for c in clients):
            started = time.monotonic()
            text = served.metrics()
            latencies.append(time.monotonic() - started)
            assert value(text, "greenmon_up", target="ok-0") == 1
            gevent.sleep(0.1)
        during = served.daemon.store.sweeps - before
        # Measured beside the slow clients: none had finished dripping (or been dropped).
        dripping = not any(c.dead for c in clients)
    finally:
        gevent.killall(clients, block=True, timeout=5)
    assert dripping, f"the slow clients ended first: {len(latencies)} answers, {during} sweeps"
    assert max(latencies) < FAST_S, f"slowest /metrics {max(latencies):.2f}s beside {SLOW_CLIENTS} slow clients"
    # Sweeps ran all along while the clients dripped (a stalled loop would leave none).
    assert during >= 10, f"only {during} sweeps while the slow clients were connected"


def test_50_silent_connections_do_not_stall_metrics_or_sweeps(served):
    sockets = [socket.create_connection(("127.0.0.1", served.server.port), timeout=5)
               for _ in range(SLOW_CLIENTS)]
    try:
        before = served.daemon.store.sweeps
        gevent.sleep(1.0)
        # Before greenmon drops them (10 s of silence): sweeps held up by them would come only then.
        assert_still_serving(served, before, more=5, within=SILENT_DROPPED_S - 1.0 - FAST_S - 1.0)
    finally:
        for sock in sockets:
            sock.close()


# --- The real daemon ----------------------------------------------------------------------------------------------------

@pytest.fixture
def farm():
    # Connection: close makes every check open a new socket, as checks of many hosts do.
    with HTTPFarm({"/ok": reply(headers=[("Connection", "close")])}) as server:
        yield server


def daemon_config(farm, write_config):
    return write_config(config_text([{"name": f"ok-{i}", "url": farm.url(f"/ok?i={i}")}
                                     for i in range(5)], interval=0.3, timeout=0.3))


@pytest.fixture
def abused_daemon(farm, write_config, tmp_path):
    """The real daemon after every oversized and garbage request above, and a 404; then stopped."""
    with DaemonProcess(daemon_config(farm, write_config), tmp_path) as daemon:
        daemon.wait_ready()
        daemon.wait_metric(lambda t: value(t, "greenmon_up", target="ok-0") == 1, message="ok-0 up")
        for name in sorted(OVERSIZED):
            raw_request(daemon.port, OVERSIZED[name])
        raw_request(daemon.port, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        checks = value(daemon.metrics(), "greenmon_checks_total", target="ok-0")
        text = daemon.wait_metric(lambda t: value(t, "greenmon_checks_total", target="ok-0") >= checks + 3,
                                  message="three more checks")
        daemon.send(signal.SIGTERM)
        code = daemon.wait_exit(30)   # against a hang
    return daemon, text, code


def test_abusive_requests_leave_the_daemon_serving(abused_daemon):
    daemon, text, code = abused_daemon
    assert value(text, "greenmon_up", target="ok-0") == 1
    assert code == 0, daemon.stderr()[-2000:]


def test_abusive_requests_leave_no_traceback_in_the_daemons_log(abused_daemon):
    daemon, _, _ = abused_daemon
    assert "Traceback" not in daemon.stderr(), daemon.stderr()[-3000:]


class LimitedDaemon(DaemonProcess):
    """The daemon started with a small open-file limit (soft and hard)."""

    def __init__(self, *args, nofile: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.nofile = nofile

    def __enter__(self) -> "LimitedDaemon":
        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            preexec_fn=limit)
        return self


def test_slow_clients_cannot_take_the_descriptors_checks_need(farm, write_config, tmp_path):
    """150 clients that never finish a request, against a daemon allowed 128 files: the checks
    go on, reaching their target and succeeding, while the clients hold the server."""
    nofile, clients, hold_s = 128, 150, 2.0
    with LimitedDaemon(daemon_config(farm, write_config), tmp_path, nofile=nofile) as daemon:
        daemon.wait_ready()
        daemon.wait_metric(lambda t: value(t, "greenmon_checks_total", target="ok-0") >= 2,
                           message="two checks of ok-0")
        mark = len(daemon.stderr())
        held = []
        held_since = time.monotonic()
        try:
            for _ in range(clients):   # each sends the start of a request, then nothing
                sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=30)
                sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                held.append(sock)
            hits_before = farm.hits("/ok")
            gevent.sleep(hold_s)   # several turns of every target (interval 0.3 s)
            # The farm counts the requests that reached it: checks were made all along, not just
            # logged as failed or never started (5 targets due every 0.3 s: about 33 in 2 s).
            # Waited for, not counted in a window, but only while the clients still hold the
            # server: greenmon drops the first of them 10 s after its last byte, and the
            # descriptors come back.
            wait_until(lambda: farm.hits("/ok") - hits_before >= 2 * 5,
                       max(0.5, SILENT_DROPPED_S - 1.0 - (time.monotonic() - held_since)),
                       message="ten checks reaching the farm while the clients hold the server")
            during = daemon.stderr()[mark:]
            still_running = daemon.alive()
        finally:
            for sock in held:
                sock.close()
    assert still_running, during[-2000:]
    failed = [line for line in during.splitlines() if "check failed" in line]
    assert not failed, f"{len(failed)} checks failed while slow clients held the server: {failed[:2]}"
