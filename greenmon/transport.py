"""Every HTTP request greenmon sends: a shared, tuned requests session under a total deadline.

Each attempt runs under one gevent timer covering name lookup, connect, TLS,
headers and body: a server that trickles one byte at a time cannot stretch
it, as it would per-operation socket timeouts. Sockets get no timeouts of
their own: with the same length, they could never fire first, and they
would cost a timer on every wait.

Each attempt carries a ``trace.Trace``: the connection classes below (urllib3's
``ConnectionCls`` seam), the TLS socket class (``tls``) and the resolver
(``resolver``) record its phase boundaries as they cross them. The trace
gives the result its timings and TLS facts, and a deadline its detail: the
phase it fired in. Exceptions become Failures here, once.
"""

from __future__ import annotations

import http.cookiejar
import socket
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import gevent
import gevent.socket
import requests
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
import urllib3.util
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from requests.utils import prepend_scheme_if_needed, select_proxy

from greenmon import trace
from greenmon.classify import classify_exception
from greenmon.errors import CONNECTION, DeadlineExceeded, Failure, TransportError, timeout_failure
from greenmon.result import TLSFacts
from greenmon.tls import TrustStore, facts_of, load_parser
from greenmon.urls import origin as url_origin

MAX_REDIRECTS = 10
CACHE_LIMIT = 100_000
_NO_PROXIES: dict = {}


@dataclass(frozen=True, slots=True)
class Response:
    """What one attempt received (the body is capped and already read), and its trace."""

    status_code: int
    reason: str
    body: bytes
    body_too_large: bool   # the body went past max_body_bytes (``body`` is cut there)
    trace: trace.Trace
    headers: Mapping[str, str] = field(default_factory=dict)   # of the final response (any case)

    @property
    def tls(self) -> TLSFacts | None:
        return self.trace.tls


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: CaseInsensitiveDict  # from Transport.base_headers: never modified
    body: str
    timeout: float
    verify: bool | str          # False, True, or a CA bundle path
    follow_redirects: bool
    max_body_bytes: int
    auth: tuple[str, str] | None = None  # the auth source's header, read for this attempt
    proxies: Mapping[str, str] | None = None   # scheme -> proxy URL (requests' form)
    cert: tuple[str, str] | None = None        # client certificate and key, for mTLS
    # A flow's cookies: sent, and filled from the response (redirects included); one jar per
    # check, so nothing carries over between checks. None: no cookies, as for every target.
    cookies: http.cookiejar.CookieJar | None = None
    cache_url: bool = True       # False: a URL made for this attempt (a flow's variables)
    # Connect to this address, not to the one the name resolves to first (addresses = "all",
    # ip_version): Host, SNI and the certificate's name stay the URL's.
    address: str | None = None


class _RejectAllCookies(http.cookiejar.DefaultCookiePolicy):
    """Targets must not share cookies through the shared session (redirects included)."""

    def set_ok(self, cookie, request):
        return False


_prepared_urls: dict[str, tuple[str, str | None]] = {}


def prepare_url(url: str) -> tuple[str, str | None]:
    """requests' own URL preparation (IDNA, quoting, user:password as basic auth), once per URL:
    a target's first check prepares it before it is timed (base_headers), later ones reuse it."""
    prepared = _prepared_urls.get(url)
    if prepared is None:
        if len(_prepared_urls) >= CACHE_LIMIT:
            _prepared_urls.clear()
        prepared = _prepared_urls[url] = _prepare_url(url)
    return prepared


