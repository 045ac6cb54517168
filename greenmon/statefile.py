"""The state file: the breaker table saved atomically so that cron ``--once`` runs share it.

A missing file is an empty table; a corrupt or unreadable one is reported
(WARNING) and ignored, never fatal: losing breaker state costs at most a few
extra checks of a down target.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from typing import Mapping

from greenmon.breaker import CLOSED, OPEN, STATE_VALUES, BreakerState
from greenmon.config import Config
from greenmon.errors import ERROR_CLASSES, Failure

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def save(path: str, table: Mapping[str, BreakerState]) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the old one."""
    document = {"version": FORMAT_VERSION, "breakers": {
        name: _encode(state) for name, state in table.items() if state != BreakerState()}}
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".greenmon-state-", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def save_or_warn(path: str, table: Mapping[str, BreakerState]) -> None:
    """save(), with a failure reported (WARNING) instead of raised: the sweep's results stand."""
    try:
        save(path, table)
    except OSError as error:
        log.warning("cannot save state file %s: %s", path, error.strerror or error)


def load(path: str) -> dict[str, BreakerState]:
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        if document.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown format version {document.get('version')!r}")
        return {str(name): _decode(item) for name, item in document["breakers"].items()}
    except FileNotFoundError:
        return {}
    except OSError as error:
        log.warning("state file %s is unreadable (%s); starting with closed breakers",
                    path, error.strerror)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        log.warning("state file %s is corrupt (%s); starting with closed breakers", path, error)
    return {}


def initial_breakers(config: Config, given: dict[str, BreakerState] | None) -> dict[str, BreakerState]:
    """The breaker table to start from, limited to the enabled targets: the given one, shared
    and pruned in place (a reload: checks still in flight record into the same table), else
    the state file's."""
    names = {t.name for t in config.enabled_targets}
    if given is None:
        loaded = load(config.monitor.state_file) if config.monitor.state_file else {}
        return {name: state for name, state in loaded.items() if name in names}
    for name in [name for name in given if name not in names]:
        del given[name]
    return given


def _encode(state: BreakerState) -> dict:
    failure = state.failure
    return {"state": state.state, "failures": state.failures, "opened_at": state.opened_at,
            "failure": None if failure is None else
            {"class": failure.error_class, "detail": failure.detail, "error": failure.message}}


def _decode(item: dict) -> BreakerState:
    state = item["state"]
    if state not in STATE_VALUES:
        raise ValueError(f"unknown breaker state {state!r}")
    failures = int(item["failures"])
    opened_at = item["opened_at"]
    if opened_at is not None:
        opened_at = float(opened_at)
        if not math.isfinite(opened_at):
            raise ValueError(f"opened_at is not a finite time: {opened_at}")
    failure = item["failure"]
    if failure is not None:
        if failure["class"] not in ERROR_CLASSES:
            raise ValueError(f"unknown error class {failure['class']!r}")
        failure = Failure(failure["class"], str(failure["detail"]), str(failure["error"]))
    if state != CLOSED and opened_at is None:
        raise ValueError("an open breaker without opened_at")
    # A half-open trial interrupted by the end of a process is open again.
    return BreakerState(OPEN if state != CLOSED else CLOSED, failures, opened_at, failure)
