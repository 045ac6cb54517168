"""greenmon's own long work, kept off the timing of checks: cut into slices, or run in a thread.

The event loop that times checks must never be held for more than a few
milliseconds by anything greenmon does for itself (rendering /metrics,
JSON, the status page, reloading config). Python work that is cut into
pieces yields between slices (``Slices``); work that releases the GIL
(zlib, loading CA bundles, file I/O, fsync) or that cannot be cut (parsing
TOML) runs in gevent's thread pool (``off_loop``).

The yield (``yield_to_loop``) waits for the loop to be idle, as
``gevent.idle()`` does: it returns once the loop has handled the I/O and
timers that were pending, where ``gevent.sleep(0)`` would come back before
the loop even polled its sockets. But not for ever: a loop saturated with
checks is almost never idle, and a worker of a 50,000-target daemon checking
2,500 targets a second, waiting for it with ``gevent.idle()``, never finished
formatting its share of /metrics. A job waits IDLE_WAIT_S at most: long
enough that a loop that is only busy, not saturated, goes idle first (the
checks keep the loop to themselves). On a saturated loop that leaves a job
one slice in fifty: a worker's share of /metrics then took minutes, and
every scrape failed. So a job that has run AGED_S waits AGED_WAIT_S at most
(a slice in six), as a scheduler ages a starving task: a job on a loop that
is only busy ends well before (a 10,000-target scrape, the status page's
results) and keeps all its patience; a long one on a saturated loop ends.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator, TypeVar

import gevent
from gevent.hub import Waiter

SLICE_S = 0.002   # the longest stretch of greenmon's own work between two yields
IDLE_WAIT_S = 0.1    # a yield waits for an idle loop this long at most ...
AGED_S = 5.0         # ... until its job has run this long,
AGED_WAIT_S = 0.01   # ... then this long (5 slices)

T = TypeVar("T")


class Slices:
    """A time budget: ``tick()`` after each piece of work yields once a slice is used up."""

    def __init__(self, budget_s: float = SLICE_S):
        self.budget_s = budget_s
        self._aged = time.perf_counter() + AGED_S
        self._until = time.perf_counter() + budget_s

    def tick(self) -> None:
        now = time.perf_counter()
        if now >= self._until:
            yield_to_loop(IDLE_WAIT_S if now < self._aged else AGED_WAIT_S)
            self._until = time.perf_counter() + self.budget_s

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """The items, yielding to the loop between them whenever the budget is used up."""
        for item in items:
            yield item
            self.tick()


def yield_to_loop(longest_s: float) -> None:
    """Return when the loop is idle (nothing else ready to run), or after ``longest_s``,
    whichever comes first: ``gevent.idle()`` with a bound, from the loop's own idle and timer
    watchers."""
    hub = gevent.get_hub()
    waiter = Waiter(hub)
    idle, timer = hub.loop.idle(), hub.loop.timer(longest_s)
    idle.start(waiter.switch, None)
    timer.start(waiter.switch, None)
    try:
        waiter.get()
    finally:
        idle.close()
        timer.close()


def off_loop(function: Callable[..., T], *args) -> T:
    """``function(*args)`` in gevent's native thread pool; the calling greenlet waits for it,
    the loop does not. For work that releases the GIL or cannot be cut into slices.

    What it raises is raised here, in the caller, which decides what to log: gevent's pool
    would also print it, with a traceback, as a hub error (a config error on reload)."""
    failed, outcome = gevent.get_hub().threadpool.apply(_outcome, (function, args))
    if failed:
        raise outcome
    return outcome


def _outcome(function: Callable[..., T], args: tuple) -> tuple[bool, object]:
    try:
        return False, function(*args)
    except Exception as error:   # noqa: BLE001 - raised again by off_loop, in the caller
        return True, error
