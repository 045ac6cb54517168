"""A target of several steps (SPEC 14): ``[[targets.steps]]`` parsed and checked at load.

A flow is one target whose check sends several requests in order: log in,
then call with the token. Each step takes the per-request target keys (the
flow's own are their defaults), a ``name`` and ``extract``: variables read
from its response (``json:PATH``, ``header:NAME``, ``regex:PATTERN``) that a
later step uses as ``{{name}}`` in its ``url``, header values and ``body``.
Everything that can be known from the file is refused here, naming the step,
the key and the line: a variable used before a step extracts it, or never
extracted; an unknown extract source; two steps with one name; a flow with a
``url`` of its own. Extracted values exist only while a check runs.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from greenmon.auth import AuthSource, OAuth2Source
from greenmon.schema import Document, Path, header_name, non_empty_string, type_name
from greenmon.targets import (TARGET_CHECKS, Extract, FlowStep, Target, check_regex, link_keys,
                              redact_url)

# The keys a step takes: those of one request (the flow's own are their defaults).
REQUEST_KEYS = ("url", "method", "headers", "body", "body_file", "expect_status", "expect_body",
                "reject_body", "expect_json", "expect_header", "reject_header", "timeout", "auth",
                "verify_tls", "ca_file", "proxy", "client_cert", "client_key", "follow_redirects")
EXTRACT_SOURCES = ("json", "header", "regex")
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
VARIABLE_USE = re.compile(r"\{\{\s*([^{}\s]*)\s*\}\}")   # {{name}} in a url, header or body


def _name(value: Any) -> str:
    name = non_empty_string(value)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
        raise ValueError(f"must be letters, digits, _ . - (at most 64), got {name!r}")
    return name


def _extract(value: Any) -> tuple[Extract, ...]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a table of variable = \"source:argument\", got {type_name(value)}")
    out = []
    for variable, spec in value.items():
        if not isinstance(variable, str) or not VARIABLE.fullmatch(variable):
            raise ValueError(f"{variable!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if not isinstance(spec, str) or ":" not in spec:
            raise ValueError(f"{variable}: must be json:PATH, header:NAME or regex:PATTERN")
        source, _, argument = spec.partition(":")
        if source not in EXTRACT_SOURCES:
            raise ValueError(f"{variable}: unknown source {source!r} (known: {', '.join(EXTRACT_SOURCES)})")
        if not argument:
            raise ValueError(f"{variable}: {source}: needs what to read")
        try:
            if source == "header":
                header_name(argument)
            elif source == "regex":
                argument = check_regex(argument)
        except ValueError as problem:
            raise ValueError(f"{variable}: {problem}") from None
        out.append(Extract(variable, source, argument))
    return tuple(out)


STEP_CHECKS = {key: TARGET_CHECKS[key] for key in REQUEST_KEYS}
STEP_CHECKS.update(name=_name, extract=_extract)


def uses(text: str) -> list[str]:
    """The variables ``text`` uses, as ``{{name}}``, in order."""
    return VARIABLE_USE.findall(text) if "{{" in text else []


def parse_flow(doc: Document, raw: dict, index: int,
               auth: Mapping[str, AuthSource | OAuth2Source]) -> Target:
    """A [[targets]] entry with [[targets.steps]]: one Target whose ``steps`` are its requests.
    The flow's request keys are each step's defaults; headers merge, a step's own winning."""
    path: Path = ("targets", index)
    if "url" in raw:
        raise doc.error(path + ("url",), "a target with steps has no url of its own: each step has "
                        "one (remove url, or steps)")
    raw_steps = raw["steps"]
    if not isinstance(raw_steps, list) or not raw_steps or not all(isinstance(s, dict) for s in raw_steps):
        raise doc.error(path + ("steps",), "must be an array of [[targets.steps]] tables")
    values = doc.read_table({k: v for k, v in raw.items() if k != "steps"}, path, TARGET_CHECKS)
    link_keys(doc, path, values, auth)
    defaults = {key: values.pop(key) for key in list(values) if key in REQUEST_KEYS}
    extracted_by: dict[str, int] = {}   # variable -> the first step that extracts it
    for number, step in enumerate(raw_steps):
        if isinstance(step.get("extract"), dict):
            for variable in step["extract"]:
                extracted_by.setdefault(variable, number)
    steps: list[FlowStep] = []
    names: dict[str, int] = {}
    for number, raw_step in enumerate(raw_steps):
        spath = path + ("steps", number)
        own = doc.read_table(raw_step, spath, STEP_CHECKS)
        name = own.pop("name", f"step{number + 1}")
        if name in names:
            raise doc.error(spath + ("name",), f"duplicate step name {name!r} (also steps[{names[name]}])")
        names[name] = number
        extract = own.pop("extract", ())
        link_keys(doc, spath, own, auth)
        request = {**defaults, **own}
        if "headers" in defaults and "headers" in own:
            request["headers"] = {**defaults["headers"], **own["headers"]}
        if "url" not in request:
            raise doc.error(spath, "url is required")
        templated = False
        for key, text in _templated(request):
            for variable in uses(text):
                templated = True
                source = number if key[0] in own else None
                where = (spath if source is not None else path) + key
                first = extracted_by.get(variable)
                if first is None:
                    raise doc.error(where, f"uses {{{{{variable}}}}}, which no step extracts")
                if first >= number:
                    raise doc.error(where, f"uses {{{{{variable}}}}} before steps[{first}] extracts it")
        request.setdefault("method", "GET")
        steps.append(FlowStep(Target(name=name, **request), extract, templated))
    first_request = steps[0].request
    values.setdefault("name", f"{first_request.method} {redact_url(first_request.url)}")
    return Target(url=first_request.url, method=first_request.method, steps=tuple(steps), **values)


def _templated(request: dict) -> list[tuple[Path, str]]:
    """(key, text) of every value a step fills from variables: url, body, header values."""
    out: list[tuple[Path, str]] = [(("url",), request["url"]), (("body",), request.get("body", ""))]
    out += [(("headers", name), value) for name, value in (request.get("headers") or {}).items()]
    return out


def check_flow_interval(doc: Document, index: int, target: Target, monitor) -> None:
    """A flow's interval must hold the sum of its steps' timeouts (each attempt of each step
    may take its own): the error names the key that was written."""
    total = sum(step.request.timeout or target.timeout or monitor.timeout for step in target.steps)
    interval = target.interval or monitor.interval
    if interval < total:
        key = ("interval",) if target.interval is not None else ("steps",)
        raise doc.error(("targets", index) + key,
                        f"interval {interval:g} s is shorter than the {total:g} s the steps' "
                        f"timeouts add up to: the check could still run when it is due again")
