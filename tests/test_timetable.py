"""The daemon's timetable (greenmon.timetable): pure, so every case runs on given times, no clock.

What an operator relies on: checks of N targets with one interval are spread
over it, a target's offset is stable (the same in every process, so a restart
keeps the phase), the first check comes within the first interval, and a
loop that fell behind does not make checks burst.
"""

from __future__ import annotations

import hashlib

import pytest

from greenmon.timetable import Slot, Timetable, phase, sparse_origins

EPOCH = 1_800_000_000.0


def test_phase_is_a_stable_digest_of_the_name():
    digest = hashlib.sha256(b"users-api").digest()
    assert phase("users-api") == int.from_bytes(digest[8:16], "big") / 2 ** 64
    assert 0 <= phase("users-api") < 1
    assert phase("users-api") != phase("users-api ")


def test_the_phase_does_not_follow_the_shard_hash():
    # --shard uses bytes 0-8: the targets of one shard must still spread over the interval.
    names = [f"t{i}" for i in range(4000)]
    in_shard_0 = [n for n in names if int.from_bytes(hashlib.sha256(n.encode()).digest()[:8], "big") % 2 == 0]
    halves = sum(phase(n) < 0.5 for n in in_shard_0)
    assert 0.45 < halves / len(in_shard_0) < 0.55


@pytest.mark.parametrize("count, interval", [(1000, 10.0), (300, 60.0), (100, 1.0)])
def test_targets_with_one_interval_are_spread_evenly_over_it(count, interval):
    slots = [Slot.of(f"target-{i}", interval) for i in range(count)]
    buckets = [0] * 10
    for slot in slots:
        assert 0 <= slot.offset < interval
        buckets[int(slot.offset / interval * 10)] += 1
    # Each tenth of the interval holds about a tenth of the targets (never all at once).
    assert max(buckets) < count / 10 * 1.6
    assert min(buckets) > count / 10 * 0.4


@pytest.mark.parametrize("now", [EPOCH, EPOCH + 0.001, EPOCH + 7.3, EPOCH + 59.999])
def test_the_next_due_time_is_within_one_interval_at_the_targets_offset(now):
    slot = Slot.of("users-api", 60.0)
    due = slot.next_due(now)
    assert now <= due < now + 60.0
    assert (due - slot.offset) % 60.0 == pytest.approx(0.0, abs=1e-6) or \
        (due - slot.offset) % 60.0 == pytest.approx(60.0, abs=1e-6)


def test_a_restart_lands_on_the_same_offsets():
    # Two processes started at different times book the same due times (the epoch anchors them).
    first = Slot.of("users-api", 15.0).next_due(EPOCH + 3.0)
    later = Slot.of("users-api", 15.0).next_due(EPOCH + 3.0 + 4 * 15.0 - 0.5)
    assert later - first == pytest.approx(4 * 15.0) or later - first == pytest.approx(3 * 15.0)


def test_pop_due_hands_out_what_is_due_earliest_first_and_books_the_next_turn():
    slots = [Slot("a", 10.0, 1.0), Slot("b", 10.0, 5.0), Slot("c", 4.0, 2.0)]
    table = Timetable(slots, now=EPOCH)
    assert len(table) == 3
    assert table.next_at() == EPOCH + 1.0
    due = table.pop_due(EPOCH + 5.0)
    assert [(d.slot.name, d.at - EPOCH) for d in due] == [("a", 1.0), ("c", 2.0), ("b", 5.0)]
    # Booked again: a at 11, c at 6, b at 15.
    assert table.next_at() == EPOCH + 6.0
    assert [(d.slot.name, d.at - EPOCH) for d in table.pop_due(EPOCH + 9.0)] == [("c", 6.0)]
    assert [(d.slot.name, d.at - EPOCH) for d in table.pop_due(EPOCH + 11.0)] == [("c", 10.0), ("a", 11.0)]


def test_per_target_intervals_give_check_counts_in_proportion():
    slots = [Slot.of("fast", 1.0), Slot.of("slow", 5.0), Slot.of("default", 2.0)]
    table = Timetable(slots, now=EPOCH)
    counts = {"fast": 0, "slow": 0, "default": 0}
    for step in range(1, 1001):   # 100 s, in 0.1 s steps
        for due in table.pop_due(EPOCH + step * 0.1):
            counts[due.slot.name] += 1
    assert counts == {"fast": 100, "slow": 20, "default": 50}


def test_a_timetable_that_fell_behind_does_not_burst():
    table = Timetable([Slot("a", 1.0, 0.5)], now=EPOCH)
    # The loop was held for 10 intervals: one turn is handed out, not ten.
    due = table.pop_due(EPOCH + 10.2)
    assert [d.at - EPOCH for d in due] == [0.5]
    assert table.next_at() == EPOCH + 10.5


def test_replace_keeps_the_turn_of_a_kept_slot_and_books_new_ones():
    kept, gone = Slot("kept", 10.0, 3.0), Slot("gone", 10.0, 4.0)
    table = Timetable([kept, gone], now=EPOCH)
    table.pop_due(EPOCH + 3.5)                        # kept's next turn: EPOCH + 13
    new = Slot("new", 10.0, 8.0)
    changed = Slot("kept2", 10.0, 1.0)
    table.replace([kept, new, changed], now=EPOCH + 6.0)
    assert "gone" not in table and "new" in table
    due = {d.slot.name: d.at - EPOCH for d in table.pop_due(EPOCH + 20.0)}
    assert due == {"new": 8.0, "kept2": 11.0, "kept": 13.0}


def test_replace_with_a_new_interval_books_the_new_phase():
    table = Timetable([Slot.of("a", 10.0)], now=EPOCH)
    table.replace([Slot.of("a", 30.0)], now=EPOCH + 1.0)
    slot = Slot.of("a", 30.0)
    assert table.next_at() == pytest.approx(slot.next_due(EPOCH + 1.0))


# --- Keep-alive only where the schedule comes back soon ------------------------------------------

def test_origins_checked_seldom_close_their_connections():
    busy = [(f"http://127.0.0.1:8080/svc/{i}", Slot.of(f"busy-{i}", 10.0)) for i in range(10)]  # 1 check/s
    lonely = [("https://api.example.test/health", Slot.of("lonely", 60.0))]
    pair = [("http://10.0.0.9:80/a", Slot.of("pair-a", 6.0)),   # together: one check every 3 s
            ("http://10.0.0.9:80/b", Slot.of("pair-b", 6.0))]
    mixed_case = [("HTTPS://Api.Example.TEST/other", Slot.of("same-origin", 5.0))]
    assert sparse_origins(busy + lonely + pair) == {"lonely"}
    # The origin is scheme, host (any case) and port: these two share one, every 4.6 s together.
    assert sparse_origins(lonely + mixed_case, max_gap_s=4.0) == {"lonely", "same-origin"}
    assert sparse_origins(lonely + mixed_case, max_gap_s=5.0) == set()
