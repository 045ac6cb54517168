"""MonitorResult, the outcome of one check as every sink sees it, and its JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol

from greenmon.breaker import BreakerState
from greenmon.errors import CONNECTION, Failure


class Checked(Protocol):
    """What a result tells of the target it is about (a config ``Target`` is one): a result
    knows no config file."""

    name: str
    method: str
    labels: Mapping[str, str]

    @property
    def display_url(self) -> str: ...


@dataclass(frozen=True, slots=True)
class TLSFacts:
    """The TLS session of a connection: its version and the server's (leaf) certificate."""

    version: str | None
    cert_not_after: float | None      # Unix time
    cert_subject: str | None
    cert_issuer: str | None

    def to_dict(self) -> dict:
        return {"version": self.version,
                "cert_not_after": None if self.cert_not_after is None else iso_timestamp(self.cert_not_after),
                "cert_subject": self.cert_subject, "cert_issuer": self.cert_issuer}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request of a check: what came back, if it failed why, and where its time went
    (``timings``: seconds per phase, None for a phase not reached; ``tls``: the session's
    facts, for HTTPS)."""

    status_code: int | None
    latency_s: float | None   # None: the target was not contacted (no token to send)
    body_bytes: int | None
    failure: Failure | None
    timings: Mapping[str, float | None] | None = None
    tls: TLSFacts | None = None
    step: int = 0             # which step of the check's plan it was an attempt of
    address: str | None = None   # addresses = "all": the address it was sent to


@dataclass(frozen=True, slots=True)
class Outcome:
    """All attempts of one check, as the checker made them; ``steps``: the names of a flow's
    steps, in order (empty for a check of one request); ``addresses``: with addresses =
    "all", every address the name had, in the resolver's order (their attempts interleave)."""

    attempts: tuple[Attempt, ...]
    elapsed_s: float
    steps: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    def final_attempts(self) -> list[Attempt]:
        """The last attempt of each step that was sent, in order."""
        last: dict[int, Attempt] = {}
        for attempt in self.attempts:
            last[attempt.step] = attempt
        return [last[step] for step in sorted(last)]

    def final_by_address(self) -> list[Attempt]:
        """The last attempt to each address, in the order of ``addresses``."""
        last = {attempt.address: attempt for attempt in self.attempts}
        return [last[address] for address in self.addresses if address in last]

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def decisive(self) -> Attempt:
        """The attempt that decides the check: the last one; with every address checked, the
        first address's that failed, else the slowest address's."""
        if not self.addresses:
            return self.last
        finals = self.final_by_address()
        failed = [a for a in finals if a.failure is not None]
        return failed[0] if failed else max(finals, key=lambda a: a.latency_s or 0.0)

    @property
    def ok(self) -> bool:
        return self.decisive.failure is None

    @property
    def retried_classes(self) -> tuple[str, ...]:
        """The class of each failure that was followed by another attempt."""
        return tuple(a.failure.error_class for a in self.attempts[:-1] if a.failure)


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step of a flow, as its final attempt left it (a step not reached is not listed)."""

    name: str
    ok: bool
    status_code: int | None
    latency_s: float | None
    timings: Mapping[str, float | None] | None
    error_class: str | None
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "status_code": self.status_code,
                "latency_s": round_seconds(self.latency_s),
                "timings": None if self.timings is None else
                {phase: round_seconds(seconds) for phase, seconds in self.timings.items()},
                "error_class": self.error_class, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class AddressResult:
    """One address of a name checked with addresses = "all", as its final attempt left it."""

    address: str
    ok: bool
    status_code: int | None
    latency_s: float | None
    error_class: str | None
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "ok": self.ok, "status_code": self.status_code,
                "latency_s": round_seconds(self.latency_s), "error_class": self.error_class,
                "detail": self.detail}


@dataclass(frozen=True, slots=True)
class MonitorResult:
    target: str
    url: str
    method: str
    ok: bool
    status_code: int | None
    latency_s: float | None
    elapsed_s: float
    attempts: int
    error_class: str | None
    detail: str | None
    error: str | None
    breaker: str
    checked_at: float  # epoch seconds; JSON shows ISO 8601 UTC
    body_bytes: int | None
    labels: Mapping[str, str] = field(default_factory=dict)
    timings: Mapping[str, float | None] | None = None   # of the last attempt (None: not contacted)
    tls: TLSFacts | None = None                       # of the last attempt, for HTTPS
    # Not part of the JSON form, for metrics: the class of each failure that was
    # retried, and the duration of every attempt.
    retried_classes: tuple[str, ...] = field(default=(), repr=False, compare=False)
    attempt_latencies: tuple[float, ...] = field(default=(), repr=False, compare=False)
    # A flow: the step that failed (None when none did), and every step it sent.
    step: str | None = None
    steps: tuple[StepResult, ...] = ()
    degraded: bool = False   # up, but slower than its degraded_latency
    addresses: tuple[AddressResult, ...] = ()   # addresses = "all": each address's check

    @property
    def skipped(self) -> bool:
        """True when an open breaker kept the target from being contacted."""
        return self.attempts == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "url": self.url, "method": self.method, "ok": self.ok,
            "status_code": self.status_code,
            "latency_s": round_seconds(self.latency_s), "elapsed_s": round_seconds(self.elapsed_s),
            "attempts": self.attempts, "error_class": self.error_class, "detail": self.detail,
            "error": self.error, "breaker": self.breaker,
            "checked_at": iso_timestamp(self.checked_at), "body_bytes": self.body_bytes,
            "labels": dict(self.labels),
            "timings": None if self.timings is None else
            {phase: round_seconds(seconds) for phase, seconds in self.timings.items()},
            "tls": None if self.tls is None else self.tls.to_dict(),
            "degraded": self.degraded,
        } | ({"step": self.step, "steps": [step.to_dict() for step in self.steps]}
             if self.steps else {}) | (
            {"addresses": [address.to_dict() for address in self.addresses]} if self.addresses else {})


def checked_result(target: Checked, outcome: Outcome, state: BreakerState,
                   checked_at: float, degraded_after: float = 0.0) -> MonitorResult:
    """A check that contacted the target: its last attempt decides. A flow's latency is the
    sum of its steps' final attempts, and its error names the step. With every address of
    the name checked, the first address that failed decides (its error names it), else the
    slowest address (the check took as long as it). A success whose latency is over
    ``degraded_after`` (> 0) is degraded: still up."""
    last = outcome.decisive
    failure = last.failure
    latency, steps, step, error = last.latency_s, (), None, failure and failure.message
    addresses = tuple(AddressResult(a.address, a.failure is None, a.status_code, a.latency_s,
                                    a.failure and a.failure.error_class, a.failure and a.failure.detail)
                      for a in outcome.final_by_address()) if outcome.addresses else ()
    if addresses and failure is not None:
        error = f"{last.address}: {failure.message}"
    if outcome.steps:
        finals = outcome.final_attempts()
        steps = tuple(StepResult(
            outcome.steps[a.step], a.failure is None, a.status_code, a.latency_s, a.timings,
            a.failure and a.failure.error_class, a.failure and a.failure.detail) for a in finals)
        timed = [a.latency_s for a in finals if a.latency_s is not None]
        latency = sum(timed) if timed else None
        if failure is not None:
            step = outcome.steps[last.step]
            error = f"{step}: {failure.message}"
    return MonitorResult(
        target=target.name, url=target.display_url, method=target.method, ok=failure is None,
        status_code=last.status_code, latency_s=latency, elapsed_s=outcome.elapsed_s,
        attempts=len(outcome.attempts),
        error_class=failure and failure.error_class, detail=failure and failure.detail,
        error=error, breaker=state.state, checked_at=checked_at,
        body_bytes=last.body_bytes, labels=target.labels, timings=last.timings, tls=last.tls,
        retried_classes=outcome.retried_classes,
        attempt_latencies=tuple(a.latency_s for a in outcome.attempts if a.latency_s is not None),
        step=step, steps=steps, addresses=addresses,
        degraded=(failure is None and 0 < degraded_after < (latency or 0.0)))


def internal_error_result(target: Checked, error: Exception, checked_at: float) -> MonitorResult:
    """greenmon itself failed to check the target: down, said plainly, never silently lost."""
    return MonitorResult(
        target=target.name, url=target.display_url, method=target.method, ok=False,
        status_code=None, latency_s=None, elapsed_s=0.0, attempts=0, error_class=CONNECTION,
        detail="internal", error=f"greenmon internal error ({type(error).__name__})",
        breaker="closed", checked_at=checked_at, body_bytes=None, labels=target.labels)


def skipped_result(target: Checked, state: BreakerState, checked_at: float) -> MonitorResult:
    """An open breaker: not contacted, down, with the failure that opened it."""
    failure = state.failure
    return MonitorResult(
        target=target.name, url=target.display_url, method=target.method, ok=False,
        status_code=None, latency_s=None, elapsed_s=0.0, attempts=0,
        error_class=failure and failure.error_class, detail=failure and failure.detail,
        error=failure and failure.message, breaker=state.state, checked_at=checked_at,
        body_bytes=None, labels=target.labels)


def round_seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def iso_timestamp(epoch: float) -> str:
    # isoformat truncates to milliseconds, as the format asks; "+00:00" becomes "Z".
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"
