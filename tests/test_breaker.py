"""The circuit breaker: pure transitions, the engine with a fake clock, two --once runs sharing a state file.

The state file itself (saving, loading, what a bad one does) is test_statefile.py's.
"""

from __future__ import annotations

import json

import pytest

from greenmon import statefile
from greenmon.breaker import CLOSED, HALF_OPEN, OPEN, BreakerState, Gate, gate, record
from greenmon.config import parse_config
from greenmon.settings import BreakerSettings
from greenmon.engine import Engine
from greenmon.errors import Failure
from support.configs import config_text
from support.helpers import FakeClock, run_cli
from support.servers import HTTPFarm, closed_port, reply

SETTINGS = BreakerSettings(failure_threshold=3, recovery_timeout=60.0)
BOOM = Failure("http", "500", "HTTP 500 Internal Server Error")
REFUSED = Failure("connection", "refused", "connection refused")
T0 = 1_800_000_000.0


# --- Pure transitions ----------------------------------------------------------------

def _failures(count: int, state: BreakerState = BreakerState(), failure: Failure = BOOM,
              start: float = T0) -> BreakerState:
    for i in range(count):
        state = record(state, failure, start + i, SETTINGS)
    return state


def test_new_breaker_is_closed_and_calls():
    assert BreakerState().state == CLOSED
    assert gate(BreakerState(), T0, SETTINGS) is Gate.CALL


@pytest.mark.parametrize("failures, state", [(1, CLOSED), (2, CLOSED), (3, OPEN), (4, OPEN)])
def test_opens_after_failure_threshold_consecutive_failures(failures, state):
    after = _failures(min(failures, 3))
    if failures == 4:  # not reachable through the engine (open skips), but record stays open
        after = record(after, BOOM, T0 + 3, SETTINGS)
    assert after.state == state
    assert after.failures == failures


def test_open_state_remembers_when_and_why():
    opened = _failures(3)
    assert opened.opened_at == T0 + 2  # the time of the third failure
    assert opened.failure == BOOM


def test_below_threshold_keeps_calling():
    state = _failures(2)
    assert gate(state, T0 + 1000, SETTINGS) is Gate.CALL


@pytest.mark.parametrize("since_open, decision", [
    (0.0, Gate.SKIP), (1.0, Gate.SKIP), (59.9, Gate.SKIP), (60.0, Gate.TRIAL), (3600.0, Gate.TRIAL),
])
def test_open_skips_until_recovery_timeout_then_trial(since_open, decision):
    opened = _failures(3)
    assert gate(opened, opened.opened_at + since_open, SETTINGS) is decision


@pytest.mark.parametrize("since_open", [-0.001, -1.0, -59.9, -3600.0, -86400.0 * 365])
def test_a_clock_that_went_backwards_gets_a_trial_not_a_skip(since_open):
    """opened_at is wall-clock time (it is saved to the state file): after the clock is set
    back, or a state file written on a machine whose clock ran ahead, `now` is before
    opened_at. Skipping until the clock catches up could keep a target unchecked for as
    long as the clock was off: the gate lets one trial through instead."""
    opened = _failures(3)
    assert gate(opened, opened.opened_at + since_open, SETTINGS) is Gate.TRIAL


def test_engine_checks_a_target_whose_breaker_opened_in_the_future(tmp_path):
    """The same through the engine: a state file whose breaker opened an hour from now (its
    writer's clock ran ahead). The target gets its trial at once; success closes it."""
    clock = FakeClock(T0)
    state = tmp_path / "state.json"
    statefile.save(str(state), {"api": BreakerState(OPEN, 3, T0 + 3600.0, BOOM)})
    with HTTPFarm({"/t": reply()}) as farm:
        config = parse_config(config_text([{"name": "api", "url": farm.url("/t")}], retries=2, timeout=1.0,
                                          extra=BREAKER_TOML),
                              "<test>").replace("monitor", state_file=str(state))
        engine = Engine(config, clock=clock)
        try:
            [result] = engine.sweep()
        finally:
            engine.close()
        hits = farm.hits("/t")
    assert (result.ok, result.attempts, result.breaker, hits) == (True, 1, CLOSED, 1)


def test_trial_success_closes():
    opened = _failures(3)
    after = record(opened, None, opened.opened_at + 61, SETTINGS, trial=True)
    assert after == BreakerState()
    assert gate(after, opened.opened_at + 62, SETTINGS) is Gate.CALL


def test_trial_failure_reopens_with_a_new_opened_at():
    opened = _failures(3)
    now = opened.opened_at + 61
    after = record(opened, REFUSED, now, SETTINGS, trial=True)
    assert after.state == OPEN
    assert after.opened_at == now
    assert after.failure == REFUSED
    assert gate(after, now + 59, SETTINGS) is Gate.SKIP
    assert gate(after, now + 60, SETTINGS) is Gate.TRIAL


def test_trial_failure_reopens_even_below_threshold():
    # A threshold of 3 is about consecutive failures when closed; a failed trial always re-opens.
    settings = BreakerSettings(failure_threshold=3, recovery_timeout=60.0)
    half = BreakerState(HALF_OPEN, 0, T0, BOOM)
    assert record(half, BOOM, T0 + 61, settings, trial=True).state == OPEN


