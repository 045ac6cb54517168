"""One check of one target: attempts, auth refresh, backoff retries and the response verdict.

Retries use the ``backoff`` library around a single attempt; only failures
whose class is retryable (errors.Failure.retryable) are tried again. The
sleeping between attempts is backoff's ``time.sleep``, which gevent patches.
"""

from __future__ import annotations

import logging
import time

import backoff

from greenmon.config import Config
from greenmon.errors import (AUTH, CONNECTION, CONTENT, Failure, TokenError, TransportError,
                             status_failure)
from greenmon.expectations import check_json
from greenmon.result import Attempt, Outcome
from greenmon.settings import MonitorSettings
from greenmon.targets import Target
from greenmon.tokens import Credentials
from greenmon.transport import Request, Response, Transport

log = logging.getLogger(__name__)


class AttemptFailed(Exception):
    def __init__(self, attempt: Attempt):
        super().__init__(attempt.failure.message)
        self.attempt = attempt


def _log_retry(details) -> None:
    attempts = details["args"][0]
    failure = attempts[-1].failure
    log.debug("retrying %s in %.2fs after %s/%s (attempt %d)", details["args"][1].name,
              details["wait"], failure.error_class, failure.detail, details["tries"])


DAY_S = 86_400.0


def evaluate(target: Target, response: Response, monitor: MonitorSettings,
             now: float) -> Failure | None:
    """The verdict on a response: the certificate's days left, the expected status, then
    what the body must (or must not) hold."""
    min_days = monitor.min_cert_days if target.min_cert_days is None else target.min_cert_days
    tls = response.tls
    if min_days and tls is not None and tls.cert_not_after is not None:
        days_left = (tls.cert_not_after - now) / DAY_S
        if days_left < min_days:
            return Failure(CONNECTION, "cert_expiring",
                           f"certificate expires in {max(days_left, 0.0):.1f} days "
                           f"(min_cert_days {min_days:g})")
    if response.status_code not in target.expect_status:
        return status_failure(response.status_code, response.reason)
    if response.body_too_large:
        return Failure(CONTENT, "body_too_large", "body larger than max_body_bytes")
    if target.expect_body is not None or target.reject_body is not None:
        text = response.body.decode("utf-8", errors="replace")
        if target.expect_body is not None and not target.expect_body.search(text):
            return Failure(CONTENT, "expect_body", "body does not match expect_body")
        if target.reject_body is not None and target.reject_body.search(text):
            return Failure(CONTENT, "reject_body", "body matches reject_body")
    if target.expect_json is not None:
        problem = check_json(target.expect_json, response.body)
        if problem is not None:
            return Failure(CONTENT, "expect_json", f"expect_json: {problem}")
    return None


def _attempt(status: int | None, record, body_bytes: int | None,
             failure: Failure | None) -> Attempt:
    """An Attempt from the transport's trace (every attempt it made has one): its duration
    and phases, which add up to the duration."""
    return Attempt(status, record.end(), body_bytes, failure, record.timings(), record.tls)


def verify_setting(target: Target, monitor: MonitorSettings) -> bool | str:
    """How a target's TLS is verified: False, True (default CAs) or a CA file added to them."""
    return monitor.verification(target.verify_tls, target.ca_file)


def client_cert(target: Target, monitor: MonitorSettings) -> tuple[str, str] | None:
    """The client certificate and key a target's checks present (mTLS), if any."""
    if target.client_cert is not None:
        return (target.client_cert, target.client_key) if target.client_cert else None
    return (monitor.client_cert, monitor.client_key) if monitor.client_cert else None


def proxies_for(target: Target, monitor: MonitorSettings) -> dict[str, str] | None:
    """requests' proxies for a target: its proxy, else the monitor's, else (proxy_env) the
    environment's for its URL, NO_PROXY included."""
    proxy = monitor.proxy if target.proxy is None else target.proxy
    if proxy:
        return {"http": proxy, "https": proxy}
    if monitor.proxy_env if target.proxy_env is None else target.proxy_env:
        from requests.utils import get_environ_proxies
        return get_environ_proxies(target.url) or None
    return None