def prepared_urls(urls: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """prepare_url's answers for ``urls``, for a worker process to adopt (adopt_prepared_urls)
    instead of preparing every URL of its share again."""
    return {url: prepare_url(url) for url in urls}


def adopt_prepared_urls(prepared: Mapping[str, tuple[str, str | None]]) -> None:
    _prepared_urls.update(prepared)


def _prepare_url(url: str) -> tuple[str, str | None]:
    scratch = requests.PreparedRequest()
    scratch.prepare_url(url, None)
    if "@" not in url:
        return scratch.url, None  # no user info: nothing for prepare_auth to find
    scratch.headers = CaseInsensitiveDict()
    scratch.body = None
    scratch.prepare_auth(None, url)
    return scratch.url, scratch.headers.get("Authorization")


def _still_open(sock) -> bool:
    """An idle keep-alive socket is usable when nothing (no data, no EOF) is waiting on it.

    urllib3 asks through select.poll, which gevent emulates with watchers on
    the hub: a peek at the real socket underneath says the same for far less.
    """
    raw = getattr(sock, "_sock", sock)  # gevent's socket wraps the real one
    try:
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True   # nothing waiting: open and idle
    except OSError:
        return False
    return False      # EOF, or bytes nobody asked for: drop it


class _Traced:
    """Phase boundaries of the attempt using this connection (urllib3's public connect and
    getresponse); the TLS facts of its session, kept for the requests that reuse it."""

    tls_facts: TLSFacts | None = None

    def connect(self):
        record = trace.current()
        if record is not None:
            record.enter(trace.DNS)   # the resolver closes it (0 for IP literals and cached names)
        super().connect()
        self.tls_facts = facts_of(self.sock)
        if record is not None:
            record.enter(trace.PROCESSING)

    def getresponse(self):
        response = super().getresponse()
        record = trace.current()
        if record is not None:
            record.tls = self.tls_facts
            record.enter(trace.TRANSFER)
        return response


class _PlainConnection(_Traced, urllib3.connection.HTTPConnection):
    @property
    def is_connected(self) -> bool:
        return self.sock is not None and _still_open(self.sock)

    def send(self, data):
        """A request head leaves in one send(): gevent's sendall first asks the kernel for the
        socket's buffer size, on every call. What one send() leaves, sendall sends."""
        if self.sock is None or not isinstance(data, bytes):
            return super().send(data)
        sent = self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(memoryview(data)[sent:])

    def getresponse(self):
        """Wait for the reply's first bytes before http.client builds its reader.

        A check spends nearly all its life here. Waiting first, at a shallow
        point, keeps the response's 8 KiB read buffer, its reader objects and
        a deeper saved greenlet stack from existing for all that time.
        """
        if self.sock is not None:
            gevent.socket.wait_read(self.sock.fileno(), self.timeout)
        return super().getresponse()


class _Unfilled:
    """A pool whose queue starts empty. urllib3 fills it with ``maxsize`` placeholders so that
    a blocking get waits; ours never blocks (an empty queue means a new connection), and the
    placeholders cost 80 KB a host when the pool may hold 10,000 connections."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.block:
            self.pool.queue.clear()


class _PlainPool(_Unfilled, urllib3.connectionpool.HTTPConnectionPool):
    """Plain HTTP pools with the cheap liveness check (TLS keeps urllib3's: pending
    TLS records such as session tickets are not a sign of a dropped connection)."""

    ConnectionCls = _PlainConnection


class _TLSConnection(_Traced, urllib3.connection.HTTPSConnection):
    pass


class _TLSPool(_Unfilled, urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


def _use_traced_pools(manager) -> None:
    """A pool manager (direct or proxy) whose pools make traced connections."""
    manager.pool_classes_by_scheme = {
        **manager.pool_classes_by_scheme, "http": _PlainPool, "https": _TLSPool}


class _CachingAdapter(HTTPAdapter):
    """requests' adapter with the work that cannot change for a URL done once per URL.

    greenmon sends the same URLs every sweep and keeps no cookies: each URL's
    connection pool (per trust setting, client certificate and proxy: proxied
    and direct traffic never share a connection) and request path are looked
    up once, and responses skip the cookie jar. Trust and client certificates
    live in the pool's SSLContext (``tls.TrustStore``), so nothing is loaded
    per connection. The caches are dropped when they grow past CACHE_LIMIT
    (redirects to ever-new URLs).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._pools: dict[tuple, object] = {}
        self._paths: dict[str, str] = {}
        self._origins: dict[str, str] = {}
        self.trust = TrustStore()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        _use_traced_pools(self.poolmanager)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _use_traced_pools(manager)
        return manager

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        """HTTPS pools share one prepared SSLContext per ``verify`` and client certificate
        instead of CA and certificate file paths."""
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            for name in ("ca_certs", "ca_cert_dir", "cert_file", "key_file"):
                pool_kwargs.pop(name, None)
            pool_kwargs["ssl_context"] = self.trust.context(verify, cert)
        return host_params, pool_kwargs

    def cert_verify(self, conn, url, verify, cert):
        """Nothing to set on the pool: its SSLContext carries the trust and the client
        certificate (requests would make urllib3 load them again for every connection)."""

    def _origin(self, url: str) -> str:
        """scheme://host:port of a URL, the key of its connection pool."""
        origin = self._origins.get(url)
        if origin is None:
            if len(self._origins) > CACHE_LIMIT:
                self._origins.clear()
            origin = self._origins[url] = url_origin(url)
        return origin

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        address = getattr(request, "pinned_address", None)
        key = (self._origin(request.url), verify, cert,
               select_proxy(request.url, proxies) if proxies else None, address)
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:  # new, or closed by the pool manager's LRU
            if len(self._pools) > CACHE_LIMIT:
                self._pools.clear()
            if address is None:
                pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
            else:
                pool = self._pinned_pool(request, verify, cert, address)
            self._pools[key] = pool
        return pool

    def _pinned_pool(self, request, verify, cert, address: str):
        """A pool whose connections go to ``address``: the pool manager's pool of that host,
        with the URL's name as SNI and the name the certificate is checked against (the Host
        header is the request's: Transport._prepare)."""
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = host_params["host"]
        return self.poolmanager.connection_from_host(address, host_params["port"], host_params["scheme"],
                                                     pool_kwargs=pool_kwargs)

    def forget_pools(self, verify, cert) -> None:
        """Pools of an SSLContext that was replaced: the next check gets a pool of the new one
        (the old pools' idle connections close as the pool manager drops them)."""
        for key in list(self._pools):
            if key[1:3] == (verify, cert):
                self._pools.pop(key, None)

    def request_url(self, request, proxies):
        """The request line's target. Without a proxy, HTTPAdapter.request_url is the
        request's path_url (with a leading "//" made "/"), found after two more parses of
        the URL, for its proxy and its scheme: a URL's first check pays for one."""
        if proxies:   # an absolute URL for a plain-HTTP proxy: not cached
            return super().request_url(request, proxies)
        path = self._paths.get(request.url)
        if path is None:
            if len(self._paths) > CACHE_LIMIT:
                self._paths.clear()
            path = request.path_url
            if path.startswith("//"):   # as requests does: not to confuse urllib3
                path = f"/{path.lstrip('/')}"
            self._paths[request.url] = path
        return path

    def close(self) -> None:
        """Close the cached pools too: urllib3's PoolManager.clear() leaves them to the collector."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        super().close()

    def build_response(self, req, resp):
        """As HTTPAdapter.build_response, without the cookie extraction and encoding sniffing."""
        response = requests.Response()
        response.status_code = resp.status
        response.headers = resp.headers  # urllib3's HTTPHeaderDict is case-insensitive already
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url
        response.request = req
        response.connection = self
        return response


class _Session(requests.Session):
    """A session that also drops auth-derived headers (header auth) on redirects to another origin."""

    secret_headers: frozenset[str] = frozenset()

    def rebuild_auth(self, prepared_request, response):
        if self.should_strip_auth(response.request.url, prepared_request.url):
            for name in self.secret_headers:
                prepared_request.headers.pop(name, None)
        super().rebuild_auth(prepared_request, response)


class Transport:
    """A shared requests session sized for the work; ``send`` performs one attempt.

    Requests go straight to the session's one adapter as prepared requests:
    Session.request would merge environment settings, proxies and cookies on
    every call, none of which greenmon uses. Redirects still go through
    requests' own ``resolve_redirects``.
    """

    def __init__(self, *, pool_size: int, user_agent: str, hosts: int = 100,
                 secret_headers: frozenset[str] = frozenset()):
        session = _Session()
        session.secret_headers = frozenset(secret_headers)
        session.trust_env = False  # no proxy/netrc lookups; greenmon talks to targets directly
        session.max_redirects = MAX_REDIRECTS
        session.cookies.set_policy(_RejectAllCookies())
        session.headers = CaseInsensitiveDict({"User-Agent": user_agent, "Accept": "*/*",
                                               "Accept-Encoding": "gzip, deflate"})
        self.adapter = _CachingAdapter(pool_connections=max(hosts, 10),
                                       pool_maxsize=max(pool_size, 10), max_retries=0,
                                       pool_block=False)
        session.mount("http://", self.adapter)
        session.mount("https://", self.adapter)
        self.session = session
        self._closing_headers = CaseInsensitiveDict({**session.headers, "Connection": "close"})

    def send(self, request: Request) -> Response:
        """One attempt; raises TransportError with a classified Failure (and the attempt's
        trace) when there is no response."""
        record, token = trace.start()
        try:
            with gevent.Timeout(request.timeout, DeadlineExceeded):
                prepared = self._prepare(request)
                proxies = request.proxies or _NO_PROXIES
                response = self.adapter.send(prepared, stream=True, timeout=None,
                                             verify=request.verify, proxies=proxies, cert=request.cert)
                if request.cookies is not None and _sets_cookies(response):
                    extract_cookies_to_jar(request.cookies, prepared, response.raw)
                if request.follow_redirects and response.is_redirect:
                    response = self._follow(response, prepared, request)
                    if request.cookies is not None and _sets_cookies(response):
                        extract_cookies_to_jar(request.cookies, response.request, response.raw)
                try:
                    _check_framing(response)
                    body, too_large = _read_capped(response, request.max_body_bytes)
                finally:
                    response.close()
        except DeadlineExceeded:
            raise TransportError(timeout_failure(record.timeout_detail(), request.timeout),
                                 record) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as error:
            raise TransportError(classify_exception(error, request.timeout), record) from None
        except TransportError as error:
            error.trace = record
            raise
        finally:
            record.end()   # the attempt's last phase closes, whichever way it left
            trace.stop(token)
        return Response(response.status_code, response.reason or "", body, too_large, record,
                        response.headers)

    def base_headers(self, url: str, headers: Mapping[str, str],
                     close: bool = False) -> CaseInsensitiveDict:
        """Every header of a target's requests but its auth source's: built once, never modified
        (targets without headers of their own share the session's). ``close``: ask for the
        connection to be closed after the response, not kept idle for the next check. The URL
        is prepared here, before any attempt is timed; one that cannot be (the config refuses
        those) fails each attempt in ``send``, classified, rather than the check."""
        try:
            url_auth = prepare_url(url)[1]
        except (requests.RequestException, ValueError):
            url_auth = None
        if not headers and url_auth is None:
            return self._closing_headers if close else self.session.headers
        merged = (self._closing_headers if close else self.session.headers).copy()
        if url_auth is not None:
            merged["Authorization"] = url_auth
        merged.update(headers)
        return merged

    def _prepare(self, request: Request) -> requests.PreparedRequest:
        prepared = requests.PreparedRequest()
        prepared.method = request.method
        prepared.url = prepare_url(request.url)[0] if request.cache_url else _prepare_url(request.url)[0]
        has_body = bool(request.body) or request.method not in ("GET", "HEAD")
        # request.headers may be the session's, shared by every target: a copy takes what
        # this request adds (its auth header, prepare_body's Content-Length).
        prepared.headers = request.headers.copy() if has_body or request.auth else request.headers
        if request.auth is not None:
            prepared.headers[request.auth[0]] = request.auth[1]
        prepared._cookies = None
        if request.cookies:   # a flow's jar, once a step was given a cookie
            if prepared.headers is request.headers:
                prepared.headers = request.headers.copy()
            prepared.prepare_cookies(request.cookies)
        if request.address is not None:
            prepared.pinned_address = request.address   # the adapter's pool of that address
            if "Host" not in prepared.headers:   # the URL's name, not the address connected to
                if prepared.headers is request.headers:
                    prepared.headers = request.headers.copy()
                prepared.headers["Host"] = prepared.pinned_host = _host_header(prepared.url)
        prepared.body = None
        prepared.hooks = {"response": []}
        if has_body:
            prepared.prepare_body(request.body.encode() or None, None)
        return prepared

    def _follow(self, response, prepared, request: Request) -> requests.Response:
        """Redirects through requests' own logic: at most MAX_REDIRECTS, then TooManyRedirects."""
        prepared._cookies = (request.cookies if request.cookies is not None else
                             requests.cookies.RequestsCookieJar(policy=_RejectAllCookies()))
        if getattr(prepared, "pinned_host", None) is not None:
            del prepared.headers["Host"]   # a redirect goes where its Location says, by name
        last = response
        for last in self.session.resolve_redirects(response, prepared, stream=True,
                                                   timeout=None, verify=request.verify,
                                                   proxies=request.proxies or _NO_PROXIES,
                                                   cert=request.cert):
            pass
        return last

    def load_trust(self, settings: Iterable[tuple]) -> None:
        """Build the SSLContexts for these (verify, client certificate) settings now (loading
        a CA bundle takes tens of milliseconds; a daemon reload calls this from a thread, off
        the event loop), or again where a file they were built from changed."""
        for verify, cert in settings:
            load_parser()   # what reads the certificates, before any of them is timed
            if self.adapter.trust.load(verify, cert):
                self.adapter.forget_pools(verify, cert)

    def load_proxies(self, proxies: Iterable[str]) -> None:
        """Set up the pool manager of each proxy now (requests makes it at the first request
        through it, an HTTPS proxy's with its TLS context: in a check, while others are
        timed)."""
        for proxy in proxies:
            self.adapter.proxy_manager_for(prepend_scheme_if_needed(proxy, "http"))

    def close(self) -> None:
        self.session.close()


def _host_header(url: str) -> str:
    """The Host header a request of ``url`` carries (http.client's rule: the port only when
    it is not the scheme's)."""
    parsed = urllib3.util.parse_url(url)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return host if parsed.port in (None, default) else f"{host}:{parsed.port}"


def resolve(url: str, family: int, timeout: float) -> list[str]:
    """Every address of the URL's host of ``family`` (0: any), in the resolver's order and
    without repeats: through the process's resolver (resolver.py: /etc/hosts, then DNS, each
    answer kept for its TTL); an IP literal is its one address. Raises TransportError
    (connection/dns) when there is none, (timeout/dns) after ``timeout``."""
    host = urllib3.util.parse_url(prepare_url(url)[0]).host.strip("[]")
    try:
        with gevent.Timeout(timeout, DeadlineExceeded):
            found = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
    except DeadlineExceeded:
        raise TransportError(timeout_failure("dns", timeout)) from None
    except (OSError, UnicodeError):
        found = []
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    if not addresses:
        kind = {socket.AF_INET: " (IPv4)", socket.AF_INET6: " (IPv6)"}.get(family, "")
        raise TransportError(Failure(CONNECTION, "dns", f"DNS lookup failed{kind}"))
    return addresses


def _sets_cookies(response: requests.Response) -> bool:
    """Whether the response sets a cookie: most do not, and the cookie jar's parsing costs
    more than the rest of a step."""
    headers = response.raw.headers
    return "set-cookie" in headers or "set-cookie2" in headers


def _check_framing(response: requests.Response) -> None:
    """RFC 9112 6.3: an invalid Content-Length is an unrecoverable error, not a length to ignore
    (urllib3 would read to the end of the connection and call the response good)."""
    length = response.headers.get("Content-Length")
    if length is None:
        return
    values = {value.strip() for value in length.split(",")}
    if len(values) != 1 or not values.pop().isdigit():
        raise TransportError(Failure(CONNECTION, "protocol", "invalid Content-Length header"))


def _read_capped(response: requests.Response, limit: int) -> tuple[bytes, bool]:
    """The (decoded) body up to ``limit`` bytes, and whether there was more."""
    body = response.raw.read(limit + 1, decode_content=True)
    return body[:limit], len(body) > limit
