"""The daemon's HTTP endpoints: /metrics, /healthz, /api/results and the status page at /.

Served by gevent's WSGI server on the same hub as the checks; every page is
computed from the monitor's current state when asked.
"""

from __future__ import annotations

import json
import logging
import time

from gevent.pywsgi import WSGIServer
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


class WebServer:
    def __init__(self, monitor, listen: str):
        self.server = WSGIServer(parse_listen(listen), make_app(monitor), log=None, error_log=log)

    def start(self) -> None:
        self.server.start()
        log.info("serving /metrics on %s:%d", self.server.server_host, self.server.server_port)

    def stop(self) -> None:
        self.server.stop(timeout=1)

    @property
    def port(self) -> int:
        return self.server.server_port
