"""One worker process (``python -m greenmon.worker``): an Engine on its own hub, driven over stdin/stdout.

The first message is (config, breaker table, log level); then each "sweep"
command runs one sweep and streams ("results", [(result, breaker state), ...],
in flight) messages as checks end, then ("done",). One writer greenlet owns
stdout, so messages never interleave, and it batches what piled up while it
wrote. SIGTERM or SIGINT stop the sweep under way as the daemon does: no new
retries, checks end or hit their deadline.
"""

from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
import gevent.queue  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402

from greenmon.engine import Engine  # noqa: E402
from greenmon.workers import receive_message, send_message  # noqa: E402

STOP_GRACE_S = 1.0


def main() -> int:
    commands = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    replies = FileObjectPosix(sys.stdout.fileno(), "wb", close=False)
    config, breakers, log_level = receive_message(commands)
    logging.basicConfig(level=log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s")
    engine = Engine(config, breakers=breakers)
    outbox: gevent.queue.Queue = gevent.queue.Queue()
    engine.listeners.append(lambda result: outbox.put((result, engine.breakers[result.target])))
    writer = gevent.spawn(_write_replies, outbox, replies, engine)

    def stop() -> None:
        gevent.spawn(engine.stop, engine.longest_timeout + STOP_GRACE_S)

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the parent reloads; a HUP to the group is for it
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
        outbox.put(None)
        writer.join(timeout=5)
        engine.close()
    return 0


_DONE = ("done",)


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
            for item in items:
                if item is None:  # the worker is ending
                    flush()
                    return
                if item is _DONE:
                    flush()
                    send_message(replies, _DONE)
                else:
                    pending.append(item)
            flush()
    except BrokenPipeError:
        return


if __name__ == "__main__":
    sys.exit(main())
