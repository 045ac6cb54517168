"""Worker processes: N event loops on N cores, driven as one engine.

``WorkerEngine`` has the interface of ``Engine`` (sweep, stop, close,
listeners, breakers, inflight), so ``--once``, the daemon, /metrics and the
state file work the same with one process or several. Each worker is a fresh
``python -m greenmon.worker`` process with its own gevent hub and an even
share of the targets; the parent sends it commands on stdin and reads its
results from stdout as pickled, length-prefixed messages. The parent keeps
the breaker table (from the workers' results) and is the only one to save it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import signal
import struct
import sys
import time
from typing import IO, Any, Callable, Iterable, Mapping, Sequence

import gevent
import gevent.queue
from gevent import subprocess

from greenmon import statefile
from greenmon.breaker import BreakerState
from greenmon.config import Config
from greenmon.engine import initial_breakers
from greenmon.result import MonitorResult
from greenmon.targets import Target
from greenmon.transport import prepared_urls

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")


def send_message(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def receive_message(stream: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    size = _HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


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


class _Worker:
    def __init__(self, index: int, config: Config):
        self.index = index
        self.config = config
        self.inflight = 0
        self.process: subprocess.Popen | None = None

    def start(self, breakers: Mapping[str, BreakerState]) -> None:
        names = {t.name for t in self.config.enabled_targets}
        table = {n: s for n, s in breakers.items() if n in names}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "greenmon.worker"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        urls = prepared_urls(t.url for t in self.config.enabled_targets)
        self.send((self.config, table, logging.getLogger().level, urls))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, message: Any) -> None:
        try:
            send_message(self.process.stdin, message)
        except (BrokenPipeError, OSError, ValueError):
            log.error("worker %d (pid %d) is gone", self.index, self.process.pid)

    def receive(self) -> Any:
        return receive_message(self.process.stdout)


class WorkerEngine:
    """The Engine interface over worker processes."""

    def __init__(self, config: Config, workers: int, *, clock: Callable[[], float] = time.time,
                 listeners: Iterable[Callable[[MonitorResult], None]] = (),
                 breakers: Mapping[str, BreakerState] | None = None):
        self.config = config
        self.listeners = list(listeners)
        self.breakers = initial_breakers(config, breakers)
        self._sweeping = False
        total = config.monitor.concurrency
        parts = shares(config.enabled_targets, min(workers, total))
        self._workers = []
        for index, share in enumerate(parts):
            # monitor.concurrency bounds the checks in flight across all workers.
            concurrency = total // len(parts) + (1 if index < total % len(parts) else 0)
            worker = _Worker(index, dataclasses.replace(
                config, targets=share,
                monitor=dataclasses.replace(config.monitor, concurrency=concurrency, state_file="")))
            worker.start(self.breakers)
            self._workers.append(worker)
        log.info("%d worker processes", len(self._workers))

    @property
    def inflight(self) -> int:
        return sum(worker.inflight for worker in self._workers)

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
            worker.send(("sweep",))
        readers = [gevent.spawn(self._collect, worker, results) for worker in self._workers]
        gevent.joinall(readers, raise_error=True)
        self._sweeping = False
        if self.config.monitor.state_file:
            statefile.save_or_warn(self.config.monitor.state_file, self.breakers)
        order = [t.name for t in self.config.enabled_targets]
        missing = len(order) - len(results)
        if missing:
            log.error("%d targets have no result: a worker process ended during the sweep", missing)
        return [results[name] for name in order if name in results]

    def _collect(self, worker: _Worker, results: dict[str, MonitorResult]) -> None:
        while True:
            message = worker.receive()
            if message is None:
                log.error("worker %d ended during a sweep (exit code %s)", worker.index,
                          worker.process.poll())
                return
            if message[0] == "done":
                worker.inflight = 0
                return
            _, batch, worker.inflight = message  # batch may be empty: an in-flight update
            for result, state in batch:
                self.breakers[result.target] = state
                results[result.target] = result
                for listener in self.listeners:
                    listener(result)

    def stop(self) -> None:
        """Ask each worker to stop its sweep as Engine.stop does."""
        for worker in self._workers:
            if worker.alive:
                worker.process.send_signal(signal.SIGTERM)

    def close(self) -> None:
        """Idle workers exit when told; a sweep cut short (Ctrl-C) kills them at once."""
        if self._sweeping:
            for worker in self._workers:
                if worker.alive:
                    worker.process.kill()
        for worker in self._workers:
            worker.send(("exit",))
            try:
                worker.process.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + self.config.longest_timeout + 2
        for worker in self._workers:
            try:
                worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
