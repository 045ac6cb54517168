"""The one module that does network I/O: a shared, tuned requests session under a total deadline.

requests' own timeouts bound each socket operation; a server that trickles
one byte at a time never trips them. So each attempt also runs under a
gevent timer covering connect, TLS, headers and body. Whichever fires, the
detail says where the time went: ``connect`` (no connection or TLS session),
``read`` (connected, no response headers) or ``deadline`` (the response
started but did not finish in time). Exceptions become Failures here, once.
"""

from __future__ import annotations

import http.cookiejar
from dataclasses import dataclass
from typing import Mapping

import gevent
import requests
from requests.adapters import HTTPAdapter

from greenmon.errors import (DeadlineExceeded, TransportError, classify_exception,
                             timeout_failure)

MAX_REDIRECTS = 10
READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Response:
    """What one attempt received (the body is capped and already read)."""

    status_code: int
    reason: str
    body: bytes
    body_too_large: bool = False  # the body went past max_body_bytes (``body`` is cut there)


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Mapping[str, str]
    body: str
    timeout: float
    verify: bool | str          # False, True, or a CA bundle path
    follow_redirects: bool
    max_body_bytes: int


class _RejectAllCookies(http.cookiejar.DefaultCookiePolicy):
    """Targets must not share cookies through the shared session."""

    def set_ok(self, cookie, request):
        return False


class Transport:
    """A shared requests session sized for the work; ``send`` performs one attempt."""

    def __init__(self, *, pool_size: int, user_agent: str, hosts: int = 100):
        session = requests.Session()
        session.trust_env = False  # no proxy/netrc lookups per request; greenmon talks to targets directly
        session.max_redirects = MAX_REDIRECTS
        session.cookies.set_policy(_RejectAllCookies())
        session.headers = {"User-Agent": user_agent, "Accept": "*/*",
                           "Accept-Encoding": "gzip, deflate"}
        adapter = HTTPAdapter(pool_connections=max(hosts, 10), pool_maxsize=max(pool_size, 10),
                              max_retries=0, pool_block=False)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.session = session

    def send(self, request: Request) -> Response:
        """One attempt; raises TransportError with a classified Failure when there is no response."""
        response = None
        try:
            with gevent.Timeout(request.timeout, DeadlineExceeded):
                response = self.session.request(
                    request.method, request.url, headers=dict(request.headers),
                    data=request.body.encode() if request.body else None,
                    timeout=(request.timeout, request.timeout), verify=request.verify,
                    allow_redirects=request.follow_redirects, stream=True)
                try:
                    body, too_large = _read_capped(response, request.max_body_bytes)
                finally:
                    response.close()
        except TransportError:
            raise
        except DeadlineExceeded as error:
            phase = "deadline" if response is not None else _stalled_phase(error.__traceback__)
            raise TransportError(timeout_failure(phase, request.timeout)) from None
        except (requests.RequestException, OSError, ValueError) as error:
            raise TransportError(classify_exception(error, request.timeout)) from None
        return Response(response.status_code, response.reason or "", body, too_large)

    def close(self) -> None:
        self.session.close()


_CONNECT_FRAMES = frozenset({"_new_conn", "create_connection", "do_handshake",
                             "_ssl_wrap_socket_and_match_hostname"})


def _stalled_phase(traceback) -> str:
    """Where the deadline caught a request that had no response yet: "connect" or "read"."""
    while traceback is not None:
        if traceback.tb_frame.f_code.co_name in _CONNECT_FRAMES:
            return "connect"
        traceback = traceback.tb_next
    return "read"


def _read_capped(response: requests.Response, limit: int) -> tuple[bytes, bool]:
    """The (decoded) body up to ``limit`` bytes, and whether there was more."""
    chunks = []
    size = 0
    for chunk in response.iter_content(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[: len(chunk) - (size - limit)])
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False
