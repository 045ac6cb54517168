"""Checks through the breaker gate, one at a time (``check``) or all at once (``sweep``).

The engine and the daemon's scheduler are the only places that spawn
greenlets. Each result is handed to the registered listeners as soon as its
check ends (jsonl output, the metrics store); a sweep returns the whole list in
target order.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Sequence

import gevent
import gevent.monkey
import gevent.pool

from greenmon import resolver, statefile
from greenmon.breaker import HALF_OPEN, BreakerState, Gate, gate, record
from greenmon.check import Checker, proxy_urls, trust_settings
from greenmon.config import Config
from greenmon.flows import uses
from greenmon.limits import fit_concurrency
from greenmon.result import MonitorResult, checked_result, internal_error_result, skipped_result
from greenmon.targets import Target
from greenmon.transport import Transport

log = logging.getLogger(__name__)

Listener = Callable[[MonitorResult], None]
BreakerListener = Callable[[str, BreakerState], None]
STOP_GRACE_S = 1.0  # beyond the longest deadline, before checks still running are killed


class NotPatchedError(RuntimeError):
    """greenmon was used without gevent monkey-patching: checks would run one at a time."""


def require_gevent_patching() -> None:
    if not (gevent.monkey.is_module_patched("socket") and gevent.monkey.is_module_patched("ssl")):
        raise NotPatchedError(
            "greenmon needs gevent monkey-patching: call gevent.monkey.patch_all() before "
            "importing requests or greenmon (the greenmon command does this itself)")


class Engine:
    """Holds what outlives one sweep: the HTTP session, the checker and the breaker table."""

    def __init__(self, config: Config, *, transport: Transport | None = None,
                 clock: Callable[[], float] = time.time, listeners: Iterable[Listener] = (),
                 breakers: dict[str, BreakerState] | None = None):
        """``breakers``: the table to share (a reload); default: the state file's, if any.
        ``transport``: one to share (a reload keeps the connections); default: a new one,
        with the trust stores of the targets loaded before any check starts timing."""
        require_gevent_patching()
        resolver.install()   # once per process: cached, capped name lookups (on this hub)
        self.config = config
        self.concurrency = fit_concurrency(config.monitor.concurrency, len(config.enabled_targets))
        if transport is None:
            transport = transport_for(config, self.concurrency)
            transport.load_trust(trust_settings(config))
            transport.load_proxies(proxy_urls(config))
        self.transport = transport
        self.checker = Checker(self.transport, config, clock=clock)
        self.clock = clock
        self.listeners: list[Listener] = list(listeners)
        # Told when a breaker goes half-open for a trial (results tell every other change).
        self.breaker_listeners: list[BreakerListener] = []
        self.breakers = statefile.initial_breakers(config, breakers)
        self.breaker_changes = 0  # grows whenever a breaker's saved state changes
        self.inflight = 0
        self._pool: gevent.pool.Pool | None = None

    def sweep(self, targets: Sequence[Target] | None = None) -> list[MonitorResult]:
        """Check every target once, concurrently; results in the order of ``targets``."""
        if targets is None:
            targets = self.config.enabled_targets
        if not targets:
            return []
        self._pool = gevent.pool.Pool(min(self.concurrency, len(targets)))
        checks = []
        for target in targets:
            self._pool.wait_available()
            if self.checker.stopping:
                break  # stop(): no new checks, not even the one that waited for a slot
            checks.append(self._pool.spawn(self.check, target))
        self._pool.join()
        for check in checks:
            if check.exception is not None and not isinstance(check.exception, gevent.GreenletExit):
                raise check.exception
        if self.config.monitor.state_file:
            names = {t.name for t in self.config.targets} | {t.name for t in targets}
            statefile.save_or_warn(self.config.monitor.state_file,
                                   {n: s for n, s in self.breakers.items() if n in names})
        # A check killed by stop() has no result.
        return [check.value for check in checks if isinstance(check.value, MonitorResult)]

    def stop(self) -> None:
        """Shut down: no new checks or retries; checks still running after their deadline
        (plus STOP_GRACE_S) are killed."""
        self.checker.stopping = True
        grace = self.config.longest_timeout + STOP_GRACE_S
        if self._pool is not None and not self._pool.join(timeout=grace):
            self._pool.kill(timeout=1)

    def close(self) -> None:
        self.transport.close()

    def check(self, target: Target) -> MonitorResult:
        """One check of ``target`` through its breaker; the listeners get the result."""
        self.inflight += 1
        try:
            result = self._gated_check(target)
        except Exception as error:  # a bug must not end the sweep of every other target
            # No traceback: its frames' text may hold the URL's password or a header.
            log.error("internal error checking %s: %s", target.name, type(error).__name__)
            result = internal_error_result(target, error, self.clock())
        finally:
            self.inflight -= 1
        if not result.ok:
            log.warning("check failed: target=%s class=%s detail=%s breaker=%s", result.target,
                        result.error_class, result.detail, result.breaker)
        for listener in self.listeners:
            listener(result)
        return result

    def _gated_check(self, target: Target) -> MonitorResult:
        settings = self.config.breaker
        checked_at = self.clock()
        state = self.breakers.get(target.name, BreakerState())
        decision = gate(state, checked_at, settings)
        if decision is Gate.SKIP:
            return skipped_result(target, state, checked_at)
        trial = decision is Gate.TRIAL
        if trial:
            half_open = BreakerState(HALF_OPEN, state.failures, state.opened_at, state.failure)
            self.breakers[target.name] = half_open
            for listener in self.breaker_listeners:
                listener(target.name, half_open)
        outcome = self.checker.check(target, trial=trial)
        before, state = state, record(state, outcome.decisive.failure, self.clock(), settings, trial=trial)
        self.breakers[target.name] = state
        if state != before:
            self.breaker_changes += 1
        return checked_result(target, outcome, state, checked_at,
                              self.config.monitor.degraded_after(target.degraded_latency))


def transport_for(config: Config, concurrency: int) -> Transport:
    targets = max(len(config.enabled_targets), 1)
    return Transport(
        pool_size=min(concurrency, targets), user_agent=config.monitor.user_agent,
        hosts=targets,  # an upper bound is enough: it only caps the pools kept
        secret_headers=secret_headers(config))


def secret_headers(config: Config) -> frozenset[str]:
    """Headers dropped on a redirect to another origin: those of the auth sources, and those
    a flow fills from extracted values (a token, a session)."""
    filled = {name for target in config.targets for step in target.steps
              for name, value in step.request.headers.items() if uses(value)}
    return frozenset(a.header_name for a in config.auth.values()) | filled


def sweep(targets: Sequence[Target], config: Config) -> list[MonitorResult]:
    """Python API: one sweep of ``targets`` with ``config`` (gevent must be patched)."""
    engine = Engine(config)
    try:
        return engine.sweep(targets)
    finally:
        engine.close()
