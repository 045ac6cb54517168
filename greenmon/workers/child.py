"""A worker process's checks, on its own hub, driven over stdin/stdout (started as
``python -m greenmon.workerprocess``, which adds its share's metrics: ``main(wire)``).

After ``Setup`` it obeys ``SWEEP`` (one sweep of its share, then ``DONE``),
``RUN`` (the daemon's schedule for its share, until SIGTERM), ``Reload``,
``Render`` (its share of the daemon's /metrics, made by what ``wire`` gave
it) and ``EXIT``. Results stream back as checks end, batched by one writer
greenlet that owns stdout, with a ``Status`` (checks in flight, health, the
loop and schedule lag measured here) every STATUS_EVERY_S. SIGTERM stops
what runs as the daemon does: no new checks or retries; checks in flight end
or hit their deadline.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Callable

import gevent
import gevent.event
import gevent.queue
from gevent.fileobject import FileObjectPosix

from greenmon.cooperative import off_loop
from greenmon.engine import Engine
from greenmon.inprocess import InProcessChecks
from greenmon.limits import quiet_urllib3, tune_runtime
from greenmon.timing import Timing
from greenmon.transport import adopt_prepared_urls
from greenmon.workers.messages import (DONE, EXIT, RUN, STATUS_EVERY_S, SWEEP, HalfOpen, Reload,
                                       Render, Rendered, Results, Setup, Status, receive_message,
                                       send_message)

log = logging.getLogger(__name__)


class Worker:
    """This process's checks: an Engine for sweeps, or InProcessChecks on the schedule."""

    def __init__(self, setup: Setup, outbox: gevent.queue.Queue):
        self.config = setup.config
        self.pass_s = setup.pass_s or None
        self.breakers = setup.breakers
        self.outbox = outbox
        self.timing = Timing()
        self.passes: list[float] = []
        self.engine: Engine | None = None
        self.checks: InProcessChecks | None = None
        self.finished = gevent.event.Event()
        # What the process's wiring (``main``'s ``wire``) adds: who else hears of results,
        # breakers and reloads, and what renders the share of /metrics (Rendered.share).
        self.result_listeners: list[Callable] = []
        self.breaker_listeners: list[Callable] = []
        self.reload_listeners: list[Callable[[Reload], None]] = []
        self.render: Callable[[], list] | None = None
        self._render_ids: list[int] = []   # Renders asked and not answered yet
        self._rendering: gevent.Greenlet | None = None

    # --- what the parent asks ----------------------------------------------------------------

    def serve(self, commands) -> None:
        while True:
            command = receive_message(commands)
            if command is None or command == EXIT:
                return
            if command == SWEEP:
                self.sweep()
            elif command == RUN:
                self.run()
            elif isinstance(command, Reload):
                self.reload(command)
            elif isinstance(command, Render):
                self._render_ids.append(command.id)
                if self._rendering is None or self._rendering.dead:   # else it is answered next
                    self._rendering = gevent.spawn(self._render)   # commands are read meanwhile

    def sweep(self) -> None:
        if self.engine is None:
            self.engine = Engine(self.config, breakers=self.breakers)
            self.engine.listeners.append(self._result)
            self.engine.breaker_listeners.append(self._half_open)
        self.engine.sweep()
        self.outbox.put(DONE)

    def run(self) -> None:
        self.checks = InProcessChecks(self.config, timing=self.timing, on_result=self._result,
                             on_breaker=self._half_open, on_pass=self.passes.append,
                             breakers=self.breakers, pass_s=self.pass_s)
        self.checks.start()

    def reload(self, command: Reload) -> None:
        adopt_prepared_urls(command.urls)
        for name, state in command.breakers.items():   # targets that came from another worker
            self.breakers.setdefault(name, state)
        self.config = command.config
        if self.checks is not None:
            prepared = off_loop(self.checks.prepare, command.config)
            self.checks.apply(command.config, prepared, command.pass_s or None)
        for listener in self.reload_listeners:
            listener(command)

    def _render(self) -> None:
        """The share of /metrics for every Render asked, or an empty answer (the parent then
        answers the scrape 503, and this worker's error is in the log). One render at a time:
        the Renders that came while one ran get the next one. On a loop saturated with checks
        a render outlasts a scrape interval; a render per scrape would pile up without end."""
        while self._render_ids:
            ids, self._render_ids = self._render_ids, []
            share = None
            try:
                if self.render is not None:
                    share = self.render()
            except Exception:
                log.exception("rendering this worker's share of /metrics failed")
            for render_id in ids:
                self.outbox.put(Rendered(render_id, share))

    def stop(self) -> None:
        """SIGTERM: stop what runs; in the daemon, this worker's work is then done."""
        if self.checks is not None:
            self.checks.stop()
            self.outbox.put(DONE)
            self.finished.set()
        elif self.engine is not None:
            self.engine.stop()

    def close(self) -> None:
        for runner in (self.checks, self.engine):
            if runner is not None:
                runner.close()

    # --- what it tells the parent ------------------------------------------------------------

    @property
    def inflight(self) -> int:
        runner = self.checks or self.engine
        return runner.inflight if runner is not None else 0

    def _result(self, result) -> None:
        runner = self.checks or self.engine
        self.outbox.put((result, runner.breakers[result.target]))
        for listener in self.result_listeners:
            listener(result)

    def _half_open(self, name, state) -> None:
        self.outbox.put(HalfOpen(name, state))
        for listener in self.breaker_listeners:
            listener(name, state)

    def status(self) -> Status:
        passes, self.passes[:] = tuple(self.passes), []
        healthy = self.checks.healthy() if self.checks is not None else True
        return Status(self.inflight, healthy, self.timing.take(), passes)


