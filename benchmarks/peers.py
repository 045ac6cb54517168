"""The clients greenmon is compared with: each sweeps a list of URLs once and counts 2xx replies.

Every peer has the same signature, ``peer(urls, concurrency, ca_file, timeout) -> ok``,
and runs in a process of its own:

    python -m benchmarks.peers PEER --urls-file F --concurrency C [--ca-file PEM] [--timeout S]

which prints one JSON line ``{"peer", "n", "ok", "wall_s", "cpu_s"}``: ``wall_s``
and ``cpu_s`` (user + sys of this process, all threads) cover the sweep only,
not the interpreter start or the imports. The parent measures the whole
process (CPU and peak RSS) from ``os.wait4``.

Each peer is the library used the way its documentation suggests for many
requests, tuned only where a default would be plainly wrong for the job
(one session, a pool as large as the concurrency):

- ``seed``: the design greenmon replaced: ThreadPoolExecutor(5) + requests.get per URL.
- ``gevent_requests``: gevent monkey-patched, one requests.Session, a gevent Pool.
- ``gevent_urllib3``: gevent monkey-patched, one urllib3 PoolManager, a gevent Pool: the
  floor of the layers greenmon is built on (no requests, no deadline, no result).
- ``grequests``: grequests.map(size=concurrency) with one shared Session.
- ``aiohttp``: one ClientSession, TCPConnector(limit=concurrency, limit_per_host=0),
  asyncio.gather under a semaphore.
- ``raw_asyncio``: the floor of Python CPU per request: asyncio.open_connection,
  a fixed ``GET path HTTP/1.1`` with a Host header, read the status line, headers
  and Content-Length body; a connection is kept for the next URL of the same
  host:port. No per-request timeout (one deadline covers the sweep).

This module imports only the standard library at the top: the gevent peers
must patch before requests is imported.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Callable
from urllib.parse import urlsplit

SEED_THREADS = 5
DEFAULT_TIMEOUT = 30.0


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _hosts(urls: list[str]) -> int:
    return len({urlsplit(url).netloc for url in urls})


def _verify(ca_file: str | None):
    return ca_file if ca_file else True


def _tuned_session(urls: list[str], concurrency: int, ca_file: str | None):
    """One requests.Session whose pool keeps as many connections as the sweep has in flight."""
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    session.trust_env = False
    session.verify = _verify(ca_file)
    adapter = HTTPAdapter(pool_connections=max(_hosts(urls), 10),
                          pool_maxsize=max(min(concurrency, len(urls)), 10), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def seed(urls: list[str], concurrency: int, ca_file: str | None, timeout: float) -> int:
    """ThreadPoolExecutor(5) + requests.get per URL (``concurrency`` is ignored: the seed had 5 threads)."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    verify = _verify(ca_file)

    def check(url: str) -> bool:
        try:
            response = requests.get(url, timeout=timeout, verify=verify)
        except requests.RequestException:
            return False
        return 200 <= response.status_code < 300

    with ThreadPoolExecutor(SEED_THREADS) as executor:
        return sum(executor.map(check, urls))


def gevent_requests(urls: list[str], concurrency: int, ca_file: str | None, timeout: float) -> int:
    """Plain gevent + one requests.Session on a gevent Pool (patched in main, before the import)."""
    import gevent.pool
    import requests

    session = _tuned_session(urls, concurrency, ca_file)

    def check(url: str) -> bool:
        try:
            with session.get(url, timeout=timeout) as response:
                return 200 <= response.status_code < 300
        except requests.RequestException:
            return False

    try:
        return sum(gevent.pool.Pool(concurrency).imap_unordered(check, urls))
    finally:
        session.close()


def gevent_urllib3(urls: list[str], concurrency: int, ca_file: str | None, timeout: float) -> int:
    """Plain gevent + one urllib3 PoolManager on a gevent Pool (patched in main, before the import)."""
    import gevent.pool
    import urllib3

    tls = {"ca_certs": ca_file} if ca_file else {}
    manager = urllib3.PoolManager(num_pools=max(_hosts(urls), 10),
                                  maxsize=max(min(concurrency, len(urls)), 10), retries=False, **tls)

    def check(url: str) -> bool:
        try:
            return 200 <= manager.request("GET", url, timeout=timeout).status < 300
        except urllib3.exceptions.HTTPError:
            return False

    try:
        return sum(gevent.pool.Pool(concurrency).imap_unordered(check, urls))
    finally:
        manager.clear()


