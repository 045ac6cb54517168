"""The state file (greenmon.statefile): the breaker table saved atomically and loaded again,
what a missing, corrupt or unreadable file does (a WARNING, closed breakers, never a failed
run), and which breakers a run starts from.

Real files in tmp_path; the engine tests check real targets on a local server.
"""

from __future__ import annotations

import json
import logging

import pytest

from greenmon import statefile
from greenmon.breaker import CLOSED, HALF_OPEN, OPEN, BreakerState
from greenmon.config import parse_config
from greenmon.engine import Engine
from greenmon.errors import Failure
from support.configs import config_text
from support.helpers import FakeClock
from support.servers import HTTPFarm, reply

BOOM = Failure("http", "500", "HTTP 500 Internal Server Error")
REFUSED = Failure("connection", "refused", "connection refused")
T0 = 1_800_000_000.0


def leftovers(folder) -> list[str]:
    """Temporary files of a save that were not renamed or removed."""
    return [path.name for path in folder.iterdir() if path.name.startswith(".greenmon-state-")]


# --- Saving and loading ---------------------------------------------------------------------------

def test_state_file_round_trip(tmp_path):
    path = str(tmp_path / "state.json")
    table = {
        "open-one": BreakerState(OPEN, 3, T0, BOOM),
        "counting": BreakerState(CLOSED, 2, None, REFUSED),
        "healthy": BreakerState(),
    }
    statefile.save(path, table)
    loaded = statefile.load(path)
    assert loaded == {"open-one": table["open-one"], "counting": table["counting"]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".greenmon-state-")]


def test_state_file_half_open_is_loaded_as_open(tmp_path):
    path = str(tmp_path / "state.json")
    statefile.save(path, {"api": BreakerState(HALF_OPEN, 3, T0, BOOM)})
    assert statefile.load(path) == {"api": BreakerState(OPEN, 3, T0, BOOM)}


