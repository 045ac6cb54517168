"""Helpers for the load, fault and abuse tests: a target farm in its own process, resource
probes, an external /metrics scraper and slow clients.

- ``FarmProcess`` runs this module (``python -m support.load_helpers farm``): a target farm
  in a separate process on 127.0.0.1, so that the checks of a soak do not share the CPU of
  the test process with the servers answering them, and so that a test can SIGKILL the whole
  farm mid-sweep and start it again on the same ports.
- ``Scraper`` runs ``python -m support.load_helpers scrape URL``: a client outside the
  monitor's event loop that GETs a URL in a loop and reports every latency, so /metrics
  latency is measured the way Prometheus sees it.
- ``ProbedDaemon`` runs ``python -m support.load_helpers greenmon ARGS``: the real greenmon
  command line (support.daemon_helpers.DaemonProcess), plus a probe after every sweep that writes its number,
  its duration and, at chosen sweeps, the daemon's own resources to a file.
- ``check_in_subprocess`` runs ``python -m support.load_helpers check CONFIG``: one sweep
  in a fresh process, reporting its results and its peak memory (VmHWM), so that what a
  check costs at its worst is measured, not what is left once it has been freed.
- ``resources()`` and ``tcp_sockets()`` read the open file descriptors, greenlets, RSS and TCP
  sockets (by peer port and state) of this process.
- ``slow_client``, ``raw_request`` and ``huge_header_request`` abuse a server over raw sockets.

Every process is started with a bounded lifetime and always killed on exit; every wait is
bounded. Each finds this package, and this checkout's greenmon, through the PYTHONPATH of
``helper_env()``.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # a helper process: gevent patches before anything imports socket or ssl
    os.environ.setdefault("GEVENT_RESOLVER", "ares,thread")  # as greenmon/__main__.py does
    from gevent import monkey

    monkey.patch_all()

import json  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from support.daemon_helpers import DaemonProcess  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]
HELPER = [sys.executable, "-m", "support.load_helpers"]   # this module, as a helper process
MAX_LIFETIME_S = 600.0  # no helper process outlives this, whatever happens to its parent
STARTUP_S = 60.0        # for a helper process to start and say so: against a hang, load-proof
# The raw-socket clients' own timeout: a server slow on a busy machine is not a failure, a hung
# one still is; a test that asserts how soon an answer comes says so with its own bound.
CLIENT_TIMEOUT_S = 30.0


def helper_env(extra: dict | None = None) -> dict:
    """This process's environment with tests/ (for ``support``) and the checkout (for its
    greenmon, ahead of an installed one) first on PYTHONPATH."""
    env = {**os.environ, **(extra or {})}
    paths = [str(TESTS), str(TESTS.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


# --- Resources of this process -----------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    fds: int
    greenlets: int
    rss_mb: float

    def __str__(self) -> str:
        return f"{self.fds} fds, {self.greenlets} greenlets, {self.rss_mb:.1f} MB RSS"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def greenlet_count() -> int:
    """Greenlets alive in this process: running, waiting, or spawned and about to start (after a
    collection, so garbage is not counted). One that has ended is not counted even while the
    loop still holds it to run its link callbacks: on a loaded machine hundreds of finished
    checks wait for that at any moment, a backlog that comes and goes, not a leak (a leak of
    ended greenlets shows in the RSS)."""
    import gc

    import greenlet

    gc.collect()
    return sum(1 for item in gc.get_objects() if isinstance(item, greenlet.greenlet) and not item.dead)


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def resources() -> Resources:
    return Resources(open_fds(), greenlet_count(), rss_mb())


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def tcp_sockets() -> dict[str, int]:
    """This process's TCP sockets counted by "REMOTE_PORT STATE" (e.g. "8080 ESTABLISHED"),
    from /proc/self/fd and /proc/net/tcp{,6}: pooled keep-alive connections can then be told
    apart from leaked ones (CLOSE_WAIT, or connections to a server that never answered)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    counts: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[9] in inodes:
                        key = f"{int(fields[2].rsplit(':', 1)[1], 16)} {_TCP_STATES.get(fields[3], fields[3])}"
                        counts[key] = counts.get(key, 0) + 1
        except FileNotFoundError:
            continue
    return counts


