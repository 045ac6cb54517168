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
import socket
import time
from dataclasses import dataclass
from typing import Mapping

import backoff
import gevent
from requests.cookies import RequestsCookieJar
from requests.utils import get_environ_proxies

from greenmon.config import Config
from greenmon.errors import AUTH, CONTENT, Failure, TokenError, TransportError
from greenmon.expectations import json_text
from greenmon.flows import VARIABLE_USE
from greenmon.judges import Expectations, judge
from greenmon.result import Attempt, Outcome
from greenmon.settings import MonitorSettings
from greenmon.targets import Extract, Target
from greenmon.tokens import Credentials
from greenmon.transport import Request, Transport, resolve

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
    extract: tuple[Extract, ...] = ()  # a flow's: values read from the response
    templated: bool = False            # a flow's: url, headers or body use {{variables}}
    all_addresses: bool = False        # addresses = "all": every address of the name
    family: int = 0                    # ip_version: socket.AF_INET or AF_INET6 (0: any)


FAMILIES = {"any": 0, "4": socket.AF_INET, "6": socket.AF_INET6}   # ip_version -> family


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
    """The requests a check of ``target`` sends: its own, or a flow's steps. ``close``: ask
    for the connection to be closed after each (Checker.close_connections); ``shared``: see
    ``expectations``."""
    if not target.steps:
        return (_step(target, monitor, transport, close, shared),)
    return tuple(_step(step.request, monitor, transport, close, shared, step.extract, step.templated)
                 for step in target.steps)


def _step(request: Target, monitor: MonitorSettings, transport: Transport, close: bool,
          shared: dict | None, extract: tuple[Extract, ...] = (), templated: bool = False) -> Step:
    return Step(request=request, headers=transport.base_headers(request.url, request.headers, close=close),
                verify=verify_setting(request, monitor), proxies=proxies_for(request, monitor),
                cert=client_cert(request, monitor), expect=expectations(request, monitor, shared),
                extract=extract, templated=templated,
                all_addresses=(request.addresses or monitor.addresses) == "all",
                family=FAMILIES[request.ip_version or monitor.ip_version])


def _requests_of(config: Config) -> list[Target]:
    """Every request the config's enabled targets send: a flow's steps, a target's own."""
    return [step.request for t in config.enabled_targets for step in t.steps] + [
        t for t in config.enabled_targets if not t.steps]


def trust_settings(config: Config) -> set[tuple]:
    """The (verify, client certificate) settings of the config's HTTPS targets: their
    contexts are built before checks start, not by the first check that needs one, while
    others are being timed."""
    settings = {(verify_setting(r, config.monitor), client_cert(r, config.monitor))
                for r in _requests_of(config) if r.url[:6].lower() == "https:"}
    # Token endpoints of oauth2 sources are asked before their targets' checks are timed.
    settings.update((source.verify, None) for source in config.auth.values()
                    if source.kind == "oauth2" and source.token_url[:6].lower() == "https:")
    return settings


