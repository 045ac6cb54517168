"""The demo target farm: misbehaving endpoints on 127.0.0.1 that show every error class.

``greenmon --demo`` starts it in-process on random free ports and monitors
it with short timeouts, so a first run needs no network and no config file.
Its ``/openapi.json`` describes a small API: the demo config discovers two
of its operations as targets (``[[openapi]]``) and skips a third, whose
required parameter has no example. ``demo-flow`` is a flow: a login that
issues a fresh token, then a call that needs it.
"""

from __future__ import annotations

import collections
import json
import random
import secrets
import socket

import gevent
from gevent.pywsgi import WSGIServer

from greenmon.config import Config, parse_config

SLOW_DELAY_S = 2.5       # above the 2 s P95 objective
FLAKY_FAILURE_RATE = 1 / 3
_HANG_S = 3600
OPENAPI_DOCUMENT = json.dumps({
    "openapi": "3.0.3", "info": {"title": "greenmon demo API", "version": "1"},
    "paths": {
        "/healthy": {"get": {"summary": "Health"}},
        "/items/{id}": {"get": {"parameters": [
            {"name": "id", "in": "path", "required": True, "example": 42}]}},
        "/search": {"get": {"parameters": [
            {"name": "q", "in": "query", "required": True, "schema": {"type": "string"}}]}},
    },
}).encode()


def _free_port() -> int:
    """A port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DemoFarm:
    """A WSGI app with one path per behaviour; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.token = secrets.token_urlsafe(16)
        self.sessions: collections.deque[str] = collections.deque(maxlen=64)   # issued by /login
        self._server = WSGIServer((host, 0), self._app, log=None, error_log=None)
        self._random = random.Random()
        self.refused_port = 0

    def __enter__(self) -> "DemoFarm":
        self._server.start()
        self.refused_port = _free_port()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.stop(timeout=1)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._server.server_port}"

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        status, body = "200 OK", b'{"status": "ok"}'
        if path == "/openapi.json":
            body = OPENAPI_DOCUMENT
        elif path == "/slow":
            gevent.sleep(SLOW_DELAY_S)
        elif path == "/flaky" and self._random.random() < FLAKY_FAILURE_RATE:
            status, body = "503 Service Unavailable", b"try again"
        elif path == "/error":
            status, body = "500 Internal Server Error", b"boom"
        elif path == "/private":
            if environ.get("HTTP_AUTHORIZATION") != f"Bearer {self.token}":
                status, body = "401 Unauthorized", b"who are you?"
        elif path == "/login":   # a fresh token per login, as a real one issues
            session = secrets.token_urlsafe(12)
            self.sessions.append(session)
            body = json.dumps({"access_token": session, "token_type": "Bearer"}).encode()
        elif path == "/orders":
            sent = environ.get("HTTP_AUTHORIZATION", "")
            if sent.removeprefix("Bearer ") not in self.sessions:
                status, body = "401 Unauthorized", b"log in first"
            else:
                body = b'{"orders": [{"id": 1, "state": "shipped"}]}'
        elif path == "/wrong-body":
            body = b'{"status": "degraded"}'
        elif path == "/hang":
            gevent.sleep(_HANG_S)
        start_response(status, [("Content-Type", "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]

    def config_text(self) -> str:
        base = self.base_url
        refused = f"http://{self.host}:{self.refused_port}"
        return f"""
[monitor]
timeout = 1.0
interval = 10.0
concurrency = 100

[retry]
retries = 2
backoff = 0.25

[auth.demo]
type = "bearer"
token = "{self.token}"

[[targets]]
name = "demo-healthy"
url = "{base}/healthy"
expect_body = '"ok"'
labels = {{ tier = "demo" }}

[[targets]]
name = "demo-slow"
url = "{base}/slow"
timeout = 5.0
degraded_latency = 1.0

[[targets]]
name = "demo-flaky"
url = "{base}/flaky"

[[targets]]
name = "demo-down"
url = "{refused}/"

[[targets]]
name = "demo-error"
url = "{base}/error"

[[targets]]
name = "demo-unauthorized"
url = "{base}/private"

[[targets]]
name = "demo-authorized"
url = "{base}/private"
auth = "demo"

[[targets]]
name = "demo-wrong-body"
url = "{base}/wrong-body"
expect_body = '"ok"'

[[targets]]
name = "demo-hanging"
url = "{base}/hang"

[[targets]]
name = "demo-flow"

[[targets.steps]]
name = "login"
url = "{base}/login"
method = "POST"
extract = {{ token = "json:access_token" }}

[[targets.steps]]
name = "orders"
url = "{base}/orders"
headers = {{ Authorization = "Bearer {{{{token}}}}" }}
expect_json = {{ "orders.0.state" = "shipped" }}

[[openapi]]
spec = "{base}/openapi.json"
name_prefix = "demo-api "
labels = {{ tier = "demo" }}
"""

    def config(self) -> Config:
        """The demo config, parsed: its OpenAPI source is loaded by the caller."""
        return parse_config(self.config_text(), "<demo>")
