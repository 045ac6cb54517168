"""One worker process (``python -m greenmon.worker``): an Engine on its own hub, driven over stdin/stdout.

The first message is (config, breaker table, log level, prepared URLs); then
each "sweep" command runs one sweep and streams ("results", [(result, breaker
state), ...], in flight) messages as checks end, then ("done",). One writer
greenlet owns stdout, so messages never interleave, and it batches what piled
up while it wrote. SIGTERM or SIGINT stop the sweep under way as the daemon
does: no new retries, checks end or hit their deadline.
"""

from gevent import monkey

monkey.patch_all()

import ctypes  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.queue  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402

from greenmon.engine import Engine  # noqa: E402
from greenmon.limits import tune_runtime  # noqa: E402
from greenmon.transport import adopt_prepared_urls  # noqa: E402
from greenmon.workers import receive_message, send_message  # noqa: E402

def main() -> int:
    commands = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    replies = FileObjectPosix(sys.stdout.fileno(), "wb", close=False)
    config, breakers, log_level, urls = receive_message(commands)
    adopt_prepared_urls(urls)  # the parent prepared them validating the config
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    engine = Engine(config, breakers=breakers)
    tune_runtime()
    outbox: gevent.queue.Queue = gevent.queue.Queue()
    engine.listeners.append(lambda result: outbox.put((result, engine.breakers[result.target])))
    writer = gevent.spawn(_write_replies, outbox, replies, engine)
    ticker = gevent.spawn(_report_inflight, outbox, engine)

    _die_with_parent()
    gevent.signal_handler(signal.SIGTERM, lambda: gevent.spawn(engine.stop))
    # Ctrl-C and HUP reach the whole process group; the parent decides what they mean.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        while True:
            command = receive_message(commands)
            if command is None or command[0] == "exit":
                break
            engine.sweep()
            outbox.put(_DONE)
    except BrokenPipeError:
        pass  # the parent is gone
    finally:
        ticker.kill()
        outbox.put(None)
        writer.join(timeout=5)
        engine.close()
    return 0


_DONE = ("done",)
_TICK = ("tick",)
INFLIGHT_EVERY_S = 0.5


def _die_with_parent() -> None:
    """Linux: end this worker if the parent dies, instead of checking on as an orphan."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def _report_inflight(outbox: gevent.queue.Queue, engine: Engine) -> None:
    """The parent's greenmon_inflight_checks: send the count when it changed and no result did."""
    last = 0
    while True:
        gevent.sleep(INFLIGHT_EVERY_S)
        if engine.inflight != last:
            last = engine.inflight
            outbox.put(_TICK)


def _write_replies(outbox: gevent.queue.Queue, replies, engine: Engine) -> None:
    """Send results as they come, batching those that piled up; ("done",) after a sweep's last."""
    pending: list = []

    def flush() -> None:
        if pending:
            send_message(replies, ("results", list(pending), engine.inflight))
            pending.clear()

    try:
        while True:
            items = [outbox.get()]
            while not outbox.empty():
                items.append(outbox.get_nowait())
            ticked = False
            for item in items:
                if item is None:  # the worker is ending
                    flush()
                    return
                if item is _DONE:
                    flush()
                    send_message(replies, _DONE)
                elif item is _TICK:
                    ticked = True
                else:
                    pending.append(item)
            if ticked and not pending:
                send_message(replies, ("results", [], engine.inflight))
            flush()
    except BrokenPipeError:
        return


if __name__ == "__main__":
    sys.exit(main())
