"""The ``[[openapi]]`` and ``[[file_sd]]`` entries: validated at load time, their documents discovered, merged with ``[[targets]]``.

An entry carries its source's own keys and, as defaults for every target it
yields, any target key but ``name`` and ``url`` (and ``method`` for OpenAPI,
whose operations say it). A Source reads its files and turns a document into
what it found (``discover``); fetching a document over HTTP is the network's
(``loading``). ``merge`` builds the targets of every source and puts them
after ``[[targets]]``, refusing names that clash, with each other or with
``[[targets]]``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from greenmon.discovery import file_sd, openapi
from greenmon.discovery.documents import is_url, line_of, parse, read_file
from greenmon.discovery.values import Discovered, Found, Skip, SourceError
from greenmon.files import file_stamp
from greenmon.schema import (ConfigError, Document, Path, dotted, header_name, header_value,
                             non_empty_string, number, string, type_name)
from greenmon.targets import (TARGET_CHECKS, Target, check_address_choice, check_label_name, check_method,
                              check_regex, check_url, first_clash, fit_timeout, link_keys, redact_url)

SOURCE_KINDS = ("openapi", "file_sd")
DEFAULT_REFRESH_S = {"openapi": 300.0, "file_sd": 30.0}
SD_EXTENSIONS = (".json", ".yml", ".yaml")
_MAGIC = re.compile(r"[*?[]")


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"must be an array of strings, got {type_name(value)}")
    return tuple(value)


def _methods(value: Any) -> frozenset[str]:
    methods = _strings(value)
    if not methods:
        raise ValueError("must name at least one method")
    return frozenset(check_method(method) for method in methods)


def _base_url(value: Any) -> str:
    return check_url(value) if string(value) else ""


def _globs(value: Any) -> tuple[str, ...]:
    patterns = _strings(value)
    if not patterns or not all(p.strip() for p in patterns):
        raise ValueError("must be a non-empty array of file paths or globs")
    for pattern in patterns:
        if "\0" in pattern:
            raise ValueError("a file path cannot contain a NUL character")
        if not pattern.lower().endswith(SD_EXTENSIONS):
            raise ValueError(f"{pattern!r}: file_sd files end in .json, .yml or .yaml")
    return patterns


_OWN_CHECKS = {
    "openapi": {"spec": non_empty_string, "base_url": _base_url, "name_prefix": string,
                "methods": _methods, "include_paths": check_regex, "exclude_paths": check_regex,
                "include_tags": _strings, "exclude_tags": _strings,
                "refresh_interval": number(above=0)},
    "file_sd": {"files": _globs, "refresh_interval": number(above=0)},
}
_FLOW = "a flow is a [[targets]] entry: its steps are not discovered"
_FROM_THE_SOURCE = {
    "openapi": {"name": "each operation names its target (name_prefix + \"GET /path\")",
                "url": "each operation's URL comes from the document (base_url sets its start)",
                "method": "each operation has its own method (methods chooses them)",
                "steps": _FLOW},
    "file_sd": {"name": "the file's URL, or its name label, names each target",
                "url": "the file's targets are the URLs", "steps": _FLOW},
}


@dataclass(frozen=True, eq=False)
class Source:
    """One discovery entry. ``key`` is the entry as written (after ${VAR} and paths): a reload
    that keeps it keeps the source's last load and its schedule."""

    index: int
    key: str
    refresh_interval: float
    defaults: Mapping[str, Any]     # target keys, validated (auth resolved)
    timeout: float                  # for fetching the document: the entry's, else monitor's
    verify: bool | str
    kind: ClassVar[str] = ""

    @property
    def label(self) -> str:
        """The ``source`` label of its metrics, and its name in messages: ``openapi[0]``."""
        return f"{self.kind}[{self.index}]"

    @property
    def path(self) -> Path:
        return (self.kind, self.index)

    fetches = False   # read over HTTP (on the event loop) rather than from files (in a thread)
    watches = True    # its files' stamps are polled: a change reads it again


@dataclass(frozen=True, eq=False)
class OpenAPISource(Source):
    spec: str = ""
    options: openapi.Options = openapi.Options()
    kind: ClassVar[str] = "openapi"
    field_name: ClassVar[str] = "spec"

    @property
    def fetches(self) -> bool:   # type: ignore[override]
        return is_url(self.spec)

    @property
    def watches(self) -> bool:   # type: ignore[override]
        return not self.fetches

    @property
    def where(self) -> str:
        return redact_url(self.spec) if self.fetches else self.spec

    def stamp(self) -> Any:
        return None if self.fetches else file_stamp(self.spec)

    def read(self) -> bytes:
        return read_file(self.spec)

    def discover(self, data: bytes, stamp: Any = None) -> Discovered:
        """The document's operations (CPU work: the daemon runs it in a thread)."""
        where = self.where
        document, _ = parse(data, where)
        openapi.check_version(document, where)
        base = self.options.base_url or openapi.server_url(
            document, self.spec if self.fetches else "", where)
        try:
            check_url(base)
        except ValueError as problem:
            raise SourceError(f"{where}: the base URL {redact_url(base)!r} {problem}") from None
        found, skipped = openapi.operations(document, base, self.options, where)
        usable = []
        for item in found:
            problem = _unusable(item)
            if problem is None:
                usable.append(item)
            else:
                skipped.append(Skip(item.origin, problem, problem.split(":")[0]))
        return Discovered(tuple(usable), tuple(skipped), stamp)


