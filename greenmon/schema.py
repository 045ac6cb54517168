"""Validation primitives for the config: typed checks whose errors name file, line and key.

config, targets and auth all validate through this module, so every config
error reads the same way: ``greenmon.toml:12: targets[2].timeout: must be > 0``.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from greenmon.tomlpos import KeyLocator

Path = tuple  # key path inside the document, e.g. ("targets", 2, "timeout")
Check = Callable[[Any], Any]  # returns the accepted value or raises ValueError(problem)

_ENV_REF = re.compile(r"\$\{([^}]*)\}")


class ConfigError(Exception):
    """The configuration is unusable; the message says where and why (exit code 2)."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")   # a TOML bare key: shown as it is


def dotted(path: Path) -> str:
    """("targets", 2, "timeout") -> "targets[2].timeout"; a key that is not bare is quoted
    with its escapes (``labels."team\\n"``), so a message stays one line and shows the key."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            part = part if _BARE_KEY.fullmatch(str(part)) else json.dumps(str(part))
            out += f".{part}" if out else part
    return out


@dataclass(frozen=True, repr=False)
class Document:
    """A config file being validated: its name and where each key was written."""

    filename: str
    text: str

    @classmethod
    def from_text(cls, text: str, filename: str) -> "Document":
        return cls(filename, text)

    @functools.cached_property
    def locator(self) -> KeyLocator:
        """Built on the first error only: a valid 10,000-target file never pays for it."""
        return KeyLocator(self.text)

    def error(self, path: Path, problem: str) -> ConfigError:
        line = self.locator.line_of(path)
        where = f"{self.filename}:{line}" if line else self.filename
        return ConfigError(f"{where}: {dotted(path)}: {problem}" if path else f"{where}: {problem}")

    def read_table(self, raw: Any, path: Path, checks: Mapping[str, Check]) -> dict[str, Any]:
        """Validate a table against its checks; unknown keys are errors."""
        if not isinstance(raw, dict):
            raise self.error(path, f"must be a table, got {type_name(raw)}")
        values = {}
        for key, value in raw.items():
            if key not in checks:
                known = ", ".join(sorted(checks))
                raise self.error(path + (key,), f"unknown key (known keys: {known})")
            values[key] = self.check(value, path + (key,), checks[key])
        return values

    def check(self, value: Any, path: Path, check: Check) -> Any:
        try:
            return check(value)
        except ValueError as problem:
            raise self.error(path, str(problem)) from None


SECRET_MASK = "***"


def interpolate(raw: Any, doc: Document, path: Path = (), environ: Mapping[str, str] | None = None,
                mask: str | None = None) -> Any:
    """Replace ${VAR} in every string value; a missing variable is a config error. With
    ``mask``, each ${VAR} becomes the mask instead: the value as it may be shown."""
    env = os.environ if environ is None else environ
    if isinstance(raw, str):
        def substitute(match: re.Match) -> str:
            name = match.group(1)
            if name not in env:
                raise doc.error(path, f"environment variable ${{{name}}} is not set")
            return env[name] if mask is None else mask
        return _ENV_REF.sub(substitute, raw)
    if isinstance(raw, dict):
        return {key: interpolate(value, doc, path + (key,), env, mask) for key, value in raw.items()}
    if isinstance(raw, list):
        return [interpolate(value, doc, path + (i,), env, mask) for i, value in enumerate(raw)]
    return raw


def interpolated_values(raw: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The (non-empty) environment values that ${VAR} references in ``raw`` bring in."""
    env = os.environ if environ is None else environ
    return [env[name] for name in _ENV_REF.findall(raw) if env.get(name)]


def type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


# --- checks -----------------------------------------------------------------

def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {type_name(value)}")
    return value


def string(value: Any) -> str:
    """A string that is Unicode text: a JSON document's "\\ud800" escape yields a lone
    surrogate, which no output (UTF-8 logs, /metrics, JSON) can carry."""
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type_name(value)}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"is not Unicode text (a lone surrogate at character {error.start})") from None
    return value


def non_empty_string(value: Any) -> str:
    if not string(value).strip():
        raise ValueError("must not be empty")
    return value


def integer(minimum: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {type_name(value)}")
        if value < minimum:
            raise ValueError(f"must be >= {minimum}, got {value}")
        return value
    return check


def number(*, above: float | None = None, at_least: float | None = None) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {type_name(value)}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        if above is not None and value <= above:
            raise ValueError(f"must be > {above:g}, got {value:g}")
        if at_least is not None and value < at_least:
            raise ValueError(f"must be >= {at_least:g}, got {value:g}")
        return value
    return check


def choice(*allowed: str) -> Check:
    """One of ``allowed``, written as a string."""
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            shown = repr(value) if isinstance(value, str) else type_name(value)
            raise ValueError(f"must be one of {', '.join(repr(a) for a in allowed)}, got {shown}")
        return value
    return check


def open_fraction(value: Any) -> float:
    """A number strictly between 0 and 1 (an availability objective)."""
    number_ = number()(value)
    if not 0 < number_ < 1:
        raise ValueError(f"must be between 0 and 1 (exclusive), got {number_:g}")
    return number_


def string_table(key_check: Check | None = None, value_check: Check = string) -> Check:
    def check(value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ValueError(f"must be a table of strings, got {type_name(value)}")
        out = {}
        for key, item in value.items():
            if key_check is not None:
                key_check(key)
            try:
                out[key] = value_check(item)
            except ValueError as problem:
                raise ValueError(f"{key}: {problem}") from None
        return out
    return check


def file_path(value: Any) -> str:
    path = string(value)
    if "\0" in path:
        raise ValueError("a file path cannot contain a NUL character")
    return path


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")   # RFC 9110 5.6.2: a field name


def header_name(value: Any) -> str:
    """An HTTP header name: an RFC 9110 token (no separator, space or control character)."""
    name = string(value)
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"is not a valid HTTP header name: {name!r}")
    return name


def header_value(value: Any) -> str:
    """One line that HTTP/1.1 can carry: latin-1, no CR, LF or NUL, at most 8192 characters."""
    text = string(value)
    if any(c in text for c in "\r\n\0") or len(text) > 8192:
        raise ValueError("must be one line of at most 8192 characters")
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError("HTTP header values must be latin-1 text (use ASCII)") from None
    return text


def optional_file(value: Any) -> str:
    path = file_path(value)
    if path and not os.path.isfile(path):
        raise ValueError(f"file not found: {path}")
    return path


_LOCATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")


def location_name(value: Any) -> str:
    """Where an instance probes from, as a label value: "" (none given) or a name such as
    ``eu-west-1``: letters, digits, '_', '.', ':' and '-', at most 63 characters (a DNS
    label's length), starting with a letter or digit: a name that needs no quoting in
    PromQL strings, YAML, Alertmanager matchers or a shell (ExecStart)."""
    name = string(value)
    if name and not _LOCATION.fullmatch(name):
        raise ValueError("must be a name of at most 63 letters, digits, '_', '.', ':' or '-' "
                         f"that starts with a letter or digit, such as \"eu-west-1\"; got {name[:80]!r}")
    return name


def listen_address(value: Any) -> str:
    host, _, port = string(value).rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT with a port in 1-65535, got {value!r}")
    return value


def buckets(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty array of numbers")
    out = tuple(number(above=0)(item) for item in value)
    if list(out) != sorted(set(out)):
        raise ValueError("must be strictly increasing")
    return out