def main(wire: Callable[[Worker, Setup], None]) -> int:
    """The process: ``wire(worker, setup)`` adds what it needs besides checks (its metrics)."""
    commands = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    replies = FileObjectPosix(sys.stdout.fileno(), "wb", close=False)
    setup = receive_message(commands)
    adopt_prepared_urls(setup.urls)  # the parent prepared them validating the config
    logging.basicConfig(level=setup.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    quiet_urllib3()
    outbox: gevent.queue.Queue = gevent.queue.Queue()
    worker = Worker(setup, outbox)
    wire(worker, setup)
    tune_runtime()
    writer = gevent.spawn(_write_replies, outbox, replies, worker)
    ticker = gevent.spawn(_report_status, outbox)

    _die_with_parent()
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(worker.stop))
    # Ctrl-C and HUP reach the whole process group; the parent decides what they mean.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    reader = gevent.spawn(worker.serve, commands)
    try:
        gevent.wait([reader, worker.finished], count=1)
    finally:
        ticker.kill()
        outbox.put(None)
        writer.join(timeout=5)
        reader.kill()
        worker.close()
    return 0


_TICK = "tick"


def _die_with_parent() -> None:
    """Linux: end this worker if the parent dies, instead of checking on as an orphan."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _report_status(outbox: gevent.queue.Queue) -> None:
    while True:
        gevent.sleep(STATUS_EVERY_S)
        outbox.put(_TICK)


def _write_replies(outbox: gevent.queue.Queue, replies, worker: Worker) -> None:
    """Send results as they come, batching those that piled up; a Status with each tick; a
    Rendered share as it is, once the results put before it are sent."""
    pending: list = []

    def flush(status: Status | None = None) -> None:
        if pending or status is not None:
            send_message(replies, Results(list(pending), status))
            pending.clear()

    try:
        while True:
            items = [outbox.get()]
            while not outbox.empty():
                items.append(outbox.get_nowait())
            status = None
            for item in items:
                if item is None:  # the worker is ending
                    flush(worker.status())
                    return
                if item == DONE:
                    flush(worker.status())
                    send_message(replies, DONE)
                elif isinstance(item, Rendered):   # after the results that came before it
                    flush()
                    send_message(replies, item)
                elif item == _TICK:
                    status = worker.status()
                else:
                    pending.append(item)
            flush(status)
    except BrokenPipeError:
        return
