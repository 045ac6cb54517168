"""greenmon's own work in slices (greenmon.cooperative): it yields to the loop, and it ends even
on a loop that is never idle.

A worker process checking thousands of targets a second keeps its loop busy
all the time; a job that waited for an idle loop there (gevent.idle) never
finished, and /metrics was never rendered. These tests keep a loop busy with
greenlets that are always ready to run, and check what happens, in order,
not how long it takes (the bounds are generous waits, not measurements).
"""

from __future__ import annotations

import gevent
import gevent.event

from greenmon import cooperative
from greenmon.cooperative import AGED_WAIT_S, IDLE_WAIT_S, Slices


def busy_loop(greenlets: int = 3):
    """Greenlets that are always ready to run: the loop is never idle while they live."""
    stop = gevent.event.Event()
    turns = [0]

    def spin():
        while not stop.is_set():
            turns[0] += 1
            gevent.sleep(0)
    return stop, turns, [gevent.spawn(spin) for _ in range(greenlets)]


def test_a_job_in_slices_ends_on_a_loop_that_is_never_idle():
    stop, turns, spinners = busy_loop()
    try:
        done = []

        def job():
            slices = Slices(budget_s=0.0)   # yield after every item
            for item in slices.each(range(20)):
                done.append(item)
        worker = gevent.spawn(job)
        worker.join(timeout=60)
        assert worker.dead and done == list(range(20))
        assert turns[0] > 0   # the busy greenlets ran meanwhile: the job yielded to them
    finally:
        stop.set()
        gevent.joinall(spinners, timeout=5)


def test_a_job_yields_to_others_between_its_slices():
    order = []

    def other():
        order.append("other")
    gevent.spawn(other)
    slices = Slices(budget_s=0.0)
    order.append("first slice")
    slices.tick()
    order.append("second slice")
    assert order == ["first slice", "other", "second slice"]


def test_a_job_that_has_run_long_on_a_never_idle_loop_waits_less_for_it(monkeypatch):
    """A job yields waiting up to IDLE_WAIT_S for an idle loop; once it has run AGED_S, up to
    AGED_WAIT_S, and so it ends in time on a saturated loop (a worker's share of /metrics)."""
    waits = []

    def recorded(longest_s):
        waits.append(longest_s)
        real(longest_s)

    real = cooperative.yield_to_loop
    monkeypatch.setattr(cooperative, "yield_to_loop", recorded)
    stop, turns, spinners = busy_loop()
    try:
        def job():
            slices = Slices(budget_s=0.0)
            while waits[-3:] != [AGED_WAIT_S] * 3:   # until it has waited the short wait thrice
                slices.tick()
        worker = gevent.spawn(job)
        worker.join(timeout=60)
        assert worker.dead
    finally:
        stop.set()
        gevent.joinall(spinners, timeout=5)
    aged = waits.index(AGED_WAIT_S)
    assert aged > 0 and set(waits[:aged]) == {IDLE_WAIT_S} and set(waits[aged:]) == {AGED_WAIT_S}, waits
