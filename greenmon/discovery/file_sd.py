"""Prometheus file_sd documents -> targets: a list of ``{targets: [...], labels: {...}}`` groups.

Pure. This is the convention blackbox_exporter's users already feed through
Prometheus: every entry of ``targets`` is a URL (a bare ``host:port`` means
``http://host:port/``); the label ``name`` names the group's single target
(otherwise the name is the URL); the other labels become target labels.
Labels that start with ``__`` are Prometheus' own (``__param_module``,
``__meta_*``: relabelling input, dropped after it) and are ignored here too.
"""

from __future__ import annotations

from typing import Any, Callable

from greenmon.discovery.values import Found
from greenmon.schema import string

GROUP_KEYS = ("targets", "labels")


class EntryError(Exception):
    """A group that cannot be used: ``path`` inside the document (for its line), and why."""

    def __init__(self, path: tuple, problem: str):
        super().__init__(problem)
        self.path = path
        self.problem = problem


def as_url(entry: str) -> str:
    """A target as file_sd writes it: a URL, or host:port[/path] meaning plain HTTP."""
    if "://" in entry:
        return entry
    return "http://" + entry + ("" if "/" in entry else "/")


def groups(document: Any, origin: str, check_url: Callable[[str], str],
           check_label: Callable[[str], None], display: Callable[[str], str]) -> list[Found]:
    """The targets of one parsed file (an empty YAML file is no groups). ``check_url`` and
    ``check_label`` are the config's own checks (they raise ValueError); ``display`` is the
    URL as a name may show it (no password)."""
    if document is None:
        return []
    if not isinstance(document, list):
        raise EntryError((), "must be a list of groups ({targets: [...], labels: {...}})")
    found: list[Found] = []
    for index, group in enumerate(document):
        if not isinstance(group, dict):
            raise EntryError((index,), "a group must be a mapping with targets and labels")
        for key in group:
            if key not in GROUP_KEYS:
                raise EntryError((index, key), f"unknown key {key!r} (known: targets, labels)")
        if "targets" not in group:
            raise EntryError((index,), "the group has no targets")
        targets = group["targets"]
        if not isinstance(targets, list):
            raise EntryError((index, "targets"), "targets must be a list of URLs")
        labels = _labels(group.get("labels"), index, check_label)
        name = labels.pop("name", None)
        if name is not None and len(targets) != 1:
            raise EntryError((index, "labels", "name"),
                             f"the name label names a single target; the group has {len(targets)}")
        for position, entry in enumerate(targets):
            if not isinstance(entry, str) or not entry.strip():
                raise EntryError((index, "targets", position), "a target must be a non-empty string")
            try:
                url = check_url(as_url(entry))
            except ValueError as problem:
                raise EntryError((index, "targets", position), f"url {problem}") from None
            found.append(Found(name or display(url), url, labels=labels,
                               origin=f"{origin} group {index}"))
    return found


def _labels(raw: Any, index: int, check_label: Callable[[str], None]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise EntryError((index, "labels"), "labels must be a mapping of names to strings")
    labels = {}
    for key, value in raw.items():
        if not isinstance(key, str):   # YAML reads `8080: x` as a number
            raise EntryError((index, "labels", str(key)), f"{key!r} is not a usable label name")
        if key.startswith("__"):
            continue
        try:
            string(value)
        except ValueError as problem:
            raise EntryError((index, "labels", key), f"label {key!r} {problem}") from None
        if key != "name":
            try:
                check_label(key)
            except ValueError as problem:
                raise EntryError((index, "labels", key), str(problem)) from None
        elif not value.strip():
            raise EntryError((index, "labels", key), "the name label must not be empty")
        labels[key] = value
    return labels
