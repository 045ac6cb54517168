"""What the parent and its worker processes say to each other: pickled, length-prefixed messages.

The parent writes to a worker's stdin: ``Setup`` first, then ``SWEEP`` (one
sweep, ``--once``), ``RUN`` (the daemon's schedule), ``Reload``, ``Render``
(the daemon's /metrics) and ``EXIT``. The worker writes to its stdout:
``Results`` as checks end and every STATUS_EVERY_S while it runs,
``Rendered`` for each ``Render``, and ``DONE`` after a sweep or a stop. Both
sides import this module and nothing of each other.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field
from typing import IO, Any

from greenmon.breaker import BreakerState
from greenmon.config import Config

STATUS_EVERY_S = 0.5
_HEADER = struct.Struct("!I")

SWEEP = "sweep"
RUN = "run"
EXIT = "exit"
DONE = "done"


@dataclass(frozen=True)
class Setup:
    config: Config                          # the worker's share of the targets
    breakers: dict[str, BreakerState]
    log_level: int
    urls: dict                              # transport.prepared_urls of the share
    pass_s: float = 0.0                     # the whole config's longest interval (a sweep)
    metrics: bool = False                   # the daemon: keep the share's metrics, for Render
    label_names: tuple[str, ...] = ()       # of all the enabled targets (greenmon_target_info's)
    seed: dict | None = None                # a replaced worker's share of the parent's numbers


@dataclass(frozen=True)
class Reload:
    config: Config
    breakers: dict[str, BreakerState]       # of targets new to this worker
    urls: dict
    pass_s: float = 0.0
    label_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Render:
    """The daemon's /metrics is scraped: render this worker's share of it."""

    id: int


@dataclass(frozen=True)
class Rendered:
    id: int
    share: list | None                      # exposition.Text.share (None: it failed)


class ShareUnavailable(Exception):
    """A worker could not give its share of /metrics (it is gone, or did not answer in time)."""


@dataclass(frozen=True)
class HalfOpen:
    """A breaker went half-open for a trial (the result that follows says how it ended)."""

    target: str
    state: BreakerState


@dataclass(frozen=True)
class Status:
    inflight: int
    healthy: bool = True
    timing: dict | None = None              # scheduler.Timing.take() since the last Status
    passes: tuple[float, ...] = ()          # durations of passes ended since the last Status


@dataclass(frozen=True)
class Results:
    items: list = field(default_factory=list)   # (MonitorResult, BreakerState) or HalfOpen
    status: Status | None = None


def send_message(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)   # not joined to the header: a Setup of 25,000 targets is tens of MB
    stream.flush()


def receive_message(stream: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream. Unpickled as it is read: the
    bytes of a large message are never held whole beside what they make."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    try:
        return pickle.load(stream)   # reads exactly the message (its frames, up to STOP)
    except (EOFError, pickle.UnpicklingError):   # the writer ended mid-message
        return None

