"""The target model: one interface to watch, validated from a [[targets]] entry."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from greenmon.auth import AuthSource, OAuth2Source
from greenmon.certfiles import ca_file, check_client_cert
from greenmon.expectations import expect_json
from greenmon.schema import (SECRET_MASK, ConfigError, Document, Path, boolean, choice, dotted, file_path,
                             header_name, header_value, non_empty_string, number, open_fraction,
                             optional_file, string, string_table, type_name)
from greenmon.settings import ADDRESS_MODES, IP_VERSIONS
from greenmon.urls import redact_url, unsendable

DEFAULT_EXPECT_STATUS = ("2xx",)
_METHOD = re.compile(r"[A-Z]+")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")   # a Prometheus label name (fullmatch)
RESERVED_LABELS = frozenset({"target", "url", "method", "class", "le", "version", "instance", "job"})
_STATUS_CLASS = re.compile(r"([1-5])xx")


@dataclass(frozen=True, slots=True)
class StatusMatcher:
    """Expected status codes and classes ("2xx")."""

    codes: frozenset[int] = frozenset()
    classes: frozenset[int] = frozenset({2})

    def __contains__(self, status: int) -> bool:
        return status in self.codes or status // 100 in self.classes


HeaderRules = tuple[tuple[str, re.Pattern], ...]


@dataclass(frozen=True, slots=True)
class Extract:
    """A variable a flow step reads from its response: ``json`` (a dotted path), ``header``
    (a name) or ``regex`` (its first group, else the whole match)."""

    variable: str
    source: str
    argument: str | re.Pattern


@dataclass(frozen=True, slots=True)
class FlowStep:
    """One request of a flow: what to send and expect (a Target of the request keys, named
    for the step) and what to read from its response."""

    request: "Target"
    extract: tuple[Extract, ...] = ()
    templated: bool = False   # its url, a header value or its body uses {{variables}}


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    expect_status: StatusMatcher = StatusMatcher()
    expect_body: re.Pattern | None = None
    reject_body: re.Pattern | None = None
    timeout: float | None = None      # None: monitor.timeout
    interval: float | None = None     # None: monitor.interval (the daemon's schedule)
    verify_tls: bool | None = None    # None: monitor.verify_tls
    ca_file: str | None = None        # None: monitor.ca_file
    min_cert_days: float | None = None  # None: monitor.min_cert_days
    slo_availability: float | None = None  # None: monitor.slo_availability
    slo_window_days: float | None = None   # None: monitor.slo_window_days
    degraded_latency: float | None = None  # None: monitor.degraded_latency (0: off)
    addresses: str | None = None      # None: monitor.addresses ("first" or "all")
    ip_version: str | None = None     # None: monitor.ip_version ("any", "4" or "6")
    expect_json: Mapping[str, str | int | float | bool] | None = None
    expect_header: HeaderRules = ()   # (name, pattern): present, the value matching
    reject_header: HeaderRules = ()   # (name, pattern): absent, or not matching
    proxy: str | None = None          # None: monitor.proxy ("": none, even if the monitor has one)
    proxy_env: bool | None = None     # None: monitor.proxy_env
    follow_redirects: bool | None = None  # None: monitor.follow_redirects
    client_cert: str | None = None    # None: monitor.client_cert (with client_key)
    client_key: str | None = None
    auth: AuthSource | OAuth2Source | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    shown_url: str | None = None      # the URL with its ${VAR} values masked, if it had any
    steps: tuple[FlowStep, ...] = ()   # a flow's requests, in order (flows.py); () for one request

    @property
    def display_url(self) -> str:
        """The URL without a password in its user info, and with what ${VAR} brought in
        masked (safe to print and export)."""
        return redact_url(self.shown_url or self.url)

    def shard_hash(self) -> int:
        """Stable across processes and versions (never Python's hash())."""
        return int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:8], "big")


