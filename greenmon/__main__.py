"""Entry point: gevent patches the standard library first, then the command line is wired."""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402  (after patching, on purpose)


def main() -> int:
    from greenmon.cli import main as cli_main
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
