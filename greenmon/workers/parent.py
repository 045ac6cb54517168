"""Worker processes: N event loops on N cores, driven as one.

Each worker is a fresh ``python -m greenmon.workerprocess`` process with its
own gevent hub and a share of the targets; the parent talks to it through
``messages``. ``WorkerEngine`` has the interface of ``Engine`` for
``--once`` (sweep, stop, close, listeners, breakers, inflight);
``WorkerChecks`` has the interface of ``inprocess.InProcessChecks`` for the daemon:
every worker runs its share on its own schedule, and the parent merges what
they report into its store (the status page, /api/results); for /metrics it
asks each worker for its share, rendered there (``render_shares``). The
parent keeps the breaker table (from the workers' results) and is the only
one to save it.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import gevent
import gevent.event
import gevent.lock
from gevent import subprocess

from greenmon import statefile
from greenmon.breaker import BreakerState
from greenmon.config import Config
from greenmon.result import MonitorResult
from greenmon.targets import Target
from greenmon.timing import Timing
from greenmon.transport import prepared_urls
from greenmon.workers.messages import (DONE, EXIT, RUN, SWEEP, HalfOpen, Reload, Render, Rendered,
                                       Results, Setup, ShareUnavailable, Status, receive_message,
                                       send_message)

log = logging.getLogger(__name__)

STATUS_STALE_S = 5.0     # a running worker silent this long is not checking on schedule
RESTART_PAUSE_S = 1.0    # between a daemon worker's death and its replacement
RENDER_WAIT_S = 9.0      # for a worker's share of /metrics: within Prometheus' default scrape_timeout
LATE_SHARE_S = 60.0      # a worker's last share stands in for a late one this long at most ...
LATE_SHARE_WAIT_S = 3.0  # ... after this wait for a fresh one (a share takes under 1 s at 50,000)


def resolve_workers(value: str) -> int:
    """--workers N or "auto" (one per core)."""
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    count = int(value)
    if count < 1:
        raise ValueError("must be >= 1 or auto")
    return count


def shares(targets: Sequence[Target], count: int) -> list[tuple[Target, ...]]:
    """An even split, dealt round-robin so that neighbours in the list land on different workers."""
    return [tuple(targets[i::count]) for i in range(count) if targets[i::count]]


def share_config(config: Config, share: Iterable[Target], concurrency: int) -> Config:
    """A worker's config: its targets only (not the discovery sources or what they loaded: the
    parent reads them and sends each worker its share; nor the file's text, which only the
    parent's errors quote)."""
    return dataclasses.replace(
        config, targets=tuple(share), sources=(), static_targets=(), discovered={}, document=None,
        monitor=dataclasses.replace(config.monitor, concurrency=concurrency, state_file=""))


