"""The status page for people: one self-contained HTML page, failures first, no external assets.

This module writes the HTML (a row per target, the page around them);
``views`` decides which rows and keeps them cached.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from greenmon.exporter import RECENT_LATENCIES, TargetSeries
from greenmon.histogram import Histogram
from greenmon.result import iso_timestamp
from greenmon.summary import percentile

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} p.summary{margin:.2em 0 1em;color:#444}
table{border-collapse:collapse;width:100%} th,td{padding:.3em .6em;text-align:left;border-bottom:1px solid #ddd}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#17702a;font-weight:600} .down{color:#b00020;font-weight:600} .skip{color:#8a5a00;font-weight:600}
.slow{color:#b00020}
"""

STYLE_SHA256 = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()  # for the CSP
TRUSTED_LAG_S = 0.05   # loop lag p99 at or under this: the latencies shown are the targets'


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def row(series: TargetSeries, slo_p95_s: float, now: float) -> str:
    """One target's table row."""
    last = series.last
    p95 = percentile(series.recent.sorted(), 0.95)
    if last is None:
        state, css = "PENDING", ""
    elif last.ok:
        state, css = "UP", "up"
    else:
        state, css = ("SKIPPED" if last.skipped else "DOWN"), ("skip" if last.skipped else "down")
    problem = "" if last is None or last.ok else f"{last.error_class} / {last.detail}"
    target = series.target
    return (
        f"<tr><td class='{css}'>{state}</td><td>{escape(target.name)}</td>"
        f"<td>{escape(target.method)} {escape(target.display_url)}</td>"
        f"<td>{escape(problem)}</td>"
        f"<td class='num'>{_seconds(last.latency_s if last else None)}</td>"
        f"<td class='num{' slow' if p95 is not None and p95 > slo_p95_s else ''}'>{_seconds(p95)}</td>"
        f"<td>{escape(series.breaker)}</td>"
        f"<td class='num'>{_phases(series)}</td><td class='num'>{_cert_days(series, now)}</td>"
        f"<td>{iso_timestamp(last.checked_at) if last else '-'}</td></tr>\n")


def _phases(series: TargetSeries) -> str:
    """Where the last contacted check's time went, in ms: dns/connect/tls/processing/transfer."""
    timings = series.contacted.timings if series.contacted is not None else None
    if not timings:
        return "-"
    return "/".join("-" if seconds is None else f"{seconds * 1000:.0f}" for seconds in timings.values())


def _cert_days(series: TargetSeries, now: float) -> str:
    tls = series.contacted.tls if series.contacted is not None else None
    if tls is None or tls.cert_not_after is None:
        return "-"
    return f"{(tls.cert_not_after - now) / 86_400:.0f}"


def fidelity(loop_lag: Histogram, schedule_lag: Histogram) -> str:
    """The line that says whether the latencies on this page can be trusted."""
    loop_p99, schedule_p99 = loop_lag.quantile(0.99), schedule_lag.quantile(0.99)
    if loop_p99 is None:
        return "event loop lag: not measured yet"
    verdict = ("latencies are the targets' own" if loop_p99 <= TRUSTED_LAG_S
               else "the event loop is late: latencies may include greenmon's own delay")
    schedule = "-" if schedule_p99 is None else f"&le; {schedule_p99:g} s"
    return (f"event loop lag p99 &le; {loop_p99:g} s, schedule lag p99 {schedule} "
            f"({verdict})")


def page(summary: dict, *, targets: int, slo_p95_s: float, sweeps: int, sweep_duration_s: float,
         fidelity_line: str, refresh_s: int, now: float) -> tuple[str, str]:
    """The page before the rows, and after them."""
    verdict = {None: "n/a", True: "met", False: "MISSED"}[summary["slo_met"]]
    head = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s}">
<title>greenmon: {summary['down']} down of {summary['targets']}</title><style>{_STYLE}</style></head>
<body><h1>greenmon</h1>
<p class="summary">{summary['up']} up, {summary['down']} down ({summary['skipped']} skipped by open breakers)
of {targets} targets &middot; P95 {_seconds(summary['p95_s'])} against the {slo_p95_s:g} s objective: {verdict}
&middot; {sweeps} sweeps, last took {sweep_duration_s:.2f} s &middot; page made {iso_timestamp(now)}</p>
<p class="summary">{fidelity_line}</p>
<table><thead><tr><th>state</th><th>target</th><th>url</th><th>error class / detail</th>
<th>last latency</th><th>P95 (last {RECENT_LATENCIES} checks)</th>
<th>breaker</th><th title="dns / connect / tls / processing / transfer">phases (ms)</th>
<th>cert days left</th><th>last check (UTC)</th></tr></thead>
<tbody>
"""
    return head, "</tbody></table></body></html>\n"
