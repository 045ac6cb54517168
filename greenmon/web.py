"""The daemon's HTTP endpoints: /metrics, /healthz, /api/results and the status page at /.

Served by gevent's WSGI server on the same hub as the checks; every page is
computed from the monitor's current state when asked.
"""

from __future__ import annotations

import json
import logging
import time

from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter, WSGIHandler, WSGIServer
from prometheus_client import make_wsgi_app

from greenmon import statuspage
from greenmon.report import json_document
from greenmon.summary import summarize

log = logging.getLogger(__name__)


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def results_document(monitor) -> dict:
    """The same document as `--format json`, from the latest result of each target."""
    results = monitor.store.latest_results()
    summary = summarize(results, monitor.store.sweep_duration_s, monitor.config.monitor.slo_p95_seconds)
    return json_document(results, summary)


def make_app(monitor):
    metrics = make_wsgi_app(monitor.registry)

    def respond(start_response, status: str, content_type: str, body: bytes, extra=()):
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store"), *extra])
        return [body]

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return respond(start_response, "405 Method Not Allowed", "text/plain", b"GET only\n",
                           [("Allow", "GET, HEAD")])
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            if monitor.healthy():
                return respond(start_response, "200 OK", "text/plain", b"ok\n")
            return respond(start_response, "503 Service Unavailable", "text/plain", b"no recent sweep\n")
        if path == "/api/results":
            body = json.dumps(results_document(monitor), indent=1).encode()
            return respond(start_response, "200 OK", "application/json", body)
        if path == "/":
            body = statuspage.render(monitor, now=time.time()).encode()
            return respond(start_response, "200 OK", "text/html; charset=utf-8", body)
        return respond(start_response, "404 Not Found", "text/plain", b"not found\n")

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


class WebServer:
    """Slow or hostile clients cannot hold more than MAX_CONNECTIONS sockets (the checks' open
    files stay theirs) nor write tracebacks to the log (client errors are DEBUG)."""

    def __init__(self, monitor, listen: str):
        self.server = WSGIServer(parse_listen(listen), make_app(monitor), log=None,
                                 error_log=LoggingLogAdapter(log, logging.DEBUG),
                                 handler_class=_Handler, spawn=Pool(MAX_CONNECTIONS))

    def start(self) -> None:
        self.server.start()
        log.info("serving /metrics on %s:%d", self.server.server_host, self.server.server_port)

    def stop(self) -> None:
        self.server.stop(timeout=1)

    @property
    def port(self) -> int:
        return self.server.server_port
