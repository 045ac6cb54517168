"""The daemon: sweeps every ``monitor.interval`` seconds, never overlapping, until told to stop.

A sweep that takes longer than the interval is counted and logged, and the
next one starts when it ends. ``reload`` swaps in a new config between
sweeps (breaker states of targets that remain are kept); ``stop`` lets the
checks in flight end or hit their deadline.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import gevent
import gevent.event

from greenmon.config import Config
from greenmon.engine import build_engine
from greenmon.exporter import MetricsStore, build_registry, store_for
from greenmon.schema import ConfigError

log = logging.getLogger(__name__)


class Monitor:
    """Long-running sweeps feeding one MetricsStore and its registry."""

    def __init__(self, config: Config, *, loader: Callable[[], Config] | None = None,
                 clock: Callable[[], float] = time.time, workers: int = 1):
        self.config = config
        self._loader = loader
        self._clock = clock
        self._workers = workers
        self.engine = build_engine(config, workers, clock=clock)
        self.store: MetricsStore = store_for(
            config, config.enabled_targets, inflight=lambda: self.engine.inflight,
            breaker_states=lambda: {name: s.state for name, s in self.engine.breakers.items()})
        self.engine.listeners.append(self.store.observe)
        self.registry = build_registry(self.store)
        self._stop = gevent.event.Event()
        self._pending: Config | None = None
        self.sweep_started_at: float | None = None   # monotonic
        self.sweeping = False

    # --- control -------------------------------------------------------------

    def stop(self) -> None:
        log.info("stopping: no new sweeps; checks in flight may finish")
        self._stop.set()

    def reload(self) -> bool:
        """Load the config again; an invalid one is logged and the running one kept."""
        if self._loader is None:
            log.warning("reload asked, but this monitor has no config file to reload")
            return False
        try:
            config = self._loader()
        except ConfigError as error:
            log.error("reload failed, keeping the running config: %s", error)
            return False
        self._pending = config
        log.info("config reloaded: %d enabled targets (applied at the next sweep)",
                 len(config.enabled_targets))
        return True

    # --- state read by the web endpoints --------------------------------------

    def healthy(self) -> bool:
        """Alive: the first sweep is running, or a sweep started within 2 x interval + the longest deadline."""
        if self.sweep_started_at is None:
            return False
        if self.sweeping and self.store.sweeps == 0:
            return True
        allowed = 2 * self.config.monitor.interval + self.config.longest_timeout
        return time.monotonic() - self.sweep_started_at <= allowed

    # --- the loop -------------------------------------------------------------

    def run(self) -> None:
        """Sweep until stop(); returns once the last sweep has ended."""
        while not self._stop.is_set():
            self._apply_pending()
            self.sweep_started_at = started = time.monotonic()
            self.sweeping = True
            sweep = gevent.spawn(self.engine.sweep)
            gevent.wait([sweep, self._stop], count=1)
            if not sweep.ready():
                self.engine.stop()
                sweep.join()
            self.sweeping = False
            duration = time.monotonic() - started
            overran = duration > self.config.monitor.interval
            self.store.sweep_finished(duration, overran)
            if overran:
                log.warning("sweep took %.1fs, longer than the %.1fs interval; the next one starts now",
                            duration, self.config.monitor.interval)
            sweep.get()  # re-raise a bug in the engine instead of looping on it
            self._stop.wait(max(0.0, self.config.monitor.interval - duration))
        self.engine.close()

    def _apply_pending(self) -> None:
        config, self._pending = self._pending, None
        if config is None:
            return
        if config.server.listen != self.config.server.listen:
            log.warning("server.listen changed to %s: it takes effect at the next restart",
                        config.server.listen)
        old = self.engine
        old.close()
        engine = build_engine(config, self._workers, clock=self._clock, breakers=old.breakers)
        engine.listeners.append(self.store.observe)
        self.engine, self.config = engine, config
        self.store.configure(config.metrics.buckets, config.metrics.per_target_histograms)
        self.store.set_targets(config.enabled_targets)
