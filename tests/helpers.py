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


def run_cli(*args: str, env: dict | None = None, timeout: float = 60, cwd=None) -> subprocess.CompletedProcess:
    """Run `python -m greenmon ARGS` in a subprocess (gevent-patched subprocess: the hub keeps serving)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "greenmon", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)