def split_concurrency(total: int, parts: int) -> list[int]:
    """monitor.concurrency bounds the checks in flight across all workers."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


class _Worker:
    def __init__(self, index: int, config: Config):
        self.index = index
        self.config = config
        self.inflight = 0
        self.healthy = True
        self.heard_at = time.monotonic()
        self.passes: list[float] = []
        self.process: subprocess.Popen | None = None
        self.renders: dict[int, gevent.event.AsyncResult] = {}   # Render sent, Rendered awaited
        self.last_share: tuple[float, list] | None = None   # (when it came, the share)
        self.shares_from = 0   # the first Render whose share is of its present targets
        # One message at a time on its stdin: a Render may come while the Setup of a large
        # share is still being written (a pipe write yields to the loop when the pipe is full).
        self._writing = gevent.lock.Semaphore()

    def start(self, breakers: dict[str, BreakerState], pass_s: float = 0.0,
              label_names: tuple[str, ...] | None = None, seed: dict | None = None) -> None:
        """``label_names``: the daemon's (Config.label_names); the worker then keeps its share's
        metrics and renders them when asked. None: --once, results only. ``seed``: the
        numbers its metrics start from (a replaced worker's go on from the parent's)."""
        names = {t.name for t in self.config.enabled_targets}
        table = {n: s for n, s in breakers.items() if n in names}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "greenmon.workerprocess"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        self.inflight, self.healthy, self.heard_at = 0, True, time.monotonic()
        self.last_share = None   # the process before this one rendered it
        urls = prepared_urls(t.url for t in self.config.enabled_targets)
        self.send(Setup(self.config, table, logging.getLogger().level, urls, pass_s,
                        metrics=label_names is not None, label_names=label_names or (),
                        seed=seed))

    def renders_fail(self, why: str) -> None:
        """The renders this worker will not answer (it is gone)."""
        renders, self.renders = self.renders, {}
        for waiting in renders.values():
            waiting.set_exception(ShareUnavailable(why))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, message: Any, quiet: bool = False) -> None:
        try:
            with self._writing:
                send_message(self.process.stdin, message)
        except (BrokenPipeError, OSError, ValueError):
            if not quiet:
                log.error("worker %d (pid %d) is gone", self.index, self.process.pid)

    def receive(self) -> Any:
        return receive_message(self.process.stdout)

    def signal(self, number: int) -> None:
        if self.alive:
            self.process.send_signal(number)

    def end(self, wait_s: float, killed: bool = False) -> None:
        """Ask it to exit (or kill it), then reap it: killed if it outlives ``wait_s``."""
        if killed and self.alive:
            self.process.kill()
        self.send(EXIT, quiet=True)
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=max(0.1, wait_s))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _WorkerSet:
    """What both modes share: the processes, the breaker table and the results they send."""

    def __init__(self, config: Config, breakers: dict[str, BreakerState] | None):
        self.config = config
        self.listeners: list[Callable[[MonitorResult], None]] = []
        self.breaker_listeners: list[Callable[[str, BreakerState], None]] = []
        self.breakers = statefile.initial_breakers(config, breakers)
        self.breaker_changes = 0
        self._workers: list[_Worker] = []
        self._targets = {t.name: t for t in config.enabled_targets}

    @property
    def inflight(self) -> int:
        return sum(worker.inflight for worker in self._workers)

    def _handle(self, worker: _Worker, message: Results,
                collect: Callable[[MonitorResult], None] | None = None) -> None:
        for item in message.items:
            if isinstance(item, HalfOpen):
                for listener in self.breaker_listeners:
                    listener(item.target, item.state)
                continue
            result, state = self._sharing(item[0]), item[1]
            if self.breakers.get(result.target, BreakerState()) != state:
                self.breaker_changes += 1
            self.breakers[result.target] = state
            if collect is not None:
                collect(result)
            for listener in self.listeners:
                listener(result)
        if message.status is not None:
            self._status(worker, message.status)

    def _sharing(self, result: MonitorResult) -> MonitorResult:
        """The result with the target's own strings (name, URL, method, labels): one that came
        through the pipe has copies of its own, and the store keeps the last result of every
        target (about 300 bytes each, 15 MB at 50,000 targets)."""
        target = self._targets.get(result.target)
        if target is None:
            return result
        return dataclasses.replace(
            result, target=target.name, url=target.url if result.url == target.url else result.url,
            method=target.method, labels=target.labels, breaker=sys.intern(result.breaker))

    def _status(self, worker: _Worker, status: Status) -> None:
        worker.inflight, worker.healthy = status.inflight, status.healthy
        worker.heard_at = time.monotonic()

    def _end_all(self, killed: bool = False) -> None:
        deadline = time.monotonic() + self.config.longest_timeout + 2
        for worker in self._workers:
            worker.end(deadline - time.monotonic(), killed)


class WorkerEngine(_WorkerSet):
    """The Engine interface over worker processes, for --once."""

    def __init__(self, config: Config, workers: int, *, clock: Callable[[], float] = time.time,
                 listeners: Iterable[Callable[[MonitorResult], None]] = (),
                 breakers: dict[str, BreakerState] | None = None):
        super().__init__(config, breakers)
        self.listeners += listeners
        self._sweeping = False
        parts = shares(config.enabled_targets, min(workers, config.monitor.concurrency))
        for index, (share, concurrency) in enumerate(
                zip(parts, split_concurrency(config.monitor.concurrency, len(parts)))):
            worker = _Worker(index, share_config(config, share, concurrency))
            worker.start(self.breakers)
            self._workers.append(worker)
        log.info("%d worker processes", len(self._workers))

    def sweep(self, targets: Sequence[Target] | None = None) -> list[MonitorResult]:
        """One sweep on every worker at once; results in config order."""
        if targets is not None and tuple(targets) != self.config.enabled_targets:
            raise ValueError("a WorkerEngine sweeps the targets it was started with")
        results: dict[str, MonitorResult] = {}
        self._sweeping = True
        for worker in self._workers:
            if not worker.alive:
                log.warning("worker %d had ended; starting it again", worker.index)
                worker.start(self.breakers)
            worker.send(SWEEP)
        gevent.joinall([gevent.spawn(self._collect, w, results) for w in self._workers],
                       raise_error=True)
        self._sweeping = False
        if self.config.monitor.state_file:
            statefile.save_or_warn(self.config.monitor.state_file, self.breakers)
        order = [t.name for t in self.config.enabled_targets]
        missing = len(order) - len(results)
        if missing:
            log.error("%d targets have no result: a worker process ended during the sweep", missing)
        return [results[name] for name in order if name in results]

    def _collect(self, worker: _Worker, results: dict[str, MonitorResult]) -> None:
        def collect(result: MonitorResult) -> None:
            results[result.target] = result

        while True:
            message = worker.receive()
            if message is None:
                log.error("worker %d ended during a sweep (exit code %s)", worker.index,
                          worker.process.poll())
                return
            if message == DONE:
                worker.inflight = 0
                return
            self._handle(worker, message, collect)

    def stop(self) -> None:
        """Ask each worker to stop its sweep as Engine.stop does."""
        for worker in self._workers:
            worker.signal(signal.SIGTERM)

    def close(self) -> None:
        """Idle workers exit when told; a sweep cut short (Ctrl-C) kills them at once."""
        self._end_all(killed=self._sweeping)


def _share_age(worker: _Worker) -> float | None:
    """How old the last share the worker rendered is, if it came in the last LATE_SHARE_S."""
    if worker.last_share is None:
        return None
    age = time.monotonic() - worker.last_share[0]
    return age if age <= LATE_SHARE_S else None


def _late_share(worker: _Worker, waited_s: float) -> list:
    age = _share_age(worker)   # perhaps of one that came while this scrape waited
    if age is None:
        raise ShareUnavailable(f"worker {worker.index} did not render its share in {waited_s:g} s, "
                               f"and has none from the last {LATE_SHARE_S:g} s")
    log.warning("worker %d did not render its share of /metrics in %g s: its share of %.0f s ago "
                "is served", worker.index, waited_s, age)
    return worker.last_share[1]


class WorkerChecks(_WorkerSet):
    """The InProcessChecks interface over worker processes, for the daemon."""

    def __init__(self, config: Config, workers: int, *, timing: Timing,
                 on_result: Callable[[MonitorResult], None],
                 on_breaker: Callable[[str, BreakerState], None],
                 on_pass: Callable[[float], None], breakers: dict[str, BreakerState] | None = None,
                 seed: Callable[[Iterable[str]], dict] | None = None):
        """``seed(names)``: those targets' numbers as the parent holds them, for the metrics of
        a worker that replaces one that died (its counters go on, they do not restart)."""
        super().__init__(config, breakers)
        self._seed = seed
        self.listeners.append(on_result)
        self.breaker_listeners.append(on_breaker)
        self.timing = timing
        self._on_pass = on_pass
        self._stopping = False
        self._stopped = gevent.event.Event()
        self._readers: list[gevent.Greenlet] = []
        self._renders_asked = 0   # the id of the last Render sent
        count = min(workers, config.monitor.concurrency)
        self._assigned = assign(config.enabled_targets, {}, count)
        for index, concurrency in enumerate(split_concurrency(config.monitor.concurrency, count)):
            self._workers.append(_Worker(index, self._share(config, index, concurrency)))
        log.info("%d worker processes", len(self._workers))

    def _share(self, config: Config, index: int, concurrency: int) -> Config:
        share = [t for t in config.enabled_targets if self._assigned[t.name] == index]
        return share_config(config, share, concurrency)

    def start(self) -> gevent.Greenlet:
        for worker in self._workers:
            self._launch(worker)
            self._readers.append(gevent.spawn(self._read, worker))
        return gevent.spawn(self._stopped.wait)

    def _launch(self, worker: _Worker, replacing: bool = False) -> None:
        seed = None
        if replacing and self._seed is not None:
            seed = self._seed(t.name for t in worker.config.enabled_targets)
        worker.start(self.breakers, self.config.longest_interval, self.config.label_names, seed)
        worker.send(RUN)

    def _read(self, worker: _Worker) -> None:
        """Everything a worker says, for as long as the daemon runs; a worker that died is
        replaced (its share's breakers come from the parent's table)."""
        while True:
            message = worker.receive()
            if message == DONE:
                return
            if isinstance(message, Rendered):
                if message.share is not None and message.id >= worker.shares_from:
                    worker.last_share = (time.monotonic(), message.share)   # even a late one
                waiting = worker.renders.pop(message.id, None)
                if waiting is not None:
                    waiting.set(message.share)
                continue
            if message is None:
                worker.renders_fail(f"worker {worker.index} ended")
                if self._stopping:
                    return
                log.error("worker %d ended (exit code %s); starting it again", worker.index,
                          worker.process.wait())
                gevent.sleep(RESTART_PAUSE_S)
                if self._stopping:
                    return
                self._launch(worker, replacing=True)
                continue
            self._handle(worker, message)

    def _status(self, worker: _Worker, status: Status) -> None:
        super()._status(worker, status)
        if status.timing is not None:
            self.timing.merge(status.timing)
        if status.passes:
            worker.passes += status.passes
            # A pass is done when every worker has done it: as long as the slowest.
            while all(w.passes for w in self._workers):
                self._on_pass(max(w.passes.pop(0) for w in self._workers))

    def render_shares(self) -> list:
        """Each worker's share of /metrics, rendered there at once (exposition.Text.share), in
        worker order. A worker that has not answered in LATE_SHARE_WAIT_S (its loop saturated
        with checks) is represented by the last share it rendered, if that came in the last
        LATE_SHARE_S: the same series, some seconds older, rather than a failed or a 9 s
        scrape. ShareUnavailable when a worker is gone, failed, or has no recent share and
        has not answered in RENDER_WAIT_S: a scrape with part of the targets missing would
        read as those series ending."""
        self._renders_asked += 1
        request = self._renders_asked
        started = time.monotonic()
        waits, shares = [], []
        try:
            for worker in self._workers:
                if not worker.alive:
                    raise ShareUnavailable(f"worker {worker.index} is not running (it is restarted)")
                waiting = worker.renders[request] = gevent.event.AsyncResult()
                worker.send(Render(request))
                waits.append(waiting)
            for worker, waiting in zip(self._workers, waits):
                wait_s = RENDER_WAIT_S if _share_age(worker) is None else LATE_SHARE_WAIT_S
                try:
                    share = waiting.get(timeout=max(0.0, started + wait_s - time.monotonic()))
                except gevent.Timeout:
                    share = _late_share(worker, wait_s)
                if share is None:
                    raise ShareUnavailable(f"worker {worker.index} could not render its share "
                                           "(its error is in the log)")
                shares.append(share)
        finally:
            for worker in self._workers:
                worker.renders.pop(request, None)
        return shares

    def healthy(self) -> bool:
        now = time.monotonic()
        return all(w.alive and w.healthy and now - w.heard_at < STATUS_STALE_S
                   for w in self._workers)

    def prepare(self, config: Config):
        """For a reload, off the loop: kept targets stay on their worker; new ones go to the
        least loaded. Each worker gets its new share and the URLs prepared."""
        assigned = assign(config.enabled_targets, self._assigned, len(self._workers))
        concurrency = split_concurrency(config.monitor.concurrency, len(self._workers))
        reloads = []
        for index, worker in enumerate(self._workers):
            share = [t for t in config.enabled_targets if assigned[t.name] == index]
            moved = {t.name: self.breakers[t.name] for t in share
                     if self._assigned.get(t.name) != index and t.name in self.breakers}
            reloads.append(Reload(share_config(config, share, concurrency[index]), moved,
                                  prepared_urls(t.url for t in share), config.longest_interval,
                                  config.label_names))
        return assigned, reloads

    def apply(self, config: Config, prepared) -> None:
        self._assigned, reloads = prepared
        names = {t.name for t in config.enabled_targets}
        for name in [name for name in self.breakers if name not in names]:
            del self.breakers[name]
        self.config = config
        self._targets = {t.name: t for t in config.enabled_targets}
        self.breaker_changes += 1
        for worker, reload in zip(self._workers, reloads):
            worker.config = reload.config
            # Its targets may have moved: no series twice, or lost. A Render sent from here on
            # is read after the reload.
            worker.last_share, worker.shares_from = None, self._renders_asked + 1
            worker.send(reload)

    def stop(self) -> None:
        """SIGTERM to every worker: each stops as the daemon does and says DONE."""
        self._stopping = True
        for worker in self._workers:
            worker.signal(signal.SIGTERM)
        gevent.joinall(self._readers, timeout=self.config.longest_timeout + 3)
        self._stopped.set()

    def close(self) -> None:
        self._end_all()


def assign(targets: Sequence[Target], before: dict[str, int], count: int) -> dict[str, int]:
    """Which worker checks each target: where it was before, else the least loaded one
    (round-robin from a fresh start), so a reload moves no target that stays."""
    assigned = {t.name: before[t.name] for t in targets if before.get(t.name, count) < count}
    loads = [0] * count
    for index in assigned.values():
        loads[index] += 1
    heap = [(load, index) for index, load in enumerate(loads)]
    heapq.heapify(heap)
    for target in targets:
        if target.name not in assigned:
            load, index = heapq.heappop(heap)
            assigned[target.name] = index
            heapq.heappush(heap, (load + 1, index))
    return assigned
