"""Ad-hoc checks from the command line: "what does greenmon see?", asked the way curl is.

``--target NAME`` (repeatable; a glob such as ``users-*`` matches names) keeps
only those targets of the config, flows included. A target the config
disables is checked too when it is named: asking for it is the reason to
look. A name that matches nothing is a usage error naming the closest
names. ``--url URL`` checks one URL with the config's ``[monitor]``,
``[retry]`` and ``[breaker]`` settings, or greenmon's defaults when there is
no config file.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import os
from typing import Sequence

from greenmon.config import Config
from greenmon.targets import Target, check_url
from greenmon.urls import redact_url


class AdHocError(ValueError):
    """A --target that matches no target (the message names the closest), or a --url that
    cannot be checked: a usage error, exit 2."""


def select_targets(config: Config, patterns: Sequence[str]) -> Config:
    """``config`` with only the targets whose name matches one of ``patterns``, in config order."""
    names = [target.name for target in config.targets]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            closest = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
            hint = f" (closest: {', '.join(closest)})" if closest else ""
            raise AdHocError(f"--target {pattern!r} matches no target of {config.source}{hint}")
    chosen = tuple(dataclasses.replace(target, enabled=True) if not target.enabled else target
                   for target in config.targets
                   if any(fnmatch.fnmatchcase(target.name, pattern) for pattern in patterns))
    return dataclasses.replace(config, targets=chosen, static_targets=chosen)


def url_target_config(config: Config, url: str) -> Config:
    """``config``'s settings with one target: ``url``, named as a target without a name is
    (method and URL, its password masked). AdHocError if the URL cannot be checked."""
    try:
        check_url(url)
    except ValueError as problem:
        raise AdHocError(f"--url {problem}") from None
    target = Target(name=f"GET {redact_url(url)}", url=url)
    return dataclasses.replace(config, targets=(target,), static_targets=(target,), sources=(),
                               discovered={})


def config_for_url(path: str, explicit: bool, load) -> Config:
    """The config whose settings a --url check uses: the file when one is named or exists
    (``load``: config.load_config), else greenmon's defaults (no config needed)."""
    if explicit or os.path.exists(path):
        return load(path, require_targets=False)   # its settings: it may list no target
    return Config(source="<--url>")
