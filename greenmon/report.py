"""The human and machine reports of a sweep: table, json, jsonl, and the TTY progress line."""

from __future__ import annotations

import json
import sys
from typing import IO, Sequence

import gevent

from greenmon.result import MonitorResult

FORMATS = ("table", "json", "jsonl")
PROGRESS_DELAY_S = 1.0   # a sweep shorter than this shows no progress line
PROGRESS_EVERY_S = 0.5


def json_document(results: Sequence[MonitorResult], summary: dict) -> dict:
    return {"results": [r.to_dict() for r in results], "summary": summary}


def write_json(out: IO[str], results: Sequence[MonitorResult], summary: dict) -> None:
    head, separator, tail = json_frame(summary, empty=not results)
    out.write(head)
    out.write(separator.join(result_json(r) for r in results))
    out.write(tail)


def result_json(result: MonitorResult) -> str:
    """One result on one line, through json's C encoder (indenting goes through its slow
    pure-Python one, a measurable share of a large sweep's CPU)."""
    return json.dumps(result.to_dict())


def json_frame(summary: dict, empty: bool) -> tuple[str, str, str]:
    """The --format json document around its results (one per line, result_json): what
    comes before the first, between two, and after the last (the summary, indented).
    /api/results serves the same document."""
    head = '{\n  "results": [' + ("" if empty else "\n    ")
    tail = ("],\n" if empty else "\n  ],\n") + '  "summary": '
    tail += json.dumps(summary, indent=2).replace("\n", "\n  ") + "\n}\n"
    return head, ",\n    ", tail


def jsonl_line(result: MonitorResult) -> str:
    return json.dumps(result.to_dict(), separators=(",", ":")) + "\n"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def write_table(out: IO[str], results: Sequence[MonitorResult], summary: dict) -> None:
    """Failures first (in target order), then the degraded, then the healthy targets; a
    summary line last."""
    ordered = ([r for r in results if not r.ok] + [r for r in results if r.ok and r.degraded]
               + [r for r in results if r.ok and not r.degraded])
    header = ("STATE", "TARGET", "CODE", "LATENCY", "TRIES", "CLASS", "DETAIL", "BREAKER", "ERROR")
    rows = [header] + [(
        ("DEGRADED" if r.degraded else "UP") if r.ok else ("SKIP" if r.skipped else "DOWN"), r.target,
        str(r.status_code) if r.status_code is not None else "-", _seconds(r.latency_s),
        str(r.attempts), r.error_class or "-", r.detail or "-", r.breaker, r.error or "",
    ) for r in ordered]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        out.write("  ".join(cells).rstrip() + "\n")
    out.write("\n" + summary_line(summary) + "\n")


def summary_line(summary: dict) -> str:
    slo = summary["slo_met"]
    verdict = "n/a" if slo is None else ("met" if slo else "MISSED")
    errors = ", ".join(f"{name} {count}" for name, count in summary["errors"].items() if count)
    degraded = f" ({summary['degraded']} degraded)" if summary.get("degraded") else ""
    return (f"{summary['targets']} targets: {summary['up']} up{degraded}, {summary['down']} down "
            f"({summary['skipped']} skipped) in {summary['duration_s']:.2f}s; "
            f"latency p50 {_seconds(summary['p50_s'])}, p95 {_seconds(summary['p95_s'])}, "
            f"max {_seconds(summary['max_s'])}; "
            f"SLO p95 <= {summary['slo_p95_s']:g}s: {verdict}"
            + (f"; errors: {errors}" if errors else ""))


class ProgressLine:
    """'checked N/M' on stderr while a long sweep runs, only when stderr is a terminal."""

    def __init__(self, total: int, stream: IO[str] = sys.stderr):
        self.total = total
        self.done = 0
        self._stream = stream
        self._shown = False
        self._greenlet = None
        if stream.isatty() and total:
            self._greenlet = gevent.spawn_later(PROGRESS_DELAY_S, self._run)

    def __call__(self, result: MonitorResult) -> None:
        self.done += 1

    def _run(self) -> None:
        while True:
            self._stream.write(f"\rchecked {self.done}/{self.total}")
            self._stream.flush()
            self._shown = True
            gevent.sleep(PROGRESS_EVERY_S)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()
