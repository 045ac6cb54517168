"""The judges of a response: what it must be for the check to pass, one row each.

A response that came back is judged by every row of JUDGES in order; the
first that finds something wrong gives the attempt its Failure, and the
others are not asked. The order is the operator's: a certificate about to
expire is reported even when the page is fine, a wrong status before the
body it explains, the headers before the body, and the body is read only if
a rule asks for it. A failure names the header or the rule, never a value
(a header may carry a session). A new assertion is one row here, one key
in ``targets``, and its test.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable, Mapping

from greenmon.errors import CONNECTION, CONTENT, Failure, status_failure
from greenmon.expectations import check_json
from greenmon.targets import HeaderRules, StatusMatcher
from greenmon.transport import Response

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Expectations:
    """What a response must be: a check's target keys, with [monitor]'s default applied."""

    status: StatusMatcher
    body: re.Pattern | None = None          # the text must match it
    reject_body: re.Pattern | None = None   # the text must not
    json: Mapping | None = None      # JSON path -> value (expectations.check_json)
    min_cert_days: float = 0.0       # > 0: a certificate expiring sooner fails
    header: HeaderRules = ()         # each header present, its value matching
    reject_header: HeaderRules = ()  # each header absent, or its value not matching


class Seen:
    """A response as the judges read it, at the time it was judged; its text is decoded
    once, by the first judge that asks."""

    def __init__(self, response: Response, now: float):
        self.response = response
        self.now = now   # wall time (a certificate's days left)

    @functools.cached_property
    def text(self) -> str:
        return self.response.body.decode("utf-8", errors="replace")


def _certificate_days(expect: Expectations, seen: Seen) -> Failure | None:
    tls = seen.response.tls
    if not expect.min_cert_days or tls is None or tls.cert_not_after is None:
        return None
    days_left = (tls.cert_not_after - seen.now) / DAY_S
    if days_left >= expect.min_cert_days:
        return None
    return Failure(CONNECTION, "cert_expiring", f"certificate expires in {max(days_left, 0.0):.1f} "
                   f"days (min_cert_days {expect.min_cert_days:g})")


def _status(expect: Expectations, seen: Seen) -> Failure | None:
    response = seen.response
    if response.status_code in expect.status:
        return None
    return status_failure(response.status_code, response.reason)


def _expect_header(expect: Expectations, seen: Seen) -> Failure | None:
    headers = seen.response.headers
    for name, pattern in expect.header:
        value = headers.get(name)
        if value is None:
            return Failure(CONTENT, "expect_header", f"expect_header: no {name} header")
        if not pattern.search(value):
            return Failure(CONTENT, "expect_header", f"expect_header: {name} does not match")
    return None


def _reject_header(expect: Expectations, seen: Seen) -> Failure | None:
    headers = seen.response.headers
    for name, pattern in expect.reject_header:
        value = headers.get(name)
        if value is not None and pattern.search(value):
            return Failure(CONTENT, "reject_header", f"reject_header: {name} matches")
    return None


def _body_size(expect: Expectations, seen: Seen) -> Failure | None:
    if not seen.response.body_too_large:
        return None
    return Failure(CONTENT, "body_too_large", "body larger than max_body_bytes")


def _expect_body(expect: Expectations, seen: Seen) -> Failure | None:
    if expect.body is None or expect.body.search(seen.text):
        return None
    return Failure(CONTENT, "expect_body", "body does not match expect_body")


def _reject_body(expect: Expectations, seen: Seen) -> Failure | None:
    if expect.reject_body is None or not expect.reject_body.search(seen.text):
        return None
    return Failure(CONTENT, "reject_body", "body matches reject_body")


def _expect_json(expect: Expectations, seen: Seen) -> Failure | None:
    if expect.json is None:
        return None
    problem = check_json(expect.json, seen.response.body)
    return None if problem is None else Failure(CONTENT, "expect_json", f"expect_json: {problem}")


Judge = Callable[[Expectations, Seen], "Failure | None"]
JUDGES: tuple[tuple[str, Judge], ...] = (   # (the target key it answers to, the judge), in order
    ("min_cert_days", _certificate_days),
    ("expect_status", _status),
    ("expect_header", _expect_header),
    ("reject_header", _reject_header),
    ("max_body_bytes", _body_size),
    ("expect_body", _expect_body),
    ("reject_body", _reject_body),
    ("expect_json", _expect_json),
)


def judge(expect: Expectations, response: Response, now: float) -> Failure | None:
    """The first failure a judge finds in ``response``, or None: it passes."""
    seen = Seen(response, now)
    for _, rule in JUDGES:
        failure = rule(expect, seen)
        if failure is not None:
            return failure
    return None