# --- Helper processes -------------------------------------------------------------------------

def _read_json_line(process: subprocess.Popen, timeout: float, what: str) -> dict:
    """The first stdout line of ``process`` as JSON, waiting cooperatively at most ``timeout``."""
    import gevent

    try:
        with gevent.Timeout(timeout):
            line = process.stdout.readline()
    except gevent.Timeout:
        line = ""
    if not line:
        process.kill()
        raise AssertionError(f"{what} did not start: {process.stderr.read() if process.stderr else ''}")
    return json.loads(line)


class FarmProcess:
    """A target farm in its own process: ``/ok`` 200, ``/err`` 500, ``/slow?delay=S`` 200 after S
    seconds on one HTTP port, and a port whose server reads the request and never answers.

    The ports are chosen at the first start and kept: ``kill()`` then ``start()`` brings the
    same farm back where the targets point.
    """

    def __init__(self):
        self.process: subprocess.Popen | None = None
        self.http_port = 0
        self.hang_port = 0

    def start(self) -> "FarmProcess":
        args = [*HELPER, "farm", str(self.http_port), str(self.hang_port)]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=helper_env())
        ports = _read_json_line(self.process, STARTUP_S, "the farm process")
        self.http_port, self.hang_port = ports["http"], ports["hang"]
        return self

    def kill(self) -> None:
        """SIGKILL: every connection of the farm dies with it, mid-response or not."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout):
            if not pipe.closed:
                pipe.close()

    def __enter__(self) -> "FarmProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.kill()

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{route}"

    def hang_url(self, route: str = "/") -> str:
        return f"http://127.0.0.1:{self.hang_port}{route}"


class Scraper:
    """GETs ``url`` in a loop from another process, as Prometheus does (text format, gzip);
    ``stop()`` returns every scrape made.

    Each scrape is ``(started, latency_s, status)`` with ``started`` in wall-clock time
    (``time.time()``) and status 0 for a failed request.
    """

    def __init__(self, url: str, pause_s: float = 0.05, timeout_s: float = 5.0):
        self.url = url
        self.pause_s = pause_s
        self.timeout_s = timeout_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Scraper":
        args = [*HELPER, "scrape", self.url, str(self.pause_s), str(self.timeout_s)]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, env=helper_env())
        _read_json_line(self.process, STARTUP_S, "the scraper process")
        return self

    def stop(self) -> list[tuple[float, float, int]]:
        """Ask the scraper to finish (close its stdin) and read what it measured."""
        import gevent

        self.process.stdin.close()
        try:
            with gevent.Timeout(self.timeout_s + 10):
                out = self.process.stdout.read()
        except gevent.Timeout:
            self.process.kill()
            raise AssertionError("the scraper did not stop") from None
        self.process.wait(timeout=5)
        return [tuple(item) for item in json.loads(out)["scrapes"]]

    def __exit__(self, *exc_info) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        for pipe in (self.process.stdin, self.process.stdout):
            if not pipe.closed:
                pipe.close()


class ProbedDaemon(DaemonProcess):
    """support.daemon_helpers.DaemonProcess running greenmon through this module: the real command line, plus one
    JSON line per finished sweep in ``probe_path`` (its number and duration) and, at the sweeps
    in ``sample_at``, its fds, TCP sockets by peer port and state, greenlets and RSS, with the
    time the counting took."""

    def __init__(self, config_path: Path, workdir: Path, *extra_args: str, sample_at=()):
        super().__init__(config_path, workdir, *extra_args)
        self.args[0:3] = [*HELPER, "greenmon"]
        self.probe_path = Path(workdir) / "probe.jsonl"
        self._env = helper_env({"GM_TEST_PROBE_FILE": str(self.probe_path),
                                "GM_TEST_PROBE_AT": ",".join(str(n) for n in sample_at)})

    def __enter__(self) -> "ProbedDaemon":
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            env=untraced_environ(**self._env))
        return self

    def probes(self) -> list[dict]:
        """Every complete line written so far."""
        if not self.probe_path.exists():
            return []
        lines = self.probe_path.read_text(encoding="utf-8").split("\n")
        return [json.loads(line) for line in lines[:-1] if line]


# --- Raw-socket clients (run on the test process's hub) ----------------------------------------

def slow_client(port: int, payload: bytes, byte_every_s: float, max_bytes: int,
                sent: list | None = None) -> None:
    """Connect and send ``payload`` one byte every ``byte_every_s`` seconds, at most ``max_bytes``."""
    import gevent

    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock:
        for byte in payload[:max_bytes]:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return  # the server gave up on us: fine
            if sent is not None:
                sent.append(1)
            gevent.sleep(byte_every_s)


def raw_request(port: int, data: bytes, timeout: float = CLIENT_TIMEOUT_S, *,
                until_head: bool = True) -> tuple[bytes, float]:
    """Send ``data``; return what came back (b"" if the server closed without a word) and how
    long it took. With ``until_head`` a kept-alive connection is not waited on beyond the
    response head; without, reading goes on until the server closes or ``timeout``."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass   # closed while we were still sending: an answer of its own
        out = b""
        while (not until_head or b"\r\n\r\n" not in out) and time.monotonic() - started < timeout:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out, time.monotonic() - started


