"""The daemon's timetable: when each target is due, on its own interval, at a stable offset.

Like Prometheus' scrape offsets, a target's checks sit at a fixed offset
inside its interval, derived from a digest of its name. N targets with one
interval are spread evenly over it instead of all starting at once, and the
offset is anchored to the Unix epoch, not to the process start, so a restart
(or a reload) keeps every target's phase. Pure: the caller passes the time
in; nothing here sleeps, spawns or reads a clock.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from collections import defaultdict
from typing import Iterable, NamedTuple, Sequence

from greenmon.urls import origin

# An origin checked less often than this gets a new connection per check instead of keeping
# one idle in between: below the 5 s idle timeout of Apache httpd and Node.js, so a kept
# connection is not closed by the server just as a check reuses it.
KEEPALIVE_MAX_GAP_S = 4.0


def phase(name: str) -> float:
    """Where in its interval a target's checks sit, as a fraction in [0, 1).

    Bytes 8-16 of the SHA-256 of the name: stable across processes and
    versions, and independent of the bytes 0-8 that ``--shard`` uses, so the
    targets of one shard still spread over the whole interval.
    """
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[8:16], "big") / 2.0 ** 64


class Slot(NamedTuple):
    """One target's place in the timetable: checked every ``interval`` s, ``offset`` s into it.
    (A tuple: the timetable hashes and compares 10,000 of them at a reload, in C.)"""

    name: str
    interval: float
    offset: float

    @classmethod
    def of(cls, name: str, interval: float) -> "Slot":
        return cls(name, interval, phase(name) * interval)

    def next_due(self, now: float) -> float:
        """The first due time at or after ``now`` (epoch seconds): within one interval of it."""
        cycles = math.ceil((now - self.offset) / self.interval)
        return cycles * self.interval + self.offset


class Due(NamedTuple):
    """A check that is due: which target, and when it should have started."""

    slot: Slot
    at: float


def sparse_origins(slots_by_url: Sequence[tuple[str, Slot]],
                   max_gap_s: float = KEEPALIVE_MAX_GAP_S) -> set[str]:
    """The targets whose origin (scheme, host, port) the schedule contacts less often than
    every ``max_gap_s`` on average, by name: their checks should close their connection.
    What stays idle in the pools is then bounded by the schedule's rate of checks, not by
    the number of targets."""
    rate: dict[str, float] = defaultdict(float)
    for url, slot in slots_by_url:
        rate[origin(url)] += 1.0 / slot.interval
    return {slot.name for url, slot in slots_by_url if rate[origin(url)] * max_gap_s < 1.0}


class Timetable:
    """The next due time of every slot, earliest first.

    ``pop_due`` hands out what is due and books each slot's next turn. A slot
    that fell more than an interval behind (the loop was held, the clock
    jumped) is not made to catch up with a burst: its next turn is its next
    due time after now.
    """

    def __init__(self, slots: Iterable[Slot] = (), now: float = 0.0):
        self._order = itertools.count()
        self._heap: list[tuple[float, int, Slot]] = []
        self._slots: dict[str, Slot] = {}
        self._moved: dict[Slot, float] | None = None   # turns booked while a replace runs
        self.replace(slots, now)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, name: str) -> bool:
        return name in self._slots

    def next_at(self) -> float | None:
        """When the earliest slot is due (None: no slots)."""
        return self._heap[0][0] if self._heap else None

    def earliest(self) -> Due | None:
        if not self._heap:
            return None
        at, _, slot = self._heap[0]
        return Due(slot, at)

    def pop_due(self, now: float) -> list[Due]:
        """Every slot due at or before ``now``, earliest first; each is booked for its next turn."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= now:
            at, _, slot = heap[0]
            following = at + slot.interval
            if following <= now:
                following = slot.next_due(now)
                if following <= now:  # now sits exactly on a due time
                    following += slot.interval
            heapq.heapreplace(heap, (following, next(self._order), slot))
            if self._moved is not None:
                self._moved[slot] = following
            due.append(Due(slot, at))
        return due

    def replace(self, slots: Iterable[Slot], now: float, tick=lambda: None) -> None:
        """Switch to a new set of slots (a reload). A slot kept with the same interval keeps
        its booked turn; a new or changed one is due at its next due time after ``now``.

        ``tick()`` is called after each slot: the daemon yields to its event loop there, and
        meanwhile ``pop_due`` may hand out turns from the old set; a kept slot handed out so
        keeps the turn booked for it then, not the one this replace started from.
        """
        booked = {slot: at for at, _, slot in self._heap}
        self._moved = {}
        names: dict[str, Slot] = {}
        where: dict[Slot, int] = {}
        heap = []
        for slot in slots:
            names[slot.name] = slot
            at = booked.get(slot)
            if at is None:
                at = slot.next_due(now)
            else:
                where[slot] = len(heap)
            heap.append((at, next(self._order), slot))
            tick()
        moved, self._moved = self._moved, None
        for slot, at in moved.items():
            index = where.get(slot)
            if index is not None:
                heap[index] = (at, heap[index][1], slot)
        heapq.heapify(heap)
        self._slots, self._heap = names, heap
