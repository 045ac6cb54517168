"""The benchmark target farm: a separate, cheap asyncio HTTP/1.1 server on many loopback addresses.

Each path says how to answer: ``/d/<delay_ms>/s/<status>/<anything>`` waits
``delay_ms`` milliseconds, then replies ``status`` with a short body and a
Content-Length. Anything else is a 404; ``/_stats`` answers counters as
JSON (``/_stats/reset`` also resets them), so the runner can see how many
connections the farm held at once while a client swept it.

The farm listens on one port on each of K loopback addresses 127.0.<a>.<b>
(K = 1 is 127.0.0.1; Linux routes all of 127.0.0.0/8 to ``lo``, so no set-up
is needed) so that connection pools see many hosts; with ``--tls`` it also
serves TLS on a second port, with a CA made by ``trustme`` and a server
certificate whose IP SANs are all its addresses. Every address carries
``--listeners`` SO_REUSEPORT sockets, each with its own accept queue
(``net.core.somaxconn`` caps one queue, and 10k clients connect at once).

It shares the machine's cores with the client under test, so it does the
least it can: stdlib only, asyncio Protocols, a hand-rolled parser that
reads request heads, cached response bytes, one timer per delayed reply.
On start it prints one JSON line on stdout (addresses, port, tls_port,
ca_file, pid) and serves until SIGTERM/SIGINT, until its parent process is
gone, or until ``--max-seconds`` pass. Only loopback addresses, ever.

    python -m benchmarks.farm --hosts 64 --tls --ca-file /tmp/farm-ca.pem
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import resource
import signal
import socket
import ssl
import sys
import tempfile
import time
from http import HTTPStatus

MAX_HEAD_BYTES = 64 * 1024
DEFAULT_BACKLOG = 65535        # the kernel caps it at net.core.somaxconn
DEFAULT_LISTENERS = 4          # SO_REUSEPORT sockets per address
MAX_HOSTS = 254 * 256
PARENT_CHECK_S = 1.0
BODY_OK = b"ok\n"


def farm_address(index: int) -> str:
    """The index-th farm address: 0 is 127.0.0.1, then 127.0.0.2 ... 127.0.0.254, 127.0.1.1, ..."""
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"host index out of range: {index}")
    return f"127.0.{index // 254}.{index % 254 + 1}"


def farm_addresses(count: int) -> list[str]:
    return [farm_address(i) for i in range(count)]


def target_path(delay_ms: int, status: int, name: str) -> str:
    """The path that makes the farm wait ``delay_ms`` and answer ``status``."""
    return f"/d/{delay_ms}/s/{status}/{name}"


def raise_open_file_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class Stats:
    """Counters since the last reset; ``peak_open`` is the most connections held at once."""

    def __init__(self) -> None:
        self.open = 0
        self.reset()

    def reset(self) -> None:
        self.peak_open = self.open
        self.connections = 0
        self.requests = 0
        self.started = time.monotonic()
        times = os.times()
        self.cpu_started = times.user + times.system

    def snapshot(self) -> dict:
        times = os.times()
        return {"open": self.open, "peak_open": self.peak_open, "connections": self.connections,
                "requests": self.requests, "cpu_s": round(times.user + times.system - self.cpu_started, 3),
                "wall_s": round(time.monotonic() - self.started, 3)}


def _response(status: int, keep_alive: bool, body: bytes | None = None) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    if body is None:
        body = BODY_OK if 200 <= status < 300 else reason.encode() + b"\n"
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n")
    if not keep_alive:
        head += "Connection: close\r\n"
    return head.encode("ascii") + b"\r\n" + body


class _Responses:
    """Response bytes, built once per (status, keep_alive, head-only)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, bool, bool], bytes] = {}

    def get(self, status: int, keep_alive: bool, head_only: bool) -> bytes:
        key = (status, keep_alive, head_only)
        data = self._cache.get(key)
        if data is None:
            data = _response(status, keep_alive)
            if head_only:
                data = data[:data.index(b"\r\n\r\n") + 4]
            self._cache[key] = data
        return data