def huge_header_request(port: int, header_bytes: int, path: str = "/metrics",
                        timeout: float = CLIENT_TIMEOUT_S) -> bytes:
    """Send one request with a ``header_bytes``-long header; return what came back (b"" if closed)."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: ".encode()
               + b"a" * header_bytes + b"\r\nConnection: close\r\n\r\n")
    return raw_request(port, request, timeout, until_head=False)[0]


# --- The helper processes themselves ------------------------------------------------------------

def _die_with_parent() -> None:
    """Bound the lifetime of a helper process whatever its parent does."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(int(MAX_LIFETIME_S))


def _farm_main(http_port: int, hang_port: int) -> None:
    import gevent
    import gevent.os
    from gevent.pywsgi import WSGIServer
    from gevent.server import StreamServer
    from urllib.parse import parse_qs

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/ok":
            status, body = "200 OK", b"ok"
        elif path == "/err":
            status, body = "500 Internal Server Error", b"boom"
        elif path == "/slow":
            delay = float(parse_qs(environ.get("QUERY_STRING", "")).get("delay", ["1"])[0])
            gevent.sleep(min(delay, 60.0))
            status, body = "200 OK", b"slow"
        else:
            status, body = "404 Not Found", b"not found"
        start_response(status, [("Content-Length", str(len(body))), ("Content-Type", "text/plain")])
        return [body]

    def hang(sock, address):
        """Read the request, never answer, and let go when the client hangs up (at most 60 s)."""
        sock.settimeout(60)
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            sock.close()

    web = WSGIServer(("127.0.0.1", http_port), app, log=None, error_log=None, backlog=4096)
    hanger = StreamServer(("127.0.0.1", hang_port), hang, backlog=4096)
    web.start()
    hanger.start()
    print(json.dumps({"http": web.server_port, "hang": hanger.server_port}), flush=True)
    gevent.os.make_nonblocking(0)
    while gevent.os.nb_read(0, 4096):  # until the parent closes our stdin or dies
        pass


