"""Config texts for the tests: the one builder (``config_text``) and the TOML writer under it.

``config_text`` writes every config a test needs, for a file (``write_config``, the command
line, a daemon) or for ``parse_config(text, "<test>")``. Its defaults are the tests' own (a
2 s deadline, no retries, a 0.05 s backoff), not greenmon's (docs/configuration.md). The
writer escapes what TOML needs escaped (quotes, backslashes, CR, LF, NUL), so a value
reaches greenmon exactly as the test wrote it; ``tomllib`` reads back what it writes
(test_fuzz_config.py checks that on random documents).
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Iterable

# --- The TOML writer ---------------------------------------------------------------------------

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def toml_value(value) -> str:
    """One value, inline (tables as inline tables)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(document: dict, tables: bool = True) -> str:
    """Scalars and inline values first; then, with ``tables``, a [table] per dict and an
    [[array]] per list of dicts (nested values inline), as people write configs."""
    head, tail = [], []
    for key, value in document.items():
        if tables and isinstance(value, dict):
            tail.append(f"[{toml_key(key)}]")
            tail += [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()]
            tail.append("")
        elif tables and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                tail.append(f"[[{toml_key(key)}]]")
                tail += [f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items()]
                tail.append("")
        else:
            head.append(f"{toml_key(key)} = {toml_value(value)}")
    return "\n".join(head + [""] + tail)


# --- The one config builder --------------------------------------------------------------------

# A [breaker] that opens at the first failure and stays open for the test: a failing target
# is skipped from its second turn on.
BREAKER_OPENS_AT_ONCE = "[breaker]\nfailure_threshold = 1\nrecovery_timeout = 300\n"


def config_text(targets: Iterable[dict] = (), *, timeout: float = 2.0, interval: float | None = None,
                retries: int = 0, backoff: float = 0.05, extra: str = "", **tables: dict) -> str:
    """A greenmon config: [monitor], [retry], ``tables``, ``extra``, then a [[targets]] per dict.

    ``timeout`` and ``interval`` go to [monitor] (no interval: greenmon's default),
    ``retries`` and ``backoff`` to [retry]; ``tables`` are further TOML tables as dicts
    (``monitor={"state_file": ...}`` adds to [monitor], ``breaker={...}`` writes [breaker]),
    and ``extra`` is raw TOML text written as it is (``[auth.NAME]`` tables, say). A key given
    both as an argument and in a table is a mistake (TypeError).
    """
    sections = {"monitor": {"timeout": timeout} | ({} if interval is None else {"interval": interval}),
                "retry": {"retries": retries, "backoff": backoff}}
    for name, values in tables.items():
        given_twice = set(sections.get(name, {})) & set(values)
        if given_twice:
            raise TypeError(f"{name}: {sorted(given_twice)} given as arguments and in the table")
        sections[name] = sections.get(name, {}) | values
    parts = [f"[{toml_key(name)}]\n" + _pairs(values) for name, values in sections.items()]
    if extra:
        parts.append(extra if extra.endswith("\n") else extra + "\n")
    parts += ["[[targets]]\n" + _pairs(target) for target in targets]
    return "\n".join(parts)


def _pairs(values: dict) -> str:
    return "".join(f"{toml_key(key)} = {toml_value(value)}\n" for key, value in values.items())
