"""A forward HTTP proxy on 127.0.0.1 for the tests: absolute-URI requests and CONNECT tunnels.

It runs on the test process's gevent hub like the servers in ``servers.py``,
and only ever connects to loopback addresses (anything else is answered 403).

- ``GET http://127.0.0.1:PORT/path HTTP/1.1`` (a plain-HTTP target through a
  proxy) is forwarded in origin form with ``Connection: close``; the answer
  is piped back and both connections are closed.
- ``CONNECT 127.0.0.1:PORT HTTP/1.1`` (an HTTPS target) opens a tunnel that
  pipes both ways until either side closes (at most TUNNEL_MAX_S).
- ``refuse_connect=True``: every CONNECT is answered ``403 Forbidden``, as a
  proxy whose policy forbids the destination does. ``silent=True``: requests
  are read and never answered (a proxy that hangs).

It counts what it was asked: ``requests`` (forwarded absolute-URI requests),
``connects`` (CONNECTs, refused ones included), ``by_target`` ("host:port" ->
both), keeps every request line, and the local ports of the connections it
opened to targets (``upstream_ports``): a target server that records the
peer port of each request can tell proxied from direct traffic.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from urllib.parse import urlsplit

import gevent
import gevent.event
import gevent.socket
from gevent.pool import Pool
from gevent.server import StreamServer

HEAD_LIMIT = 65536        # bytes of request head read before giving up on a client
SOCKET_TIMEOUT_S = 30.0   # any read or write on either side; no test idles that long
TUNNEL_MAX_S = 60.0       # a tunnel or a forwarded answer never outlives this
SILENT_MAX_S = 60.0       # a silent proxy holds a request at most this long (or until stop)

_FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
_HOP_BY_HOP = (b"connection:", b"proxy-connection:", b"proxy-authorization:", b"keep-alive:")


class ForwardProxy:
    def __init__(self, *, refuse_connect: bool = False, silent: bool = False):
        self.refuse_connect = refuse_connect
        self.silent = silent
        self.requests = 0
        self.connects = 0
        self.by_target: Counter[str] = Counter()
        self.request_lines: list[str] = []
        self.upstream_ports: set[int] = set()
        self._stopped = gevent.event.Event()
        self._server = StreamServer(("127.0.0.1", 0), self._handle, spawn=Pool(100))

    def __enter__(self) -> "ForwardProxy":
        self._server.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stopped.set()
        self._server.stop(timeout=1)   # then kills the handlers still running (the pool's)

    @property
    def port(self) -> int:
        return self._server.server_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- one client connection ---

    def _handle(self, client: socket.socket, address) -> None:
        client.settimeout(SOCKET_TIMEOUT_S)
        try:
            head, rest = _read_head(client)
            if head is None:
                return
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            self.request_lines.append(line)
            method, _, target = line.partition(" ")
            target = target.rpartition(" ")[0]
            if self.silent:
                self._stopped.wait(timeout=SILENT_MAX_S)
            elif method == "CONNECT":
                self._tunnel(client, target, rest)
            else:
                self._forward(client, method, target, head, rest)
        except OSError:
            pass
        finally:
            client.close()

    def _tunnel(self, client: socket.socket, authority: str, rest: bytes) -> None:
        self.connects += 1
        self.by_target[authority] += 1
        host, _, port = authority.rpartition(":")
        if self.refuse_connect or not _loopback(host) or not port.isdigit():
            client.sendall(_FORBIDDEN)
            return
        upstream = self._open(host.strip("[]"), int(port))
        if upstream is None:
            client.sendall(_BAD_GATEWAY)
            return
        with upstream:
            client.sendall(_ESTABLISHED)
            if rest:
                upstream.sendall(rest)
            _pipe(client, upstream, both_ways=True)

    def _forward(self, client: socket.socket, method: str, target: str, head: bytes,
                 rest: bytes) -> None:
        self.requests += 1
        parts = urlsplit(target)
        host, port = parts.hostname, parts.port or 80
        self.by_target[f"{host}:{port}"] += 1
        if parts.scheme != "http" or not host or not _loopback(host):
            client.sendall(_FORBIDDEN)
            return
        lines = head.split(b"\r\n")[1:]
        kept = [item for item in lines if item and not item.lower().startswith(_HOP_BY_HOP)]
        length = 0
        for item in kept:
            if item.lower().startswith(b"content-length:"):
                length = int(item.split(b":", 1)[1])
        body = rest
        while len(body) < length:   # bounded: the announced length, or the client's EOF
            chunk = client.recv(65536)
            if not chunk:
                break
            body += chunk
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        upstream = self._open(host, port)
        if upstream is None:
            client.sendall(_BAD_GATEWAY)
            return
        with upstream:
            upstream.sendall(f"{method} {path} HTTP/1.1\r\n".encode("latin-1")
                             + b"".join(item + b"\r\n" for item in kept)
                             + b"Connection: close\r\n\r\n" + body[:length])
            _pipe(upstream, client, both_ways=False)

    def _open(self, host: str, port: int) -> socket.socket | None:
        try:
            upstream = gevent.socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        except OSError:
            return None
        self.upstream_ports.add(upstream.getsockname()[1])
        return upstream


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    """The request head (through its blank line) and what came after it; None on EOF or a
    head over HEAD_LIMIT."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > HEAD_LIMIT:
            return None, b""
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until EOF (or an error), then pass the EOF on."""
    try:
        while True:   # ends at EOF, a socket error or timeout, or when killed
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _pipe(a: socket.socket, b: socket.socket, *, both_ways: bool) -> None:
    """a -> b (and b -> a): until both directions ended, at most TUNNEL_MAX_S."""
    pumps = [gevent.spawn(_pump, a, b)]
    if both_ways:
        pumps.append(gevent.spawn(_pump, b, a))
    try:
        gevent.joinall(pumps, timeout=TUNNEL_MAX_S)
    finally:
        gevent.killall(pumps, block=True, timeout=1)
