"""The database's clock on this host's monotonic clock
(streams.persistence.send_rate.DatabaseClock): readings simulated with a known
offset and known delays, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.persistence.send_rate import DatabaseClock, SendSlots

DB_AHEAD = 1_796_000_000.0  # the database's clock minus this host's monotonic one (s)


def reading(at: float, delay: float) -> tuple[datetime, float]:
    """The database read its clock at ``at`` (this host's monotonic time); the answer
    arrived ``delay`` later."""
    return datetime.fromtimestamp(at + DB_AHEAD, UTC), at + delay


def test_the_fastest_recent_answer_gives_the_offset_and_it_never_makes_a_slot_early() -> None:
    clock = DatabaseClock()
    offsets = [clock.offset(*reading(100.0 + i, delay)) for i, delay in enumerate([0.030, 0.002, 0.050, 0.010])]
    assert offsets[0] == pytest.approx(DB_AHEAD - 0.030)
    assert offsets[1:] == [pytest.approx(DB_AHEAD - 0.002)] * 3  # slow answers later do not move it
    assert all(offset <= DB_AHEAD for offset in offsets)  # a slot is never waited for too short


def test_two_claims_answered_at_different_speeds_keep_their_slots_an_interval_apart() -> None:
    clock = DatabaseClock()
    first_at, first_arrival = reading(100.0, 0.002)
    first = SendSlots((first_at + timedelta(milliseconds=800),), first_at, clock.offset(first_at, first_arrival))
    second_at, second_arrival = reading(100.1, 0.040)  # held up: the answer took 40 ms
    second = SendSlots((first_at + timedelta(seconds=1),), second_at, clock.offset(second_at, second_arrival))
    assert second.deadlines[0] - first.deadlines[0] == pytest.approx(0.2, abs=1e-6)


def test_old_readings_expire_and_a_clock_set_back_starts_afresh() -> None:
    clock = DatabaseClock()
    clock.offset(*reading(100.0, 0.001))
    later = clock.offset(*reading(100.0 + DatabaseClock.WINDOW + 1, 0.020))
    assert later == pytest.approx(DB_AHEAD - 0.020)  # the fast one is too old to count

    clock.offset(*reading(200.0, 0.001))
    at, arrival = reading(201.0, 0.001)
    set_back = clock.offset(at - timedelta(seconds=2), arrival)  # NTP stepped the database's clock back
    assert set_back == pytest.approx(DB_AHEAD - 2.001)
