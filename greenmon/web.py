"""The daemon's HTTP endpoints: /metrics, /healthz, /api/results and the status page at /.

Served by gevent's WSGI server on the same hub as the checks. Nothing here
may hold that loop for long (the latencies it times would be greenmon's, not
the targets'): the documents come from per-target caches brought up to date
in slices (``exposition``, ``views``), and compression runs in a native
thread. With a web config (``webconfig``) the server speaks TLS only, and
every path but /healthz asks for basic auth (``webauth``, bcrypt off the
loop). The status page and the JSON carry ``nosniff`` and a Content-Security-
Policy that allows nothing but the page's own inline style, by its hash.
"""

from __future__ import annotations

import logging
import ssl
import time
from urllib.parse import parse_qs

from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer
from prometheus_client.exposition import gzip_accepted

from greenmon import statuspage
from greenmon.cooperative import off_loop
from greenmon.exposition import CONTENT_TYPE, Inflated, Text, gzip_pieces
from greenmon.workers.messages import ShareUnavailable

log = logging.getLogger(__name__)

GZIP_MIN_BYTES = 4096   # smaller documents go as they are
NOSNIFF = ("X-Content-Type-Options", "nosniff")
PAGE_POLICY = ("Content-Security-Policy",
               f"default-src 'none'; style-src 'sha256-{statuspage.STYLE_SHA256}'; "
               f"script-src 'sha256-{statuspage.SCRIPT_SHA256}'; img-src data:; "
               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
DATA_POLICY = ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
UNAUTHORIZED = ("WWW-Authenticate", 'Basic realm="greenmon", charset="UTF-8"')


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def make_app(daemon):
    def respond(environ, start_response, status: str, content_type: str, pieces, extra=(),
                gzipped: bool = False):
        """``pieces``: the body as an iterable of bytes (a list, exposition.Text or Inflated) with
        len() of the whole (Text and Inflated know their size; a list is summed);
        ``gzipped``: compressed already."""
        headers = [("Content-Type", content_type), ("Cache-Control", "no-store"), NOSNIFF, *extra]
        size = len(pieces) if isinstance(pieces, (Text, Inflated)) else sum(map(len, pieces))
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        elif size >= GZIP_MIN_BYTES and gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            pieces = [off_loop(gzip_pieces, pieces)]
            size = len(pieces[0])
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(size)))
        start_response(status, headers)
        return pieces

    def text(environ, start_response, status: str, body: bytes, extra=()):
        return respond(environ, start_response, status, "text/plain", [body], extra)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return text(environ, start_response, "405 Method Not Allowed", b"GET only\n",
                        [("Allow", "GET, HEAD")])
        if (path != "/healthz" and daemon.auth.required
                and not daemon.auth.allows(environ.get("HTTP_AUTHORIZATION"))):
            return text(environ, start_response, "401 Unauthorized", b"unauthorized\n", [UNAUTHORIZED])
        if path == "/metrics":
            gzip = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
            try:
                body, gzipped = daemon.exposition.document(gzip)
            except ShareUnavailable as error:
                return text(environ, start_response, "503 Service Unavailable",
                            f"/metrics: {error}\n".encode())
            return respond(environ, start_response, "200 OK", CONTENT_TYPE, body,
                           gzipped=gzipped)
        if path == "/healthz":
            if daemon.healthy():
                return text(environ, start_response, "200 OK", b"ok\n")
            return text(environ, start_response, "503 Service Unavailable",
                        b"checks are not starting on schedule\n")
        if path == "/api/history":
            name = parse_qs(environ.get("QUERY_STRING", "")).get("target", [""])[0]
            if not name:
                return text(environ, start_response, "400 Bad Request",
                            b"which target? /api/history?target=NAME\n")
            document = daemon.views.history_document(name)
            if document is None:
                return text(environ, start_response, "404 Not Found", b"no such target\n")
            return respond(environ, start_response, "200 OK", "application/json", [document])
        if path == "/api/results":
            return respond(environ, start_response, "200 OK", "application/json",
                           daemon.views.results_document(), [DATA_POLICY])
        if path == "/":
            params = parse_qs(environ.get("QUERY_STRING", ""))
            page = params.get("page", ["1"])[0]
            return respond(environ, start_response, "200 OK", "text/html; charset=utf-8",
                           daemon.views.status_page(interval_s=daemon.config.monitor.interval,
                                                     now=time.time(), query=params.get("q", [""])[0],
                                                     state=params.get("state", [""])[0],
                                                     page=int(page) if page.isdigit() else 1),
                           [PAGE_POLICY])
        return text(environ, start_response, "404 Not Found", b"not found\n")

    return app


MAX_CONNECTIONS = 64      # clients served at once; more wait in the listen backlog
CLIENT_TIMEOUT_S = 10.0   # a client silent this long is dropped


class _Handler(WSGIHandler):
    """A client that stalls mid-request is dropped after CLIENT_TIMEOUT_S, not kept forever;
    a malformed request is answered 400 without a traceback in the log."""

    def handle(self):
        self.socket.settimeout(CLIENT_TIMEOUT_S)
        return super().handle()

    def _handle_client_error(self, ex):
        # pywsgi prints a traceback for client errors that are not ValueErrors (too many
        # headers...): a bad request is the client's problem, answered 400 and logged at DEBUG.
        if not isinstance(ex, ValueError):
            ex = ValueError(f"{type(ex).__name__}: {ex}")
        return super()._handle_client_error(ex)


class _CurrentContext:
    """The server's TLS context as the daemon holds it now: a reload's new certificate
    serves the next connection (gevent only needs ``wrap_socket``)."""

    def __init__(self, daemon):
        self._daemon = daemon

    def wrap_socket(self, sock, **kwargs):
        return self._daemon.web.ssl_context.wrap_socket(sock, **kwargs)


class _Server(WSGIServer):
    def wrap_socket_and_handle(self, client_socket, address):
        """A client that fails the TLS handshake (plain HTTP, no client certificate) is
        dropped and logged at DEBUG, without a traceback; one that never finishes it is
        dropped after CLIENT_TIMEOUT_S, as a silent plain-HTTP client is (the handshake
        runs before _Handler.handle sets that timeout: without it, silent clients would
        hold every one of the MAX_CONNECTIONS slots for good)."""
        client_socket.settimeout(CLIENT_TIMEOUT_S)
        try:
            return super().wrap_socket_and_handle(client_socket, address)
        except (ssl.SSLError, OSError) as error:
            log.debug("TLS handshake with %s failed: %s", address[0], type(error).__name__)
            return None


class WebServer:
    """Slow or hostile clients cannot hold more than MAX_CONNECTIONS sockets (the checks' open
    files stay theirs) nor write tracebacks to the log (client errors are DEBUG)."""

    def __init__(self, daemon, listen: str):
        tls = {"ssl_context": _CurrentContext(daemon)} if daemon.web.tls else {}
        self.server = _Server(parse_listen(listen), make_app(daemon), log=None,
                              error_log=LoggingLogAdapter(log, logging.DEBUG),
                              handler_class=_Handler, spawn=Pool(MAX_CONNECTIONS), **tls)

    def start(self) -> None:
        self.server.start()
        log.info("serving /metrics on %s:%d", self.server.server_host, self.server.server_port)

    def stop(self) -> None:
        self.server.stop(timeout=1)

    @property
    def port(self) -> int:
        return self.server.server_port
