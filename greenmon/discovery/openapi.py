"""OpenAPI 3 documents -> one target per operation worth checking, and the operations skipped, with why.

Pure: a parsed document and the entry's options in, Found and Skip values
out. An operation becomes a target when its method is asked for, it passes
the path and tag filters, and every required parameter it has (path, query
or header, declared on the path or on the operation, the operation's winning)
can be filled from the document's own ``example``, ``examples`` or the
schema's ``default``. ``$ref`` is followed inside the document only.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

from greenmon.discovery.values import Found, Skip, SourceError

OPERATION_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
MAX_REF_HOPS = 32
_VARIABLE = re.compile(r"\{([^{}]*)\}")
_VERSION = re.compile(r"3\.\d+(\.\d+)?(-[0-9A-Za-z.-]+)?")   # 3.0.3, 3.1.0, 3.1.0-rc1
_MISSING = object()


@dataclass(frozen=True)
class Options:
    name_prefix: str = ""
    methods: frozenset[str] = frozenset({"GET"})
    include_paths: re.Pattern | None = None
    exclude_paths: re.Pattern | None = None
    include_tags: frozenset[str] = frozenset()
    exclude_tags: frozenset[str] = frozenset()
    base_url: str = ""          # "": the document's first servers URL


class _Skipped(Exception):
    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def check_version(document: Any, where: str) -> None:
    """An OpenAPI 3.x document, or SourceError saying what it is instead."""
    if not isinstance(document, dict):
        raise SourceError(f"{where}: not an OpenAPI 3 document (the top level is not a mapping)")
    version = document.get("openapi")
    if version is None:
        if "swagger" in document:
            raise SourceError(f"{where}: swagger {document['swagger']!r} is OpenAPI 2, not 3 "
                              "(convert it, e.g. with swagger2openapi)")
        raise SourceError(f"{where}: not an OpenAPI 3 document (no openapi field)")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise SourceError(f"{where}: openapi {version!r}: not an OpenAPI 3.x document")


def server_url(document: dict, document_url: str, where: str) -> str:
    """The first servers URL with its variables' defaults, resolved against the document's URL
    (no servers: "/", as OpenAPI says)."""
    servers = document.get("servers")
    url = "/"
    if isinstance(servers, list) and servers and isinstance(servers[0], dict) \
            and isinstance(servers[0].get("url"), str):
        server = servers[0]
        variables = server.get("variables") if isinstance(server.get("variables"), dict) else {}

        def default(match: re.Match) -> str:
            variable = variables.get(match.group(1))
            if not isinstance(variable, dict) or "default" not in variable:
                raise SourceError(f"{where}: servers[0].url: variable {{{match.group(1)}}} has no "
                                  "default (give base_url)")
            return str(variable["default"])
        url = _VARIABLE.sub(default, server["url"])
    if not urlsplit(url).scheme:
        if not document_url:
            raise SourceError(f"{where}: the server URL {url!r} is relative and the document is a "
                              "file: give base_url")
        url = urljoin(document_url, url)
    return url


def operations(document: dict, base_url: str, options: Options,
               where: str) -> tuple[list[Found], list[Skip]]:
    """The targets of a checked document (check_version first), and the operations skipped;
    ``base_url``: where its paths are (the entry's base_url, else ``server_url``)."""
    base = base_url.rstrip("/")
    paths = document.get("paths") or {}
    if not isinstance(paths, dict):
        raise SourceError(f"{where}: paths is not a mapping")
    refs = Refs(document)
    found: list[Found] = []
    skipped: list[Skip] = []
    for template, item in paths.items():
        if not isinstance(template, str) or not template.startswith("/"):
            continue   # not a path (OpenAPI allows x- extensions here)
        try:
            item = refs.resolve(item)
        except _Skipped as skip:
            skipped.append(Skip(f"* {template}", skip.reason, skip.kind))
            continue
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in OPERATION_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict) or not _selected(method.upper(), template, operation, options):
                continue
            title = f"{method.upper()} {template}"
            try:
                url, headers = _fill(base, template, shared, operation, refs)
            except _Skipped as skip:
                skipped.append(Skip(title, skip.reason, skip.kind))
                continue
            found.append(Found(options.name_prefix + title, url, method.upper(), headers=headers,
                               origin=title))
    return found, skipped


