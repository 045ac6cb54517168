"""The one translation of what the transport raises into a Failure of the five classes.

requests wraps urllib3, which wraps socket and ssl: the class is decided by
the whole chain of exceptions, the most telling cause first (a proxy, a name
that did not resolve, a certificate rejected and why, then timeouts, resets
and malformed responses). Messages are written here, never copied from the
exception, so no URL, header or secret leaks through them.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl

import requests.exceptions as rx
import urllib3.exceptions as ux

from greenmon.errors import CONNECTION, CONTENT, Failure, timeout_failure


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
