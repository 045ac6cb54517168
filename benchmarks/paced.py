"""The daemon scenario's latency reference: aiohttp checking URLs on a timetable, as the daemon does.

A sweep peer (``benchmarks.peers``) starts every request at once; the daemon
starts each target's check once per interval. To say whether the latencies
the daemon reports are the targets' own, we need what a well-behaved client
measures under the same load on the same machine: this one checks every URL
once per ``--interval`` seconds, the URLs spread evenly over it (N / interval
checks per second), one aiohttp ClientSession and TCPConnector as in
``peers.aiohttp_peer``, and times each request from its start to its body
read. It runs ``--warmup`` seconds (connections open), then ``--window``
seconds that count (a check counts when it was due inside the window), then
waits for the checks in flight.

    python -m benchmarks.paced --urls-file F --interval 10 --warmup 10 --window 40

prints one JSON line: checks, ok, latency p50/p99/max of the 2xx checks,
how late checks started (p99, max), the most in flight at once, and the CPU
of the whole run. Only the standard library at the top; aiohttp inside.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

START_DELAY_S = 0.2        # from the set-up to the first due check


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (the value at rank ceil(fraction * n)); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class Tally:
    """What the checks due inside the window measured."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.late: list[float] = []
        self.failed = 0
        self.inflight = 0
        self.peak_inflight = 0

    def summary(self) -> dict:
        checks = len(self.latencies) + self.failed
        return {"checks": checks, "ok": len(self.latencies),
                "p50_s": percentile(self.latencies, 0.50), "p99_s": percentile(self.latencies, 0.99),
                "max_s": max(self.latencies, default=None),
                "late_p99_s": percentile(self.late, 0.99),
                "peak_inflight": self.peak_inflight}


def run(urls: list[str], interval: float, warmup_s: float, window_s: float, concurrency: int,
        timeout: float) -> Tally:
    import asyncio

    import aiohttp

    tally = Tally()

    async def check(session, url: str, due: float, counted: bool) -> None:
        started = time.perf_counter()
        tally.inflight += 1
        tally.peak_inflight = max(tally.peak_inflight, tally.inflight)
        ok = False
        try:
            async with session.get(url) as response:
                await response.read()
                ok = 200 <= response.status < 300
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass
        latency = time.perf_counter() - started
        tally.inflight -= 1
        if not counted:
            return
        tally.late.append(max(0.0, started - due))
        if ok:
            tally.latencies.append(latency)
        else:
            tally.failed += 1

    async def main() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            step = interval / len(urls)
            start = time.perf_counter() + START_DELAY_S
            window_at = start + warmup_s
            end = window_at + window_s
            tasks: set = set()
            index = 0
            while True:
                due = start + index * step
                if due >= end:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                now = time.perf_counter()
                while due <= now and due < end:      # everything due by now, in order
                    task = asyncio.ensure_future(
                        check(session, urls[index % len(urls)], due, due >= window_at))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    index += 1
                    due = start + index * step
            if tasks:
                await asyncio.wait(list(tasks))

    asyncio.run(main())
    return tally


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.paced", description=__doc__.split("\n")[0])
    parser.add_argument("--urls-file", required=True, help="one URL per line")
    parser.add_argument("--interval", type=float, required=True, help="each URL once per this many seconds")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds that do not count, first")
    parser.add_argument("--window", type=float, required=True, help="seconds that count")
    parser.add_argument("--concurrency", type=int, default=10_000, help="connector limit")
    parser.add_argument("--timeout", type=float, default=5.0, help="per request, seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.peers import raise_open_file_limit

    raise_open_file_limit()
    with open(args.urls_file, encoding="utf-8") as handle:
        urls = [line.strip() for line in handle if line.strip()]
    tally = run(urls, args.interval, args.warmup, args.window, args.concurrency, args.timeout)
    print(json.dumps(tally.summary()), flush=True)   # the runner measures the whole process
    return 0


if __name__ == "__main__":
    sys.exit(main())
