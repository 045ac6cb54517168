"""Entry point: gevent patches the standard library first, then the command line is wired.

Name lookups go to gevent's c-ares resolver unless GEVENT_RESOLVER says
otherwise: the default threaded resolver sends every new connection, even to
an IP address, through a pool of 10 threads, which at thousands of checks in
flight costs seconds of latency and hundreds of MB of memory. Worker
processes inherit the setting.
"""

import os

os.environ.setdefault("GEVENT_RESOLVER", "ares,thread")

from gevent import monkey  # noqa: E402

monkey.patch_all()

import sys  # noqa: E402  (after patching, on purpose)


def main() -> int:
    from greenmon.cli import main as cli_main
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
