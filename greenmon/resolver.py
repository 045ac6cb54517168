"""Name resolution for checks: each host's answer kept for its TTL, and few lookups at once.

gevent's c-ares resolver does not say how long an answer may be kept, so
every new connection asks again: 10,000 targets on one host cost 10,000
lookups. And it lets bursts through: a thousand lookups at once are mostly
dropped by the resolver behind it and retried after seconds. This resolver
runs its own c-ares channel (pycares, which reports the records' TTLs) on
the gevent loop, and in front of it:

- a cache of each host's answer for its TTL (clamped to
  [MIN_TTL_S, MAX_TTL_S]), of failed lookups for NEGATIVE_TTL_S, at most
  MAX_ENTRIES entries;
- one lookup in flight per host (the checks that need it wait for it);
- at most MAX_LOOKUPS lookups in flight at once.

It takes the place of the hub's resolver (``install``), so every
``socket.getaddrinfo`` of the process goes through it; IP literals and
everything but ``getaddrinfo`` are passed to the resolver it replaced. The
name servers are /etc/resolv.conf's, or GEVENT_RESOLVER_NAMESERVERS (comma-
separated), as for gevent's own resolver; /etc/hosts is read first.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import time
from typing import Any

import gevent
import gevent.event
import gevent.lock
import pycares

from greenmon import trace

MAX_LOOKUPS = 16          # lookups in flight at once: resolvers drop bursts of more
MIN_TTL_S = 1.0
MAX_TTL_S = 300.0
# RFC 6761 6.3: localhost and the names under it are the loopback addresses, and are never
# sent to a name server (one that refuses, or is down, must not make them fail).
LOOPBACK = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
NEGATIVE_TTL_S = 5.0      # a name that did not resolve is asked again after this long
MAX_ENTRIES = 65_536
LOOKUP_TIMEOUT_S = 2.0    # c-ares' per-try timeout; it tries each server twice
_TICK_S = 0.05            # how often c-ares is given the chance to time out a query

_EVENTS_READ, _EVENTS_WRITE = 1, 2   # gevent's io watcher event bits


class _Answer:
    __slots__ = ("addresses", "error", "expires")

    def __init__(self, addresses: list[tuple[int, str]], error: socket.gaierror | None,
                 expires: float):
        self.addresses = addresses    # (family, address)
        self.error = error
        self.expires = expires


class _Channel:
    """A pycares channel whose sockets are watched by the gevent loop (no thread)."""

    def __init__(self, servers: list[str] | None):
        self._loop = gevent.get_hub().loop
        self._watchers: dict[int, Any] = {}
        self._timer = None
        self.pending = 0
        self.channel = pycares.Channel(sock_state_cb=self._sock_state, lookups="fb",
                                       timeout=LOOKUP_TIMEOUT_S, tries=2,
                                       servers=servers or None)

    def getaddrinfo(self, host: str, family: int, done) -> None:
        def callback(result, error):
            self.pending -= 1
            done(result, error)
        self.pending += 1
        self.channel.getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM,
                                 callback=callback)
        self._arm()

    def _sock_state(self, fd: int, readable: bool, writable: bool) -> None:
        watcher = self._watchers.pop(fd, None)
        if watcher is not None:
            watcher.stop()
            watcher.close()
        if readable or writable:
            events = (_EVENTS_READ if readable else 0) | (_EVENTS_WRITE if writable else 0)
            watcher = self._loop.io(fd, events)
            watcher.start(self._ready, fd, pass_events=True)
            self._watchers[fd] = watcher

    def _ready(self, events: int, fd: int) -> None:
        bad = pycares.ARES_SOCKET_BAD
        self.channel.process_fd(fd if events & _EVENTS_READ else bad,
                                fd if events & _EVENTS_WRITE else bad)

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self._loop.timer(_TICK_S, _TICK_S)
            self._timer.start(self._tick)

    def _tick(self) -> None:
        bad = pycares.ARES_SOCKET_BAD
        self.channel.process_fd(bad, bad)   # lets c-ares time out and retry its queries
        if not self.pending and self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None


class CachingResolver:
    """gevent's resolver interface: getaddrinfo cached and capped, the rest passed on."""

    def __init__(self, fallback, *, servers: list[str] | None = None,
                 max_lookups: int = MAX_LOOKUPS, clock=time.monotonic):
        self.fallback = fallback
        self.servers = servers
        self._channel = _Channel(servers)
        self._clock = clock
        self._answers: dict[tuple[str, int], _Answer] = {}
        self._inflight: dict[tuple[str, int], gevent.event.AsyncResult] = {}
        self._slots = gevent.lock.Semaphore(max_lookups)
        self.lookups = 0           # asked of the name servers (or /etc/hosts): a test's window

    def __getattr__(self, name: str):
        return getattr(self.fallback, name)   # gethostbyname, getnameinfo, close, ...

    def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        record = trace.current()
        literal = _literal(host)
        if literal is not None and family in (0, literal[0]):
            if record is not None:
                record.relabel(trace.CONNECT)   # no name to resolve: dns 0
            return _addrinfo([literal], port, type, proto)   # every new connection to an IP asks
        if not isinstance(host, str) or _is_ip(host) or flags & socket.AI_NUMERICHOST:
            if record is not None:
                record.relabel(trace.CONNECT)   # no name to resolve: dns 0
            return self.fallback.getaddrinfo(host, port, family, type, proto, flags)
        key = (host.lower().rstrip("."), family)
        if key[0] == "localhost" or key[0].endswith(".localhost"):
            if record is not None:
                record.relabel(trace.CONNECT)   # no name server asked: dns 0
            return _addrinfo([a for a in LOOPBACK if family in (0, a[0])], port, type, proto)
        answer = self._answers.get(key)
        if answer is not None and answer.expires > self._clock():
            if record is not None:
                record.relabel(trace.CONNECT)   # a cached answer: dns 0
        else:
            answer = self._lookup(key)
            if record is not None:
                record.enter(trace.CONNECT)
        if answer.error is not None:
            raise answer.error
        return _addrinfo(answer.addresses, port, type, proto)

    def _lookup(self, key: tuple[str, int]) -> _Answer:
        """The answer for ``key``: one lookup in flight per key, in a greenlet of its own,
        so that a check whose deadline fires while it waits leaves the lookup to finish
        (and to be cached) for the others."""
        waiting = self._inflight.get(key)
        if waiting is None:
            waiting = self._inflight[key] = gevent.event.AsyncResult()
            gevent.spawn(self._resolve, key, waiting)
        return waiting.get()

    def _resolve(self, key: tuple[str, int], waiting: gevent.event.AsyncResult) -> None:
        try:
            with self._slots:   # at most max_lookups asked at once; the rest queue here
                answer = self._ask(*key)
        except Exception:       # pycares refused the name itself (bad characters...)
            answer = self._failed()
        self._remember(key, answer)
        self._inflight.pop(key, None)
        waiting.set(answer)

    def _failed(self) -> _Answer:
        return _Answer([], socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
                       self._clock() + NEGATIVE_TTL_S)

    def _ask(self, host: str, family: int) -> _Answer:
        reply = gevent.event.AsyncResult()
        self.lookups += 1
        self._channel.getaddrinfo(host, family, lambda result, error: reply.set((result, error)))
        result, error = reply.get()
        if error is not None or not result.nodes:
            return self._failed()
        now = self._clock()
        ttl = min(node.ttl for node in result.nodes)
        addresses = []
        for node in result.nodes:
            address = (node.family, _text(node.addr[0]))
            if address not in addresses:
                addresses.append(address)
        return _Answer(addresses, None, now + min(max(ttl, MIN_TTL_S), MAX_TTL_S))

    def _remember(self, key, answer: _Answer) -> None:
        if len(self._answers) >= MAX_ENTRIES:
            now = self._clock()
            self._answers = {k: a for k, a in self._answers.items() if a.expires > now}
            if len(self._answers) >= MAX_ENTRIES:
                self._answers.clear()
        self._answers[key] = answer


