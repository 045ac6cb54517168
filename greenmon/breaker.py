"""Circuit breaker per target: pure transitions on frozen states, driven by an injected clock.

A check's outcome (after its retries) feeds the breaker. ``failure_threshold``
consecutive failed checks open it; while open the target is not contacted;
after ``recovery_timeout`` one half-open trial (a single attempt) closes it
on success or re-opens it on failure.

Times are wall-clock epoch seconds, not monotonic: the table is saved to the
state file and must mean the same in the next ``--once`` process.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from greenmon.errors import Failure
from greenmon.settings import BreakerSettings

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}  # greenmon_breaker_state


class Gate(enum.Enum):
    CALL = "call"      # closed: a normal check with retries
    TRIAL = "trial"    # half-open: one attempt, no retries
    SKIP = "skip"      # open: do not contact the target


@dataclass(frozen=True, slots=True)
class BreakerState:
    state: str = CLOSED
    failures: int = 0                  # consecutive failed checks
    opened_at: float | None = None
    failure: Failure | None = None     # the failure that opened it (kept while open)


def gate(state: BreakerState, now: float, settings: BreakerSettings) -> Gate:
    if state.state == CLOSED:
        return Gate.CALL
    # A clock that went backwards (now < opened_at) must not keep a target unchecked: trial.
    if state.opened_at is not None and 0 <= now - state.opened_at < settings.recovery_timeout:
        return Gate.SKIP
    return Gate.TRIAL


def record(state: BreakerState, failure: Failure | None, now: float,
           settings: BreakerSettings, *, trial: bool = False) -> BreakerState:
    """The state after a check that succeeded (``failure`` None) or failed."""
    if failure is None:
        return BreakerState()
    failures = state.failures + 1
    if trial or failures >= settings.failure_threshold:
        return BreakerState(OPEN, failures, now, failure)
    return replace(state, state=CLOSED, failures=failures, failure=failure)