def test_success_resets_the_failure_count():
    state = _failures(2)
    state = record(state, None, T0 + 10, SETTINGS)
    assert (state.state, state.failures, state.failure) == (CLOSED, 0, None)
    # Two more failures do not open it: the count starts again.
    state = _failures(2, state, start=T0 + 20)
    assert (state.state, state.failures) == (CLOSED, 2)


def test_threshold_one_opens_on_the_first_failure():
    settings = BreakerSettings(failure_threshold=1, recovery_timeout=5.0)
    state = record(BreakerState(), REFUSED, T0, settings)
    assert (state.state, state.opened_at, state.failure) == (OPEN, T0, REFUSED)


def test_transitions_do_not_mutate_their_input():
    before = _failures(2)
    copy = BreakerState(before.state, before.failures, before.opened_at, before.failure)
    record(before, BOOM, T0 + 5, SETTINGS)
    record(before, None, T0 + 5, SETTINGS)
    assert before == copy


# --- Engine with an injected clock ----------------------------------------------------

BREAKER_TOML = "[breaker]\nfailure_threshold = 3\nrecovery_timeout = 60.0\n"


def _engine(url: str, clock: FakeClock, retries: int = 0) -> Engine:
    config = parse_config(config_text([{"name": "api", "url": url}], retries=retries, backoff=0.01,
                                      timeout=1.0, extra=BREAKER_TOML), "<test>")
    return Engine(config, clock=clock)


def _open_breaker(engine: Engine, farm: HTTPFarm, clock: FakeClock) -> None:
    for sweep in range(1, 4):
        [result] = engine.sweep()
        assert result.attempts >= 1 and farm.hits("/t") >= sweep
        assert result.breaker == (OPEN if sweep == 3 else CLOSED)
        clock.advance(1)


def test_engine_skips_an_open_breaker_without_contacting_the_target():
    clock = FakeClock(T0)
    with HTTPFarm({"/t": reply("500 Internal Server Error")}) as farm:
        engine = _engine(farm.url("/t"), clock)
        try:
            _open_breaker(engine, farm, clock)
            hits = farm.hits("/t")
            [skipped] = engine.sweep()
            assert farm.hits("/t") == hits == 3
        finally:
            engine.close()
    assert skipped.attempts == 0
    assert skipped.skipped
    assert (skipped.ok, skipped.breaker) == (False, OPEN)
    assert (skipped.status_code, skipped.latency_s, skipped.body_bytes) == (None, None, None)
    assert (skipped.error_class, skipped.detail) == ("http", "500")
    assert skipped.error == "HTTP 500 Internal Server Error"
    assert skipped.checked_at == clock.now
    json_form = skipped.to_dict()
    assert (json_form["attempts"], json_form["breaker"], json_form["status_code"],
            json_form["latency_s"]) == (0, "open", None, None)


def test_skipped_result_keeps_the_failure_that_opened_it_not_a_later_one():
    clock = FakeClock(T0)
    with HTTPFarm({"/t": reply("500 Internal Server Error")}) as farm:
        engine = _engine(farm.url("/t"), clock)
        try:
            engine.sweep()
            engine.sweep()
            farm.routes["/t"] = reply("404 Not Found")  # the failure that opens it
            [opening] = engine.sweep()
            farm.routes["/t"] = reply("503 Service Unavailable")
            [skipped] = engine.sweep()
        finally:
            engine.close()
    assert (opening.breaker, opening.detail) == (OPEN, "404")
    assert (skipped.attempts, skipped.error_class, skipped.detail) == (0, "http", "404")


def test_trial_after_recovery_timeout_is_one_attempt_and_success_closes():
    clock = FakeClock(T0)
    with HTTPFarm({"/t": reply("500 Internal Server Error")}) as farm:
        engine = _engine(farm.url("/t"), clock, retries=3)
        try:
            _open_breaker(engine, farm, clock)
            clock.advance(30)
            [still_open] = engine.sweep()
            assert (still_open.attempts, farm.hits("/t")) == (0, 3)
            clock.advance(31)  # past recovery_timeout since it opened
            seen_during_trial = []

            def healthy_and_watching(environ):
                seen_during_trial.append(engine.breakers["api"].state)
                return "200 OK", [], b"ok"
            farm.routes["/t"] = healthy_and_watching
            [trial] = engine.sweep()
            assert seen_during_trial == [HALF_OPEN]
            assert (trial.ok, trial.attempts, trial.breaker) == (True, 1, CLOSED)
            assert engine.breakers["api"] == BreakerState()
            [after] = engine.sweep()
            assert (after.ok, after.attempts) == (True, 1)
            assert farm.hits("/t") == 5
        finally:
            engine.close()