def _unusable(item: Found) -> str | None:
    try:
        check_url(item.url)
        for name, value in item.headers.items():
            header_name(name)
            header_value(value)
    except ValueError as problem:
        return f"its URL or a header cannot be sent: {problem}"
    return None


@dataclass(frozen=True, eq=False)
class FileSDSource(Source):
    files: tuple[str, ...] = ()
    kind: ClassVar[str] = "file_sd"
    field_name: ClassVar[str] = "files"

    def matches(self) -> list[str]:
        """The files to read, sorted. A pattern with a wildcard may match nothing (the tool that
        writes the files may not have yet: an empty source, as Prometheus has it), but its folder
        must exist; a plain path must exist (a typo is not an empty source)."""
        out: set[str] = set()
        for pattern in self.files:
            if _MAGIC.search(pattern):
                folder = os.path.dirname(pattern)
                if folder and not _MAGIC.search(folder) and not os.path.isdir(folder):
                    raise SourceError(f"{pattern}: the folder {folder} does not exist")
                out.update(p for p in glob.glob(pattern) if os.path.isfile(p))
            elif not os.path.isfile(pattern):
                raise SourceError(f"{pattern}: no such file")
            else:
                out.add(pattern)
        return sorted(out)

    def stamp(self) -> Any:
        try:
            return tuple((path, file_stamp(path)) for path in self.matches())
        except SourceError:
            return None

    def read(self) -> list[tuple[str, bytes]]:
        return [(path, read_file(path)) for path in self.matches()]

    def discover(self, data: list[tuple[str, bytes]], stamp: Any = None) -> Discovered:
        found: list[Found] = []
        for path, raw in data:
            document, text = parse(raw, path)
            try:
                found += file_sd.groups(document, path, check_url, check_label_name, redact_url)
            except file_sd.EntryError as error:
                line = line_of(text, error.path)
                where = f"{path}:{line}" if line else path
                raise SourceError(f"{where}: {dotted(error.path) or 'the document'}: "
                                  f"{error.problem}") from None
        return Discovered(tuple(found), (), stamp)


# --- the config side -----------------------------------------------------------------------------

def parse_sources(doc: Document, raw: dict, auth: Mapping[str, Any], monitor) -> tuple[Source, ...]:
    sources: list[Source] = []
    for kind in SOURCE_KINDS:
        entries = raw.get(kind, [])
        if not isinstance(entries, list):
            raise doc.error((kind,), f"must be an array of [[{kind}]] tables")
        sources += [_parse_entry(doc, kind, index, entry, auth, monitor)
                    for index, entry in enumerate(entries)]
    return tuple(sources)


def _parse_entry(doc: Document, kind: str, index: int, entry: Any, auth: Mapping[str, Any],
                 monitor) -> Source:
    path: Path = (kind, index)
    if not isinstance(entry, dict):
        raise doc.error(path, f"must be a table, got {type_name(entry)}")
    for key, why in _FROM_THE_SOURCE[kind].items():
        if key in entry:
            raise doc.error(path + (key,), f"not a key of [[{kind}]]: {why}")
    own = _OWN_CHECKS[kind]
    checks = {key: check for key, check in TARGET_CHECKS.items() if key not in _FROM_THE_SOURCE[kind]}
    checks.update(own)
    values = doc.read_table(entry, path, checks)
    mine = {key: values.pop(key) for key in list(values) if key in own}
    link_keys(doc, path, values, auth)
    check_address_choice(doc, path, Target(name="", url="", **values), monitor)
    timeout = values.get("timeout", monitor.timeout)   # fetching the document: not fitted
    fitted = fit_timeout(doc, path, values.get("timeout"), values.get("interval"),
                         monitor.timeout, monitor.interval, "the targets it yields")
    if fitted is not None:
        values["timeout"] = fitted
    common = dict(index=index, key=json.dumps([kind, index, entry], sort_keys=True, default=repr),
                  refresh_interval=mine.pop("refresh_interval", DEFAULT_REFRESH_S[kind]),
                  defaults=values, timeout=timeout,
                  verify=monitor.verification(values.get("verify_tls"), values.get("ca_file")))
    if kind == "file_sd":
        if "files" not in mine:
            raise doc.error(path, "files is required (paths or globs of file_sd files)")
        return FileSDSource(files=mine["files"], **common)
    if "spec" not in mine:
        raise doc.error(path, "spec is required (an OpenAPI 3 document: a file path or an http(s) URL)")
    spec = mine["spec"]
    if is_url(spec):
        try:
            check_url(spec)
        except ValueError as problem:
            raise doc.error(path + ("spec",), str(problem)) from None
    options = openapi.Options(
        name_prefix=mine.get("name_prefix", ""), methods=mine.get("methods", frozenset({"GET"})),
        include_paths=mine.get("include_paths"), exclude_paths=mine.get("exclude_paths"),
        include_tags=frozenset(mine.get("include_tags", ())),
        exclude_tags=frozenset(mine.get("exclude_tags", ())), base_url=mine.get("base_url", ""))
    return OpenAPISource(spec=spec, options=options, **common)


