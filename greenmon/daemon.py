"""Daemon wiring: the monitor, its web server and its signals (TERM/INT stop, HUP reloads)."""

from __future__ import annotations

import logging
import signal
from typing import Callable

import gevent

from greenmon import webconfig
from greenmon.config import Config
from greenmon.monitor import Monitor
from greenmon.schema import ConfigError
from greenmon.web import WebServer

log = logging.getLogger(__name__)


def run_daemon(config: Config, loader: Callable[[], Config], workers: int = 1) -> int:
    web = webconfig.for_config(config)   # broken: exit 2, before anything
    monitor = Monitor(config, loader=loader, workers=workers, web=web)
    server = WebServer(monitor, config.server.listen)
    try:
        server.start()
    except OSError as error:
        raise ConfigError(f"server.listen {config.server.listen}: cannot listen: "
                          f"{error.strerror or error}") from None
    handlers = [gevent.signal_handler(signal.SIGTERM, monitor.stop),
                gevent.signal_handler(signal.SIGINT, monitor.stop),
                # The reload waits for a thread to read the config: a greenlet of its own.
                gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(monitor.reload))]
    try:
        monitor.run()
    finally:
        for handler in handlers:
            handler.cancel()
        server.stop()
    log.info("stopped")
    return 0