def test_failed_trial_is_not_retried_and_reopens():
    clock = FakeClock(T0)
    with HTTPFarm({"/t": reply("500 Internal Server Error")}) as farm:
        engine = _engine(farm.url("/t"), clock, retries=3)
        try:
            _open_breaker(engine, farm, clock)
            first_opened_at = engine.breakers["api"].opened_at
            clock.advance(61)
            farm.routes["/t"] = reply("503 Service Unavailable")  # retryable, yet a trial is one attempt
            [trial] = engine.sweep()
            assert farm.hits("/t") == 4
            assert (trial.ok, trial.attempts, trial.breaker) == (False, 1, OPEN)
            assert (trial.status_code, trial.error_class, trial.detail) == (503, "http", "503")
            reopened = engine.breakers["api"]
            assert reopened.opened_at == clock.now > first_opened_at
            assert reopened.failure.detail == "503"
            clock.advance(59)
            [skipped] = engine.sweep()
            assert (skipped.attempts, skipped.detail, farm.hits("/t")) == (0, "503", 4)
            clock.advance(2)
            [second_trial] = engine.sweep()
            assert (second_trial.attempts, farm.hits("/t")) == (1, 5)
        finally:
            engine.close()


def test_a_check_that_fails_after_retries_counts_once():
    clock = FakeClock(T0)
    with HTTPFarm({"/t": reply("503 Service Unavailable")}) as farm:
        engine = _engine(farm.url("/t"), clock, retries=2)
        try:
            [first] = engine.sweep()
            assert first.attempts == 3
            assert (engine.breakers["api"].state, engine.breakers["api"].failures) == (CLOSED, 1)
        finally:
            engine.close()


def test_one_open_breaker_does_not_affect_other_targets():
    clock = FakeClock(T0)
    with HTTPFarm({"/down": reply("500 Internal Server Error"), "/up": reply()}) as farm:
        config = parse_config(config_text([{"name": "down", "url": farm.url("/down")},
                                           {"name": "up", "url": farm.url("/up")}],
                                          extra="[breaker]\nfailure_threshold = 1\n"), "<test>")
        engine = Engine(config, clock=clock)
        try:
            engine.sweep()
            down, up = engine.sweep()
        finally:
            engine.close()
        hits = (farm.hits("/down"), farm.hits("/up"))
    assert (down.attempts, down.breaker, up.attempts, up.ok, up.breaker) == (0, OPEN, 1, True, CLOSED)
    assert hits == (1, 2)


# --- Two --once processes sharing a state file -------------------------------------------

def test_breaker_survives_between_once_runs(tmp_path, write_config):
    state = tmp_path / "state.json"
    with HTTPFarm({"/down": reply("500 Internal Server Error"), "/up": reply()}) as farm:
        refused_url = f"http://127.0.0.1:{closed_port()}/refused"
        path = write_config(config_text(
            [{"name": "down", "url": farm.url("/down")},
             {"name": "refused", "url": refused_url},
             {"name": "up", "url": farm.url("/up")}],
            timeout=2.0, extra="[breaker]\nfailure_threshold = 1\n"))
        args = ("--config", str(path), "--once", "--format", "json", "--state-file", str(state))

        first = run_cli(*args)
        hits_after_first = (farm.hits("/down"), farm.hits("/up"))
        second = run_cli(*args)
        hits_after_second = (farm.hits("/down"), farm.hits("/up"))

    assert first.returncode == 1, first.stderr
    first_results = {r["target"]: r for r in json.loads(first.stdout)["results"]}
    assert first_results["down"]["attempts"] == 1
    assert first_results["down"]["breaker"] == "open"
    assert (first_results["refused"]["error_class"], first_results["refused"]["breaker"]) == (
        "connection", "open")
    assert state.exists()
    assert hits_after_first == (1, 1)

    assert second.returncode == 1, second.stderr
    document = json.loads(second.stdout)
    results = {r["target"]: r for r in document["results"]}
    for name, (error_class, detail) in {"down": ("http", "500"),
                                        "refused": ("connection", "refused")}.items():
        skipped = results[name]
        assert (skipped["attempts"], skipped["breaker"], skipped["ok"]) == (0, "open", False)
        assert (skipped["status_code"], skipped["latency_s"]) == (None, None)
        assert (skipped["error_class"], skipped["detail"]) == (error_class, detail)
    assert (results["up"]["ok"], results["up"]["attempts"]) == (True, 1)
    assert hits_after_second == (1, 2)  # "down" was not contacted again
    summary = document["summary"]
    assert (summary["targets"], summary["up"], summary["down"], summary["skipped"]) == (3, 1, 2, 2)
    assert "Traceback" not in second.stderr


def test_skipped_target_shows_as_skip_in_the_table(tmp_path, write_config):
    state = tmp_path / "state.json"
    path = write_config(config_text([{"name": "refused", "url": f"http://127.0.0.1:{closed_port()}/"}],
                                    extra="[breaker]\nfailure_threshold = 1\n"))
    args = ("--config", str(path), "--once", "--state-file", str(state))
    run_cli(*args)
    second = run_cli(*args)
    assert second.returncode == 1, second.stderr
    rows = [line.split() for line in second.stdout.splitlines() if "refused" in line.split()[1:2]]
    assert rows and rows[0][0] == "SKIP", second.stdout
