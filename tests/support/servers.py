"""Real local servers for the tests: a routed WSGI farm, raw-socket misbehavers, TLS.

Everything binds 127.0.0.1 on a free port and runs on the test process's
gevent hub (conftest patches first), so the greenmon engine under test and
the servers share one event loop, as a target farm on the same host would.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections import defaultdict
from typing import Callable, Self

import gevent
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

Handler = Callable[[dict], tuple]  # environ -> (status, headers, body)


def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def reply(status: str = "200 OK", body: bytes | str = b"ok", headers=()) -> Handler:
    data = body.encode() if isinstance(body, str) else body

    def handler(environ):
        return status, list(headers), data
    return handler


def delayed(seconds: float, inner: Handler | None = None) -> Handler:
    inner = inner or reply()

    def handler(environ):
        gevent.sleep(seconds)
        return inner(environ)
    return handler


def sequence(*handlers: Handler) -> Handler:
    """The n-th request gets the n-th handler; the last one repeats."""
    calls = []

    def handler(environ):
        calls.append(1)
        return handlers[min(len(calls), len(handlers)) - 1](environ)
    return handler


class _Served:
    """A gevent server on a free 127.0.0.1 port, started and stopped as a context manager."""

    _server: StreamServer
    scheme: str

    def __enter__(self) -> Self:
        self._server.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.stop(timeout=1)

    @property
    def port(self) -> int:
        return self._server.server_port


class HTTPFarm(_Served):
    """A WSGI server routing paths to handlers; records every request's time and headers."""

    def __init__(self, routes: dict[str, Handler] | None = None, ssl_context: ssl.SSLContext | None = None,
                 address: str = "127.0.0.1", port: int = 0):
        """``address`` and ``port``: where it listens (another loopback address, ::1, and the
        port of a farm already listening elsewhere: one name's several addresses)."""
        self.routes: dict[str, Handler] = dict(routes or {})
        self.requests: dict[str, list[tuple[float, dict]]] = defaultdict(list)
        kwargs = {"ssl_context": ssl_context} if ssl_context is not None else {}
        self._server = WSGIServer((address, port), self._app, log=None, error_log=None, **kwargs)
        self.scheme = "https" if ssl_context is not None else "http"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def hits(self, path: str) -> int:
        return len(self.requests[path])

    def hit_times(self, path: str) -> list[float]:
        return [moment for moment, _ in self.requests[path]]

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        headers = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
        self.requests[path].append((time.monotonic(), headers))
        handler = self.routes.get(path)
        if handler is None:
            start_response("404 Not Found", [("Content-Length", "9")])
            return [b"not found"]
        status, extra_headers, body = handler(environ)
        if isinstance(body, (bytes, str)):
            data = body.encode() if isinstance(body, str) else body
            start_response(status, list(extra_headers) + [("Content-Length", str(len(data)))])
            return [data]
        start_response(status, list(extra_headers))
        return body  # an iterable: streamed


class RawServer(_Served):
    """A TCP server whose handler gets the raw socket: for servers that break HTTP."""

    def __init__(self, handler: Callable[[socket.socket], None], ssl_context: ssl.SSLContext | None = None):
        self._handler = handler
        self._server = StreamServer(("127.0.0.1", 0), self._handle)
        self.scheme = "https" if ssl_context is not None else "http"
        self.connections = 0

    def _handle(self, sock, address):
        self.connections += 1
        try:
            self._handler(sock)
        except OSError:
            pass
        finally:
            sock.close()

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