def grequests_peer(urls: list[str], concurrency: int, ca_file: str | None, timeout: float) -> int:
    """grequests.map with ``size`` = concurrency, all requests on one shared Session."""
    import grequests  # patches with gevent on import (its documented behaviour)

    session = _tuned_session(urls, concurrency, ca_file)
    try:
        pending = (grequests.get(url, session=session, timeout=timeout) for url in urls)
        responses = grequests.map(pending, size=concurrency)
        return sum(1 for r in responses if r is not None and 200 <= r.status_code < 300)
    finally:
        session.close()


def _client_ssl_context(ca_file: str | None):
    import ssl

    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    return context


def aiohttp_peer(urls: list[str], concurrency: int, ca_file: str | None, timeout: float) -> int:
    """One ClientSession, TCPConnector(limit=concurrency, limit_per_host=0), gather under a semaphore."""
    import asyncio

    import aiohttp

    async def sweep() -> int:
        ssl_context = _client_ssl_context(ca_file)
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0, ssl=ssl_context)
        semaphore = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async def check(url: str) -> bool:
                async with semaphore:
                    try:
                        async with session.get(url) as response:
                            await response.read()
                            return 200 <= response.status < 300
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                        return False
            return sum(await asyncio.gather(*(check(url) for url in urls)))

    return asyncio.run(sweep())


def raw_asyncio(urls: list[str], concurrency: int, ca_file: str | None, timeout: float) -> int:
    """The floor: open_connection, a fixed GET, status line + headers + Content-Length body."""
    import asyncio

    jobs = []
    for url in urls:
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: raw-asyncio\r\n"
                   f"Accept: */*\r\n\r\n").encode("ascii")
        jobs.append(((parts.hostname, port, secure), request))

    async def sweep() -> int:
        ssl_context = _client_ssl_context(ca_file)
        queue = iter(jobs)

        async def worker() -> int:
            ok = 0
            key = reader = writer = None
            for job_key, request in queue:
                try:
                    if writer is None or job_key != key:
                        if writer is not None:
                            writer.close()
                        key = job_key
                        host, port, secure = job_key
                        reader, writer = await asyncio.open_connection(
                            host, port, ssl=ssl_context if secure else None)
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    lower = head.lower()
                    at = lower.find(b"\r\ncontent-length:")
                    if at >= 0:
                        await reader.readexactly(int(lower[at + 17:lower.find(b"\r\n", at + 2)]))
                    if b"\r\nconnection: close" in lower:
                        writer.close()
                        writer = None
                    ok += 200 <= status < 300
                except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    if writer is not None:
                        writer.close()
                    writer = None
            if writer is not None:
                writer.close()
            return ok

        workers = [worker() for _ in range(max(1, min(concurrency, len(jobs))))]
        waves = -(-len(jobs) // len(workers))
        return sum(await asyncio.wait_for(asyncio.gather(*workers), timeout * waves))

    return asyncio.run(sweep())


PEERS: dict[str, Callable[[list[str], int, "str | None", float], int]] = {
    "seed": seed,
    "gevent_requests": gevent_requests,
    "gevent_urllib3": gevent_urllib3,
    "grequests": grequests_peer,
    "aiohttp": aiohttp_peer,
    "raw_asyncio": raw_asyncio,
}

# The library each peer needs beyond what greenmon itself installs.
REQUIRES = {"grequests": "grequests", "aiohttp": "aiohttp"}


def installed(peer: str) -> bool:
    import importlib.util

    module = REQUIRES.get(peer)
    return module is None or importlib.util.find_spec(module) is not None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers",
                                     description="Sweep URLs once with one peer client.")
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--urls-file", required=True, help="one URL per line")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--ca-file", help="extra CA PEM to trust (HTTPS targets)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="per request, seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.peer in ("gevent_requests", "gevent_urllib3"):
        from gevent import monkey
        monkey.patch_all()
    if not installed(args.peer):
        print(json.dumps({"peer": args.peer, "error": "not installed"}), flush=True)
        return 3
    raise_open_file_limit()
    with open(args.urls_file, encoding="utf-8") as handle:
        urls = [line.strip() for line in handle if line.strip()]
    if args.peer == "grequests":
        import grequests  # noqa: F401  (its import patches; keep that out of the timed sweep)
    elif args.peer in ("seed", "gevent_requests"):
        import requests  # noqa: F401
    elif args.peer == "gevent_urllib3":
        import urllib3  # noqa: F401
    elif args.peer == "aiohttp":
        import aiohttp  # noqa: F401
    started_cpu = _cpu_s()
    started = time.perf_counter()
    ok = PEERS[args.peer](urls, args.concurrency, args.ca_file, args.timeout)
    wall = time.perf_counter() - started
    cpu = _cpu_s() - started_cpu
    print(json.dumps({"peer": args.peer, "n": len(urls), "ok": ok, "wall_s": round(wall, 4),
                      "cpu_s": round(cpu, 4)}), flush=True)
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
