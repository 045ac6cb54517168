"""Line numbers for keys of a TOML document, since tomllib reports none.

This is not a parser: tomllib has already accepted the document. It only
walks the lines, following table headers, to point an error message at the
line where a key (or, failing that, its table) was written.
"""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*[.=]""")


def _unquote(name: str) -> str:
    name = name.strip()
    if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
        return name[1:-1]
    return name


def _split_dotted(name: str) -> tuple[str, ...]:
    return tuple(_unquote(part) for part in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', name))


class KeyLocator:
    """Maps key paths such as ("targets", 2, "timeout") to 1-based lines."""

    def __init__(self, text: str):
        self._lines: dict[tuple, int] = {}
        array_counts: dict[tuple, int] = {}
        table: tuple = ()
        in_multiline = False
        for number, line in enumerate(text.splitlines(), start=1):
            # Skip the inside of multi-line strings so their lines are not read as keys.
            if in_multiline:
                if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                    in_multiline = False
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
                self._lines.setdefault(table + (_unquote(key.group(1)),), number)
                if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                    in_multiline = True

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
