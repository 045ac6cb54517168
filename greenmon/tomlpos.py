"""Line numbers for keys of a TOML document, since tomllib reports none.

This is not a parser: tomllib has already accepted the document. It only
walks the lines, following table headers, to point an error message at the
line where a key (or, failing that, its table) was written.
"""

from __future__ import annotations

import re
import tomllib

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_PART = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_\-]+)"""
_KEY = re.compile(rf"^\s*({_PART}(?:\s*\.\s*{_PART})*)\s*=(.*)$")


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':   # escapes: tomllib reads them
        try:
            return tomllib.loads(f"k = {name}")["k"]
        except tomllib.TOMLDecodeError:
            return name[1:-1]
    if len(name) >= 2 and name[0] == name[-1] == "'":
        return name[1:-1]
    return name


def _split_dotted(name: str) -> tuple[str, ...]:
    return tuple(_unquote(part) for part in re.findall(_PART, name))


def _opens_multiline_string(value: str) -> str | None:
    """The closing delimiter if ``value`` starts a multi-line string left open on its line."""
    value = value.lstrip()
    for quote in ('"""', "'''"):
        if value.startswith(quote) and quote not in value[3:]:
            return quote
    return None


class KeyLocator:
    """Maps key paths such as ("targets", 2, "timeout") to 1-based lines."""

    def __init__(self, text: str):
        self._lines: dict[tuple, int] = {}
        array_counts: dict[tuple, int] = {}
        table: tuple = ()
        closing: str | None = None  # inside a multi-line string until this delimiter
        # split("\n"), not splitlines(): TOML allows U+2028, \f and friends inside a line.
        for number, line in enumerate(text.split("\n"), start=1):
            if closing is not None:
                if closing in line:
                    closing = None
                continue
            header = _HEADER.match(line)
            if header:
                path = _split_dotted(header.group(2))
                if header.group(1) == "[[":
                    index = array_counts.get(path, 0)
                    array_counts[path] = index + 1
                    table = path + (index,)
                else:
                    table = self._with_indices(path, array_counts)
                self._lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                parts = _split_dotted(key.group(1))
                for end in range(1, len(parts) + 1):
                    self._lines.setdefault(table + parts[:end], number)
                closing = _opens_multiline_string(key.group(2))

    @staticmethod
    def _with_indices(path: tuple, array_counts: dict[tuple, int]) -> tuple:
        """[targets.headers] after [[targets]] belongs to the latest targets entry."""
        out: tuple = ()
        plain: tuple = ()
        for part in path:
            out += (part,)
            plain += (part,)
            if plain in array_counts:
                out += (array_counts[plain] - 1,)
        return out

    def line_of(self, path: tuple) -> int | None:
        """The line of the key, else of the nearest enclosing table that has one."""
        path = tuple(path)
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None
