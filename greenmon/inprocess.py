"""The daemon's checks in one process: an Engine on its Scheduler, plus the loop-lag probe.

The daemon runs one of these; with ``--workers N`` every
worker process runs one on its share of the targets. ``prepare`` and
``apply`` split a reload in two: what can be built off the event loop (a
thread: trust stores, slots) and the short swap on it. Targets that remain
keep their breaker (one shared table), schedule phase and connections (the
transport is kept while the requests it makes stay the same).
"""

from __future__ import annotations

import time
from typing import Callable

import gevent

from greenmon.breaker import BreakerState
from greenmon.check import proxy_urls, trust_settings
from greenmon.config import Config
from greenmon.cooperative import Slices
from greenmon.engine import (STOP_GRACE_S, BreakerListener, Engine, Listener, secret_headers,
                             transport_for)
from greenmon.limits import fit_concurrency
from greenmon.scheduler import Scheduler, slots_for
from greenmon.timetable import sparse_origins
from greenmon.timing import Timing, probe_loop_lag

class InProcessChecks:
    """Every enabled target of a config, checked on its own schedule from ``start`` to ``stop``."""

    def __init__(self, config: Config, *, timing: Timing, on_result: Listener,
                 on_breaker: BreakerListener, on_pass: Callable[[float], None],
                 breakers: dict[str, BreakerState] | None = None,
                 clock: Callable[[], float] = time.time, pass_s: float | None = None):
        """``pass_s``: the length of a pass (a sweep) when it is not this config's longest
        interval (a worker's share: the whole config's)."""
        self._clock = clock
        self.timing = timing
        self.engine = Engine(config, clock=clock, breakers=breakers)
        slots = slots_for(config.enabled_targets, config.monitor.interval)
        self.engine.checker.close_connections = seldom_contacted(config, slots)
        self.engine.listeners.append(on_result)
        self.engine.breaker_listeners.append(on_breaker)
        self.scheduler = Scheduler(self.engine, config.enabled_targets, config.monitor.interval,
                                   timing=timing, on_pass=on_pass, pass_s=pass_s, slots=slots)
        self._probe: gevent.Greenlet | None = None
        self._earlier_changes = 0   # breaker changes counted by engines a reload replaced

    @property
    def inflight(self) -> int:
        return len(self.scheduler.running)

    @property
    def breakers(self) -> dict[str, BreakerState]:
        return self.engine.breakers

    @property
    def breaker_changes(self) -> int:
        """Grows whenever the breaker table changes (what the state file is saved for)."""
        return self._earlier_changes + self.engine.breaker_changes

    def start(self) -> gevent.Greenlet:
        """The scheduler's greenlet (it ends at ``stop``, or with a bug)."""
        self._probe = gevent.spawn(probe_loop_lag, self.timing.loop_lag)
        return gevent.spawn(self.scheduler.run)

    def healthy(self) -> bool:
        return self.scheduler.healthy()

    def prepare(self, config: Config):
        """For a reload, off the loop: a transport with its trust stores, and the slots."""
        old = self.engine
        if (config.monitor.user_agent, secret_headers(config)) == (
                old.config.monitor.user_agent, secret_headers(old.config)):
            transport = old.transport   # the same requests: keep the connections
        else:
            transport = transport_for(config, fit_concurrency(config.monitor.concurrency,
                                                              len(config.enabled_targets)))
        transport.load_trust(trust_settings(config))
        transport.load_proxies(proxy_urls(config))
        slots = slots_for(config.enabled_targets, config.monitor.interval)
        return transport, slots, seldom_contacted(config, slots)

    def apply(self, config: Config, prepared, pass_s: float | None = None) -> None:
        """For a reload, on the loop: the new engine takes the next checks."""
        transport, slots, closing = prepared
        old = self.engine
        engine = Engine(config, transport=transport, clock=self._clock, breakers=old.breakers)
        engine.checker.close_connections = closing
        engine.listeners, engine.breaker_listeners = old.listeners, old.breaker_listeners
        self.engine = engine
        self._earlier_changes += old.breaker_changes + 1   # removed targets left the table
        self.scheduler.set_targets(config.enabled_targets, config.monitor.interval,
                                   engine=engine, slots=slots, pass_s=pass_s, tick=Slices().tick)
        if transport is not old.transport:
            gevent.spawn(_close_when_idle, old, config.longest_timeout + STOP_GRACE_S)

    def stop(self) -> None:
        """No new checks; those in flight end or hit their deadline (killed after a grace)."""
        self.scheduler.stop()
        self.scheduler.drain(self.engine.config.longest_timeout + STOP_GRACE_S)
        if self._probe is not None:
            self._probe.kill()

    def close(self) -> None:
        self.engine.close()


def seldom_contacted(config: Config, slots: list) -> frozenset[str]:
    """Targets whose checks close their connection (schedule.sparse_origins)."""
    return frozenset(sparse_origins([(t.url, slot) for t, slot in zip(config.enabled_targets, slots)]))


def _close_when_idle(engine: Engine, grace: float) -> None:
    """Close a replaced engine's connections once its last checks ended (a bounded wait)."""
    deadline = time.monotonic() + 4 * grace
    while engine.inflight and time.monotonic() < deadline:
        gevent.sleep(0.5)
    engine.close()
