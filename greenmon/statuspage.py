"""The status page for people: every target's recent history at a glance, burning budgets first.

One self-contained page: inline CSS, inline SVG (an outcome strip and a
latency sparkline per target), no external assets, readable without
JavaScript. The filter box works as a plain form (``?q=``), and with
JavaScript narrows the rows as one types; the script and the style are
allowed by their hashes in the Content-Security-Policy (web.py). This module
writes the HTML; ``views`` decides which rows, in which order, and caches them.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from urllib.parse import urlencode

from greenmon.histogram import Histogram
from greenmon.history import DEGRADED, SKIPPED
from greenmon.result import iso_timestamp
from greenmon.store import TargetSeries
from greenmon.summary import percentile

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} p.summary{margin:.2em 0 .6em;color:#444}
table{border-collapse:collapse;width:100%} th,td{padding:.25em .5em;text-align:left;border-bottom:1px solid #ddd;vertical-align:middle}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#17702a;font-weight:600} .down{color:#b00020;font-weight:600} .skip{color:#8a5a00;font-weight:600}
.degraded{color:#6b3fa0;font-weight:600}
.slow{color:#b00020} .url{color:#666;font-size:.85em}
form.filter{margin:.5em 0} form.filter input{width:24em;padding:.25em}
svg.strip,svg.spark{display:block} .g{fill:#2e9b48} .b{fill:#c62828} .s{fill:#d49a1a} .d{fill:#8e5cc7}
.line{fill:none;stroke:#1f5fa8;stroke-width:1} .slo{stroke:#c62828;stroke-width:.6;stroke-dasharray:2 1}
p.pages a,p.states a{margin-right:.6em}
"""

# Narrows the rows as one types; without JavaScript the form does it on the server.
SCRIPT = """
var box = document.getElementById("filter");
box.addEventListener("input", function () {
  var words = box.value.toLowerCase();
  var rows = document.querySelectorAll("#targets tbody tr");
  for (var i = 0; i < rows.length; i++) {
    var text = rows[i].getAttribute("data-search");
    rows[i].hidden = words !== "" && text.indexOf(words) < 0;
  }
});
"""


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


STYLE_SHA256 = _sha256(STYLE)     # the page's CSP names these two, and allows nothing else
SCRIPT_SHA256 = _sha256(SCRIPT)
TRUSTED_LAG_S = 0.05   # loop lag p99 at or under this: the latencies shown are the targets'
STRIP_CELL = 4         # px per outcome in the strip
SPARK_W, SPARK_H = 120, 22


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def burn_rate(series: TargetSeries, objective: float) -> float:
    """How fast the target spends its error budget over the kept history: the share of bad
    outcomes over the share the objective allows (1: exactly on budget)."""
    availability = series.history.availability()
    return 0.0 if availability is None else (1.0 - availability) / (1.0 - objective)


def _parts(last) -> str:
    """A flow's steps, or each address checked (addresses = "all"), of the last check, each
    marked passed or failed."""
    if last is None or not (last.steps or last.addresses):
        return ""
    kind, parts = ("steps", [(s.name, s.ok) for s in last.steps]) if last.steps else (
        "addresses", [(a.address, a.ok) for a in last.addresses])
    marks = " ".join(escape(name) + (" \u2713" if ok else " \u2717") for name, ok in parts)
    return f"<div class='url'>{kind}: {marks}</div>"


STATES = ("up", "degraded", "down", "skipped", "pending")   # what ?state= can ask for


def state_of(last) -> tuple[str, str]:
    """(shown state, its style class) of a target whose last result is ``last``."""
    if last is None:
        return "PENDING", ""
    if last.ok:
        return ("DEGRADED", "degraded") if last.degraded else ("UP", "up")
    return ("SKIPPED", "skip") if last.skipped else ("DOWN", "down")


def row(series: TargetSeries, *, slo_p95_s: float, objective: float, now: float) -> str:
    """One target's table row."""
    last, target, history = series.last, series.target, series.history
    state, css = state_of(last)
    problem = "" if last is None or last.ok else f"{last.error_class} / {last.detail}"
    if last is not None and last.step:
        problem = f"{last.step}: {problem}"
    latencies = history.latencies()
    p95 = percentile(sorted(latencies), 0.95)
    availability = history.availability()
    search = escape(f"{target.name} {target.display_url}".lower())
    return (
        f"<tr data-search=\"{search}\"><td class='{css}'>{state}</td>"
        f"<td>{escape(target.name)}<div class='url'>{escape(target.method)} {escape(target.display_url)}</div>"
        f"{_parts(last)}</td>"
        f"<td>{escape(problem)}</td>"
        f"<td class='num'>{'-' if availability is None else f'{availability * 100:.1f} %'}"
        f"<div class='url'>burn {burn_rate(series, objective):.1f}x</div></td>"
        f"<td>{strip(series)}</td><td>{sparkline(latencies, slo_p95_s)}</td>"
        f"<td class='num'>{_seconds(last.latency_s if last else None)}</td>"
        f"<td class='num{' slow' if p95 is not None and p95 > slo_p95_s else ''}'>{_seconds(p95)}</td>"
        f"<td>{escape(series.breaker)}</td>"
        f"<td class='num'>{_phases(series)}</td><td class='num'>{_cert_days(series, now)}</td>"
        f"<td>{iso_timestamp(last.checked_at) if last else '-'}</td></tr>\n")


