"""The greenmon command line: flags, config loading, exit codes. It wires objects and holds no checks."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from typing import IO, Sequence

import gevent

from greenmon import __version__, resolver, webconfig
from greenmon.adhoc import AdHocError, config_for_url, select_targets, url_target_config
from greenmon.config import CONFIG_ENV, Config, config_path, load_config
from greenmon.discovery.loading import discover
from greenmon.discovery.sources import describe as describe_sources
from greenmon.limits import quiet_urllib3, tune_runtime
from greenmon.report import FORMATS, ProgressLine, jsonl_line, write_json, write_table
from greenmon.schema import ConfigError, listen_address, location_name
from greenmon.store import store_for
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


def _listen(text: str) -> str:
    try:
        return listen_address(text)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None


def _location(text: str) -> str:
    try:
        return location_name(text)
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None


def _workers(text: str) -> int:
    from greenmon.workers.parent import resolve_workers
    try:
        return resolve_workers(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or auto, got {text!r}") from None


def _shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"must be I/N with 0 <= I < N, got {text!r}")
    return int(index), int(count)


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
    parser.add_argument("--listen", metavar="HOST:PORT", type=_listen,
                        help="daemon: serve /metrics here (server.listen)")
    parser.add_argument("--web-config-file", metavar="PATH",
                        help="daemon: TLS and basic auth for the endpoints, in the Prometheus "
                             "exporter-toolkit format (server.web_config_file)")
    parser.add_argument("--textfile", metavar="PATH.prom",
                        help="with --once: also write the metrics for node_exporter's textfile collector")
    parser.add_argument("--pushgateway", metavar="URL",
                        help="with --once: also push the metrics to a Pushgateway (job greenmon)")
    parser.add_argument("--workers", metavar="N|auto", type=_workers, default=1,
                        help="worker processes, each with its own event loop (default 1; auto: one per core)")
    parser.add_argument("--shard", metavar="I/N", type=_shard,
                        help="check only the targets whose stable name hash is in shard I (0-based) of N")
    parser.add_argument("--state-file", metavar="PATH",
                        help="keep the breaker table in PATH across runs (monitor.state_file)")
    parser.add_argument("--location", metavar="NAME", type=_location,
                        help="where this instance probes from, exported as the location label of "
                             "greenmon_build_info (monitor.location)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning", type=str.lower)
    parser.add_argument("--target", metavar="NAME", action="append",
                        help="with --once: check only this target of the config (repeatable; a "
                             "glob such as 'users-*' matches names)")
    parser.add_argument("--url", metavar="URL",
                        help="with --once: check this one URL with the [monitor] settings (the "
                             "config's, or the defaults without a config file)")
    parser.add_argument("--check-config", action="store_true",
                        help="validate the config, print a summary, exit 0 or 2")
    parser.add_argument("--version", action="version", version=f"greenmon {__version__}")
    return parser


def apply_overrides(config: Config, args: argparse.Namespace) -> Config:
    """Command-line flags win over the config file."""
    changes = {key: value for key, value in (
        ("concurrency", args.concurrency), ("timeout", args.timeout),
        ("state_file", args.state_file), ("location", args.location)) if value is not None}
    if changes:
        config = config.replace("monitor", **changes)
    if args.listen is not None:
        config = config.replace("server", listen=args.listen)
    if args.web_config_file is not None:
        config = config.replace("server", web_config_file=args.web_config_file)
    if args.shard is not None:
        config = config.only_shard(*args.shard)
        if not config.enabled_targets:
            log.warning("shard %d/%d holds none of the enabled targets", *args.shard)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_interrupts()
    _quiet_warnings()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_urllib3()
    try:
        with contextlib.ExitStack() as stack:
            _check_flags(args)
            problem = resolver.name_servers_problem()
            if problem is not None:
                raise UsageError(problem)
            if args.demo:
                from greenmon.demo import DemoFarm
                farm = stack.enter_context(DemoFarm())
                loader = farm.config
            else:
                path = config_path(args.config)
                loader = lambda: load_config(path)  # noqa: E731
            if args.url is not None:   # the config gives settings only: its sources are not read
                explicit = bool(args.config or os.environ.get(CONFIG_ENV))
                config = url_target_config(config_for_url(path, explicit, load_config), args.url)
            else:
                config = discover(loader())
                if args.target:
                    config = select_targets(config, args.target)
            config = apply_overrides(config, args)
            if args.check_config:
                if config.server.web_config_file:   # the daemon would refuse to start with it
                    webconfig.load(config.server.web_config_file)
                print(describe(config))
                return EXIT_UP
            tune_runtime()
            if not args.once:
                from greenmon.daemon import run_daemon
                # A reload reads the file in a thread; the monitor loads its sources (on the loop).
                return run_daemon(config, lambda: apply_overrides(loader(), args),
                                  args.workers)
            out = stack.enter_context(_open_output(args.output))
            return run_once(config, args.format, out, textfile=args.textfile,
                            pushgateway=args.pushgateway, workers=args.workers)
    except (UsageError, AdHocError) as error:
        print(f"greenmon: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as error:
        print(f"greenmon: config error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("greenmon: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _quiet_warnings() -> None:
    """verify_tls = false is the operator's explicit choice: no warning per request."""
    import warnings

    from urllib3.exceptions import InsecureRequestWarning

    warnings.filterwarnings("ignore", category=InsecureRequestWarning)


