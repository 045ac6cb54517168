"""The status page for people: one self-contained HTML page, failures first, no external assets."""

from __future__ import annotations

from html import escape

from greenmon.exporter import RECENT_LATENCIES
from greenmon.result import iso_timestamp
from greenmon.summary import percentile, summarize

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em} p.summary{margin:.2em 0 1em;color:#444}
table{border-collapse:collapse;width:100%} th,td{padding:.3em .6em;text-align:left;border-bottom:1px solid #ddd}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#17702a;font-weight:600} .down{color:#b00020;font-weight:600} .skip{color:#8a5a00;font-weight:600}
.slow{color:#b00020}
"""


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def render(monitor, now: float) -> str:
    store = monitor.store
    slo = monitor.config.monitor.slo_p95_seconds
    series = list(store.series.values())
    results = [s.last for s in series if s.last is not None]
    summary = summarize(results, store.sweep_duration_s, slo)
    series.sort(key=lambda s: (s.last is None or s.last.ok, s.target.name))
    rows = []
    for s in series:
        last = s.last
        p95 = percentile(sorted(s.recent), 0.95)
        if last is None:
            state, css = "PENDING", ""
        elif last.ok:
            state, css = "UP", "up"
        else:
            state, css = ("SKIPPED" if last.skipped else "DOWN"), ("skip" if last.skipped else "down")
        problem = "" if last is None or last.ok else f"{last.error_class} / {last.detail}"
        rows.append(
            f"<tr><td class='{css}'>{state}</td><td>{escape(s.target.name)}</td>"
            f"<td>{escape(s.target.method)} {escape(s.target.display_url)}</td>"
            f"<td>{escape(problem)}</td>"
            f"<td class='num'>{_seconds(last.latency_s if last else None)}</td>"
            f"<td class='num{' slow' if p95 is not None and p95 > slo else ''}'>{_seconds(p95)}</td>"
            f"<td>{escape(last.breaker if last else '-')}</td>"
            f"<td>{iso_timestamp(last.checked_at) if last else '-'}</td></tr>")
    refresh = int(min(max(monitor.config.monitor.interval, 5), 60))
    verdict = {None: "n/a", True: "met", False: "MISSED"}[summary["slo_met"]]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{refresh}">
<title>greenmon: {summary['down']} down of {summary['targets']}</title><style>{_STYLE}</style></head>
<body><h1>greenmon</h1>
<p class="summary">{summary['up']} up, {summary['down']} down ({summary['skipped']} skipped by open breakers)
of {len(series)} targets &middot; P95 {_seconds(summary['p95_s'])} against the {slo:g} s objective: {verdict}
&middot; {store.sweeps} sweeps, last took {store.sweep_duration_s:.2f} s &middot; page made {iso_timestamp(now)}</p>
<table><thead><tr><th>state</th><th>target</th><th>url</th><th>error class / detail</th>
<th>last latency</th><th>P95 (last {RECENT_LATENCIES} checks)</th>
<th>breaker</th><th>last check (UTC)</th></tr></thead>
<tbody>
{''.join(rows)}
</tbody></table></body></html>
"""
