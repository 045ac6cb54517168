"""Helpers for the exporter, web and daemon tests: /metrics parsing, a running daemon.

- ``samples`` / ``value`` / ``label_sets`` read Prometheus text the way a scraper would
  (``prometheus_client.parser``), so the tests assert on series, not on substrings.
- ``running_daemon`` starts a Daemon and its WebServer in this process on 127.0.0.1:0.
- ``DaemonProcess`` runs the real ``python -m greenmon`` as a subprocess and always kills it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import gevent
import requests
from prometheus_client.parser import text_string_to_metric_families

from greenmon.config import Config, parse_config
from support.configs import config_text
from support.helpers import wait_until
from support.servers import closed_port

# For one request of a test's own client to a server under test. Load-proof (docs/testing.md):
# a healthy server on a machine busy with other work must not fail a test by answering in
# 4 s; a hung one still fails it. A test that asserts how soon something answers says so
# with its own bound.
HTTP_TIMEOUT_S = 30.0
# How long the waits below poll for their condition by default: a bound against a hang, not a
# speed check (a test whose bound means something passes its own).
WAIT_S = 30.0


# --- Prometheus text ------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict
    value: float
    family: str
    type: str


def samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition, with its family name and type."""
    out = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.append(Sample(sample.name, dict(sample.labels), sample.value, family.name, family.type))
    return out


def select(text_or_samples, name: str, **labels) -> list[Sample]:
    """Samples called ``name`` whose labels include ``labels``."""
    found = samples(text_or_samples) if isinstance(text_or_samples, str) else text_or_samples
    return [s for s in found if s.name == name
            and all(s.labels.get(key) == str(val) for key, val in labels.items())]


def value(text_or_samples, name: str, **labels) -> float | None:
    """The value of the one sample ``name`` with ``labels`` (None when absent; more than one fails)."""
    found = select(text_or_samples, name, **labels)
    assert len(found) <= 1, f"{name}{labels} matches {len(found)} samples: {found}"
    return found[0].value if found else None


def label_sets(text_or_samples, name: str) -> set[frozenset]:
    """The label names of each sample called ``name``."""
    return {frozenset(s.labels) for s in select(text_or_samples, name)}


def targets_in(text_or_samples) -> set[str]:
    """Every value of the ``target`` label in the exposition."""
    found = samples(text_or_samples) if isinstance(text_or_samples, str) else text_or_samples
    return {s.labels["target"] for s in found if "target" in s.labels}


# --- In-process daemon: Daemon + WebServer ------------------------------------------

class RunningDaemon:
    """A Daemon sweeping in a greenlet, served by a WebServer on 127.0.0.1."""

    def __init__(self, daemon, server, greenlet):
        self.daemon = daemon
        self.server = server
        self.greenlet = greenlet

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url(path), timeout=HTTP_TIMEOUT_S, **kwargs)

    def metrics(self) -> str:
        response = self.get("/metrics")
        assert response.status_code == 200, response.status_code
        return response.text

    def wait_sweeps(self, count: int, timeout: float = WAIT_S) -> int:
        """Wait until at least ``count`` sweeps have finished in total."""
        wait_until(lambda: self.daemon.store.sweeps >= count, timeout,
                   message=f"{count} finished sweeps")
        return self.daemon.store.sweeps


def daemon_config(targets: list[dict], *, interval: float = 0.3, **kwargs) -> Config:
    """A parsed config for a Daemon run in this process, sweeping every ``interval``: set after
    validation, which refuses an interval shorter than the timeout, so a test can sweep fast."""
    return parse_config(config_text(targets, **kwargs), "<test>").replace("monitor", interval=interval)


@contextlib.contextmanager
def running_daemon(config, *, loader=None, start: bool = True,
                    stop_timeout: float = 8.0) -> Iterator[RunningDaemon]:
    """Daemon(config, loader) + WebServer on 127.0.0.1:0; ``start=False``: the daemon never runs.

    On exit the daemon is stopped and its greenlet joined (killed if it outlives
    ``stop_timeout``), and the web server is stopped.
    """
    from greenmon.daemon import Daemon
    from greenmon.web import WebServer

    daemon = Daemon(config, loader=loader)
    server = WebServer(daemon, "127.0.0.1:0")
    server.start()
    greenlet = gevent.spawn(daemon.run) if start else None
    try:
        yield RunningDaemon(daemon, server, greenlet)
    finally:
        daemon.stop()
        try:
            if greenlet is not None:
                greenlet.join(timeout=stop_timeout)
                if not greenlet.dead:
                    greenlet.kill(block=True, timeout=1)
                    raise AssertionError(f"Daemon.run did not return within {stop_timeout}s of stop()")
        finally:
            server.stop()
            daemon.engine.close()


# --- The real command as a subprocess --------------------------------------------------

class DaemonProcess:
    """``python -m greenmon --config PATH --listen 127.0.0.1:PORT`` with stdout/stderr in files."""

    def __init__(self, config_path: Path, workdir: Path, *extra_args: str):
        self.config_path = Path(config_path)
        self.port = closed_port()
        self.stdout_path = Path(workdir) / "daemon.stdout"
        self.stderr_path = Path(workdir) / "daemon.stderr"
        self.args = [sys.executable, "-m", "greenmon", "--config", str(self.config_path),
                     "--listen", f"127.0.0.1:{self.port}", *extra_args]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "DaemonProcess":
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.args, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            env=dict(os.environ))
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    # --- talking to it ---

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url(path), timeout=HTTP_TIMEOUT_S)

    def metrics(self) -> str:
        response = self.get("/metrics")
        assert response.status_code == 200, response.status_code
        return response.text

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, timeout: float = WAIT_S) -> None:
        """Poll /metrics until it answers 200; fail at once if the process exits."""
        def ready():
            if not self.alive():
                raise AssertionError(f"greenmon exited with {self.process.returncode}:\n{self.stderr()}")
            try:
                return self.get("/metrics").status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(ready, timeout, interval=0.1, message="greenmon serving /metrics")

    def wait_metric(self, predicate: Callable[[str], object], timeout: float = WAIT_S,
                    message: str = "metrics condition") -> str:
        """Poll /metrics until ``predicate(text)`` is truthy; returns that text."""
        holder = {}

        def check():
            holder["text"] = self.metrics()
            return predicate(holder["text"])
        wait_until(check, timeout, interval=0.1, message=message)
        return holder["text"]

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` (polls with gevent.sleep)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        return self.process.poll()
