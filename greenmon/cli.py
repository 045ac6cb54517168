"""The greenmon command line: flags, config loading, exit codes. It wires objects and holds no checks."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from typing import IO, Sequence

from greenmon import __version__
from greenmon.config import Config, config_path, load_config
from greenmon.report import FORMATS, ProgressLine, jsonl_line, write_json, write_table
from greenmon.schema import ConfigError
from greenmon.summary import summarize

EXIT_UP, EXIT_DOWN, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

log = logging.getLogger("greenmon")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="greenmon", description="Check HTTP endpoints concurrently and report who is down.")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $GREENMON_CONFIG, else ./greenmon.toml)")
    parser.add_argument("--once", action="store_true", help="one sweep, print the report, exit")
    parser.add_argument("--demo", action="store_true",
                        help="monitor an embedded demo target farm on 127.0.0.1 instead of a config")
    parser.add_argument("--format", choices=FORMATS, default="table", help="report format")
    parser.add_argument("--output", metavar="FILE", help="write the report to FILE, not stdout")
    parser.add_argument("--concurrency", type=_positive_int, metavar="N",
                        help="checks in flight at once (monitor.concurrency)")
    parser.add_argument("--timeout", type=_positive_float, metavar="S",
                        help="total deadline of one attempt in seconds (monitor.timeout)")
    parser.add_argument("--state-file", metavar="PATH",
                        help="keep the breaker table in PATH across runs (monitor.state_file)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning", type=str.lower)
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, print a summary, exit 0 or 2")
    parser.add_argument("--version", action="version", version=f"greenmon {__version__}")
    return parser


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    """Command-line flags win over the config file."""
    changes = {key: value for key, value in (
        ("concurrency", args.concurrency), ("timeout", args.timeout),
        ("state_file", args.state_file)) if value is not None}
    return config.replace("monitor", **changes) if changes else config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with contextlib.ExitStack() as stack:
            if args.demo:
                from greenmon.demo import DemoFarm
                farm = stack.enter_context(DemoFarm())
                config = farm.config()
            else:
                config = load_config(config_path(args.config))
            config = apply_overrides(config, args)
            if args.check_config:
                print(describe(config))
                return EXIT_UP
            if not args.once:
                print("greenmon: error: daemon mode is not available in this version; use --once",
                      file=sys.stderr)
                return EXIT_USAGE
            out = stack.enter_context(_open_output(args.output))
            return run_once(config, args.format, out)
    except ConfigError as error:
        print(f"greenmon: config error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("greenmon: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def describe(config: Config) -> str:
    enabled = len(config.enabled_targets)
    return (f"{config.source}: OK: {len(config.targets)} targets ({enabled} enabled), "
            f"{len(config.auth)} auth sources")


@contextlib.contextmanager
def _open_output(path: str | None):
    if path is None:
        yield sys.stdout
        return
    try:
        handle = open(path, "w", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--output {path}: cannot write: {error.strerror}") from None
    with handle:
        yield handle


def run_once(config: Config, output_format: str, out: IO[str]) -> int:
    """One sweep of every enabled target; exit 0 if all are up, 1 otherwise."""
    from greenmon.engine import Engine

    engine = Engine(config)
    progress = ProgressLine(len(config.enabled_targets))
    engine.listeners.append(progress)
    if output_format == "jsonl":
        def stream(result):
            out.write(jsonl_line(result))
            out.flush()
        engine.listeners.append(stream)
    started = time.monotonic()
    try:
        results = engine.sweep()
    finally:
        progress.stop()
        engine.close()
    summary = summarize(results, time.monotonic() - started, config.monitor.slo_p95_seconds)
    if output_format == "json":
        write_json(out, results, summary)
    elif output_format == "table":
        write_table(out, results, summary)
    return EXIT_UP if all(r.ok for r in results) else EXIT_DOWN