def _quiet_interrupts() -> None:
    """Ctrl-C still interrupts (exit 130), but gevent's hub does not print it as an error."""
    import gevent

    hub = gevent.get_hub()
    hub.NOT_ERROR = tuple(hub.NOT_ERROR) + (KeyboardInterrupt,)


def describe(config: Config) -> str:
    """The --check-config summary: one line, then one per discovery source (what it yields,
    and the OpenAPI operations it skipped, by reason)."""
    enabled = len(config.enabled_targets)
    line = (f"{config.source}: OK: {len(config.targets)} targets ({enabled} enabled), "
            f"{len(config.auth)} auth sources")
    lines = []
    if config.sources:
        skipped = sum(len(load.skipped) for load in config.discovered.values())
        line += (f", {len(config.sources)} discovery sources ({len(config.static_targets)} targets "
                 f"from [[targets]], {skipped} OpenAPI operations skipped)")
        lines = describe_sources(config)
    fitted = config.fitted_timeouts
    if fitted:
        shown = ", ".join(fitted[:FITTED_SHOWN]) + (
            f", and {len(fitted) - FITTED_SHOWN} more" if len(fitted) > FITTED_SHOWN else "")
        lines.append(f"timeouts fitted to a shorter interval (unset, as Prometheus fits "
                     f"scrape_timeout): {shown}")
    return "\n".join([line] + ["  " + item for item in lines])


FITTED_SHOWN = 5   # --check-config names this many fitted timeouts, then counts the rest


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


class UsageError(Exception):
    """Flags that do not fit together (exit code 2)."""


def _check_flags(args: argparse.Namespace) -> None:
    if (args.textfile or args.pushgateway) and not args.once:
        raise UsageError("--textfile and --pushgateway need --once")
    if (args.target or args.url is not None) and not (args.once or args.check_config):
        raise UsageError("--target and --url need --once")
    if args.target and args.url is not None:
        raise UsageError("--target and --url exclude each other")
    if args.demo and args.url is not None:
        raise UsageError("--demo and --url exclude each other")


def run_once(config: Config, output_format: str, out: IO[str], *, textfile: str | None = None,
             pushgateway: str | None = None, workers: int = 1) -> int:
    """One sweep of every enabled target; exit 0 if all are up, 1 otherwise."""
    if workers > 1 and len(config.enabled_targets) > 1:
        from greenmon.workers.parent import WorkerEngine
        engine = WorkerEngine(config, workers)
    else:
        from greenmon.engine import Engine
        engine = Engine(config)
    store = None
    if textfile or pushgateway:
        store = store_for(config, config.enabled_targets)
        engine.listeners.append(store.observe)
    progress = ProgressLine(len(config.enabled_targets))
    engine.listeners.append(progress)
    if output_format == "jsonl":
        def stream(result):
            out.write(jsonl_line(result))
            out.flush()
        engine.listeners.append(stream)
    terminated = []

    def terminate() -> None:
        terminated.append(True)
        gevent.spawn(engine.stop)

    on_sigterm = gevent.signal_handler(signal.SIGTERM, terminate)
    started = time.monotonic()
    try:
        results = engine.sweep()
    finally:
        on_sigterm.cancel()
        progress.stop()
        engine.close()
    duration = time.monotonic() - started
    if terminated:
        print(f"greenmon: terminated after {len(results)} of {len(config.enabled_targets)} checks; "
              "no report", file=sys.stderr)
        return EXIT_INTERRUPTED
    if len(results) < len(config.enabled_targets):
        print(f"greenmon: error: {len(config.enabled_targets) - len(results)} targets were not "
              "checked (a worker process ended)", file=sys.stderr)
        return EXIT_DOWN
    summary = summarize(results, duration, config.monitor.slo_p95_seconds)
    if store is not None:
        store.sweep_finished(duration)
        publish_metrics(store, textfile, pushgateway)
    if output_format == "json":
        write_json(out, results, summary)
    elif output_format == "table":
        write_table(out, results, summary)
    return EXIT_UP if all(r.ok for r in results) else EXIT_DOWN


def publish_metrics(store, textfile: str | None, pushgateway: str | None) -> None:
    """--textfile and --pushgateway: a failure is reported on stderr; the sweep's exit code stands."""
    from prometheus_client import push_to_gateway, write_to_textfile

    from greenmon.metrics import build_registry  # prometheus_client: only when it is needed

    registry = build_registry(store)
    if textfile:
        try:
            write_to_textfile(textfile, registry)  # writes a temporary file, then renames it
        except OSError as error:
            log.error("cannot write --textfile %s: %s", textfile, error.strerror or error)
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job="greenmon", registry=registry, timeout=10)
        except OSError as error:
            log.error("cannot push to --pushgateway %s: %s", pushgateway, error)
