"""The first-HTTPS-check stall: plain targets checked with and without one HTTPS target beside them.

``greenmon --once`` on N plain targets of the farm (no delay), then on the same
targets plus one HTTPS target (the farm's TLS port, its CA as ca_file), in turn,
``runs`` times each. A run's figure is the median ``latency_s`` of its plain
targets. Whatever greenmon does on its event loop for the HTTPS target (imports,
trust stores, handshakes) while the plain checks are timed shows as a higher
median with the HTTPS target: the target is that it moves by at most MAX_MOVE_MS.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.clients import run_measured
from benchmarks.farm import target_path

MAX_MOVE_MS = 3.0


@dataclass(frozen=True)
class StallResult:
    plain_ms: list[float]          # each run's median plain latency, plain targets only
    with_https_ms: list[float]     # the same, with the HTTPS target beside them
    error: str = ""

    @property
    def move_ms(self) -> float | None:
        if not self.plain_ms or not self.with_https_ms:
            return None
        return statistics.median(self.with_https_ms) - statistics.median(self.plain_ms)

    def as_dict(self) -> dict:
        return {"plain_ms": self.plain_ms, "with_https_ms": self.with_https_ms,
                "move_ms": self.move_ms, "error": self.error}


def _config(farm, plain: int, https: bool) -> str:
    lines = ["[monitor]", "timeout = 30", f'ca_file = "{farm.ca_file}"', ""]
    for i in range(plain):
        lines += ["[[targets]]", f'name = "plain{i}"',
                  f'url = "http://{farm.addresses[0]}:{farm.port}{target_path(0, 200, f"p{i}")}"', ""]
    if https:
        lines += ["[[targets]]", 'name = "https"',
                  f'url = "https://{farm.addresses[0]}:{farm.tls_port}{target_path(0, 200, "s")}"', ""]
    return "\n".join(lines)


def _median_plain_ms(argv: list[str], output: Path, cap_s: float) -> float:
    run = run_measured(argv, cap_s)
    if run.returncode != 0:
        raise RuntimeError(f"exit {run.returncode}: {run.stderr.strip()[-300:]}")
    results = json.loads(output.read_text(encoding="utf-8"))["results"]
    return statistics.median(r["latency_s"] for r in results if r["target"].startswith("plain")) * 1000


def run_stall(farm, workdir: Path, plain: int, runs: int, cap_s: float) -> StallResult:
    figures: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(runs):
            for https in (False, True):   # in turn: a drifting machine moves both alike
                config, output = workdir / f"stall-{https}.toml", workdir / f"stall-{https}.json"
                config.write_text(_config(farm, plain, https), encoding="utf-8")
                argv = [sys.executable, "-m", "greenmon", "--once", "--config", str(config),
                        "--format", "json", "--output", str(output)]
                figures[https].append(round(_median_plain_ms(argv, output, cap_s), 3))
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        return StallResult(figures[False], figures[True], str(error))
    return StallResult(figures[False], figures[True])


def block(scenario, result: StallResult) -> str:
    lines = [f"### {scenario.name}: {scenario.summary()}", "", scenario.description + ".", "",
             "| sweep | median plain latency per run, ms | median of the runs, ms |", "|---|---|---|"]
    for label, values in (("plain only", result.plain_ms), ("plus one HTTPS target", result.with_https_ms)):
        shown = ", ".join(f"{v:.2f}" for v in values) or "—"
        middle = f"{statistics.median(values):.2f}" if values else "—"
        lines.append(f"| {label} | {shown} | {middle} |")
    if result.error:
        lines += ["", f"Failed: {result.error}"]
    return "\n".join(lines)


def verdict(scenario, result: StallResult) -> str:
    if result.move_ms is None:
        return f"- {scenario.name}: no figure ({result.error or 'no run'})"
    ok = result.move_ms <= MAX_MOVE_MS
    return (f"- {scenario.name}: the plain targets' median moves {result.move_ms:+.2f} ms with one "
            f"HTTPS target beside them (target <= {MAX_MOVE_MS:g} ms): {'PASS' if ok else 'FAIL'}")