def parse_target(target: bytes) -> tuple[float, int] | None:
    """``/d/<ms>/s/<status>/...`` -> (delay seconds, status), or None for any other path."""
    parts = target.split(b"/", 5)
    if len(parts) < 5 or parts[1] != b"d" or parts[3] != b"s":
        return None
    try:
        delay_ms = int(parts[2])
        status = int(parts[4].split(b"?", 1)[0])
    except ValueError:
        return None
    if delay_ms < 0 or not 100 <= status <= 599:
        return None
    return delay_ms / 1000.0, status


class FarmProtocol(asyncio.Protocol):
    """One client connection: request heads in, one reply at a time, keep-alive unless asked not to."""

    __slots__ = ("farm", "transport", "buffer", "busy", "timer", "skip")

    def __init__(self, farm: "Farm") -> None:
        self.farm = farm
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self.skip = 0            # request body bytes still to discard

    def connection_made(self, transport) -> None:
        self.transport = transport
        stats = self.farm.stats
        stats.open += 1
        stats.connections += 1
        if stats.open > stats.peak_open:
            stats.peak_open = stats.open

    def connection_lost(self, exc) -> None:
        self.farm.stats.open -= 1
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
        self.buffer = self.buffer + data if self.buffer else data
        if not self.busy:
            self._next_request()

    def _next_request(self) -> None:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self.transport.close()
            return
        head = buffer[:end]
        rest = buffer[end + 4:]
        line_end = head.find(b"\r\n")
        request_line = head if line_end < 0 else head[:line_end]
        parts = request_line.split(b" ")
        if len(parts) != 3:
            self.transport.write(self.farm.responses.get(400, False, False))
            self.transport.close()
            return
        method, target, version = parts
        lower = head.lower()
        keep_alive = version == b"HTTP/1.1" and b"connection: close" not in lower
        length_at = lower.find(b"\r\ncontent-length:")
        if length_at >= 0:
            value_end = lower.find(b"\r\n", length_at + 2)
            try:
                length = int(lower[length_at + 17:value_end if value_end >= 0 else None])
            except ValueError:
                length = 0
            self.skip = max(0, length - len(rest))
            rest = rest[length:]
        self.buffer = rest
        self.busy = True
        head_only = method == b"HEAD"
        if target.startswith(b"/_stats"):
            self._stats_reply(target, keep_alive, head_only)
            return
        parsed = parse_target(target)
        if parsed is None:
            self._reply(404, keep_alive, head_only)
        elif parsed[0] > 0:
            self.timer = self.farm.loop.call_later(parsed[0], self._reply, parsed[1], keep_alive,
                                                   head_only)
        else:
            self._reply(parsed[1], keep_alive, head_only)

    def _reply(self, status: int, keep_alive: bool, head_only: bool) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(self.farm.responses.get(status, keep_alive, head_only))
        self.farm.stats.requests += 1
        self._after_reply(keep_alive)

    def _stats_reply(self, target: bytes, keep_alive: bool, head_only: bool) -> None:
        stats = self.farm.stats
        body = json.dumps(stats.snapshot()).encode() + b"\n"
        if target.startswith(b"/_stats/reset"):
            stats.reset()
        data = _response(200, keep_alive, body)
        self.transport.write(data[:data.index(b"\r\n\r\n") + 4] if head_only else data)
        self._after_reply(keep_alive)

    def _after_reply(self, keep_alive: bool) -> None:
        self.busy = False
        if not keep_alive:
            self.transport.close()
        elif self.buffer:
            self._next_request()


