"""Sweeps: every enabled target checked on one gevent pool, through the breaker gate.

The engine is the only place that spawns greenlets. Each result is handed
to the registered listeners as soon as its check ends (jsonl output, the
exporter), and the whole list is returned in target order.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Mapping, Sequence

import gevent
import gevent.monkey
import gevent.pool

from greenmon import statefile
from greenmon.breaker import HALF_OPEN, BreakerState, Gate, gate, record
from greenmon.config import Config
from greenmon.errors import CONNECTION
from greenmon.limits import fit_concurrency
from greenmon.prober import Prober
from greenmon.result import MonitorResult, Outcome
from greenmon.targets import Target
from greenmon.transport import Transport

log = logging.getLogger(__name__)

Listener = Callable[[MonitorResult], None]
STOP_GRACE_S = 1.0  # beyond the longest deadline, before checks still running are killed


class NotPatchedError(RuntimeError):
    """greenmon was used without gevent monkey-patching: checks would run one at a time."""


def require_gevent_patching() -> None:
    if not (gevent.monkey.is_module_patched("socket") and gevent.monkey.is_module_patched("ssl")):
        raise NotPatchedError(
            "greenmon needs gevent monkey-patching: call gevent.monkey.patch_all() before "
            "importing requests or greenmon (the greenmon command does this itself)")


class Engine:
    """Holds what outlives one sweep: the HTTP session, the prober and the breaker table."""

    def __init__(self, config: Config, *, transport: Transport | None = None,
                 clock: Callable[[], float] = time.time, listeners: Iterable[Listener] = (),
                 breakers: Mapping[str, BreakerState] | None = None):
        """``breakers``: the table to start from (a reload); default: the state file, if any."""
        require_gevent_patching()
        self.config = config
        self.concurrency = fit_concurrency(config.monitor.concurrency, len(config.enabled_targets))
        targets = max(len(config.enabled_targets), 1)
        self.transport = transport or Transport(
            pool_size=min(self.concurrency, targets), user_agent=config.monitor.user_agent,
            hosts=targets,  # an upper bound is enough: it only caps the pools kept
            secret_headers=frozenset(a.header_name for a in config.auth.values()))
        self.prober = Prober(self.transport, config)
        self.clock = clock
        self.listeners: list[Listener] = list(listeners)
        self.breakers = initial_breakers(config, breakers)
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
            if self.prober.stopping:
                break  # stop(): no new checks, not even the one that waited for a slot
            checks.append(self._pool.spawn(self._check, target))
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
        self.prober.stopping = True
        grace = self.config.longest_timeout + STOP_GRACE_S
        if self._pool is not None and not self._pool.join(timeout=grace):
            self._pool.kill(timeout=1)

    def close(self) -> None:
        self.transport.close()

    def _check(self, target: Target) -> MonitorResult:
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
            self.breakers[target.name] = BreakerState(HALF_OPEN, state.failures,
                                                      state.opened_at, state.failure)
        outcome = self.prober.check(target, trial=trial)
        state = record(state, outcome.last.failure, self.clock(), settings, trial=trial)
        self.breakers[target.name] = state
        return checked_result(target, outcome, state, checked_at)


def initial_breakers(config: Config, given: Mapping[str, BreakerState] | None) -> dict[str, BreakerState]:
    """The given table, else the state file's, limited to the configured targets."""
    if given is None:
        given = statefile.load(config.monitor.state_file) if config.monitor.state_file else {}
    names = {t.name for t in config.enabled_targets}
    return {name: state for name, state in given.items() if name in names}


def build_engine(config: Config, workers: int = 1, **kwargs):
    """An Engine in this process, or a WorkerEngine over ``workers`` processes."""
    if workers > 1 and len(config.enabled_targets) > 1:
        from greenmon.workers import WorkerEngine
        return WorkerEngine(config, workers, **kwargs)
    return Engine(config, **kwargs)


def checked_result(target: Target, outcome: Outcome, state: BreakerState,
                   checked_at: float) -> MonitorResult:
    last = outcome.last
    failure = last.failure
    return MonitorResult(
        target=target.name, url=target.display_url, method=target.method, ok=failure is None,
        status_code=last.status_code, latency_s=last.latency_s, elapsed_s=outcome.elapsed_s,
        attempts=len(outcome.attempts),
        error_class=failure and failure.error_class, detail=failure and failure.detail,
        error=failure and failure.message, breaker=state.state, checked_at=checked_at,
        body_bytes=last.body_bytes, labels=target.labels, retried_classes=outcome.retried_classes,
        attempt_latencies=tuple(a.latency_s for a in outcome.attempts))


def internal_error_result(target: Target, error: Exception, checked_at: float) -> MonitorResult:
    """greenmon itself failed to check the target: down, said plainly, never silently lost."""
    return MonitorResult(
        target=target.name, url=target.display_url, method=target.method, ok=False,
        status_code=None, latency_s=None, elapsed_s=0.0, attempts=0, error_class=CONNECTION,
        detail="internal", error=f"greenmon internal error ({type(error).__name__})",
        breaker="closed", checked_at=checked_at, body_bytes=None, labels=target.labels)


def skipped_result(target: Target, state: BreakerState, checked_at: float) -> MonitorResult:
    """An open breaker: not contacted, down, with the failure that opened it."""
    failure = state.failure
    return MonitorResult(
        target=target.name, url=target.display_url, method=target.method, ok=False,
        status_code=None, latency_s=None, elapsed_s=0.0, attempts=0,
        error_class=failure and failure.error_class, detail=failure and failure.detail,
        error=failure and failure.message, breaker=state.state, checked_at=checked_at,
        body_bytes=None, labels=target.labels)


def sweep(targets: Sequence[Target], config: Config) -> list[MonitorResult]:
    """Python API: one sweep of ``targets`` with ``config`` (gevent must be patched)."""
    engine = Engine(config)
    try:
        return engine.sweep(targets)
    finally:
        engine.close()