def _scrape_main(url: str, pause_s: float, timeout_s: float) -> None:
    import http.client
    import select
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scrapes = []
    print(json.dumps({"ready": True}), flush=True)
    while not select.select([sys.stdin], [], [], 0)[0]:
        started_wall, started = time.time(), time.monotonic()
        status = 0
        try:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
            # As Prometheus asks: the classic text format, gzip-compressed.
            connection.request("GET", parts.path or "/", headers={
                "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1", "Accept-Encoding": "gzip"})
            response = connection.getresponse()
            response.read()
            status = response.status
            connection.close()
        except OSError:
            pass
        scrapes.append((started_wall, time.monotonic() - started, status))
        time.sleep(pause_s)
    print(json.dumps({"scrapes": scrapes}), flush=True)


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: the peak so far)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def _check_main(config_path: str) -> None:
    """One sweep of a config in this fresh process; prints one JSON line: the results, the RSS
    just before the sweep and the peak RSS (VmHWM) after it, in KiB. A fresh process, so that
    the peak is this sweep's and not that of whatever the test process did before."""
    from greenmon.config import load_config
    from greenmon.engine import Engine
    from greenmon.report import result_json

    config = load_config(config_path)
    engine = Engine(config)
    before_kb = _status_kb("VmRSS")
    try:
        results = engine.sweep()
    finally:
        engine.close()
    print(json.dumps({"rss_before_kb": before_kb, "peak_kb": _status_kb("VmHWM"),
                      "results": [json.loads(result_json(r)) for r in results]}), flush=True)


def untraced_environ(**extra: str) -> dict[str, str]:
    """This process's environment without coverage's subprocess measurement: a child whose
    memory or resources a test measures runs without the tracer (with gevent, coverage keeps
    data for every greenlet that ever ran: a daemon's RSS would grow by about 1 KB a check)."""
    environ = {**os.environ, **extra}
    return {key: value for key, value in environ.items()
            if key not in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")}


def check_in_subprocess(config_path: Path, timeout: float = 60.0) -> dict:
    """``_check_main`` run as ``python -m support.load_helpers check CONFIG``, waited on
    cooperatively (the servers the check talks to may run on this process's hub)."""
    run = subprocess.run([*HELPER, "check", str(config_path)], stdin=subprocess.DEVNULL,
                         env=untraced_environ(**helper_env()),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def _greenmon_main(argv: list[str]) -> int:
    """``python -m greenmon ARGS``, plus a probe after every sweep, a pass of the daemon's
    schedule (see ``ProbedDaemon``)."""
    from greenmon.cli import main
    from greenmon.store import MetricsStore

    probe_path = os.environ["GM_TEST_PROBE_FILE"]
    sample_at = {int(n) for n in os.environ.get("GM_TEST_PROBE_AT", "").split(",") if n}
    original = MetricsStore.sweep_finished
    probe = open(probe_path, "a", encoding="utf-8", buffering=1)

    def sweep_finished(self, duration_s):
        original(self, duration_s)
        line = {"sweep": self.sweeps, "duration_s": duration_s, "at": time.time()}
        if self.sweeps in sample_at:
            # Checks run all the time on their schedules: the sample says how many were in
            # flight, so that what they hold (a greenlet, a socket each) can be told apart.
            inflight = self.inflight()
            sample = resources()
            line.update(fds=sample.fds, greenlets=sample.greenlets, rss_mb=sample.rss_mb,
                        tcp=tcp_sockets(), inflight=inflight, stall=[line["at"], time.time()])
        probe.write(json.dumps(line) + "\n")

    MetricsStore.sweep_finished = sweep_finished
    return main(argv)


if __name__ == "__main__":
    _die_with_parent()
    if sys.argv[1] == "greenmon":
        sys.exit(_greenmon_main(sys.argv[2:]))
    if sys.argv[1] == "farm":
        _farm_main(int(sys.argv[2]), int(sys.argv[3]))
    elif sys.argv[1] == "scrape":
        _scrape_main(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1] == "check":
        _check_main(sys.argv[2])
    else:
        sys.exit(f"unknown helper {sys.argv[1]!r}")