class Farm:
    """The listening sockets and shared state; ``start`` binds, ``serve`` runs until stopped."""

    def __init__(self, addresses: list[str], *, port: int = 0, tls_context: ssl.SSLContext | None = None,
                 listeners: int = DEFAULT_LISTENERS, backlog: int = DEFAULT_BACKLOG) -> None:
        for address in addresses:
            if not ipaddress.ip_address(address).is_loopback:
                raise ValueError(f"the farm only listens on loopback addresses, not {address}")
        self.addresses = addresses
        self.requested_port = port
        self.tls_context = tls_context
        self.listeners = max(1, listeners)
        self.backlog = backlog
        self.stats = Stats()
        self.responses = _Responses()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.port = 0
        self.tls_port: int | None = None
        self._servers: list[asyncio.AbstractServer] = []

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        plain = self._bind_all(self.requested_port)
        self.port = plain[0].getsockname()[1]
        await self._serve_sockets(plain, None)
        if self.tls_context is not None:
            secure = self._bind_all(0)
            self.tls_port = secure[0].getsockname()[1]
            await self._serve_sockets(secure, self.tls_context)

    async def _serve_sockets(self, sockets: list[socket.socket], context) -> None:
        for sock in sockets:
            server = await self.loop.create_server(lambda: FarmProtocol(self), sock=sock, ssl=context,
                                                   backlog=self.backlog)
            self._servers.append(server)

    def _bind_all(self, port: int) -> list[socket.socket]:
        """The same port on every address (``listeners`` sockets each); retried on a port clash."""
        last_error: OSError | None = None
        for _ in range(20):
            sockets: list[socket.socket] = []
            try:
                chosen = port
                for address in self.addresses:
                    for _ in range(self.listeners):
                        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                        sockets.append(sock)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                        sock.bind((address, chosen))
                        chosen = sock.getsockname()[1]
                        sock.listen(self.backlog)
                        sock.setblocking(False)
                return sockets
            except OSError as error:
                last_error = error
                for sock in sockets:
                    sock.close()
                if port:
                    break
        raise OSError(f"cannot bind the farm's port on {len(self.addresses)} addresses: {last_error}")

    def close(self) -> None:
        for server in self._servers:
            server.close()

    def describe(self, ca_file: str | None) -> dict:
        return {"addresses": self.addresses, "port": self.port, "tls_port": self.tls_port,
                "ca_file": ca_file, "pid": os.getpid()}


def make_tls(addresses: list[str], ca_file: str) -> ssl.SSLContext:
    """A server context whose certificate (from a fresh trustme CA) names every address; CA PEM to ``ca_file``."""
    import trustme

    authority = trustme.CA(organization_name="greenmon benchmark farm")
    certificate = authority.issue_cert(*addresses, "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    authority.cert_pem.write_to_path(ca_file)
    return context


async def serve(args: argparse.Namespace) -> None:
    addresses = farm_addresses(args.hosts)
    temporary_dir = None
    context = None
    ca_file = None
    if args.tls:
        ca_file = args.ca_file
        if not ca_file:
            temporary_dir = tempfile.mkdtemp(prefix="greenmon-farm-")
            ca_file = os.path.join(temporary_dir, "farm-ca.pem")
        context = make_tls(addresses, ca_file)
    farm = Farm(addresses, port=args.port, tls_context=context, listeners=args.listeners,
                backlog=args.backlog)
    try:
        await farm.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(json.dumps(farm.describe(ca_file)), flush=True)
        await _wait_for_stop(stop, args.parent_pid, args.max_seconds)
    finally:
        farm.close()
        if temporary_dir:
            for name in os.listdir(temporary_dir):
                os.unlink(os.path.join(temporary_dir, name))
            os.rmdir(temporary_dir)


async def _wait_for_stop(stop: asyncio.Event, parent_pid: int | None, max_seconds: float) -> None:
    """Until a signal, the parent's exit (we are re-parented) or the time limit."""
    deadline = time.monotonic() + max_seconds if max_seconds > 0 else None
    while not stop.is_set():
        if parent_pid and os.getppid() != parent_pid:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        try:
            await asyncio.wait_for(stop.wait(), PARENT_CHECK_S)
        except asyncio.TimeoutError:
            pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.farm", description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1, help="loopback addresses to listen on (default 1)")
    parser.add_argument("--port", type=int, default=0, help="plain HTTP port (default: a free one)")
    parser.add_argument("--tls", action="store_true", help="also serve HTTPS on a second port")
    parser.add_argument("--ca-file", help="with --tls: write the CA PEM here (default: a temporary file)")
    parser.add_argument("--listeners", type=int, default=DEFAULT_LISTENERS,
                        help="SO_REUSEPORT listening sockets per address")
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG)
    parser.add_argument("--parent-pid", type=int, help="exit when this process is no longer our parent")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="exit after this long (0: never)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.hosts <= MAX_HOSTS:
        print(f"farm: --hosts must be 1..{MAX_HOSTS}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    try:
        asyncio.run(serve(args))
    except OSError as error:
        print(f"farm: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