def test_missing_state_file_is_an_empty_table(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert statefile.load(str(tmp_path / "absent.json")) == {}
    assert not caplog.records


def _valid_document() -> str:
    return json.dumps({"version": 1, "breakers": {"api": {
        "state": "open", "failures": 3, "opened_at": T0,
        "failure": {"class": "http", "detail": "500", "error": "HTTP 500"}}}})


@pytest.mark.parametrize("content", [
    pytest.param(b"{not json", id="not-json"),
    pytest.param(_valid_document().encode()[:40], id="truncated"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe\x00garbage", id="binary"),
    pytest.param(b"[1, 2, 3]", id="not-an-object"),
    pytest.param(b"null", id="null"),
    pytest.param(_valid_document().replace('"version": 1', '"version": 99').encode(), id="future-version"),
    pytest.param(_valid_document().replace('"open"', '"ajar"').encode(), id="unknown-state"),
    pytest.param(_valid_document().replace('"http"', '"gremlins"').encode(), id="unknown-class"),
    pytest.param(_valid_document().replace(str(T0), '"yesterday"').encode(), id="bad-opened-at"),
    pytest.param(_valid_document().replace(str(T0), "null").encode(), id="open-without-opened-at"),
    pytest.param(b'{"version": 1, "breakers": []}', id="breakers-not-a-table"),
    pytest.param(b'{"version": 1}', id="no-breakers"),
    pytest.param(_valid_document().replace(str(T0), "NaN").encode(), id="opened-at-nan"),
    pytest.param(_valid_document().replace(str(T0), "Infinity").encode(), id="opened-at-infinite"),
    pytest.param(_valid_document().replace('"failures": 3', '"failures": "three"').encode(), id="bad-failures"),
    pytest.param(_valid_document().replace(', "error": "HTTP 500"', "").encode(), id="failure-without-message"),
])
def test_corrupt_state_file_is_reported_and_ignored(tmp_path, caplog, content):
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="greenmon.statefile"):
        assert statefile.load(str(path)) == {}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()


def test_the_file_is_the_documented_json_document(tmp_path):
    """What another run (or another version) reads: version 1, one entry per breaker that is not
    closed-and-clean, with its failure by class, detail and message."""
    path = tmp_path / "state.json"
    statefile.save(str(path), {"api": BreakerState(OPEN, 3, T0, BOOM), "healthy": BreakerState(),
                               "counting": BreakerState(CLOSED, 1, None, REFUSED)})
    assert json.loads(path.read_text(encoding="utf-8")) == {"version": 1, "breakers": {
        "api": {"state": "open", "failures": 3, "opened_at": T0,
                "failure": {"class": "http", "detail": "500", "error": "HTTP 500 Internal Server Error"}},
        "counting": {"state": "closed", "failures": 1, "opened_at": None,
                     "failure": {"class": "connection", "detail": "refused", "error": "connection refused"}}}}


def test_a_file_written_by_an_earlier_run_loads(tmp_path):
    """A document as version 1 writes it, not one this test just saved: the format is kept."""
    document = {"version": 1, "breakers": {
        "api": {"state": "open", "failures": 3, "opened_at": T0,
                "failure": {"class": "http", "detail": "503", "error": "HTTP 503 Service Unavailable"}},
        "flaky": {"state": "closed", "failures": 2, "opened_at": None,
                  "failure": {"class": "timeout", "detail": "read", "error": "no response within 2 s"}}}}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert statefile.load(str(path)) == {
        "api": BreakerState(OPEN, 3, T0, Failure("http", "503", "HTTP 503 Service Unavailable")),
        "flaky": BreakerState(CLOSED, 2, None, Failure("timeout", "read", "no response within 2 s"))}


def test_a_save_replaces_the_file_whole_by_renaming_a_new_one_over_it(tmp_path):
    """Never rewritten in place: a reader (a cron run starting now) sees the old table or the
    new one, whole. The new table is a new file renamed over the old name."""
    path = tmp_path / "state.json"
    statefile.save(str(path), {"a": BreakerState(OPEN, 3, T0, BOOM), "b": BreakerState(OPEN, 3, T0, BOOM)})
    before = path.stat().st_ino
    statefile.save(str(path), {"b": BreakerState(CLOSED, 1, None, REFUSED)})
    assert path.stat().st_ino != before
    assert statefile.load(str(path)) == {"b": BreakerState(CLOSED, 1, None, REFUSED)}
    assert leftovers(tmp_path) == []


def test_a_save_that_fails_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "state.json"
    kept = {"api": BreakerState(OPEN, 3, T0, BOOM)}
    statefile.save(str(path), kept)
    unwritable = {"api": BreakerState(OPEN, 3, T0, Failure("http", "500", object()))}  # not JSON
    with pytest.raises(TypeError):
        statefile.save(str(path), unwritable)
    assert statefile.load(str(path)) == kept
    assert leftovers(tmp_path) == []


def test_save_or_warn_reports_a_failed_save_and_returns(tmp_path, caplog):
    """The sweep's results stand when the state cannot be saved (a folder gone, a full disk)."""
    path = tmp_path / "gone" / "state.json"
    with caplog.at_level(logging.WARNING, logger="greenmon.statefile"):
        statefile.save_or_warn(str(path), {"api": BreakerState(OPEN, 3, T0, BOOM)})
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(f"cannot save state file {path}: "), warning.getMessage()
    assert not path.exists()


def test_an_unreadable_state_file_is_reported_and_ignored(tmp_path, caplog):
    """A path that cannot be read (here a folder: root reads files of any mode) is a WARNING
    and closed breakers, never a failed run."""
    path = tmp_path / "state.json"
    path.mkdir()
    with caplog.at_level(logging.WARNING, logger="greenmon.statefile"):
        assert statefile.load(str(path)) == {}
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"state file {path} is unreadable" in warning.getMessage()


# --- The breakers a run starts from ---------------------------------------------------------------

def _config(state: str, targets: list[dict]):
    return parse_config(config_text(targets, monitor={"state_file": state}), "<test>")


def test_a_run_starts_from_the_file_keeping_only_its_enabled_targets(tmp_path):
    state = str(tmp_path / "state.json")
    statefile.save(state, {"api": BreakerState(OPEN, 3, T0, BOOM), "off": BreakerState(OPEN, 3, T0, BOOM),
                           "removed": BreakerState(CLOSED, 2, None, REFUSED)})
    config = _config(state, [{"name": "api", "url": "http://127.0.0.1:9/api"},
                             {"name": "off", "url": "http://127.0.0.1:9/off", "enabled": False},
                             {"name": "new", "url": "http://127.0.0.1:9/new"}])
    assert statefile.initial_breakers(config, None) == {"api": BreakerState(OPEN, 3, T0, BOOM)}


def test_without_a_state_file_a_run_starts_with_closed_breakers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = parse_config(config_text([{"name": "api", "url": "http://127.0.0.1:9/api"}]), "<test>")
    assert config.monitor.state_file == ""
    assert statefile.initial_breakers(config, None) == {}


def test_a_reload_keeps_the_running_table_pruned_in_place_and_does_not_read_the_file(tmp_path):
    """Checks still in flight record into the table they started with: a reload keeps that very
    table (what the file says now is older), dropping the targets the new config lacks."""
    state = str(tmp_path / "state.json")
    statefile.save(state, {"api": BreakerState(CLOSED, 2, None, REFUSED)})
    running = {"api": BreakerState(OPEN, 3, T0, BOOM), "removed": BreakerState(OPEN, 3, T0, BOOM)}
    config = _config(state, [{"name": "api", "url": "http://127.0.0.1:9/api"},
                             {"name": "new", "url": "http://127.0.0.1:9/new"}])
    kept = statefile.initial_breakers(config, running)
    assert kept is running
    assert running == {"api": BreakerState(OPEN, 3, T0, BOOM)}


# --- Through the engine ---------------------------------------------------------------------------

def test_engine_starts_closed_from_a_corrupt_state_file(tmp_path, caplog):
    state = tmp_path / "state.json"
    state.write_text('{"version": 1, "breakers": {"api": {"state": "open"', encoding="utf-8")
    with HTTPFarm({"/t": reply()}) as farm:
        config = parse_config(config_text([{"name": "api", "url": farm.url("/t")}],
                                          monitor={"state_file": str(state)}), "<test>")
        with caplog.at_level(logging.WARNING, logger="greenmon.statefile"):
            engine = Engine(config)
        try:
            [result] = engine.sweep()
        finally:
            engine.close()
        hits = farm.hits("/t")
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert (result.ok, result.attempts, hits) == (True, 1, 1)
    assert statefile.load(str(state)) == {}  # rewritten as a valid (empty) table


def test_engine_saves_and_reloads_its_breaker_table(tmp_path):
    state = str(tmp_path / "state.json")
    clock = FakeClock(T0)
    with HTTPFarm({"/t": reply("500 Internal Server Error")}) as farm:
        config = parse_config(config_text([{"name": "api", "url": farm.url("/t")}],
                                          monitor={"state_file": state},
                                          breaker={"failure_threshold": 1, "recovery_timeout": 60.0}), "<test>")
        first = Engine(config, clock=clock)
        try:
            first.sweep()
        finally:
            first.close()
        assert statefile.load(state)["api"].state == OPEN
        second = Engine(config, clock=clock)
        try:
            [skipped] = second.sweep()
        finally:
            second.close()
        hits = farm.hits("/t")
    assert (skipped.attempts, skipped.breaker, skipped.detail, hits) == (0, OPEN, "500", 1)
