"""Process settings for thousands of checks in flight: open files, the garbage collector, and
what urllib3 may log (the CLI and every worker process set them)."""

from __future__ import annotations

import gc
import logging

import gevent

log = logging.getLogger(__name__)

FD_RESERVE = 64 + 64   # files the process needs besides its checks' sockets (web.MAX_CONNECTIONS too)
SOCKETS_PER_CHECK = 2  # one in flight, plus idle keep-alive connections of other hosts


def sockets_needed(concurrency: int, targets: int) -> int:
    """A host never has more connections than checks of its targets in flight at once, so
    sockets are at most one per target, and at most the checks in flight plus as many idle."""
    return min(targets, concurrency * SOCKETS_PER_CHECK) + FD_RESERVE


def fit_concurrency(concurrency: int, targets: int) -> int:
    """Raise the open-file soft limit for ``concurrency`` checks; lower concurrency if the hard limit forbids."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return concurrency
    need = sockets_needed(concurrency, targets)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return concurrency
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft >= need:
        return concurrency
    fitted = max(1, (soft - FD_RESERVE) // SOCKETS_PER_CHECK)
    if fitted >= concurrency:
        return concurrency
    log.warning("open-file limit %d allows only %d checks in flight (concurrency %d asked); "
                "raise it with `ulimit -n %d`", soft, fitted, concurrency, need)
    return fitted


GC_THRESHOLDS = (10_000, 50, 1_000)


def tune_runtime() -> None:
    """What the command and its workers set before checking: the collector (below), and no
    spawn-tree records on greenlets (gevent's debugging aid keeps each spawner's stack
    frames on every greenlet: CPU and memory on each of thousands of checks)."""
    gevent.config.track_greenlet_tree = False
    tune_gc()


def tune_gc() -> None:
    """Collect less often: thousands of checks in flight keep hundreds of thousands of objects
    alive, and CPython's default thresholds walk them over and over (measured: a third of the
    CPU of a 10,000-target sweep). What start-up made (config, targets) is frozen out of
    collection for good. The checks themselves make no reference cycles to collect.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def quiet_urllib3() -> None:
    """urllib3 logs each request line, query string included, at DEBUG: a ``?key=${KEY}``
    would show. greenmon's own DEBUG lines say what each attempt did instead."""
    logging.getLogger("urllib3").setLevel(max(logging.INFO, logging.getLogger().level))
