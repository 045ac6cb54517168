"""Tables of invalid configs: in each TOML text the line the error must point at carries a
``# <-`` marker, so the expected line number is read from the text itself and cannot drift
when a case is edited (test_config.py, test_targets.py)."""

from __future__ import annotations

import textwrap

import pytest

from greenmon.config import load_config
from greenmon.schema import ConfigError

MARKER = "# <-"


def marked_line(text: str) -> int | None:
    """1-based number of the line that carries the ``# <-`` marker (None: no line expected)."""
    for number, line in enumerate(text.split("\n"), start=1):
        if MARKER in line:
            return number
    return None


def invalid_case(case_id: str, text: str, key: str, problem: str, **kwargs):
    """A table row: a TOML text (dedented) whose marked line is where the error must point, the
    key the error must name, and a piece of its message."""
    return pytest.param(textwrap.dedent(text).lstrip("\n"), key, problem, id=case_id, **kwargs)


def assert_refused_at_marked_line(path, text: str, key: str, problem: str) -> str:
    """Loading the file at ``path`` (holding ``text``) fails naming the file, the marked line,
    ``key`` and ``problem``; returns the message."""
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    line = marked_line(text)
    where = f"{path}:{line}" if line else f"{path}"
    assert f"{where}: {key}: " in message, message
    assert problem in message, message
    return message
