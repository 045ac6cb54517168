"""Where an attempt's time went: phase timestamps recorded by the transport as they happen.

An attempt is always in exactly one phase; each boundary the transport
crosses (a name lookup starts or ends, a TCP connection is up, the TLS
handshake is done, the response head has arrived) closes the phase in
progress and opens the next, so the phases add up to the attempt's
duration. A reused keep-alive connection crosses no connection boundary:
its dns, connect and tls are 0. A deadline that fires reads the phase in
progress (``timeout_detail``) instead of guessing it afterwards.

The record of the attempt in progress is found through a context variable:
gevent gives every greenlet (every check) its own context, so the resolver
and the connection classes reach the right record without it being passed
through requests and urllib3.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any

DNS, CONNECT, TLS, PROCESSING, TRANSFER = "dns", "connect", "tls", "processing", "transfer"
PHASES = (DNS, CONNECT, TLS, PROCESSING, TRANSFER)
_ORDER = {phase: index for index, phase in enumerate(PHASES)}


class Trace:
    """The phases of one attempt (summed over its redirects), and the TLS facts of the
    connection it used last, if that was TLS."""

    __slots__ = ("started", "durations", "phase", "_mark", "_reached", "tls", "ended")

    def __init__(self) -> None:
        self.started = self._mark = time.perf_counter()
        self.durations = dict.fromkeys(PHASES, 0.0)
        # Until a boundary is crossed the attempt is getting its request out: on a reused
        # connection it goes straight on to the response, and its dns/connect/tls stay 0.
        self.phase = PROCESSING
        self._reached = -1            # the furthest phase entered (-1: none yet)
        self.tls: Any = None
        self.ended: float | None = None

    def enter(self, phase: str) -> None:
        """Close the phase in progress and open ``phase``."""
        now = time.perf_counter()
        self.durations[self.phase] += now - self._mark
        self.phase, self._mark = phase, now
        self._reached = max(self._reached, _ORDER[phase])

    def relabel(self, phase: str) -> None:
        """The phase in progress turns out to be ``phase`` (a name that needed no lookup:
        its dns stays 0 and the time so far is the connection's)."""
        self.phase = phase
        self._reached = max(self._reached, _ORDER[phase])

    def end(self) -> float:
        """Close the last phase; the attempt's duration (the sum of its phases)."""
        if self.ended is None:
            self.ended = time.perf_counter()
            self.durations[self.phase] += self.ended - self._mark
            self._mark = self.ended
        return self.ended - self.started

    def timings(self) -> dict[str, float | None]:
        """Seconds per phase; None for a phase the attempt did not reach."""
        reached = _ORDER[PROCESSING] if self._reached < 0 else self._reached
        return {phase: (self.durations[phase] if _ORDER[phase] <= reached else None)
                for phase in PHASES}

    def timeout_detail(self) -> str:
        """What a deadline that fires now is: ``dns`` (resolving the name), ``connect`` (no
        connection or TLS session yet), ``read`` (connected, no response head) or
        ``deadline`` (the response started, then ran out of time)."""
        if self.phase == DNS:
            return "dns"
        if self.phase in (CONNECT, TLS):
            return "connect"
        if self.phase == PROCESSING:
            return "read"
        return "deadline"


_current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar("greenmon_trace", default=None)


def start() -> tuple[Trace, contextvars.Token]:
    trace = Trace()
    return trace, _current.set(trace)


def stop(token: contextvars.Token) -> None:
    _current.reset(token)


def current() -> Trace | None:
    """The record of the attempt this greenlet is making, if any."""
    return _current.get()