@functools.lru_cache(maxsize=65_536)
def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _literal(host) -> tuple[int, str] | None:
    """(family, address) of an IP address written as one, without a zone: its own answer
    (c-ares' for it costs more than the connection's other set-up). A zone (fe80::1%eth0),
    a family that does not match and anything else go to the resolver."""
    if not isinstance(host, str) or "%" in host:
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:   # the C library's reading and writing: the resolver's canonical form
            return family, socket.inet_ntop(family, socket.inet_pton(family, host))
        except (OSError, ValueError):
            continue
    return None


def _text(address) -> str:
    return address.decode("ascii") if isinstance(address, bytes) else address


def _addrinfo(addresses, port, socktype, proto) -> list[tuple]:
    port = int(port or 0) if not isinstance(port, str) or port.isdigit() else socket.getservbyname(port)
    out = []
    for family, address in addresses:
        sockaddr = (address, port) if family == socket.AF_INET else (address, port, 0, 0)
        out.append((family, socktype or socket.SOCK_STREAM, proto or socket.IPPROTO_TCP, "", sockaddr))
    return out


def name_servers_problem() -> str | None:
    """What is wrong with GEVENT_RESOLVER_NAMESERVERS, if anything: gevent's resolver, which
    this one wraps, takes IP addresses only (port 53), and fails with a traceback on
    anything else the first time a name is looked up."""
    for server in configured_servers() or ():
        if not _is_ip(server):
            return (f"GEVENT_RESOLVER_NAMESERVERS: {server!r} is not an IP address (name servers "
                    "are given by address, comma-separated, and asked on port 53)")
    return None


def configured_servers() -> list[str] | None:
    value = os.environ.get("GEVENT_RESOLVER_NAMESERVERS", "").strip()
    return [s.strip() for s in value.split(",") if s.strip()] or None


def install(servers: list[str] | None = None, fresh: bool = False) -> CachingResolver:
    """Put a CachingResolver in front of this hub's resolver (once; later calls return it).
    ``fresh`` (tests): a new one, with an empty cache, asking ``servers`` if given."""
    hub = gevent.get_hub()
    current = hub.resolver
    if isinstance(current, CachingResolver):
        if not fresh:
            return current
        current = current.fallback
    resolver = CachingResolver(current, servers=servers or configured_servers())
    hub.resolver = resolver
    return resolver