def read_request_head(sock: socket.socket) -> bytes:
    """Read until the blank line that ends a request's headers."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def never_answer(sock: socket.socket) -> None:
    read_request_head(sock)
    gevent.sleep(3600)


def trickle(interval: float = 0.2, total: int = 1000) -> Callable[[socket.socket], None]:
    """Headers at once, then the body one byte every ``interval`` seconds."""
    def handler(sock):
        read_request_head(sock)
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        for _ in range(total):
            gevent.sleep(interval)
            sock.sendall(b"x")
    return handler


def send_raw(payload: bytes, then_sleep: float = 0.0) -> Callable[[socket.socket], None]:
    def handler(sock):
        read_request_head(sock)
        sock.sendall(payload)
        if then_sleep:
            gevent.sleep(then_sleep)
    return handler


def reset_after_head(sock: socket.socket) -> None:
    """Read the request, then close with RST (SO_LINGER 0)."""
    import struct
    read_request_head(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --- More misbehaving servers (added for test_errors/test_prober/test_breaker/test_engine) ---

def redirect(location: str, status: str = "302 Found") -> Handler:
    """A redirect to ``location`` (a path on the same farm, or a full URL)."""
    return reply(status, b"", headers=[("Location", location)])


def streamed(chunk: bytes, count: int, interval: float = 0.0, produced: list | None = None) -> Handler:
    """A body of ``count`` chunks without Content-Length (chunked), one every ``interval`` s.

    Each chunk the server produced is appended to ``produced`` (if given), so a
    test can tell whether the client read the body to its end.
    """
    def handler(environ):
        def body():
            for _ in range(count):
                if interval:
                    gevent.sleep(interval)
                if produced is not None:
                    produced.append(len(chunk))
                yield chunk
        return "200 OK", [], body()
    return handler


def tls_handshake(context: ssl.SSLContext, inner: Callable[[socket.socket], None] | None = None
                  ) -> Callable[[socket.socket], None]:
    """A RawServer handler that does the server side of a TLS handshake, then runs ``inner``.

    RawServer counts connections, so this shows how many TLS attempts a client made
    even when every handshake fails (an HTTPFarm never sees those requests).
    """
    def handler(sock):
        tls = context.wrap_socket(sock, server_side=True)
        try:
            if inner is not None:
                inner(tls)
        finally:
            tls.close()
    return handler


def tls_server_context(ca, *identities: str, **issue_kwargs) -> ssl.SSLContext:
    """A server SSLContext with a leaf certificate for ``identities`` issued by a trustme CA.

    ``issue_kwargs`` go to ``trustme.CA.issue_cert`` (e.g. ``not_after`` for an expired one).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*identities, **issue_kwargs).configure_cert(context)
    return context


class BacklogFull:
    """A loopback port whose accept queue is full, so a new connect hangs (the SYN is dropped).

    ``listen(0)`` and filler connections nobody accepts. ``port`` is None when the
    kernel does not behave that way (the tests that need it then skip).
    """

    def __init__(self, max_fillers: int = 16):
        self._max_fillers = max_fillers
        self._listener: socket.socket | None = None
        self._fillers: list[socket.socket] = []
        self.port: int | None = None

    def __enter__(self) -> "BacklogFull":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        self._listener = listener
        port = listener.getsockname()[1]
        for _ in range(self._max_fillers):
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.1", port))
            except OSError:
                filler.close()
                self.port = port  # this connect hung: the queue is full
                break
            self._fillers.append(filler)
        return self

    def __exit__(self, *exc_info) -> None:
        for filler in self._fillers:
            filler.close()
        if self._listener is not None:
            self._listener.close()


# --- Auth and concurrency handlers (added for test_auth/test_cli) ---

def require_header(name: str, value: str, inner: Handler | None = None,
                   denied: str = "401 Unauthorized") -> Handler:
    """``inner`` (200 "ok" by default) only when header ``name`` is exactly ``value``, else ``denied``."""
    inner = inner or reply()
    key = "HTTP_" + name.upper().replace("-", "_")

    def handler(environ):
        if environ.get(key) != value:
            return denied, [], b"denied"
        return inner(environ)
    return handler


class InFlight:
    """A handler that answers after ``delay`` seconds and records the most requests it held at once."""

    def __init__(self, delay: float, inner: Handler | None = None):
        self.delay = delay
        self.inner = inner or reply()
        self.current = 0
        self.peak = 0

    def __call__(self, environ):
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            gevent.sleep(self.delay)
            return self.inner(environ)
        finally:
            self.current -= 1