def check_url(value: Any) -> str:
    """Config check: an http(s) URL with a host that can be sent as written (else ValueError,
    whose message shows the URL without its password)."""
    url = non_empty_string(value)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as problem:
        raise ValueError(f"is not a valid URL: {problem}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"scheme must be http or https, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise ValueError(f"has no host: {redact_url(url)!r}")
    if port == 0:
        raise ValueError("port must be in 1-65535")
    if any(c in url for c in " \r\n\t\0"):
        raise ValueError("must not contain whitespace")
    problem = unsendable(url)
    if problem:
        raise ValueError(f"{problem}: {redact_url(url)!r}")
    return url


def first_clash(named: Iterable[tuple[str, Any]]) -> tuple[str, Any, Any] | None:
    """The first name given twice, with where it came from first and second; None when every
    name is unique (target names must be: a name is a target's identity everywhere)."""
    seen: dict[str, Any] = {}
    for name, where in named:
        if name in seen:
            return name, seen[name], where
        seen[name] = where
    return None


def proxy_url(value: Any) -> str:
    """A proxy: http:// or https://, a host and a port ("" for none)."""
    url = string(value)
    if not url:
        return url
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError as problem:
        raise ValueError(f"is not a valid proxy URL: {problem}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be http://host:port or https://host:port, got {redact_url(url)!r}")
    return url


def check_client_cert_pair(doc: Document, path: Path, cert: str | None, key: str | None) -> None:
    """client_cert and client_key go together, and must load as a pair (config errors name
    the key)."""
    if not cert and not key:
        return
    if not cert or not key:
        missing = "client_key" if cert else "client_cert"
        raise doc.error(path + (missing,), "is required with "
                                           f"{'client_cert' if cert else 'client_key'}")
    problem = check_client_cert(cert, key)
    if problem:
        raise doc.error(path + ("client_key",), problem)


def link_keys(doc: Document, path: Path, values: dict, auth: Mapping[str, Any]) -> None:
    """What the keys of a target's table (or of a discovery entry, for the targets it yields)
    must agree on: client_cert with client_key, body with body_file (whose text takes the
    place of ``body``), and ``auth`` with a defined [auth.NAME], the source that takes its
    place in ``values``."""
    check_client_cert_pair(doc, path, values.get("client_cert"), values.get("client_key"))
    if "body_file" in values:
        if "body" in values:
            raise doc.error(path + ("body_file",), "give body or body_file, not both")
        values["body"] = _read_body_file(doc, path, values.pop("body_file"))
    if "auth" in values:
        if values["auth"] not in auth:
            raise doc.error(path + ("auth",), f"no [auth.{values['auth']}] table is defined")
        values["auth"] = auth[values["auth"]]


def fit_timeout(doc: Document, path: Path, timeout: float | None, interval: float | None,
                default_timeout: float, default_interval: float, what: str) -> float | None:
    """The timeout of a table's checks (a [[targets]] entry, a discovery entry, [monitor]),
    fitted as Prometheus fits ``scrape_timeout``: one left unset is the default, or the
    interval when that is shorter (returned; None when nothing was fitted). One that is set
    must not be longer than the interval: its check could still run when it is due again
    (retries may still take longer: a turn that falls due meanwhile is skipped and counted).
    The error names the key that was written, the interval's first."""
    effective = interval if interval is not None else default_interval
    if timeout is None:
        return effective if effective < default_timeout else None
    if effective < timeout:
        raise doc.error(path + ("interval" if interval is not None else "timeout",),
                        f"interval {effective:g} s is shorter than the timeout {timeout:g} s of "
                        f"{what}: its check could still run when it is due again (make interval "
                        ">= timeout, or leave timeout unset: it then fits the interval)")
    return None


def check_address_choice(doc: Document, path: Path | None, target: Target, monitor) -> None:
    """``addresses = "all"`` and an ``ip_version`` pick the addresses greenmon connects to:
    not possible through a proxy (it resolves the name), nor for a flow (its steps share one
    session). The error names the key that was written, in the table at ``path`` (a
    [[targets]] entry, or a discovery entry whose targets take its keys). ``path`` None:
    [monitor]'s own choice against its own proxy (``target`` stands for any target)."""
    all_addresses = (target.addresses or monitor.addresses) == "all"
    one_family = (target.ip_version or monitor.ip_version) != "any"
    if not (all_addresses or one_family):
        return
    key = "addresses" if all_addresses else "ip_version"
    written = path is not None and getattr(target, key) is not None
    where = path + (key,) if written else ("monitor", key)
    what = f'{key} = "{getattr(target, key) or getattr(monitor, key)}"'
    who = "[monitor]" if path is None else dotted(path) if not target.name else f"target {target.name!r}"
    if target.steps and all_addresses:
        raise doc.error(where, f"{what} is for a target of one request, not a flow "
                        f"({who}): its steps share one session")
    proxied = (monitor.proxy if target.proxy is None else target.proxy) or (
        monitor.proxy_env if target.proxy_env is None else target.proxy_env)
    if proxied:
        raise doc.error(where, f"{what} cannot be kept through a proxy, which resolves the name "
                        f"itself ({who})")


def _method(value: Any) -> str:
    method = non_empty_string(value).upper()
    if not _METHOD.fullmatch(method):
        raise ValueError(f"is not an HTTP method: {value!r}")
    return method


def is_label_name(name: object) -> bool:
    """A Prometheus label name that is not Prometheus' own (``__``)."""
    return type(name) is str and LABEL_NAME.fullmatch(name) is not None and not name.startswith("__")


def is_target_label(name: object) -> bool:
    """A label a target may carry: a label name, none of greenmon's own (RESERVED_LABELS).
    The exposition applies it again (store.exported_target)."""
    return is_label_name(name) and name not in RESERVED_LABELS


def _label_name(name: str) -> None:
    if not is_target_label(name):
        raise ValueError(f"{name!r} is not a usable label name (Prometheus names, not {', '.join(sorted(RESERVED_LABELS))})")


def _expect_status(value: Any) -> StatusMatcher:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty array of codes (200) or classes (\"2xx\"), got {type_name(value)}")
    codes, classes = set(), set()
    for item in value:
        if isinstance(item, str) and _STATUS_CLASS.fullmatch(item.lower()):
            classes.add(int(item[0]))
        elif isinstance(item, str) and item.isascii() and item.isdigit():
            item = int(item)
        if isinstance(item, int) and not isinstance(item, bool):
            if not 100 <= item <= 599:
                raise ValueError(f"status code must be in 100-599, got {item}")
            codes.add(item)
        elif not (isinstance(item, str) and _STATUS_CLASS.fullmatch(item.lower())):
            raise ValueError(f"{item!r} is neither a status code nor a class like \"2xx\"")
    return StatusMatcher(frozenset(codes), frozenset(classes))


def _regex(value: Any) -> re.Pattern | None:
    text = string(value)
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as problem:
        raise ValueError(f"is not a valid regular expression: {problem}") from None


def _header_rules(value: Any) -> HeaderRules:
    """A table of response header name to a regular expression searched in its value."""
    table = string_table(header_name)(value)
    rules = []
    for name, pattern in table.items():
        try:
            rules.append((name, re.compile(pattern)))
        except re.error as problem:
            raise ValueError(f"{name}: is not a valid regular expression: {problem}") from None
    return tuple(rules)


MAX_BODY_FILE_BYTES = 16 * 1024 * 1024


def _read_body_file(doc: Document, path: Path, file: str) -> str:
    """The request body from ``body_file``, read now (load, reload); errors name the key."""
    key = path + ("body_file",)
    try:
        with open(file, "rb") as handle:
            data = handle.read(MAX_BODY_FILE_BYTES + 1)
    except OSError as error:
        raise doc.error(key, f"cannot read {file}: {error.strerror or error}") from None
    if len(data) > MAX_BODY_FILE_BYTES:
        raise doc.error(key, f"{file} is larger than {MAX_BODY_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise doc.error(key, f"{file} is not UTF-8 text (byte {error.start})") from None


_CHECKS = {
    "name": non_empty_string,
    "url": check_url,
    "method": _method,
    "headers": string_table(header_name, header_value),
    "body": string,
    "body_file": file_path,
    "expect_status": _expect_status,
    "expect_body": _regex,
    "reject_body": _regex,
    "timeout": number(above=0),
    "interval": number(above=0),
    "verify_tls": boolean,
    "ca_file": ca_file,
    "min_cert_days": number(at_least=0),
    "slo_availability": open_fraction,
    "slo_window_days": number(above=0),
    "degraded_latency": number(at_least=0),
    "addresses": choice(*ADDRESS_MODES),
    "ip_version": choice(*IP_VERSIONS),
    "expect_json": expect_json,
    "expect_header": _header_rules,
    "reject_header": _header_rules,
    "proxy": proxy_url,
    "proxy_env": boolean,
    "follow_redirects": boolean,
    "client_cert": optional_file,
    "client_key": optional_file,
    "auth": non_empty_string,
    "labels": string_table(_label_name),
    "enabled": boolean,
}


def parse_target(doc: Document, raw: Any, index: int, auth: Mapping[str, AuthSource | OAuth2Source],
                 shown: tuple[str, list[str]] | None = None) -> Target:
    """``shown``: the URL with its ${VAR} values masked, and those values (config.py)."""
    path: Path = ("targets", index)
    try:
        values = doc.read_table(raw, path, _CHECKS)
    except ConfigError as error:
        message = str(error)
        if shown and f"{dotted(path + ('url',))}:" in message:   # it may quote the URL
            for secret in shown[1]:
                message = message.replace(secret, SECRET_MASK)
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name:
            raise ConfigError(f"{message} (target {name!r})") from None
        raise ConfigError(message) from None
    if "url" not in values:
        raise doc.error(path, "url is required")
    link_keys(doc, path, values, auth)
    values.setdefault("method", "GET")
    if shown is not None:
        values["shown_url"] = shown[0]
    values.setdefault("name", f"{values['method']} {redact_url(values.get('shown_url') or values['url'])}")
    return Target(**values)


# The checks other config tables reuse (discovery entries and what their sources yield).
TARGET_CHECKS = _CHECKS
check_method = _method
check_regex = _regex
check_label_name = _label_name
