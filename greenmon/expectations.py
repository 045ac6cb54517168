"""``expect_json``: values a JSON body must hold at dotted paths, checked, and read from the config.

A path is keys separated by dots; a number indexes a list (``items.0.state``).
An expected value is a string, a number or a boolean, compared by JSON type:
``true`` does not match ``1``, ``1`` matches ``1.0``. A message names the path
and the expected value, never what the body held (it may be anything).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from greenmon.schema import type_name

_MISSING = object()


def expect_json(value: Any) -> dict[str, str | int | float | bool] | None:
    """The config check: a table of paths to values; nested tables are paths too
    (``{ items.0.state = "UP" }`` in TOML is ``items`` -> ``0`` -> ``state``)."""
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of dotted paths to values, got {type_name(value)}")
    flat: dict[str, Any] = {}
    _flatten(value, "", flat)
    if not flat:
        raise ValueError("must hold at least one path")
    for path, expected in flat.items():
        if not path or any(not part for part in path.split(".")):
            raise ValueError(f"path {path!r} has an empty part")
        if not isinstance(expected, (str, int, float, bool)):
            raise ValueError(f"{path}: the expected value must be a string, a number or a "
                             f"boolean, got {type_name(expected)}")
    return flat


def _flatten(table: dict, prefix: str, out: dict) -> None:
    for key, item in table.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict) and item:
            _flatten(item, path, out)
        else:
            out[path] = item


def check_json(expected: Mapping[str, Any], body: bytes) -> str | None:
    """None when the body holds every expected value; else what is wrong, for the message."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "body is not JSON"
    for path, want in expected.items():
        found = _at(document, path)
        if found is _MISSING:
            return f"{path}: missing (expected {json.dumps(want)})"
        if not _same(found, want):
            kind = _kind(found)
            got = f"a different {kind}" if kind == _kind(want) else f"{_article(kind)} {kind}"
            return f"{path}: expected {json.dumps(want)}, got {got}"
    return None


def json_text(body: bytes, path: str) -> str | None:
    """The value at ``path`` in a JSON body as text (a string as it is, a number or a boolean
    as JSON writes it), or None: not JSON, missing, null, or an object or array."""
    try:
        found = _at(json.loads(body), path)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if isinstance(found, str):
        return found
    if isinstance(found, (bool, int, float)):
        return json.dumps(found)
    return None


def _at(document: Any, path: str) -> Any:
    node = document
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _same(found: Any, want: Any) -> bool:
    if isinstance(want, bool) or isinstance(found, bool):
        return isinstance(want, bool) and isinstance(found, bool) and found is want
    if isinstance(want, (int, float)):
        return isinstance(found, (int, float)) and found == want
    return found == want


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def _article(kind: str) -> str:
    return "an" if kind[0] in "ao" else "a"
