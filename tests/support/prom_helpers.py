"""Helpers for the tests that run the real Prometheus binaries (test_prometheus.py).

Finding prometheus, promtool, alertmanager and amtool (skip, or fail when
GREENMON_REQUIRE_PROMETHEUS=1), running long-lived processes with their output
in files and a guaranteed stop, a shared deadline for the waits of a test,
Prometheus's HTTP API and a webhook recorder for Alertmanager.
Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import requests


REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

REQUIRE_ENV = "GREENMON_REQUIRE_PROMETHEUS"
SKIP_REASON = ("prometheus binaries not found; install them with: "
               "apt-get install prometheus prometheus-alertmanager")

# Upstream names first; Debian ships alertmanager as prometheus-alertmanager.
BINARY_NAMES = {
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
    "alertmanager": ("alertmanager", "prometheus-alertmanager"),
    "amtool": ("amtool",),
}


# --- Binaries ------------------------------------------------------------------

def find_binary(name: str, search_path: str | None = None) -> str:
    """The path of binary ``name`` (under any of its names); skip the test, or fail it, when missing.

    Missing fails the test when $GREENMON_REQUIRE_PROMETHEUS is 1 (CI), else skips it.
    ``search_path`` replaces $PATH (for testing this function).
    """
    names = BINARY_NAMES.get(name, (name,))
    for candidate in names:
        found = shutil.which(candidate, path=search_path)
        if found:
            return found
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"required binary not found: {' or '.join(names)} "
                    f"({REQUIRE_ENV}=1; {SKIP_REASON})", pytrace=False)
    pytest.skip(SKIP_REASON)


def subprocess_env() -> dict:
    """The test's environment without proxy settings: every process talks to 127.0.0.1 directly."""
    return {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}


def run_tool(argv: list[str], *, input_text: str | None = None, timeout: float = 30,
             cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run a short command (promtool, amtool) and capture its output."""
    return subprocess.run(argv, input=input_text, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, cwd=cwd, env=subprocess_env())


def describe_run(result: subprocess.CompletedProcess) -> str:
    return (f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}")


# --- Long-running processes ----------------------------------------------------

class Process:
    """One subprocess with stdout/stderr in files under ``log_dir``."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, cwd: str | Path | None = None):
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.cwd = cwd
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Process":
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          cwd=self.cwd, env=subprocess_env())
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited early with code {self.popen.returncode}\n"
                                 f"{self.logs()}")

    def stop(self, timeout: float = 10.0) -> None:
        """terminate, wait up to ``timeout`` s, then kill: never leaves the process behind."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=timeout)

    def logs(self, limit: int = 20000) -> str:
        parts = [f"=== {self.name}: {' '.join(self.argv)}"]
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            if len(text) > limit:
                text = f"[... {len(text) - limit} characters cut ...]\n" + text[-limit:]
            parts.append(f"--- {label} ({path}) ---\n{text}")
        return "\n".join(parts)


class Processes:
    """Starts processes and always stops them (last started first) when the block ends.

    When the block raises, every process's output is printed (pytest shows it with the failure).
    """

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[Process] = []

    def start(self, name: str, argv: list, cwd: str | Path | None = None) -> Process:
        process = Process(name, argv, self.log_dir, cwd=cwd)
        self.started.append(process)
        return process.start()

    def check_alive(self) -> None:
        for process in self.started:
            process.check_alive()

    def watching(self, probe: Callable[[], object]) -> Callable[[], object]:
        """``probe``, failing at once instead when one of the processes has exited (for wait_until)."""
        def watched():
            self.check_alive()
            return probe()
        return watched

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            for process in reversed(self.started):
                process.stop()
        finally:
            if exc_type is not None and not issubclass(exc_type, pytest.skip.Exception):
                for process in self.started:
                    print(process.logs())


# --- Bounded waits -------------------------------------------------------------

class Budget:
    """A deadline shared by the waits of one test."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started = time.monotonic()
        self.deadline = self.started + seconds

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def elapsed(self) -> float:
        return time.monotonic() - self.started


NOT_YET = (requests.RequestException, ValueError, KeyError)  # a server still starting, a series not there


# --- HTTP on loopback ----------------------------------------------------------

_session = requests.Session()
_session.trust_env = False  # no proxies from the environment: 127.0.0.1 directly


HTTP_TIMEOUT_S = 30.0  # load-proof: a slow answer is not a failure, a hang still is (docs/testing.md)


def http_get(url: str, **params) -> requests.Response:
    return _session.get(url, params=params or None, timeout=HTTP_TIMEOUT_S)


def is_ready(url: str) -> bool:
    return http_get(url).status_code == 200


def prom_query(base_url: str, expr: str) -> list[dict]:
    """An instant query through Prometheus's HTTP API: the result vector."""
    response = http_get(f"{base_url}/api/v1/query", query=expr)
    response.raise_for_status()
    document = response.json()
    if document.get("status") != "success":
        raise ValueError(f"query {expr!r} failed: {document}")
    return document["data"]["result"]


def finite_value(result: list[dict], **labels) -> float | None:
    """The value of the one sample whose labels include ``labels``, if it is a finite number."""
    for item in result:
        if all(item["metric"].get(key) == value for key, value in labels.items()):
            value = float(item["value"][1])
            if math.isfinite(value):
                return value
    return None


# --- An Alertmanager webhook receiver ------------------------------------------

class WebhookRecorder:
    """An HTTPFarm handler keeping every JSON body POSTed to it (Alertmanager's webhook)."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.errors: list[str] = []

    def __call__(self, environ):
        data = environ["wsgi.input"].read()
        try:
            self.bodies.append(json.loads(data))
        except ValueError as problem:
            self.errors.append(f"{problem}: {data[:200]!r}")
            return "400 Bad Request", [], b"not json"
        return "200 OK", [], b"ok"

    def alerts(self, **labels) -> list[dict]:
        """Every alert received (in every notification) whose labels include ``labels``."""
        return [alert for body in self.bodies for alert in body.get("alerts", [])
                if all(alert.get("labels", {}).get(k) == v for k, v in labels.items())]


# --- The greenmon command ---------------------------------------------------------

def greenmon_argv(config: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "greenmon", "--config", str(config),
            "--listen", f"127.0.0.1:{port}", "--log-level", "info", *extra]


_FOR = re.compile(r"^(?P<indent>\s*)for:\s*\S+\s*$", re.MULTILINE)


def shorten_for_durations(rules_text: str, duration: str) -> tuple[str, int]:
    """Every rule's ``for:`` duration replaced by ``duration``; returns the text and the count replaced."""
    return _FOR.subn(lambda m: f"{m['indent']}for: {duration}", rules_text)


def write_yaml(path: Path, document: dict) -> Path:
    """Write ``document`` as JSON, which is valid YAML for Prometheus and Alertmanager."""
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