def proxy_urls(config: Config) -> set[str]:
    """The proxies the config's requests go through (``proxy``, or ``proxy_env``'s for their
    URLs): their pool managers are set up before checks start, as the trust stores are."""
    return {proxy for r in _requests_of(config)
            for proxy in (proxies_for(r, config.monitor) or {}).values()}


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
             failure: Failure | None, step: int = 0, address: str | None = None) -> Attempt:
    """An Attempt from the transport's trace (every attempt it made has one): its duration
    and phases, which add up to the duration."""
    return Attempt(status, record.end(), body_bytes, failure, record.timings(), record.tls, step, address)


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
        steps = self.plan(target)
        if steps[0].all_addresses or steps[0].family:
            return self._check_addresses(steps[0], send, started)
        flow = Flow() if target.steps else None
        for number, step in enumerate(steps):
            try:
                send(attempts, step, number, flow)
            except AttemptFailed:
                break   # the first step that fails ends the check
        names = tuple(step.request.name for step in target.steps) if flow is not None else ()
        return Outcome(tuple(attempts), time.monotonic() - started, names)

    def _check_addresses(self, step: Step, send, started: float) -> Outcome:
        """A check of the name's addresses (``ip_version``: of one family): every one with
        addresses = "all", at once, each over its own connection and retried on its own;
        else the first. No address is connection/dns, before anything is sent."""
        try:
            addresses = resolve(step.request.url, step.family, step.request.timeout or self._monitor.timeout)
        except TransportError as error:
            log.debug("check of %s failed: %s/%s", step.request.name, error.failure.error_class,
                      error.failure.detail)
            return Outcome((Attempt(None, None, None, error.failure),), time.monotonic() - started)
        if not step.all_addresses:
            addresses = addresses[:1]
        per_address: list[list[Attempt]] = [[] for _ in addresses]

        def check_one(attempts: list[Attempt], address: str) -> None:
            try:
                send(attempts, step, 0, None, address)
            except AttemptFailed:
                pass   # its failure is its last attempt's

        if len(addresses) == 1:
            check_one(per_address[0], addresses[0])
        else:
            greenlets = [gevent.spawn(check_one, attempts, address)
                         for attempts, address in zip(per_address, addresses)]
            try:
                gevent.joinall(greenlets, raise_error=True)
            finally:
                gevent.killall(greenlets)   # this check was stopped: its addresses stop too
        attempts = tuple(attempt for attempts in per_address for attempt in attempts)
        return Outcome(attempts, time.monotonic() - started,
                       addresses=tuple(addresses) if step.all_addresses else ())

    def _attempt(self, attempts: list[Attempt], step: Step, number: int = 0,
                 flow: "Flow | None" = None, address: str | None = None) -> None:
        """One attempt, repeated once after refreshing the auth source on 401/403 (not after a
        token that could not be had: asking again at once would only ask the same)."""
        attempt, sent = self._send(step, number, flow, address)
        if (attempt.failure is not None and attempt.failure.error_class == AUTH
                and attempt.status_code is not None
                and step.request.auth is not None and step.request.auth.refreshable):
            attempts.append(attempt)
            self.credentials.refresh(step.request.auth, sent)
            attempt, _ = self._send(step, number, flow, address)
        attempts.append(attempt)
        if attempt.failure is not None:
            raise AttemptFailed(attempt)

    def _send(self, step: Step, number: int = 0, flow: "Flow | None" = None,
              address: str | None = None) -> tuple[Attempt, tuple[str, str] | None]:
        """One request, and the auth header it carried. A token that cannot be had fails the
        attempt as auth/token before the target is contacted (no latency: nothing was timed).
        A flow's step fills in its variables now, and reads its own from the response."""
        sent, monitor = step.request, self._monitor
        try:
            auth = self.credentials.header(sent.auth) if sent.auth is not None else None
        except TokenError as error:
            log.debug("attempt on %s failed: auth/token", sent.name)
            return Attempt(None, None, None, Failure(AUTH, "token", str(error)), step=number,
                           address=address), None
        url, headers, body = sent.url, step.headers, sent.body
        if step.templated:
            url, body = flow.fill(url), flow.fill(body)
            headers = headers.copy()
            for name, value in sent.headers.items():
                headers[name] = flow.fill(value)
        request = Request(
            method=sent.method, url=url, headers=headers, body=body, auth=auth,
            timeout=sent.timeout or monitor.timeout, verify=step.verify,
            follow_redirects=(monitor.follow_redirects if sent.follow_redirects is None
                              else sent.follow_redirects), max_body_bytes=monitor.max_body_bytes,
            proxies=step.proxies, cert=step.cert, cookies=flow.cookies if flow is not None else None,
            cache_url=url is sent.url,   # not a URL filled in for this attempt
            address=address)
        try:
            response = self._transport.send(request)
        except TransportError as error:
            attempt = _attempt(None, error.trace, None, error.failure, number, address)
        else:
            failure = judge(step.expect, response, self._clock())
            if failure is None and step.extract:
                failure = flow.read(step.extract, response)
            attempt = _attempt(response.status_code, response.trace, len(response.body), failure, number,
                               address)
        if attempt.failure is not None:
            log.debug("attempt on %s failed: %s/%s", sent.name,
                      attempt.failure.error_class, attempt.failure.detail)
        return attempt, auth


class Flow:
    """What one check of a flow carries from step to step: the values its steps extracted
    (secrets: never logged, shown or kept past the check) and its cookies."""

    __slots__ = ("values", "cookies")

    def __init__(self):
        self.values: dict[str, str] = {}
        self.cookies = RequestsCookieJar()

    def fill(self, text: str) -> str:
        if "{{" not in text:
            return text
        return VARIABLE_USE.sub(lambda match: self.values.get(match.group(1), match.group(0)), text)

    def read(self, extract: tuple[Extract, ...], response) -> Failure | None:
        """Take each value from the response; the first that is not there fails the step as
        content/extract, naming the variable, never the body."""
        for item in extract:
            value = _extracted(item, response)
            if value is None:
                return Failure(CONTENT, "extract", f"extract: {item.variable} ({item.source}) not found")
            self.values[item.variable] = value
        return None


def _extracted(item: Extract, response) -> str | None:
    if item.source == "json":
        return json_text(response.body, item.argument)
    if item.source == "header":
        return response.headers.get(item.argument)
    found = item.argument.search(response.body.decode("utf-8", errors="replace"))
    if found is None:
        return None
    return found.group(1) if found.re.groups else found.group(0)
