"""The daemon: every target checked on its own schedule until told to stop, served over HTTP.

It wires the checks (``inprocess.InProcessChecks`` in this process, or
worker processes), the MetricsStore they feed, the caches the web endpoints
read (with workers, /metrics joins the shares they render:
``SharedExposition``), and the breaker table's state file, written when it
changed, at most every STATE_SAVE_EVERY_S seconds and at stop. ``reload``
reads the config again off the event loop and applies it: targets that
remain keep their breaker, series and schedule phase. Discovery sources are read again as
they fall due (``discovery.live``) and applied the same way. ``stop`` lets
the checks in flight end or hit their deadline. ``run_daemon`` serves it
(``web``) and hands it the signals: TERM and INT stop, HUP reloads.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import Callable

import gevent
import gevent.event
import gevent.lock

from greenmon import statefile, webconfig
from greenmon.config import Config
from greenmon.cooperative import Slices, off_loop
from greenmon.discovery.live import Discovery
from greenmon.discovery.sources import merge_one
from greenmon.exposition import Exposition, SharedExposition
from greenmon.inprocess import InProcessChecks
from greenmon.schema import ConfigError
from greenmon.store import MetricsStore, discovery_counts, store_for
from greenmon.views import Views
from greenmon.web import WebServer
from greenmon.webauth import BasicAuth
from greenmon.webconfig import WebConfig

log = logging.getLogger(__name__)

STATE_SAVE_EVERY_S = 10.0  # the state file is written at most this often (and at stop)


class Daemon:
    """Long-running checks feeding one MetricsStore and the caches of the web endpoints."""

    def __init__(self, config: Config, *, loader: Callable[[], Config] | None = None,
                 clock: Callable[[], float] = time.time, workers: int = 1,
                 web: WebConfig | None = None):
        """``web``: the web config the endpoints are served with (TLS, basic auth)."""
        self.config = config
        self.web = web or WebConfig()
        self.auth = BasicAuth(self.web.users)
        self._loader = loader
        shared = workers > 1 and len(config.enabled_targets) > 1
        self.store: MetricsStore = store_for(config, config.enabled_targets, renders=not shared,
                                             inflight=lambda: self.checks.inflight)
        hooks = dict(timing=self.store.timing, on_result=self.store.observe,
                     on_breaker=self.store.breaker_changed, on_pass=self.store.sweep_finished)
        if shared:
            from greenmon.workers.parent import WorkerChecks
            self.checks = WorkerChecks(config, workers, seed=self.store.series_of, **hooks)
            # Each worker renders its share of /metrics; this process joins them.
            self.exposition = SharedExposition(self.store, self.checks.render_shares)
        else:
            self.checks = InProcessChecks(config, clock=clock, **hooks)
            self.exposition = Exposition(self.store)
        self.views = Views(self.store)
        self._stop = gevent.event.Event()
        self._reloading = gevent.lock.Semaphore()
        self._runner: gevent.Greenlet | None = None
        self.discovery = Discovery(self)
        self._saved_changes = 0

    @property
    def engine(self):
        """The engine of the checks in this process (None with worker processes)."""
        return getattr(self.checks, "engine", None)

    @property
    def sweeping(self) -> bool:
        """Checks are being scheduled (from start until stop)."""
        return self._runner is not None and not self._runner.dead

    # --- control -------------------------------------------------------------

    def stop(self) -> None:
        log.info("stopping: no new checks; checks in flight may finish")
        self._stop.set()

    def reload(self) -> bool:
        """Read the config again off the event loop and apply it; an invalid one is logged and
        the running one kept."""
        if self._loader is None:
            log.warning("reload asked, but this daemon has no config file to reload")
            return False
        with self._reloading:
            try:
                config, web = off_loop(self._load)
                config = self.discovery.complete(config)   # sources: fetched on the loop
                prepared = off_loop(self._prepare, config)
            except ConfigError as error:
                log.error("reload failed, keeping the running config: %s", error)
                return False
            self._apply(config, prepared)
            self._apply_web(web)
        log.info("config reloaded: %d enabled targets", len(config.enabled_targets))
        return True

    def _load(self) -> tuple[Config, WebConfig]:
        config = self._loader()
        return config, webconfig.for_config(config)

    def _prepare(self, config: Config):
        config.enabled_targets  # computed here, in the thread  # noqa: B018
        return self.checks.prepare(config)

    def apply_discovered(self, key: str, load) -> bool:
        """A discovery source's new load: merged and applied as a reload is, unless it found
        what it found before (False). ConfigError (names that clash, no target left) leaves
        the running config as it is."""
        with self._reloading:
            config = self.config
            if key not in {source.key for source in config.sources}:
                return False   # a reload removed the source meanwhile
            config = off_loop(merge_one, config, key, load)
            if config is None:
                return False
            prepared = off_loop(self._prepare, config)
            self._apply(config, prepared)
        return True

    def publish_discovery(self, errors: dict[str, int]) -> None:
        """The discovery gauges: targets each source yields, and its failed loads."""
        self.store.discovery = discovery_counts(self.config, errors)

    def _apply_web(self, web: WebConfig) -> None:
        """New users take effect at once, a new certificate with the next connection; TLS
        turned on or off takes a restart (the listening socket stays what it is)."""
        if web.tls != self.web.tls:
            log.warning("the web config turns TLS %s: that takes effect at the next restart",
                        "on" if web.tls else "off")
            web = WebConfig(web.path, self.web.ssl_context, web.users)
        if web.users != self.web.users:
            self.auth = BasicAuth(web.users)
        self.web = web

    def _apply(self, config: Config, prepared) -> None:
        if config.server.listen != self.config.server.listen:
            log.warning("server.listen changed to %s: it takes effect at the next restart",
                        config.server.listen)
        self.checks.apply(config, prepared)
        self.store.configure(config.metrics)
        self.store.set_monitor(config.monitor)
        self.store.set_targets(config.enabled_targets, Slices().tick)
        self.config = config

    # --- state read by the web endpoints --------------------------------------

    def healthy(self) -> bool:
        """Checks start on schedule: none is later than its interval plus the longest deadline."""
        return self._runner is not None and self.checks.healthy()

    # --- the loop -------------------------------------------------------------

    def run(self) -> None:
        """Schedule checks until stop(); returns once the checks in flight have ended."""
        self._runner = self.checks.start()
        saver = gevent.spawn(self._save_state_every, STATE_SAVE_EVERY_S)
        discoverer = gevent.spawn(self.discovery.run)
        fresh = gevent.spawn(self.exposition.keep_fresh)
        try:
            gevent.wait([self._stop, self._runner], count=1)
            discoverer.kill()
            self.checks.stop()
            self._runner.join()
            self._runner.get()  # re-raise a bug in the scheduler instead of hiding it
        finally:
            discoverer.kill()
            self.discovery.close()
            fresh.kill()
            saver.kill()
            self._save_state()
            self.checks.close()

    def _save_state_every(self, seconds: float) -> None:
        while True:
            gevent.sleep(seconds)
            self._save_state()

    def _save_state(self) -> None:
        """Write the breaker table when it changed since the last write; the JSON and the
        fsync happen in a thread."""
        path = self.config.monitor.state_file
        changes = self.checks.breaker_changes
        if not path or changes == self._saved_changes:
            return
        self._saved_changes = changes
        off_loop(statefile.save_or_warn, path, dict(self.checks.breakers))


def run_daemon(config: Config, loader: Callable[[], Config], workers: int = 1) -> int:
    web = webconfig.for_config(config)   # broken: exit 2, before anything
    daemon = Daemon(config, loader=loader, workers=workers, web=web)
    server = WebServer(daemon, config.server.listen)
    try:
        server.start()
    except OSError as error:
        raise ConfigError(f"server.listen {config.server.listen}: cannot listen: "
                          f"{error.strerror or error}") from None
    handlers = [gevent.signal_handler(signal.SIGTERM, daemon.stop),
                gevent.signal_handler(signal.SIGINT, daemon.stop),
                # The reload waits for a thread to read the config: a greenlet of its own.
                gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(daemon.reload))]
    try:
        daemon.run()
    finally:
        for handler in handlers:
            handler.cancel()
        server.stop()
    log.info("stopped")
    return 0
