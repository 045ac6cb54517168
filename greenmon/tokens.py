"""OAuth2 client credentials (RFC 6749 section 4.4): fetching the token every check of an oauth2 source sends.

The TokenManager of the original design. A token is fetched when a check
first needs it and kept until shortly before it expires: a tenth of its
lifetime early, at most MAX_MARGIN_S (a 10 s token is fetched again after
9 s, a one-hour token a minute before its end; one without ``expires_in``
is kept until a target refuses it). However many checks wait for it, one
token request is in flight at a time and they all get its answer, good or
bad. A failed request is not repeated for FAILURE_HOLD_S: the checks in that
time fail with its reason instead of each asking again. A 401/403 from a
target drops the token it was sent (that one only: a check refused with a
token that was already replaced does not drop the new one), and the check's
one repeat fetches another.

Token requests go through the checks' transport, so they obey its total
deadline, TLS verification and CA file: the source's settings
(``oauth2.OAuth2Source``). Tokens live in the process that fetched them
(``Credentials``, one per Checker): a worker process fetches its own, and a
reload, whose sources are new, fetches new ones. The client secret and the
token are never logged, put in a message or in a result.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import weakref
from typing import Any, Callable
from urllib.parse import quote_plus, urlencode

import gevent.event

from greenmon.auth import AuthSource, OAuth2Source
from greenmon.errors import TokenError, TransportError
from greenmon.schema import header_value
from greenmon.transport import Request, Transport

log = logging.getLogger(__name__)

MARGIN_FRACTION = 0.1       # a token is renewed this fraction of its lifetime before it expires
MAX_MARGIN_S = 60.0
FAILURE_HOLD_S = 1.0        # a failed token request is not repeated sooner
MAX_RESPONSE_BYTES = 64 * 1024
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")   # RFC 6749 5.2 error codes: safe to show


def renew_at(fetched_at: float, expires_in: float) -> float:
    """When a token fetched at ``fetched_at`` (the request's start) is fetched again."""
    return fetched_at + expires_in - min(MAX_MARGIN_S, expires_in * MARGIN_FRACTION)


class TokenClient:
    """The tokens of one oauth2 source in this process: the Authorization header of its
    targets' checks."""

    header_name = "Authorization"

    def __init__(self, source: OAuth2Source, clock: Callable[[], float] = time.monotonic):
        self.source = source
        self.requests = 0          # token requests made (for tests and debugging)
        self._clock = clock
        self._token: tuple[str, float | None] | None = None   # (header value, renew at)
        self._failure: tuple[str, float] | None = None        # (message, until)
        self._pending: gevent.event.AsyncResult | None = None

    def header(self, transport: Transport) -> tuple[str, str]:
        """("Authorization", "Bearer ..."), fetching a token if none is good; TokenError if
        there is none to be had."""
        now = self._clock()
        token = self._token
        if token is not None and (token[1] is None or now < token[1]):
            return self.header_name, token[0]
        failure = self._failure
        if failure is not None and now < failure[1]:
            raise TokenError(failure[0])
        pending = self._pending
        if pending is not None:   # another check asked first: its answer is ours
            try:
                return self.header_name, pending.get()[0]
            except TokenError as error:
                raise TokenError(str(error)) from None
        pending = self._pending = gevent.event.AsyncResult()
        try:
            token = self._fetch(transport)
        except TokenError as error:
            self._failure = (str(error), self._clock() + FAILURE_HOLD_S)
            log.warning("oauth2 %s: no token: %s", self.source.name, error)
            pending.set_exception(TokenError(str(error)))
            raise
        except BaseException:
            pending.set_exception(TokenError("the token request was interrupted"))
            raise
        finally:
            self._pending = None
        self._token, self._failure = token, None
        pending.set(token)
        return self.header_name, token[0]

    def refresh(self, sent: tuple[str, str] | None = None) -> None:
        """A target refused ``sent``: drop that token (and re-read a secret from a file or the
        environment) so the next header() fetches a new one."""
        token = self._token
        if token is not None and (sent is None or sent[1] == token[0]):
            self._token = None
            self.source.secret.refresh()

    def _fetch(self, transport: Transport) -> tuple[str, float | None]:
        source = self.source
        secret = source.secret.get()
        form = {"grant_type": "client_credentials"}
        if source.scopes:
            form["scope"] = " ".join(source.scopes)
        form.update(source.params)
        auth = None
        if source.client_auth == "post":
            form.update(client_id=source.client_id, client_secret=secret)
        else:
            pair = f"{quote_plus(source.client_id, safe='')}:{quote_plus(secret, safe='')}"
            auth = ("Authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii"))
        headers = transport.base_headers(source.token_url, {
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        request = Request(method="POST", url=source.token_url, headers=headers, body=urlencode(form),
                          timeout=source.timeout, verify=source.verify, follow_redirects=False,
                          max_body_bytes=MAX_RESPONSE_BYTES, auth=auth)
        self.requests += 1
        started = self._clock()
        try:
            response = transport.send(request)
        except TransportError as error:
            failure = error.failure
            raise TokenError(f"token request failed: {failure.error_class}/{failure.detail}: "
                             f"{failure.message}") from None
        document = _json(response.body)
        if not 200 <= response.status_code < 300:
            code = document.get("error") if isinstance(document, dict) else None
            why = f" ({code})" if isinstance(code, str) and _OAUTH_ERROR.fullmatch(code) else ""
            raise TokenError(f"token endpoint answered HTTP {response.status_code}{why}")
        if not isinstance(document, dict):
            raise TokenError("token endpoint answered without a JSON object")
        token = document.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenError("token endpoint answered without an access_token")
        token_type = document.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenError("token endpoint answered a token_type that is not bearer")
        value = f"Bearer {token}"
        try:
            header_value(value)
        except ValueError:
            raise TokenError("the access_token cannot be sent in a header") from None
        expires_in = document.get("expires_in")
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)   # some servers send a string
        renew = None
        if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
            renew = renew_at(started, float(expires_in))
        log.debug("oauth2 %s: token fetched (expires_in %s)", source.name,
                  expires_in if renew is not None else "not given")
        return value, renew

    def __repr__(self) -> str:
        return f"TokenClient({self.source.name!r})"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class Credentials:
    """The auth header of each check: a static source's own, an oauth2 source's token from
    its TokenClient (made on first use, one per source)."""

    def __init__(self, transport: Transport, clock: Callable[[], float] = time.monotonic):
        self._transport = transport
        self.clock = clock   # of the token clients made from now on (a test sets a fake one)
        self._clients: weakref.WeakKeyDictionary[OAuth2Source, TokenClient] = \
            weakref.WeakKeyDictionary()

    def client(self, source: OAuth2Source) -> TokenClient:
        client = self._clients.get(source)
        if client is None:
            client = self._clients[source] = TokenClient(source, self.clock)
        return client

    def header(self, source: AuthSource | OAuth2Source) -> tuple[str, str]:
        """(name, value) to send; TokenError when an oauth2 source has no token to give."""
        if isinstance(source, OAuth2Source):
            return self.client(source).header(self._transport)
        return source.header()

    def refresh(self, source: AuthSource | OAuth2Source, sent: tuple[str, str] | None) -> None:
        """A target refused ``sent``: re-read the secrets, or drop that token."""
        if isinstance(source, OAuth2Source):
            self.client(source).refresh(sent)
        else:
            source.refresh(sent)
