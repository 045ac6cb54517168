"""One check of one target: a plan of requests, each sent with retries, judged, and folded into one outcome.

A check is a plan: the Steps it sends, in order. Today a target's plan is
one step; a flow of several requests, or a request per resolved address, is
a plan of several, and runs this same code. Each step is sent with the
retry policy: the ``backoff`` library retries an attempt whose failure is
retryable (errors.Failure.retryable), sleeping with ``time.sleep``, which
gevent patches. A response is judged by the table of ``judges``. The fold:
the attempts of every step make the Outcome, and the first step that fails
ends the check (the steps after it are not sent); the last attempt decides
the result.

A step is built once per target and kept (its headers, proxies, client
certificate and expectations), so a check allocates its request and little
more.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Mapping

import backoff
from requests.utils import get_environ_proxies

from greenmon.config import Config
from greenmon.errors import AUTH, Failure, TokenError, TransportError
from greenmon.judges import Expectations, judge
from greenmon.result import Attempt, Outcome
from greenmon.settings import MonitorSettings
from greenmon.targets import Target
from greenmon.tokens import Credentials
from greenmon.transport import Request, Transport

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Step:
    """One request of a check, and what its response must be. ``request`` says what to send
    (method, URL, body, auth, timeout): the target itself for a check of one request."""

    request: Target
    headers: Mapping[str, str]        # Transport.base_headers: built once, never modified
    verify: bool | str
    proxies: dict[str, str] | None
    cert: tuple[str, str] | None
    expect: Expectations


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
        return get_environ_proxies(target.url) or None
    return None


def expectations(target: Target, monitor: MonitorSettings,
                 shared: dict | None = None) -> Expectations:
    """What a target's responses must be; ``shared``: one object for the targets that expect
    the same (most keep the defaults: 10,000 targets need not hold 10,000 copies)."""
    expect = Expectations(
        status=target.expect_status, body=target.expect_body, reject_body=target.reject_body,
        json=target.expect_json, header=target.expect_header, reject_header=target.reject_header,
        min_cert_days=monitor.min_cert_days if target.min_cert_days is None else target.min_cert_days)
    if shared is None or expect.json is not None:   # a JSON table is a dict: not a key
        return expect
    return shared.setdefault(expect, expect)


def plan(target: Target, monitor: MonitorSettings, transport: Transport, close: bool = False,
         shared: dict | None = None) -> tuple[Step, ...]:
    """The requests a check of ``target`` sends: one, today. ``close``: ask for the
    connection to be closed after each (Checker.close_connections); ``shared``: see
    ``expectations``."""
    return (Step(request=target, headers=transport.base_headers(target.url, target.headers, close=close),
                 verify=verify_setting(target, monitor), proxies=proxies_for(target, monitor),
                 cert=client_cert(target, monitor), expect=expectations(target, monitor, shared)),)


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


class AttemptFailed(Exception):
    def __init__(self, attempt: Attempt):
        super().__init__(attempt.failure.message)
        self.attempt = attempt


def _log_retry(details) -> None:
    attempts = details["args"][0]
    failure = attempts[-1].failure
    log.debug("retrying %s in %.2fs after %s/%s (attempt %d)", details["args"][1].request.name,
              details["wait"], failure.error_class, failure.detail, details["tries"])


def _attempt(status: int | None, record, body_bytes: int | None,
             failure: Failure | None) -> Attempt:
    """An Attempt from the transport's trace (every attempt it made has one): its duration
    and phases, which add up to the duration."""
    return Attempt(status, record.end(), body_bytes, failure, record.timings(), record.tls)


class Checker:
    """Checks targets through a shared Transport with the config's retry policy."""

    def __init__(self, transport: Transport, config: Config, clock=time.time):
        self._transport = transport
        self._clock = clock   # wall time, for the certificates' days left
        self.credentials = Credentials(transport)
        self._monitor = config.monitor
        self._plans: dict[str, tuple[Step, ...]] = {}   # target name -> its plan
        self._expectations: dict[Expectations, Expectations] = {}   # shared among plans
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

    def plan(self, target: Target) -> tuple[Step, ...]:
        steps = self._plans.get(target.name)
        if steps is None:
            steps = self._plans[target.name] = plan(
                target, self._monitor, self._transport, close=target.name in self.close_connections,
                shared=self._expectations)
        return steps

    def check(self, target: Target, *, trial: bool = False) -> Outcome:
        """Run one check; a half-open ``trial`` sends each step once, without retries."""
        attempts: list[Attempt] = []
        started = time.monotonic()
        send = self._attempt if trial else self._attempt_with_retries
        for step in self.plan(target):
            try:
                send(attempts, step)
            except AttemptFailed:
                break   # the first step that fails ends the check
        return Outcome(tuple(attempts), time.monotonic() - started)

    def _attempt(self, attempts: list[Attempt], step: Step) -> None:
        """One attempt, repeated once after refreshing the auth source on 401/403 (not after a
        token that could not be had: asking again at once would only ask the same)."""
        attempt, sent = self._send(step)
        if (attempt.failure is not None and attempt.failure.error_class == AUTH
                and attempt.status_code is not None
                and step.request.auth is not None and step.request.auth.refreshable):
            attempts.append(attempt)
            self.credentials.refresh(step.request.auth, sent)
            attempt, _ = self._send(step)
        attempts.append(attempt)
        if attempt.failure is not None:
            raise AttemptFailed(attempt)

    def _send(self, step: Step) -> tuple[Attempt, tuple[str, str] | None]:
        """One request, and the auth header it carried. A token that cannot be had fails the
        attempt as auth/token before the target is contacted (no latency: nothing was timed)."""
        sent, monitor = step.request, self._monitor
        try:
            auth = self.credentials.header(sent.auth) if sent.auth is not None else None
        except TokenError as error:
            log.debug("attempt on %s failed: auth/token", step.request.name)
            return Attempt(None, None, None, Failure(AUTH, "token", str(error))), None
        request = Request(
            method=sent.method, url=sent.url, headers=step.headers, body=sent.body, auth=auth,
            timeout=sent.timeout or monitor.timeout, verify=step.verify,
            follow_redirects=monitor.follow_redirects, max_body_bytes=monitor.max_body_bytes,
            proxies=step.proxies, cert=step.cert)
        try:
            response = self._transport.send(request)
        except TransportError as error:
            attempt = _attempt(None, error.trace, None, error.failure)
        else:
            attempt = _attempt(response.status_code, response.trace, len(response.body),
                               judge(step.expect, response, self._clock()))
        if attempt.failure is not None:
            log.debug("attempt on %s failed: %s/%s", step.request.name,
                      attempt.failure.error_class, attempt.failure.detail)
        return attempt, auth