def strip(series: TargetSeries) -> str:
    """The recent outcomes, oldest left: green good, purple degraded (up, slow), red failed,
    amber skipped by an open breaker; a failure's class and detail on hover."""
    history = series.history
    codes = history.codes()
    outcomes = history.outcomes() if any(codes) else None
    cells = []
    for x, code in enumerate(codes):
        kind = "g" if code == 0 else "d" if code == DEGRADED else ("s" if code & SKIPPED else "b")
        if kind == "g":
            cells.append(f"<rect x='{x * STRIP_CELL}' width='{STRIP_CELL - 1}' height='12' class='g'/>")
        elif kind == "d":
            item = outcomes[x]
            tip = escape(f"{item['checked_at']} degraded: {item['latency_s']} s")
            cells.append(f"<rect x='{x * STRIP_CELL}' width='{STRIP_CELL - 1}' height='12' "
                         f"class='d'><title>{tip}</title></rect>")
        else:
            item = outcomes[x]
            tip = escape(f"{item['checked_at']} {item['error_class']}/{item['detail']}"
                         + (" (skipped)" if kind == "s" else ""))
            cells.append(f"<rect x='{x * STRIP_CELL}' width='{STRIP_CELL - 1}' height='12' "
                         f"class='{kind}'><title>{tip}</title></rect>")
    width = max(len(codes), 1) * STRIP_CELL
    return (f"<svg class='strip' width='{width}' height='12' viewBox='0 0 {width} 12' role='img' "
            f"aria-label='recent outcomes'>{''.join(cells)}</svg>")


def sparkline(latencies: list[float], slo_p95_s: float) -> str:
    """The recent latencies, oldest left, with the P95 objective as a dashed line."""
    top = max([slo_p95_s * 1.5] + latencies)
    step = SPARK_W / max(len(latencies) - 1, 1)
    points = " ".join(f"{i * step:.1f},{SPARK_H - SPARK_H * value / top:.1f}"
                      for i, value in enumerate(latencies))
    objective_y = SPARK_H - SPARK_H * slo_p95_s / top
    return (f"<svg class='spark' width='{SPARK_W}' height='{SPARK_H}' viewBox='0 0 {SPARK_W} {SPARK_H}' "
            f"role='img' aria-label='recent latencies'>"
            f"<line x1='0' x2='{SPARK_W}' y1='{objective_y:.1f}' y2='{objective_y:.1f}' class='slo'/>"
            f"<polyline points='{points}' class='line'/></svg>")


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


def _link(query: str, state: str, **more) -> str:
    params = {key: value for key, value in (("q", query), ("state", state)) if value}
    return "?" + escape(urlencode({**params, **more}))


def pages(query: str, page: int, count: int, state: str = "") -> str:
    if count <= 1:
        return ""
    links = []
    for number in range(1, count + 1):
        if number == page:
            links.append(f"<b>{number}</b>")
        else:
            links.append(f"<a href='{_link(query, state, page=number)}'>{number}</a>")
    return f"<p class='pages'>pages: {' '.join(links)}</p>"


def state_links(query: str, state: str, counts: dict[str, int]) -> str:
    """Show all targets, or those of one state (``?state=``), keeping the filter words."""
    links = ["<b>all</b>" if not state else f"<a href='{_link(query, '')}'>all</a>"]
    for name in STATES:
        label = f"{name} ({counts.get(name, 0)})"
        links.append(f"<b>{label}</b>" if name == state else f"<a href='{_link(query, name)}'>{label}</a>")
    return f"<p class='states'>show: {' '.join(links)}</p>"


def page(summary: dict, *, targets: int, shown: int, slo_p95_s: float, objective: float,
         sweeps: int, sweep_duration_s: float, fidelity_line: str, refresh_s: int, now: float,
         query: str, paging: str, states: str = "", state: str = "") -> tuple[str, str]:
    """The page before the rows, and after them."""
    verdict = {None: "n/a", True: "met", False: "MISSED"}[summary["slo_met"]]
    hidden = f'<input type="hidden" name="state" value="{escape(state)}">' if state else ""
    head = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh_s}">
<link rel="icon" href="data:,">
<title>greenmon: {summary['down']} down of {summary['targets']}</title><style>{STYLE}</style></head>
<body><h1>greenmon</h1>
<p class="summary">{summary['up']} up ({summary['degraded']} degraded), {summary['down']} down ({summary['skipped']} skipped by open breakers)
of {targets} targets &middot; P95 {_seconds(summary['p95_s'])} against the {slo_p95_s:g} s objective: {verdict}
&middot; availability objective {objective * 100:g} % &middot; {sweeps} sweeps, last took {sweep_duration_s:.2f} s
&middot; page made {iso_timestamp(now)}</p>
<p class="summary">{fidelity_line}</p>
<form class="filter" method="get"><input type="search" id="filter" name="q" value="{escape(query)}"
placeholder="filter by name or URL" aria-label="filter targets">{hidden} <button>filter</button>
{shown} shown, the targets burning their error budget fastest first, then the degraded</form>
{states}
{paging}
<table id="targets"><thead><tr><th>state</th><th>target</th><th>error class / detail</th>
<th>availability</th><th>recent outcomes</th><th>latency (P95 objective dashed)</th>
<th>last latency</th><th>P95 (kept history)</th>
<th>breaker</th><th title="dns / connect / tls / processing / transfer">phases (ms)</th>
<th>cert days left</th><th>last check (UTC)</th></tr></thead>
<tbody>
"""
    tail = f"</tbody></table>\n{paging}\n<script>{SCRIPT}</script></body></html>\n"
    return head, tail
