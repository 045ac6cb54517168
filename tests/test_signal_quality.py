"""Signal quality: transient failures do not become alarms, and a real outage is reported at once
and through the whole breaker lifecycle (the target: false alarms under 5 %).

The flaky farm answers every request of every target with a transient failure
(503 or a TCP reset, half each) 10 % of the time, independently, from a seeded
generator per target path: each target's sequence of answers is the same in
every run, whatever order the concurrent checks interleave in.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from greenmon.breaker import CLOSED, OPEN
from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.errors import CONNECTION, HTTP
from support.configs import config_text
from support.helpers import FakeClock
from support.hostile_servers import CLOSE, RESET, FlakyPlan, ScriptedServer, Switch
from support.servers import HTTPFarm, reply

SEED = 20261127
FAILURE_RATE = 0.10
TARGETS = 200
SWEEPS = 50
# Default retries (3), but backoff 0.01 s instead of 1 s so 50 sweeps stay short:
# the delays change how long a check takes, not whether it succeeds.
FAST_BACKOFF = 0.01
TIMEOUT_S = 2.0
RUN_LIMIT_S = 30.0  # a bound on each 50-sweep run (4 s on 2 idle cores, 11 s on 2 busy ones)


def flaky_run(retries: int, failure_threshold: int = 3):
    """50 sweeps of 200 flaky targets on one Engine (as the daemon does); the results of all."""
    plan = FlakyPlan(SEED, FAILURE_RATE)
    with ScriptedServer(plan) as server:
        targets = [{"name": f"flaky-{i:03d}", "url": server.url(f"/flaky/{i}")} for i in range(TARGETS)]
        config = parse_config(config_text(targets, retries=retries, backoff=FAST_BACKOFF, timeout=TIMEOUT_S),
                              "<test>")
        config = config.replace("breaker", failure_threshold=failure_threshold)
        engine = Engine(config)
        results = []
        started = time.monotonic()
        try:
            for _ in range(SWEEPS):
                results.extend(engine.sweep())
                assert time.monotonic() - started < RUN_LIMIT_S, "the flaky farm run is too slow"
        finally:
            engine.close()
        requests = sum(server.requests.values())
    return results, plan, requests


def test_retries_keep_transient_failures_from_being_reported_down():
    results, plan, requests = flaky_run(retries=3)
    checks = TARGETS * SWEEPS
    assert len(results) == checks
    down = [r for r in results if not r.ok]
    injected = plan.answers[503] + plan.answers[RESET]
    # The farm really was flaky: about 10 % of all requests failed.
    assert 0.08 < injected / requests < 0.12
    assert len(down) / checks < 0.005, Counter((r.error_class, r.detail) for r in down)
    # Every transient failure but a check's last was retried exactly once, and nothing else was sent.
    assert requests == sum(r.attempts for r in results) == checks + injected - len(down)
    # No breaker opened on transient failures: none of the checks was skipped.
    assert all(r.attempts >= 1 and r.breaker == CLOSED for r in results)


def test_without_retries_about_one_check_in_ten_is_reported_down():
    # The control: the same farm and seed with retries off. failure_threshold is out of reach
    # here on purpose: with 10 % failures some targets fail 3 sweeps in a row, and a breaker
    # open for the rest of the run would add skipped checks to what this test measures
    # (the share of checks a single failed request turns into "down").
    results, plan, requests = flaky_run(retries=0, failure_threshold=10_000)
    checks = TARGETS * SWEEPS
    assert len(results) == checks == requests
    down = [r for r in results if not r.ok]
    assert 0.06 < len(down) / checks < 0.14
    assert len(down) == plan.answers[503] + plan.answers[RESET]
    assert Counter((r.error_class, r.detail) for r in down).keys() == {(HTTP, "503"), (CONNECTION, "reset")}


# --- A hard-down target through the breaker lifecycle ------------------------------------------

THRESHOLD = 3
RECOVERY_S = 60.0
INTERVAL_S = 10.0  # fake seconds between sweeps
RETRIES = 3

# (down mode, class, detail, attempts of a failed closed-breaker check)
DOWN_MODES = [
    pytest.param(500, HTTP, "500", 1, id="500"),
    pytest.param(503, HTTP, "503", RETRIES + 1, id="503"),
    pytest.param(RESET, CONNECTION, "reset", RETRIES + 1, id="reset"),
    pytest.param(CLOSE, CONNECTION, "closed", RETRIES + 1, id="closed-without-answer"),
    pytest.param("refused", CONNECTION, "refused", RETRIES + 1, id="refused"),
]


class Lifecycle:
    """One Engine with a fake clock sweeping the switchable target and a healthy neighbour."""

    def __init__(self, server: ScriptedServer, switch: Switch, neighbour: HTTPFarm, down_mode):
        self.server = server
        self.switch = switch
        self.down_mode = down_mode
        self.clock = FakeClock()
        config = parse_config(config_text([{"name": "switch", "url": server.url("/switch")},
                                           {"name": "neighbour", "url": neighbour.url("/ok")}],
                                          retries=RETRIES, backoff=FAST_BACKOFF, timeout=TIMEOUT_S), "<test>")
        config = config.replace("breaker", failure_threshold=THRESHOLD, recovery_timeout=RECOVERY_S)
        self.engine = Engine(config, clock=self.clock)

    def go_down(self) -> None:
        if self.down_mode == "refused":
            self.server.refuse()
        else:
            self.switch.up = False

    def come_back(self) -> None:
        if self.down_mode == "refused":
            self.server.listen_again()
        self.switch.up = True

    def sweep(self, advance: float = INTERVAL_S):
        """Move the fake clock, sweep; the switch's result and how many requests it received."""
        self.clock.advance(advance)
        before = self.server.requests["/switch"]
        results = {r.target: r for r in self.engine.sweep()}
        neighbour = results["neighbour"]
        assert (neighbour.ok, neighbour.attempts) == (True, 1), neighbour
        return results["switch"], self.server.requests["/switch"] - before


