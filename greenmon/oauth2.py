"""OAuth2 client credentials (RFC 6749 section 4.4): the token every check of an ``[auth.NAME]`` source sends.

The TokenManager of the original design. The token is fetched when a check
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
deadline, TLS verification and CA file: the source's ``timeout``,
``verify_tls`` and ``ca_file``, else [monitor]'s. The client secret and the
token are never logged, put in a message or in a result; ``repr`` hides
them, and a copy pickled for a worker process leaves the token behind (each
worker fetches its own).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from typing import Any, Callable
from urllib.parse import quote_plus, urlencode

import gevent.event

from greenmon.auth import Secret, parse_secret
from greenmon.certfiles import ca_file, verification
from greenmon.errors import TokenError
from greenmon.schema import (Document, Path, boolean, file_path, header_value, non_empty_string,
                             number, string, string_table, type_name)

log = logging.getLogger(__name__)

MARGIN_FRACTION = 0.1       # a token is renewed this fraction of its lifetime before it expires
MAX_MARGIN_S = 60.0
FAILURE_HOLD_S = 1.0        # a failed token request is not repeated sooner
MAX_RESPONSE_BYTES = 64 * 1024
CLIENT_AUTH = ("basic", "post")   # client_secret_basic (RFC 6749 2.3.1), client_secret_post
_OAUTH_ERROR = re.compile(r"[a-z_]{1,40}")   # RFC 6749 5.2 error codes: safe to show


def renew_at(fetched_at: float, expires_in: float) -> float:
    """When a token fetched at ``fetched_at`` (the request's start) is fetched again."""
    return fetched_at + expires_in - min(MAX_MARGIN_S, expires_in * MARGIN_FRACTION)


class OAuth2Source:
    """An ``[auth.NAME]`` of type oauth2: the Authorization header of its targets' checks."""

    kind = "oauth2"
    header_name = "Authorization"
    refreshable = True

    def __init__(self, name: str, *, token_url: str, client_id: str, secret: Secret,
                 scopes: tuple[str, ...] = (), params: dict[str, str] | None = None,
                 client_auth: str = "basic", timeout: float = 10.0, verify: bool | str = True,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.token_url = token_url
        self.client_id = client_id
        self.scopes = tuple(scopes)
        self.params = dict(params or {})
        self.client_auth = client_auth
        self.timeout = timeout
        self.verify = verify
        self.requests = 0          # token requests made (for tests and debugging)
        self._secret = secret
        self._clock = clock
        self._token: tuple[str, float | None] | None = None   # (header value, renew at)
        self._failure: tuple[str, float] | None = None        # (message, until)
        self._pending: gevent.event.AsyncResult | None = None

    def header(self, transport=None) -> tuple[str, str]:
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
            log.warning("oauth2 %s: no token: %s", self.name, error)
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
            self._secret.refresh()

    def _fetch(self, transport) -> tuple[str, float | None]:
        from greenmon.errors import TransportError
        from greenmon.transport import Request

        if transport is None:
            raise TokenError("no transport to request a token with")
        secret = self._secret.get()
        form = {"grant_type": "client_credentials"}
        if self.scopes:
            form["scope"] = " ".join(self.scopes)
        form.update(self.params)
        auth = None
        if self.client_auth == "post":
            form.update(client_id=self.client_id, client_secret=secret)
        else:
            pair = f"{quote_plus(self.client_id, safe='')}:{quote_plus(secret, safe='')}"
            auth = ("Authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii"))
        headers = transport.base_headers(self.token_url, {
            "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
        request = Request(method="POST", url=self.token_url, headers=headers, body=urlencode(form),
                          timeout=self.timeout, verify=self.verify, follow_redirects=False,
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
        log.debug("oauth2 %s: token fetched (expires_in %s)", self.name,
                  expires_in if renew is not None else "not given")
        return value, renew

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_token=None, _failure=None, _pending=None, requests=0)
        return state

    def __repr__(self) -> str:
        return f"OAuth2Source({self.name!r})"


def _json(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _scopes(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s and " " not in s for s in value):
        raise ValueError(f"must be an array of scope names (no spaces), got {type_name(value)}")
    return tuple(value)


def _client_auth(value: Any) -> str:
    if value not in CLIENT_AUTH:
        raise ValueError(f"must be one of {', '.join(CLIENT_AUTH)}, got {value!r}")
    return value


_CHECKS = {
    "type": string, "token_url": non_empty_string, "client_id": non_empty_string,
    "client_secret": string, "client_secret_env": string, "client_secret_file": file_path,
    "scopes": _scopes, "params": string_table(), "client_auth": _client_auth,
    "timeout": number(above=0), "verify_tls": boolean, "ca_file": ca_file,
}


def parse_oauth2(doc: Document, name: str, raw: dict, monitor) -> OAuth2Source:
    """``monitor``: the [monitor] settings, defaults of the token requests."""
    from greenmon.targets import check_url

    path: Path = ("auth", name)
    values = doc.read_table(raw, path, _CHECKS)
    for key in ("token_url", "client_id"):
        if key not in values:
            raise doc.error(path, f"{key} is required for oauth2 auth")
    try:
        check_url(values["token_url"])
    except ValueError as problem:
        raise doc.error(path + ("token_url",), str(problem)) from None
    secret = parse_secret(doc, path, "client_secret", values)
    verify_tls = values.get("verify_tls", monitor.verify_tls)
    ca_file = values.get("ca_file", monitor.ca_file)
    return OAuth2Source(
        name, token_url=values["token_url"], client_id=values["client_id"], secret=secret,
        scopes=values.get("scopes", ()), params=values.get("params"),
        client_auth=values.get("client_auth", "basic"),
        timeout=values.get("timeout", monitor.timeout),
        verify=verification(verify_tls, ca_file))
