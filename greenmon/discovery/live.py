"""Live discovery in the daemon: every source read again at its refresh_interval, file_sd sooner on a change.

One greenlet goes over the running config's sources. A source is read again
when its ``refresh_interval`` has passed, and a source read from files
(file_sd, an OpenAPI document in a file) also when the stamp of its files
(which files the globs match, their mtime and size) changed: the stamps are
polled every FILE_POLL_S (mtime polling: no inotify, so it works the same on
every file system, NFS and ConfigMap volumes included). A document fetched
over HTTP is fetched on the event loop (cooperative I/O); reading files,
parsing and building and merging the targets run in a thread
(``cooperative.off_loop``). The new config is applied through the daemon as
a reload is: targets that stay keep their breaker, series and schedule.

A source that fails (cannot be read or parsed, or yields names that clash)
keeps its last good targets; the failure is logged and counted in
``greenmon_discovery_errors_total{source}``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import gevent

from greenmon.config import Config
from greenmon.cooperative import off_loop
from greenmon.discovery.loading import cannot_load, discovery_transport, fetch_source
from greenmon.discovery.sources import Source, merge
from greenmon.discovery.values import Discovered, SourceError
from greenmon.schema import ConfigError
from greenmon.transport import Transport

log = logging.getLogger(__name__)

FILE_POLL_S = 1.0    # how often the files of file-based sources are checked for a change


class _State:
    __slots__ = ("next_due", "next_poll", "stamp", "errors")

    def __init__(self, next_due: float, stamp):
        self.next_due = next_due
        self.next_poll = 0.0
        self.stamp = stamp
        self.errors = 0


class Discovery:
    """Keeps the running config's sources up to date. ``daemon`` gives the running config
    (``config``), applies a new one (``apply_discovered``) and publishes the counts."""

    def __init__(self, daemon, clock: Callable[[], float] = time.monotonic):
        self._daemon = daemon
        self._clock = clock
        self._states: dict[str, _State] = {}
        self._transport: Transport | None = None
        self.loads = 0      # successful loads since start (tests, logs)

    @property
    def errors(self) -> dict[str, int]:
        """Failed loads by Source.key."""
        return {key: state.errors for key, state in self._states.items()}

    # --- loading -----------------------------------------------------------------------------

    def load(self, source: Source, stamp=None) -> Discovered:
        """One load of ``source``, keeping the event loop free: SourceError if it fails.
        ``stamp``: of its files, taken before they are read (a change while they are read
        reads them again)."""
        if stamp is None and source.watches:   # a fetched document has no stamp
            stamp = off_loop(source.stamp)
        if source.fetches:
            data = fetch_source(source, self._transport_for(source))
        else:
            data = off_loop(source.read)
        return off_loop(source.discover, data, stamp)

    def _transport_for(self, source: Source) -> Transport:
        if self._transport is None:
            self._transport = discovery_transport(self._daemon.config.monitor.user_agent)
        off_loop(self._transport.load_trust, [(source.verify, None)])
        return self._transport

    def complete(self, config: Config) -> Config:
        """A config read again (SIGHUP) without its sources loaded: each source kept from the
        running config keeps its last load, a new or changed one is loaded now (ConfigError if
        it cannot be, as at start-up), and the targets are merged."""
        if not config.sources:
            return config
        running = self._daemon.config.discovered
        discovered = {}
        for source in config.sources:
            load = config.discovered.get(source.key) or running.get(source.key)
            if load is None:
                try:
                    load = self.load(source)
                except SourceError as error:
                    raise cannot_load(config, source, error) from None
            discovered[source.key] = load
        return off_loop(merge, config, discovered)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Refresh sources as they fall due, until killed."""
        while True:
            try:
                wake_at = self.tick()
            except Exception:   # a bug must not end discovery for good (no traceback: paths)
                log.exception("discovery: internal error")
                wake_at = self._clock() + FILE_POLL_S
            gevent.sleep(max(0.05, min(wake_at - self._clock(), FILE_POLL_S)))

    def tick(self) -> float:
        """Refresh what is due now; when to look again."""
        config = self._daemon.config
        now = self._clock()
        keys = set()
        wake_at = now + FILE_POLL_S
        for source in config.sources:
            keys.add(source.key)
            state = self._states.get(source.key)
            if state is None:
                load = config.discovered.get(source.key)
                state = self._states[source.key] = _State(
                    now + source.refresh_interval, load.stamp if load is not None else None)
            due = now >= state.next_due
            stamp = None
            if not due and source.watches and now >= state.next_poll:
                state.next_poll = now + FILE_POLL_S
                stamp = off_loop(source.stamp)
                due = stamp != state.stamp
            if due:
                self.refresh(source, state, stamp)
            wake_at = min(wake_at, state.next_due)
        for key in [key for key in self._states if key not in keys]:
            del self._states[key]   # a reload removed the source
        self._publish()
        return wake_at

    def refresh(self, source: Source, state: _State, stamp=None) -> bool:
        """Load ``source`` again and apply what changed; a failure keeps its last good targets
        (and is counted once for the files as they are: not again until they change)."""
        state.next_due = self._clock() + source.refresh_interval
        if stamp is None and source.watches:
            stamp = off_loop(source.stamp)
        state.stamp = stamp
        try:
            load = self.load(source, stamp)
            changed = self._daemon.apply_discovered(source.key, load)
        except (SourceError, ConfigError) as error:
            state.errors += 1
            kept = self._daemon.config.discovered.get(source.key)
            log.warning("discovery %s failed, keeping its %d last good targets: %s", source.label,
                        len(kept.found) if kept is not None else 0, error)
            self._publish()
            return False
        self.loads += 1
        if changed:
            log.info("discovery %s: %d targets", source.label, len(load.found))
        return True

    def _publish(self) -> None:
        self._daemon.publish_discovery(self.errors)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
