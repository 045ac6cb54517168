"""The five error classes, and the one translation of transport exceptions into them.

Every failed attempt gets exactly one class and a short ``detail``; whether
it is worth retrying follows from the two (README, "Error classes"). Messages are
written here, never copied from exception text, so no URL, header or secret
leaks into results or logs.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
from dataclasses import dataclass

TIMEOUT = "timeout"
CONNECTION = "connection"
AUTH = "auth"
HTTP = "http"
CONTENT = "content"
ERROR_CLASSES = (TIMEOUT, CONNECTION, AUTH, HTTP, CONTENT)

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
AUTH_STATUS = frozenset({401, 403})


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one attempt failed: class, detail and a human message without secrets."""

    error_class: str
    detail: str
    message: str

    @property
    def retryable(self) -> bool:
        """Timeouts and connection failures (except TLS) and 429/502/503/504 are retried."""
        if self.error_class == TIMEOUT:
            return True
        if self.error_class == CONNECTION:
            return self.detail not in ("tls", "cert_expiring")
        if self.error_class == HTTP:
            return self.detail.isdigit() and int(self.detail) in RETRYABLE_STATUS
        return False


class DeadlineExceeded(BaseException):
    """Raised by the per-attempt gevent timer; a BaseException so no library swallows it."""


class TransportError(Exception):
    """An attempt that got no usable response; carries its classified Failure and, from
    the transport, the attempt's trace (where its time went)."""

    def __init__(self, failure: Failure, trace=None):
        super().__init__(failure.message)
        self.failure = failure
        self.trace = trace


def status_failure(status: int, reason: str) -> Failure:
    """An unexpected status: auth for 401/403, http otherwise."""
    message = f"HTTP {status} {reason}".rstrip()
    return Failure(AUTH if status in AUTH_STATUS else HTTP, str(status), message)


_TIMEOUT_MESSAGES = {
    "dns": "name not resolved within {:g}s",
    "connect": "no connection within {:g}s",
    "read": "no response within {:g}s",
    "deadline": "response not complete within the {:g}s deadline",
}


def timeout_failure(phase: str, seconds: float) -> Failure:
    """A timeout: ``dns``, ``connect``, ``read`` or ``deadline`` (the response started, then
    ran out of time)."""
    return Failure(TIMEOUT, phase, _TIMEOUT_MESSAGES[phase].format(seconds))


def _chain(exc: BaseException):
    """The exception and everything it wraps (requests -> urllib3 -> socket/ssl)."""
    seen = []
    todo = [exc]
    while todo:
        item = todo.pop(0)
        # ssl.SSLError.reason is a string, urllib3's is an exception: follow exceptions only.
        if not isinstance(item, BaseException) or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend([getattr(item, "reason", None), item.__cause__, item.__context__])
        todo.extend(arg for arg in item.args if isinstance(arg, BaseException))
    return seen


def classify_exception(exc: BaseException, timeout: float) -> Failure:
    """Translate a requests/urllib3/socket/ssl exception into a Failure."""
    import requests.exceptions as rx  # imported late: gevent must patch first
    import urllib3.exceptions as ux

    if isinstance(exc, rx.TooManyRedirects):
        return Failure(CONTENT, "redirects", "too many redirects")
    if isinstance(exc, rx.ConnectTimeout):
        return timeout_failure("connect", timeout)
    chain = _chain(exc)
    for item in chain:   # the proxy refused, is down, or would not open the tunnel
        if isinstance(item, (rx.ProxyError, ux.ProxyError)):
            return Failure(CONNECTION, "proxy", "the proxy failed (refused, down, or no tunnel)")
    for item in chain:
        if isinstance(item, (ux.NameResolutionError, socket.gaierror)):
            return Failure(CONNECTION, "dns", "DNS lookup failed")
    for item in chain:  # the verification error first: it says why (self-signed, expired, host name)
        if isinstance(item, ssl.SSLCertVerificationError):
            return Failure(CONNECTION, "tls", f"TLS certificate rejected: {item.verify_message}")
    for item in chain:
        if isinstance(item, (ssl.SSLError, ssl.CertificateError, ux.SSLError)) and not _is_timeout(item):
            return Failure(CONNECTION, "tls", f"TLS handshake failed: {_ssl_reason(item)}")
    for item in chain:
        if isinstance(item, (rx.ReadTimeout, ux.ReadTimeoutError, socket.timeout, TimeoutError)):
            return timeout_failure("read", timeout)
    for item in chain:
        if isinstance(item, http.client.RemoteDisconnected):
            return Failure(CONNECTION, "closed", "server closed the connection without a response")
        if isinstance(item, ConnectionRefusedError):
            return Failure(CONNECTION, "refused", "connection refused")
        if isinstance(item, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return Failure(CONNECTION, "reset", "connection reset by peer")
        if isinstance(item, OSError) and item.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return Failure(CONNECTION, "unreachable", "network or host unreachable")
    for item in chain:
        if isinstance(item, (http.client.IncompleteRead, ux.IncompleteRead)):
            return Failure(CONNECTION, "protocol", "response ended before the announced body length")
    for item in chain:
        if isinstance(item, (http.client.HTTPException, ux.ProtocolError, ux.DecodeError,
                             ux.HeaderParsingError, rx.ChunkedEncodingError,
                             rx.ContentDecodingError, rx.InvalidHeader)):
            return Failure(CONNECTION, "protocol", f"malformed HTTP response ({type(item).__name__})")
        if isinstance(item, (rx.InvalidURL, rx.MissingSchema, rx.InvalidSchema, ux.LocationParseError)):
            return Failure(CONNECTION, "protocol", "invalid URL or redirect location")
    for item in chain:
        if isinstance(item, OSError) and item.errno is not None:
            name = errno.errorcode.get(item.errno, str(item.errno)).lower()
            return Failure(CONNECTION, name, f"socket error {name}")
    return Failure(CONNECTION, "other", f"request failed ({type(exc).__name__})")


def _is_timeout(exc: BaseException) -> bool:
    return "timed out" in str(exc).lower()


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return type(exc).__name__


class TokenError(Exception):
    """An auth source could not get the token a check must send (an OAuth2 token endpoint that
    refused, timed out or answered without a token). The check fails as ``auth``/``token``
    without contacting its target; the message says why and never holds a secret."""
