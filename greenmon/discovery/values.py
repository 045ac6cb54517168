"""What a discovery source yields: found targets, skipped operations, and the errors on the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


class SourceError(Exception):
    """A source that cannot be loaded; the message names the document (file or URL) and, where
    there is one, its line. At start-up it is a config error; in the daemon the source keeps
    its last good targets."""


@dataclass(frozen=True)
class Found:
    """One target a source found: the parts that come from the source (the entry's target keys
    are applied when targets are built)."""

    name: str
    url: str
    method: str | None = None                       # None: the entry's method, else GET
    labels: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    origin: str = ""                                # where it came from, for messages


@dataclass(frozen=True)
class Skip:
    """An operation that passed the filters but cannot be checked, and why."""

    operation: str      # "GET /users/{id}"
    reason: str         # "required path parameter 'id' has no example or default"
    kind: str = ""      # the reason without the operation's own names, to count them by


@dataclass(frozen=True)
class Discovered:
    """One load of a source. ``stamp`` says which files were read (their mtime and size): a
    change of it is what makes the daemon read a file_sd source again."""

    found: tuple[Found, ...]
    skipped: tuple[Skip, ...] = ()
    stamp: Any = field(default=None, compare=False)