def _selected(method: str, template: str, operation: dict, options: Options) -> bool:
    if method not in options.methods:
        return False
    if options.include_paths is not None and not options.include_paths.search(template):
        return False
    if options.exclude_paths is not None and options.exclude_paths.search(template):
        return False
    tags = operation.get("tags")
    tags = {t for t in tags if isinstance(t, str)} if isinstance(tags, list) else set()
    if options.include_tags and not tags & options.include_tags:
        return False
    return not tags & options.exclude_tags


class Refs:
    """``$ref`` inside the document ("#/components/parameters/id"); others cannot be followed."""

    def __init__(self, document: Any):
        self.document = document

    def resolve(self, value: Any) -> Any:
        for _ in range(MAX_REF_HOPS + 1):
            if not (isinstance(value, dict) and "$ref" in value):
                return value
            value = self._pointer(value["$ref"])
        raise _Skipped("a $ref chain loops", "$ref that loops")

    def _pointer(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _Skipped(f"$ref {ref!r} points outside the document", "$ref outside the document")
        node = self.document
        for token in ref[1:].split("/")[1:]:
            token = _unquote(token).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise _Skipped(f"$ref {ref!r} is not in the document", "$ref not in the document")
        return node


def _unquote(token: str) -> str:
    if "%" not in token:
        return token
    from urllib.parse import unquote
    return unquote(token)


def _fill(base: str, template: str, shared: Any, operation: dict, refs: Refs) -> tuple[str, dict]:
    """The URL of an operation with its required parameters filled, and the headers it needs."""
    parameters: dict[tuple[str, str], dict] = {}
    for group in (shared, operation.get("parameters") or []):
        if not isinstance(group, list):
            raise _Skipped("parameters is not a list", "invalid parameters")
        for raw in group:
            parameter = refs.resolve(raw)
            if (not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str)
                    or parameter.get("in") not in ("path", "query", "header", "cookie")):
                raise _Skipped("a parameter has no name or no valid in", "invalid parameters")
            parameters[(parameter["name"], parameter["in"])] = parameter   # the operation's wins
    body = refs.resolve(operation.get("requestBody"))
    if isinstance(body, dict) and body.get("required") is True:
        raise _Skipped("it requires a request body", "requires a request body")
    path, query, headers = template, [], {}
    for (name, where), parameter in parameters.items():
        if where != "path" and parameter.get("required") is not True:
            continue
        value = _example(parameter, refs)
        if value is _MISSING:
            raise _Skipped(f"required {where} parameter {name!r} has no example or default",
                           f"a required {where} parameter has no example or default")
        if where == "cookie":
            raise _Skipped(f"required cookie parameter {name!r} (greenmon sends no cookies)",
                           "a required cookie parameter")
        values = value if isinstance(value, list) else [value]
        texts = [_text(item, name) for item in values]
        if where == "path":
            path = path.replace("{" + name + "}", quote(",".join(texts), safe=""))
        elif where == "query":
            query += [(name, text) for text in texts]
        else:
            headers[name] = ",".join(texts)
    left = _VARIABLE.search(path)
    if left:
        raise _Skipped(f"path parameter {left.group(1)!r} is not declared",
                       "a path parameter is not declared")
    url = base + path + ("?" + urlencode(query) if query else "")
    return url, headers


def _example(parameter: dict, refs: Refs) -> Any:
    """example, else the first of examples, else the schema's default (or example)."""
    if parameter.get("example") is not None:
        return parameter["example"]
    examples = parameter.get("examples")
    if isinstance(examples, dict):
        for item in examples.values():
            item = refs.resolve(item)
            if isinstance(item, dict) and item.get("value") is not None:
                return item["value"]
    schema = refs.resolve(parameter.get("schema"))
    if isinstance(schema, dict):
        for key in ("default", "example"):
            if schema.get(key) is not None:
                return schema[key]
        if isinstance(schema.get("examples"), list) and schema["examples"]:
            return schema["examples"][0]
    return _MISSING


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    raise _Skipped(f"the example of parameter {name!r} is not a scalar or a list of scalars",
                   "a parameter example is an object")
