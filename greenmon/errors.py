"""The five error classes: what a failed attempt is, and whether it is worth retrying.

Every failed attempt gets exactly one class and a short ``detail``; whether
it is worth retrying follows from the two (README, "Error classes"). This is
data, with no network library behind it: ``classify`` translates what the
transport raises into a Failure. Messages are written by greenmon, never
copied from exception text, so no URL, header or secret leaks into results
or logs.
"""

from __future__ import annotations

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


class TokenError(Exception):
    """An auth source could not get the token a check must send (an OAuth2 token endpoint that
    refused, timed out or answered without a token). The check fails as ``auth``/``token``
    without contacting its target; the message says why and never holds a secret."""
