"""Small builders shared by the tests: configs for one or many targets, and CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys

from greenmon.config import Config, parse_config


def config_for(targets: list[dict], *, extra: str = "", retries: int = 0, backoff: float = 0.05,
               timeout: float = 2.0) -> Config:
    """A parsed config: [[targets]] from dicts, fast retries, short timeout."""
    return parse_config(config_text(targets, extra=extra, retries=retries, backoff=backoff,
                                    timeout=timeout), "<test>")


def config_text(targets: list[dict], *, extra: str = "", retries: int = 0, backoff: float = 0.05,
                timeout: float = 2.0) -> str:
    lines = [f"[monitor]\ntimeout = {timeout}\n", f"[retry]\nretries = {retries}\nbackoff = {backoff}\n",
             extra]
    for target in targets:
        lines.append("[[targets]]")
        for key, value in target.items():
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value + "'" if '"' in value or "\\" in value else '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    raise TypeError(value)


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


# --- Engine runs and a fake clock (added for test_errors/test_prober/test_breaker/test_engine) ---

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

    ``config_kwargs`` go to config_for (retries, backoff, timeout, extra);
    ``monitor`` replaces [monitor] settings config_for cannot write (max_body_bytes, ...).
    """
    config = config_for([target], **config_kwargs)
    if monitor:
        config = config.replace("monitor", **monitor)
    return sweep_config(config)[0]
