"""The send rate's schedule (domain.rate_limit): tables of fixed times, no clock."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from domain.rate_limit import Rate, capacity, next_slot, parse_rate, reserve, until_free

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HORIZON = timedelta(seconds=1)
FIVE = parse_rate("5/s")  # one email every 200 ms


def ms(n: float) -> datetime:
    return T0 + timedelta(milliseconds=n)


@pytest.mark.parametrize(
    ("case", "last_slot", "count", "rate", "slots", "stored"),
    [
        ("first use: the first email at once", None, 3, FIVE, [0, 200, 400], 400),
        ("first use: no more than the horizon holds", None, 10, FIVE, [0, 200, 400, 600, 800], 800),
        ("an idle spell earns no burst: one at once, then spaced", ms(-3_600_000), 3, FIVE, [0, 200, 400], 400),
        ("just after the last slot: one interval after it", ms(-50), 2, FIVE, [150, 350], 350),
        ("a burst is refused: the horizon is taken", ms(800), 5, FIVE, [], 800),
        ("part of the horizon is free", ms(400), 5, FIVE, [600, 800], 800),
        ("restart while slots were ahead: after them", ms(600), 1, FIVE, [800], 800),
        ("a stepped-back clock: from the horizon, not an hour ahead", ms(3_600_000), 1, FIVE, [], 1000),
        ("a slow rate: at least one, when its slot is within the horizon", None, 3, parse_rate("1000/h"), [0], 0),
        ("a slow rate: none until the next slot is within it", ms(-1000), 1, parse_rate("1000/h"), [], -1000),
        ("the rate changed: spaced at the new one", ms(0), 2, parse_rate("10/s"), [100, 200], 200),
        ("nothing asked for: nothing changes", ms(-100), 0, FIVE, [], -100),
    ],
)
def test_reserve(
    case: str, last_slot: datetime | None, count: int, rate: Rate, slots: list[float], stored: float
) -> None:
    reservation = reserve(last_slot, T0, count, rate, HORIZON)
    assert reservation.slots == tuple(ms(n) for n in slots), case
    assert reservation.last_slot == ms(stored), case


@pytest.mark.parametrize(
    ("last_slot", "rate", "free", "wait"),
    [
        (None, FIVE, 5, timedelta(0)),
        (ms(800), FIVE, 0, timedelta(microseconds=1)),  # the slot at 1 s, just beyond the horizon
        (ms(600), FIVE, 1, timedelta(0)),  # the slot at 800 ms
        (ms(3_600_000), FIVE, 0, timedelta(milliseconds=200, microseconds=1)),  # clamped to the horizon
        (ms(-1000), parse_rate("1000/h"), 0, timedelta(milliseconds=1600, microseconds=1)),
    ],
)
def test_capacity_and_how_long_until_a_slot_is_free(
    last_slot: datetime | None, rate: Rate, free: int, wait: timedelta
) -> None:
    assert capacity(last_slot, T0, rate, HORIZON) == free
    assert until_free(last_slot, T0, rate, HORIZON) == wait
    if free == 0:  # waiting that long is enough, and needed (from what a reservation of none stored)
        stored = reserve(last_slot, T0, 0, rate, HORIZON).last_slot
        assert capacity(stored, T0 + wait, rate, HORIZON) >= 1
        assert capacity(stored, T0 + wait - timedelta(microseconds=1), rate, HORIZON) == 0


def test_a_stepped_back_clock_is_clamped_once_and_the_schedule_goes_on_from_there() -> None:
    first = reserve(ms(3_600_000), T0, 1, FIVE, HORIZON)
    assert first.slots == () and first.last_slot == ms(1000)
    later = T0 + until_free(first.last_slot, T0, FIVE, HORIZON)
    assert reserve(first.last_slot, later, 1, FIVE, HORIZON).slots == (ms(1200),)


@pytest.mark.parametrize("text", ["1/s", "3/s", "7/s", "14/s", "1000/h", "5/m", "100000/d", "999999/s"])
def test_the_interval_rounds_up_so_the_rate_is_never_exceeded(text: str) -> None:
    rate = parse_rate(text)
    assert rate.interval * rate.count >= rate.per
    assert (rate.interval - timedelta(microseconds=1)) * rate.count < rate.per  # and by no more


def test_next_slot_is_never_before_now() -> None:
    assert next_slot(ms(-10_000), T0, FIVE, HORIZON) == T0
    assert next_slot(None, T0, FIVE, HORIZON) == T0


@pytest.mark.parametrize("seed", range(5))
def test_reservers_taking_turns_never_get_slots_closer_than_the_interval(seed: int) -> None:
    """Any sequence of reservations (the row lock makes them a sequence): slots at
    least an interval apart, none before its reservation or beyond its horizon, and
    never more than count + 1 in any window of ``per``."""
    rng = random.Random(seed)
    rate = parse_rate(rng.choice(["5/s", "14/s", "3/s", "100/m"]))
    now, last_slot = T0, None
    slots: list[datetime] = []
    for _ in range(300):
        now += timedelta(milliseconds=rng.choice([0, 0, 1, 37, 150, 900, 2500]))
        reservation = reserve(last_slot, now, rng.randint(0, 6), rate, HORIZON)
        assert all(now <= slot < now + HORIZON for slot in reservation.slots)
        slots += reservation.slots
        last_slot = reservation.last_slot
    assert slots == sorted(slots) and len(slots) > 50
    assert all(b - a >= rate.interval for a, b in itertools.pairwise(slots))
    assert all(slots[i + rate.count] - slots[i] >= rate.per for i in range(len(slots) - rate.count))


@pytest.mark.parametrize(
    ("text", "count", "per"),
    [("14/s", 14, timedelta(seconds=1)), ("1000/h", 1000, timedelta(hours=1)), (" 5 / m ", 5, timedelta(minutes=1))],
)
def test_parse_rate(text: str, count: int, per: timedelta) -> None:
    assert parse_rate(text) == Rate(count, per)
    assert str(parse_rate(text)) == text.replace(" ", "")


@pytest.mark.parametrize("text", ["", "14", "14/w", "0/s", "-1/s", "1.5/s", "14 per s"])
def test_invalid_rates_say_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid rate"):
        parse_rate(text)