def trust_settings(config: Config) -> set[tuple]:
    """The (verify, client certificate) settings of the config's HTTPS targets: their
    contexts are built before checks start, not by the first check that needs one, while
    others are being timed."""
    settings = {(verify_setting(t, config.monitor), client_cert(t, config.monitor))
                for t in config.enabled_targets if t.url[:6].lower() == "https:"}
    # Token endpoints of oauth2 sources are asked before their targets' checks are timed.
    settings.update((source.verify, None) for source in config.auth.values()
                    if source.kind == "oauth2" and source.token_url[:6].lower() == "https:")
    return settings


class Prober:
    """Checks targets through a shared Transport with the config's retry policy."""

    def __init__(self, transport: Transport, config: Config, clock=time.time):
        self._transport = transport
        self._clock = clock   # wall time, for the certificates' days left
        self.credentials = Credentials(transport)
        self._monitor = config.monitor
        self._headers: dict = {}  # target name -> Transport.base_headers
        self._routes: dict = {}   # target name -> (proxies, client certificate)
        # Targets whose connection is closed after each check (set before the first check):
        # the daemon's schedule contacts their origin too seldom to keep one idle.
        self.close_connections: frozenset[str] = frozenset()
        self.stopping = False  # set on shutdown: attempts in flight end, no new retries start
        retry = config.retry
        self._attempt_with_retries = backoff.on_exception(
            backoff.expo, AttemptFailed,
            max_tries=retry.retries + 1, giveup=self._give_up,
            jitter=backoff.full_jitter if retry.jitter else None,
            on_backoff=_log_retry, logger=None,
            base=2, factor=retry.backoff, max_value=retry.max_backoff,
        )(self._attempt)

    def _give_up(self, error: AttemptFailed) -> bool:
        return self.stopping or not error.attempt.failure.retryable

    def check(self, target: Target, *, trial: bool = False) -> Outcome:
        """Run one check; a half-open ``trial`` is a single attempt without retries."""
        attempts: list[Attempt] = []
        started = time.monotonic()
        try:
            (self._attempt if trial else self._attempt_with_retries)(attempts, target)
        except AttemptFailed:
            pass
        return Outcome(tuple(attempts), time.monotonic() - started)

    def _attempt(self, attempts: list[Attempt], target: Target) -> None:
        """One attempt, repeated once after refreshing the auth source on 401/403 (not after a
        token that could not be had: asking again at once would only ask the same)."""
        attempt, sent = self._send(target)
        if (attempt.failure is not None and attempt.failure.error_class == AUTH
                and attempt.status_code is not None
                and target.auth is not None and target.auth.refreshable):
            attempts.append(attempt)
            self.credentials.refresh(target.auth, sent)
            attempt, _ = self._send(target)
        attempts.append(attempt)
        if attempt.failure is not None:
            raise AttemptFailed(attempt)

    def _send(self, target: Target) -> tuple[Attempt, tuple[str, str] | None]:
        """One request, and the auth header it carried. A token that cannot be had fails the
        attempt as auth/token before the target is contacted (no latency: nothing was timed)."""
        try:
            request = self._request(target)
        except TokenError as error:
            log.debug("attempt on %s failed: auth/token", target.name)
            return Attempt(None, None, None, Failure(AUTH, "token", str(error))), None
        try:
            response = self._transport.send(request)
        except TransportError as error:
            attempt = _attempt(None, error.trace, None, error.failure)
        else:
            attempt = _attempt(response.status_code, response.trace, len(response.body),
                               evaluate(target, response, self._monitor, self._clock()))
        if attempt.failure is not None:
            log.debug("attempt on %s failed: %s/%s", target.name,
                      attempt.failure.error_class, attempt.failure.detail)
        return attempt, request.auth

    def _request(self, target: Target) -> Request:
        monitor = self._monitor
        headers = self._headers.get(target.name)
        if headers is None:
            headers = self._headers[target.name] = self._transport.base_headers(
                target.url, target.headers, close=target.name in self.close_connections)
            self._routes[target.name] = (proxies_for(target, monitor), client_cert(target, monitor))
        proxies, cert = self._routes[target.name]
        return Request(
            method=target.method, url=target.url, headers=headers, body=target.body,
            auth=self.credentials.header(target.auth) if target.auth is not None else None,
            timeout=target.timeout or monitor.timeout, verify=verify_setting(target, monitor),
            follow_redirects=monitor.follow_redirects, max_body_bytes=monitor.max_body_bytes,
            proxies=proxies, cert=cert,
        )