def timeout_fitted(source: Source, raw: dict) -> bool:
    """Whether the source's targets got a timeout the entry did not write (fit_timeout)."""
    return "timeout" in source.defaults and "timeout" not in raw[source.kind][source.index]


def resolve_paths(raw: dict, base_dir: str) -> None:
    """Relative spec files and file_sd globs are taken from the config's folder (URLs stay);
    the target keys of an entry that name files are config._resolve_paths'."""
    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and not os.path.isabs(value) and not is_url(value):
            return os.path.join(base_dir, value)
        return value

    for kind in SOURCE_KINDS:
        entries = raw.get(kind)
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            if "spec" in entry:
                entry["spec"] = absolute(entry["spec"])
            if isinstance(entry.get("files"), list):
                entry["files"] = [absolute(item) for item in entry["files"]]


def build_targets(source: Source, discovered: Discovered) -> list[Target]:
    """The source's targets: what it found, with the entry's target keys as defaults."""
    defaults = source.defaults
    labels, headers = defaults.get("labels") or {}, defaults.get("headers") or {}
    method = defaults.get("method", "GET")
    out = []
    for found in discovered.found:
        values = dict(defaults)
        values["name"], values["url"] = found.name, found.url
        values["method"] = found.method or method
        if found.labels:
            values["labels"] = {**labels, **found.labels}
        if found.headers:
            values["headers"] = {**headers, **found.headers}
        out.append(Target(**values))
    return out


def no_enabled_targets(doc: Document | None, filename: str, sources: tuple[Source, ...]) -> ConfigError:
    """The error of a config that would check nothing (with sources: once they are merged)."""
    if sources:
        return ConfigError(f"{filename}: no enabled targets: neither [[targets]] nor the discovery "
                           f"sources ({', '.join(s.label for s in sources)}) yield one")
    doc = doc or Document.from_text("", filename)
    return doc.error(("targets",), "no enabled targets: add at least one [[targets]] entry")


def merge(config, discovered: Mapping[str, Discovered]):
    """``config`` with the targets of ``[[targets]]`` then of every source (its ``discovered``
    load), its shard kept; ConfigError when two targets have one name or none is enabled.
    CPU work at 10,000 targets: the daemon runs it in a thread."""
    def line(path: Path) -> str:   # for an error message only: it builds the line locator
        number = config.document.locator.line_of(path) if config.document is not None else None
        return f" (line {number})" if number else ""

    def owner(found_where: Any) -> str:
        if isinstance(found_where, int):
            return f"targets[{found_where}]{line(('targets', found_where))}"
        source, found = found_where
        return f"{source.label}{line(source.path)}: {found.origin}"

    # each target, and where it came from: its [[targets]] index, or (source, found)
    targets = list(config.static_targets)
    owners: list[Any] = list(range(len(targets)))
    for source in config.sources:
        load_ = discovered[source.key]
        targets += build_targets(source, load_)
        owners += [(source, found) for found in load_.found]
    clash = first_clash((target.name, where) for target, where in zip(targets, owners))
    if clash is not None:
        name, first, second = clash
        raise ConfigError(f"{config.source}: target name {name!r} comes from both "
                          f"{owner(first)} and {owner(second)}: names must be "
                          "unique (a name_prefix or a name label tells them apart)")
    if not any(t.enabled for t in targets):
        raise no_enabled_targets(config.document, config.source, config.sources)
    merged = dataclasses.replace(config, targets=tuple(targets), discovered=dict(discovered))
    return merged.only_shard(*config.shard) if config.shard[1] > 1 else merged


def merge_one(config, key: str, discovered: Discovered):
    """``config`` with one source's new load, or None when that load found what the last did."""
    if config.discovered.get(key) == discovered:
        return None
    return merge(config, {**config.discovered, key: discovered})


def describe(config) -> list[str]:
    """For --check-config: what each source yields, and the operations skipped, by reason."""
    lines = []
    for source in config.sources:
        load_ = config.discovered.get(source.key)
        if load_ is None:
            continue
        line = f"{source.label}: {len(load_.found)} targets"
        if load_.skipped:
            by_kind: dict[str, list[Skip]] = {}
            for skip in load_.skipped:
                by_kind.setdefault(skip.kind or skip.reason, []).append(skip)
            reasons = []
            for kind, skips in sorted(by_kind.items(), key=lambda item: -len(item[1])):
                shown = ", ".join(s.operation for s in skips[:3]) + (", ..." if len(skips) > 3 else "")
                reasons.append(f"{kind} ({len(skips)}: {shown})")
            line += f", {len(load_.skipped)} operations skipped: " + "; ".join(reasons)
        lines.append(line)
    return lines
