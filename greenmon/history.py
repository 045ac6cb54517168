"""A target's recent outcomes, kept compact: what the status page draws and /api/history serves.

The last ``size`` results of a target, in a ring of plain arrays: when each
check started (8 bytes), its latency (4 bytes, NaN when the target was not
contacted), one byte for its outcome (0 good, DEGRADED up but slow; else the
error class's number, with SKIPPED added when an open breaker kept the target
from being contacted), and the details of those that have one, by place in
the ring (a short string shared by every result with that detail; a healthy
target has none). At the default 60 outcomes that is about 1 KB per target.
"""

from __future__ import annotations

import math
from array import array

from greenmon.errors import ERROR_CLASSES
from greenmon.result import MonitorResult, iso_timestamp, round_seconds

SKIPPED = 0x80
DEGRADED = 0x40   # up, slower than its degraded_latency
_CLASS_CODE = {name: index + 1 for index, name in enumerate(ERROR_CLASSES)}
_UP = (0, DEGRADED)
_details: dict[str, str] = {}   # one string object per detail, shared by every History


def _shared(detail: str | None) -> str | None:
    if detail is None:
        return None
    return _details.setdefault(detail, detail) if len(_details) < 4096 else detail


class History:
    __slots__ = ("size", "started", "latency", "code", "detail", "next")

    def __init__(self, size: int):
        self.size = size
        self.started = array("d")
        self.latency = array("f")
        self.code = bytearray()
        self.detail: dict[int, str] | None = None   # by place in the ring; None: no detail yet
        self.next = 0   # where the next outcome goes once the ring is full

    def __len__(self) -> int:
        return len(self.code)

    def add(self, result: MonitorResult) -> None:
        if not self.size:
            return   # none kept (a worker process's store: the parent keeps the history)
        if result.ok:
            code = DEGRADED if result.degraded else 0
        else:
            code = _CLASS_CODE.get(result.error_class, 0) or 1
        if result.skipped:
            code |= SKIPPED
        latency = math.nan if result.latency_s is None else result.latency_s
        if len(self.code) < self.size:
            index = len(self.code)
            self.started.append(result.checked_at)
            self.latency.append(latency)
            self.code.append(code)
        else:
            index = self.next
            self.started[index], self.latency[index], self.code[index] = result.checked_at, latency, code
            self.next = (index + 1) % self.size
        if result.detail is not None:
            if self.detail is None:
                self.detail = {}
            self.detail[index] = _shared(result.detail)
        elif self.detail:
            self.detail.pop(index, None)

    def _details(self) -> list[str | None]:
        """The detail of each place in the ring (None where there is none)."""
        found = self.detail or {}
        return [found.get(index) for index in range(len(self.code))]

    def resize(self, size: int) -> None:
        """Keep the newest ``size`` outcomes (a reload changed ``history``)."""
        if size == self.size:
            return
        self.started, self.latency, self.code, details = (
            self._oldest_first(values)[max(0, len(values) - size):]
            for values in (self.started, self.latency, self.code, self._details()))
        self.detail = {index: detail for index, detail in enumerate(details) if detail is not None} or None
        self.size = size
        self.next = 0   # oldest first now: a full ring overwrites from the start

    def _oldest_first(self, values):
        """One of the ring's arrays from the oldest outcome to the newest (until the ring is
        full, ``next`` is 0: it is in that order already)."""
        return values[self.next:] + values[:self.next]

    def outcomes(self) -> list[dict]:
        """Oldest first: checked_at, ok, latency_s, error_class, detail, degraded (what
        /api/history serves)."""
        return [{"checked_at": iso_timestamp(started), "ok": code in _UP,
                 "latency_s": None if math.isnan(latency) else round_seconds(latency),
                 "error_class": None if code in _UP else ERROR_CLASSES[(code & ~SKIPPED) - 1],
                 "detail": detail, "degraded": code == DEGRADED}
                for started, latency, code, detail in zip(*map(self._oldest_first, (
                    self.started, self.latency, self.code, self._details())))]

    def codes(self) -> bytes:
        """Outcome codes, oldest first (the status page's strip)."""
        return bytes(self._oldest_first(self.code))

    def latencies(self) -> list[float]:
        """Latencies of the contacted checks, oldest first (the sparkline; P95)."""
        return [latency for latency in self._oldest_first(self.latency) if not math.isnan(latency)]

    def availability(self) -> float | None:
        """The share of outcomes that were up (degraded ones too) over what is kept (None:
        nothing yet)."""
        count = len(self.code)
        return None if not count else (self.code.count(0) + self.code.count(DEGRADED)) / count
