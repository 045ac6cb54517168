"""Config texts for the tests: the one builder (``config_text``) over a real TOML writer.

``config_text`` writes every config a test needs, for a file (``write_config``, the command
line, a daemon) or for ``parse_config(text, "<test>")``. Its defaults are the tests' own (a
2 s deadline, no retries, a 0.05 s backoff), not greenmon's (docs/configuration.md).

The TOML is written by tomli-w (the ``test`` extra), never by hand: a whole document is
``tomli_w.dumps(document)``; ``toml_key`` and ``toml_value`` give one key and one inline
value (for a ``key = value`` line a test writes itself), and every string, key, number and
date in them is tomli-w's own rendering. Only the brackets around an inline array or table
are put here, so that each ``key = value`` stays on one line under its ``[table]`` header
(a test's ``extra`` text, or a line it appends, lands in the table it expects). tomllib reads
back what they write (test_fuzz_config.py checks that on random documents), so a value
reaches greenmon exactly as the test wrote it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Iterable

import tomli_w

# --- One key, one inline value: tomli-w's rendering ---------------------------------------------

_PROBE = " = 0\n"


def toml_key(key: str) -> str:
    """``key`` as a TOML key: bare when it may be, quoted and escaped otherwise (tomli-w's)."""
    line = tomli_w.dumps({key: 0})
    assert line.endswith(_PROBE), line
    return line[:-len(_PROBE)]


def toml_value(value) -> str:
    """One value, inline on one line (tables as inline tables): a scalar as tomli-w writes it on
    the right of ``v = ``; an array or a table item by item, each as tomli-w writes it."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }" \
            if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    line = tomli_w.dumps({"v": value})
    assert line.startswith("v = ") and line.endswith("\n") and line.count("\n") == 1, line
    return line[len("v = "):-1]


def toml_table(header: str, values: Mapping) -> str:
    """``header`` (``[name]`` or ``[[name]]``, as given) then one ``key = value`` line per item."""
    return header + "\n" + "".join(f"{toml_key(key)} = {toml_value(value)}\n" for key, value in values.items())


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
    parts = [toml_table(f"[{toml_key(name)}]", values) for name, values in sections.items()]
    if extra:
        parts.append(extra if extra.endswith("\n") else extra + "\n")
    parts += [toml_table("[[targets]]", target) for target in targets]
    return "\n".join(parts)
