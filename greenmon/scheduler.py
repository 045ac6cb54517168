"""The daemon's runner: starts each target's check when the timetable says it is due.

It only gates and spawns: what a check does is the engine's, when it is due
is the timetable's (``timetable``). A check still running when its target is
due again is not started twice: the due turn is skipped and counted (an
overrun). It records how late each check starts against its due time (schedule lag,
``timing.Timing``).

Times inside are epoch seconds read from the monotonic clock, anchored once
at start: due times keep their phase against the wall clock (a restart lands
on the same offsets), and a wall clock that jumps does not make checks burst
or stall.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import Callable, Iterable

import gevent
import gevent.event
import gevent.pool

from greenmon.engine import Engine
from greenmon.targets import Target
from greenmon.timetable import Due, Slot, Timetable
from greenmon.timing import Timing

log = logging.getLogger(__name__)

def slots_for(targets: Iterable[Target], default_interval: float) -> list[Slot]:
    return [Slot.of(t.name, t.interval or default_interval) for t in targets]


class _Pass:
    """One pass of the longest interval: greenmon_sweeps_total counts them in the daemon. A pass
    is done when its window has ended and every check started in it, or in an earlier pass,
    has ended: sweep N done means every check started by then has a result."""

    __slots__ = ("started_at", "ends_at", "inflight", "closed")

    def __init__(self, started_at: float, length: float):
        self.started_at = started_at
        self.ends_at = started_at + length
        self.inflight = 0
        self.closed = False


class Scheduler:
    """Runs ``engine.check`` for every target on its own schedule until ``stop``."""

    def __init__(self, engine: Engine, targets: Iterable[Target], default_interval: float, *,
                 timing: Timing | None = None,
                 on_pass: Callable[[float], None] = lambda duration: None,
                 pass_s: float | None = None, slots: list[Slot] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.engine = engine
        self.timing = timing or Timing()
        self.pool = gevent.pool.Pool(engine.concurrency)
        self.targets: dict[str, Target] = {}
        self.timetable = Timetable()
        self.running: set[str] = set()          # targets with a check in flight
        self.started = False
        self.stopping = False
        self._on_pass = on_pass
        self._monotonic = monotonic
        self._offset = wall() - monotonic()      # anchors monotonic time to the epoch
        self._wake = gevent.event.Event()
        self._waiting: Due | None = None        # due, but waiting for a free slot in the pool
        self._last_start: tuple[float, float] | None = None   # (lag, interval) of the last start
        self._overrunning: set[str] = set()
        self._pass: _Pass | None = None
        self._ending: deque[_Pass] = deque()     # closed passes, oldest first, not yet done
        self._longest_timeout = engine.config.longest_timeout
        self.pass_s = pass_s
        self.set_targets(targets, default_interval, slots=slots)

    def now(self) -> float:
        return self._monotonic() + self._offset

    @property
    def longest_interval(self) -> float:
        """The length of a pass: given (a worker's passes follow the whole config's), else the
        longest interval of the targets checked here."""
        return self.pass_s or max((slot.interval for slot in self._slots), default=1.0)

    # --- control ------------------------------------------------------------------------------

    def set_targets(self, targets: Iterable[Target], default_interval: float, *,
                    engine: "Engine | None" = None, slots: list[Slot] | None = None,
                    pass_s: float | None = None, tick=lambda: None) -> None:
        """Check these targets from now on (a reload): kept ones keep their turn and phase.
        ``slots``: slots_for(targets, default_interval), if the caller made them already;
        ``tick``: called between targets (cooperative.Slices.tick: the loop runs on)."""
        if engine is not None:
            if engine.concurrency != self.engine.concurrency:
                log.warning("monitor.concurrency changed to %d: it takes effect at the next "
                            "restart", engine.concurrency)
            self.engine = engine
            self._longest_timeout = engine.config.longest_timeout
        if pass_s is not None:
            self.pass_s = pass_s
        targets = list(targets)
        slots = slots if slots is not None else slots_for(targets, default_interval)
        self.timetable.replace(slots, self.now(), tick)
        self.targets = {t.name: t for t in targets}
        self._slots = slots
        self._wake.set()

    def stop(self) -> None:
        """No new checks or retries; the checks in flight end or hit their deadline."""
        self.stopping = True
        self.engine.checker.stopping = True
        self._wake.set()

    def drain(self, grace: float) -> None:
        """Wait for the checks in flight; kill what still runs after ``grace`` seconds."""
        if not self.pool.join(timeout=grace):
            self.pool.kill(timeout=1)

    # --- state read by /healthz -----------------------------------------------------------------

    def healthy(self) -> bool:
        """Checks start on schedule: none started or waiting is later than its interval plus
        the longest deadline."""
        if not self.started:
            return False
        now = self.now()
        if self._last_start is not None:
            lag, interval = self._last_start
            if lag >= interval + self._longest_timeout:
                return False
        for pending in (self._waiting, self.timetable.earliest()):
            if pending is not None and now - pending.at >= pending.slot.interval + self._longest_timeout:
                return False
        return True

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Start checks as they fall due until ``stop``; returns without waiting for them."""
        self.started = True
        self._pass = _Pass(self.now(), self.longest_interval)
        while not self.stopping:
            now = self.now()
            if now >= self._pass.ends_at:
                self._next_pass(now)
            for due in self.timetable.pop_due(now):
                self._start(due)
                if self.stopping:
                    return
            wake_at = min(self.timetable.next_at() or math.inf, self._pass.ends_at)
            delay = wake_at - self.now()
            if delay > 0:
                self._wake.wait(min(delay, 3600.0))
            self._wake.clear()

    def _start(self, due: Due) -> None:
        name = due.slot.name
        if name in self.running:
            self.timing.overruns += 1
            if name not in self._overrunning:
                self._overrunning.add(name)
                log.warning("target %s: its check still runs when it is due again; that turn "
                            "is skipped (counted in greenmon_schedule_overruns_total)", name)
            return
        if self.pool.full():
            # monitor.concurrency checks in flight: this one starts late, and its lag says so.
            self._waiting = due
            self.pool.wait_available()
            self._waiting = None
        target = self.targets.get(name)
        if target is None or self.stopping:   # removed by a reload while it waited
            return
        self._overrunning.discard(name)
        lag = max(0.0, self.now() - due.at)
        self.timing.schedule_lag.observe(lag)
        self._last_start = (lag, due.slot.interval)
        self.running.add(name)
        current = self._pass
        current.inflight += 1
        self.pool.spawn(self._check, self.engine, target, current)

    def _check(self, engine: Engine, target: Target, current: _Pass) -> None:
        try:
            engine.check(target)
        finally:
            self.running.discard(target.name)
            current.inflight -= 1
            if current.closed:
                self._passes_done()

    def _next_pass(self, now: float) -> None:
        ended = self._pass
        ended.closed = True
        self._ending.append(ended)
        # Passes follow each other without gaps, unless the loop missed whole passes.
        start = ended.ends_at if now - ended.ends_at < self.longest_interval else now
        self._pass = _Pass(start, self.longest_interval)
        self._passes_done()

    def _passes_done(self) -> None:
        while self._ending and not self._ending[0].inflight:
            ended = self._ending.popleft()
            self._on_pass(max(self.now(), ended.ends_at) - ended.started_at)
