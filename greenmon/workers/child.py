"""One worker process (``python -m greenmon.workers.child``): checks on its own hub, driven over stdin/stdout.

After ``Setup`` it obeys ``SWEEP`` (one sweep of its share, then ``DONE``),
``RUN`` (the daemon's schedule for its share, until SIGTERM), ``Reload``
and ``EXIT``. Results stream back as checks end, batched by one writer
greenlet that owns stdout, with a ``Status`` (checks in flight, health, the
loop and schedule lag measured here) every STATUS_EVERY_S. SIGTERM stops
what runs as the daemon does: no new checks or retries; checks in flight end
or hit their deadline.
"""

from gevent import monkey

monkey.patch_all()

import ctypes  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.queue  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402

from greenmon.cooperative import off_loop  # noqa: E402
from greenmon.engine import Engine  # noqa: E402
from greenmon.inprocess import InProcessChecks  # noqa: E402
from greenmon.limits import quiet_urllib3, tune_runtime  # noqa: E402
from greenmon.timing import Timing  # noqa: E402
from greenmon.transport import adopt_prepared_urls  # noqa: E402
from greenmon.workers.messages import (DONE, EXIT, RUN, STATUS_EVERY_S, SWEEP, HalfOpen,  # noqa: E402
                                       Reload, Results, Setup, Status, receive_message,
                                       send_message)


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

    def _half_open(self, name, state) -> None:
        self.outbox.put(HalfOpen(name, state))

    def status(self) -> Status:
        passes, self.passes[:] = tuple(self.passes), []
        healthy = self.checks.healthy() if self.checks is not None else True
        return Status(self.inflight, healthy, self.timing.take(), passes)


def main() -> int:
    commands = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    replies = FileObjectPosix(sys.stdout.fileno(), "wb", close=False)
    setup = receive_message(commands)
    adopt_prepared_urls(setup.urls)  # the parent prepared them validating the config
    logging.basicConfig(level=setup.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    quiet_urllib3()
    outbox: gevent.queue.Queue = gevent.queue.Queue()
    worker = Worker(setup, outbox)
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
    """Send results as they come, batching those that piled up; a Status with each tick."""
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
                elif item == _TICK:
                    status = worker.status()
                else:
                    pending.append(item)
            flush(status)
    except BrokenPipeError:
        return


if __name__ == "__main__":
    sys.exit(main())
