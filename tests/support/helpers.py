"""What many tests share: CLI runs, a fake clock, one sweep of a config, bounded waiting.

Configs are written by ``support.configs.config_text``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Callable, TypeVar

import gevent
import requests

from greenmon.config import Config, parse_config
from support.configs import config_text

T = TypeVar("T")


def run_cli(*args: str, env: dict | None = None, timeout: float = 60, cwd=None,
            stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run `python -m greenmon ARGS` in a subprocess (gevent-patched subprocess: the hub keeps serving).

    stdout is always captured (never a TTY); ``stderr`` may be a file descriptor
    (a pty, to see what a terminal would get) instead of being captured.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "greenmon", *args], stdout=subprocess.PIPE,
                          stderr=stderr, text=True, env=full_env, timeout=timeout, cwd=cwd)


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start `python -m greenmon ARGS` and return at once, to read its output as it comes.

    stdout and stderr are pipes (text); the caller waits for, or kills, the process.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "greenmon", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env)


# --- Engine runs and a fake clock -----------------------------------------------------------------

class FakeClock:
    """An injectable wall clock (epoch seconds) that moves only when told to."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sweep_config(config: Config, **engine_kwargs) -> list:
    """One sweep of the config's enabled targets on a fresh Engine, closed afterwards."""
    from greenmon.engine import Engine

    engine = Engine(config, **engine_kwargs)
    try:
        return engine.sweep()
    finally:
        engine.close()


def check_one(target: dict, *, monitor: dict | None = None, **config_kwargs):
    """The MonitorResult of one check of one target.

    ``config_kwargs`` go to config_text (retries, backoff, timeout, extra, tables);
    ``monitor`` replaces [monitor] settings of the parsed config (max_body_bytes, ...).
    """
    config = parse_config(config_text([target], **config_kwargs), "<test>")
    if monitor:
        config = config.replace("monitor", **monitor)
    return sweep_config(config)[0]


# --- Bounded waiting ------------------------------------------------------------------------------

def wait_until(predicate: Callable[[], T], timeout: float = 5.0, *, interval: float = 0.05,
               message: str = "condition", ignoring: tuple[type[BaseException], ...] = ()) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail (AssertionError)
    after ``timeout`` seconds.

    Waits with ``gevent.sleep``: the servers under test share the hub. An exception of a type
    in ``ignoring`` (connection refused while a server starts) counts as "not yet"; any other
    propagates at once (a predicate that finds its process dead fails the wait there).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = predicate()
        except ignoring as problem:
            last = f"{type(problem).__name__}: {problem}"
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {timeout:.1f}s (last: {last!r})")
        gevent.sleep(interval)


def requests_refuses(url: str) -> bool:
    """Whether requests' own URL preparation refuses ``url``: the truth that the config's
    check of a host without requests (urls.unsendable) is held to."""
    try:
        requests.PreparedRequest().prepare_url(url, None)
    except (requests.RequestException, ValueError):
        return True
    return False
