"""Discovery documents: read from a file (fetched over HTTP(S) by ``loading``), parsed as JSON or YAML.

Parsing runs in a thread (``cooperative.off_loop``) in the daemon, and is cut
so that the thread lets go of the GIL often: a 10 MB document parsed by one
C call (``json.loads``, libyaml's composer) would keep the event loop that
times checks waiting for the GIL for the whole parse. JSON is decoded one
element at a time down to SLICE_DEPTH levels (each element by the C
decoder); YAML is read as libyaml's events, one C call per event, and
composed in Python. Between two calls the interpreter hands the GIL to the
loop when it asks (every 5 ms at most).

Errors are SourceError naming the document and, where the parser says, its
line. ``line_of`` finds the line of a key path for errors found after
parsing (it parses again: only on the error path).
"""

from __future__ import annotations

import json
import re
from json.decoder import JSONDecodeError, scanstring
from typing import Any

import yaml

from greenmon.discovery.values import SourceError

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024   # a fetched document larger than this is refused
SLICE_DEPTH = 4                         # JSON containers decoded element by element, from the top

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()

try:   # libyaml: events in C, composed in Python (the GIL is let go between events)
    from yaml._yaml import CParser as _EventSource

    class _Loader(yaml.composer.Composer, _EventSource, yaml.constructor.SafeConstructor,
                  yaml.resolver.Resolver):
        def __init__(self, stream):
            _EventSource.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _LOCATOR = yaml.CSafeLoader
except ImportError:   # pragma: no cover - PyYAML without libyaml: all Python, slower
    _Loader = yaml.SafeLoader
    _LOCATOR = yaml.SafeLoader


# --- reading -----------------------------------------------------------------------------------

def is_url(spec: str) -> bool:
    return spec[:7].lower() == "http://" or spec[:8].lower() == "https://"


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as error:
        raise SourceError(f"{path}: cannot read: {error.strerror or error}") from None
    if len(data) > MAX_DOCUMENT_BYTES:
        raise SourceError(f"{path}: larger than {MAX_DOCUMENT_BYTES} bytes")
    return data


# --- parsing -----------------------------------------------------------------------------------

def format_of(where: str, data: bytes) -> str:
    """"json" or "yaml": by the file name's extension, else by the first character."""
    lowered = where.lower().split("?", 1)[0]
    if lowered.endswith(".json"):
        return "json"
    if lowered.endswith((".yaml", ".yml")):
        return "yaml"
    start = data.lstrip()[:1]
    return "json" if start in (b"{", b"[") else "yaml"


def decode(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SourceError(f"{where}: not UTF-8 text (byte {error.start})") from None
    return text[1:] if text.startswith("\ufeff") else text


def parse(data: bytes, where: str, kind: str | None = None) -> tuple[Any, str]:
    """The document and its text; SourceError with the line of a syntax error."""
    kind = kind or format_of(where, data)
    text = decode(data, where)
    try:
        if kind == "json":
            return loads_sliced(text), text
        return yaml.load(text, Loader=_Loader), text
    except JSONDecodeError as error:
        raise SourceError(f"{where}:{error.lineno}: JSON syntax error: {error.msg} "
                          f"(column {error.colno})") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(part for part in (error.context, error.problem) if part)
        raise SourceError(f"{where}{line}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise SourceError(f"{where}: YAML error: {type(error).__name__}") from None
    except RecursionError:
        raise SourceError(f"{where}: nested too deeply") from None


def loads_sliced(text: str, depth: int = SLICE_DEPTH) -> Any:
    """json.loads, with the top ``depth`` levels of containers decoded one element at a time."""
    value, end = _value(text, _WS.match(text, 0).end(), depth)
    end = _WS.match(text, end).end()
    if end != len(text):
        raise JSONDecodeError("Extra data", text, end)
    return value


def _value(text: str, pos: int, depth: int) -> tuple[Any, int]:
    start = text[pos:pos + 1]
    if depth > 0 and start == "{":
        return _object(text, pos, depth)
    if depth > 0 and start == "[":
        return _array(text, pos, depth)
    return _DECODER.raw_decode(text, pos)


def _object(text: str, pos: int, depth: int) -> tuple[dict, int]:
    out: dict = {}
    pos = _WS.match(text, pos + 1).end()
    if text[pos:pos + 1] == "}":
        return out, pos + 1
    while True:
        if text[pos:pos + 1] != '"':
            raise JSONDecodeError("Expecting property name enclosed in double quotes", text, pos)
        key, pos = scanstring(text, pos + 1)
        pos = _WS.match(text, pos).end()
        if text[pos:pos + 1] != ":":
            raise JSONDecodeError("Expecting ':' delimiter", text, pos)
        pos = _WS.match(text, pos + 1).end()
        out[key], pos = _value(text, pos, depth - 1)
        pos = _WS.match(text, pos).end()
        delimiter = text[pos:pos + 1]
        if delimiter == "}":
            return out, pos + 1
        if delimiter != ",":
            raise JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _WS.match(text, pos + 1).end()


def _array(text: str, pos: int, depth: int) -> tuple[list, int]:
    out: list = []
    pos = _WS.match(text, pos + 1).end()
    if text[pos:pos + 1] == "]":
        return out, pos + 1
    while True:
        item, pos = _value(text, pos, depth - 1)
        out.append(item)
        pos = _WS.match(text, pos).end()
        delimiter = text[pos:pos + 1]
        if delimiter == "]":
            return out, pos + 1
        if delimiter != ",":
            raise JSONDecodeError("Expecting ',' delimiter", text, pos)
        pos = _WS.match(text, pos + 1).end()


def line_of(text: str, path: tuple) -> int | None:
    """The 1-based line of the node at ``path`` (keys and list indices), or of the nearest
    enclosing node that exists; None if the text cannot be read as YAML (JSON is YAML here)."""
    try:
        node = yaml.compose(text, Loader=_LOCATOR)
    except (yaml.YAMLError, RecursionError, ValueError):
        return None
    if node is None:
        return None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, child in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    node = child
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            break
    return node.start_mark.line + 1