@pytest.mark.parametrize("down_mode, error_class, detail, attempts", DOWN_MODES)
def test_hard_down_target_through_the_breaker_lifecycle(down_mode, error_class, detail, attempts):
    switch = Switch(down=down_mode)
    with ScriptedServer(switch) as server, HTTPFarm({"/ok": reply()}) as neighbour:
        life = Lifecycle(server, switch, neighbour, down_mode)
        try:
            _run_lifecycle(life, error_class, detail, attempts)
        finally:
            life.engine.close()


def _run_lifecycle(life: Lifecycle, error_class: str, detail: str, attempts: int) -> None:
    def failed(result, breaker: str, expected_attempts: int) -> None:
        observed = (result.ok, result.error_class, result.detail, result.attempts, result.breaker)
        assert observed == (False, error_class, detail, expected_attempts, breaker), result

    result, sent = life.sweep()
    assert (result.ok, result.breaker, sent) == (True, CLOSED, 1)

    # Down: reported down in the very first sweep after it goes down.
    life.go_down()
    for sweep in range(1, THRESHOLD + 1):
        result, sent = life.sweep()
        # The breaker opens on the failure_threshold-th failed sweep, not before.
        failed(result, OPEN if sweep == THRESHOLD else CLOSED, attempts)
        expected_sent = 0 if life.down_mode == "refused" else attempts
        assert sent == expected_sent
    opened_at = life.clock.now

    # Open: still reported down, with the failure that opened it, and not contacted.
    for _ in range(2):
        result, sent = life.sweep()
        failed(result, OPEN, 0)
        assert (sent, result.status_code, result.latency_s) == (0, None, None)

    # The first half-open trial while still down: one attempt (no retries), open again.
    result, sent = life.sweep(advance=opened_at + RECOVERY_S - life.clock.now)
    failed(result, OPEN, 1)
    assert sent == (0 if life.down_mode == "refused" else 1)
    reopened_at = life.clock.now

    # It comes back while the breaker is open: still reported down until the next trial.
    life.come_back()
    result, sent = life.sweep()
    failed(result, OPEN, 0)
    assert sent == 0

    # The first half-open trial after it came back reports it up and closes the breaker.
    result, sent = life.sweep(advance=reopened_at + RECOVERY_S - life.clock.now)
    assert (result.ok, result.attempts, result.breaker, result.status_code, sent) == (
        True, 1, CLOSED, 200, 1)
    result, sent = life.sweep()
    assert (result.ok, result.breaker, sent) == (True, CLOSED, 1)
