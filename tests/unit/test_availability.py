from __future__ import annotations

from itertools import pairwise
from random import Random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.availability import (
    MINUTES_PER_DAY,
    NO_AVAILABILITY,
    WEEKDAYS,
    Availability,
    InvalidAvailability,
    TimeRange,
    format_minutes,
    parse_availability,
)


def r(start: str, end: str) -> dict[str, str]:
    return {"start": start, "end": end}


def minutes(text: str) -> int:
    hours, mins = text.split(":")
    return int(hours) * 60 + int(mins)


def tr(start: str, end: str) -> TimeRange:
    return TimeRange(minutes(start), minutes(end))


@pytest.mark.parametrize(
    ("raw", "weekday", "expected"),
    [
        ({"monday": [r("09:00", "12:00")]}, 0, (tr("09:00", "12:00"),)),
        # Sorted by start, whatever the input order.
        (
            {"tuesday": [r("14:00", "16:00"), r("08:00", "09:30")]},
            1,
            (tr("08:00", "09:30"), tr("14:00", "16:00")),
        ),
        # Touching ranges are fine; they are kept as given.
        (
            {"wednesday": [r("10:00", "11:00"), r("09:00", "10:00")]},
            2,
            (tr("09:00", "10:00"), tr("10:00", "11:00")),
        ),
        # 24:00 is the end of the day.
        ({"sunday": [r("22:00", "24:00")]}, 6, (TimeRange(22 * 60, 1440),)),
        ({"saturday": [r("00:00", "24:00")]}, 5, (TimeRange(0, 1440),)),
        ({"friday": [r("23:59", "24:00")]}, 4, (TimeRange(1439, 1440),)),
        # A day with an empty list has no ranges; other days are empty too.
        ({"thursday": []}, 3, ()),
        ({"monday": [r("09:00", "12:00")]}, 1, ()),
        # Fields a producer added are ignored.
        ({"monday": [{"start": "09:00", "end": "10:00", "note": "x"}]}, 0, (tr("09:00", "10:00"),)),
    ],
)
def test_parses_valid_availability(raw: dict[str, object], weekday: int, expected: tuple[TimeRange, ...]) -> None:
    assert parse_availability(raw).on(weekday) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"tuesday": [r("08:00", "09:00"), r("10:00", "09:00")]},
            "availability.tuesday[1]: end 09:00 is not after start 10:00",
        ),
        ({"monday": [r("10:00", "10:00")]}, "availability.monday[0]: end 10:00 is not after start 10:00"),
        ({"funday": [r("09:00", "10:00")]}, "availability.funday: unknown weekday"),
        ({"Monday": [r("09:00", "10:00")]}, "availability.Monday: unknown weekday"),
        ({"monday": [r("9:5", "10:00")]}, "availability.monday[0].start: '9:5' is not a time HH:MM"),
        ({"monday": [r("09:00", "10:60")]}, "availability.monday[0].end: '10:60' is not a time HH:MM"),
        ({"monday": [r("09:00", "25:00")]}, "availability.monday[0].end: '25:00' is not a time HH:MM"),
        ({"monday": [r("09:00", "10:00:00")]}, "availability.monday[0].end: '10:00:00' is not a time HH:MM"),
        ({"monday": [r(" 09:00", "10:00")]}, "availability.monday[0].start: ' 09:00' is not a time HH:MM"),
        # Non-ASCII digits are not digits here.
        (
            {"monday": [r("\u0660\u0669:00", "10:00")]},
            "availability.monday[0].start: '\u0660\u0669:00' is not a time HH:MM",
        ),
        ({"monday": [{"start": 9, "end": "10:00"}]}, "availability.monday[0].start: 9 is not a time HH:MM"),
        ({"monday": [{"start": None, "end": "10:00"}]}, "availability.monday[0].start: None is not a time HH:MM"),
        ({"monday": [{"end": "10:00"}]}, "availability.monday[0].start: missing"),
        ({"monday": [{"start": "09:00"}]}, "availability.monday[0].end: missing"),
        ({"monday": [r("24:00", "24:00")]}, "availability.monday[0].start: 24:00 is only allowed as an end"),
        (
            {"monday": [r("09:00", "11:00"), r("10:30", "12:00")]},
            "availability.monday: ranges 09:00-11:00 and 10:30-12:00 overlap",
        ),
        # Reported in sorted order, whatever the input order.
        (
            {"friday": [r("10:30", "12:00"), r("09:00", "11:00")]},
            "availability.friday: ranges 09:00-11:00 and 10:30-12:00 overlap",
        ),
        (
            {"monday": [r("09:00", "10:00"), r("09:00", "10:00")]},
            "availability.monday: ranges 09:00-10:00 and 09:00-10:00 overlap",
        ),
        (
            {"monday": [r("09:00", "12:00"), r("10:00", "11:00")]},
            "availability.monday: ranges 09:00-12:00 and 10:00-11:00 overlap",
        ),
        ({"monday": "09:00-10:00"}, "availability.monday: expected a list of ranges, got str"),
        ({"monday": {"start": "09:00", "end": "10:00"}}, "availability.monday: expected a list of ranges, got dict"),
        ({"monday": ["09:00-10:00"]}, 'availability.monday[0]: expected {"start": "HH:MM", "end": "HH:MM"}, got str'),
        ([], "availability: expected a mapping of weekday to ranges, got list"),
        (None, "availability: expected a mapping of weekday to ranges, got NoneType"),
    ],
)
def test_rejects_invalid_availability_naming_place_and_problem(raw: object, message: str) -> None:
    with pytest.raises(InvalidAvailability) as raised:
        parse_availability(raw)
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    ("raw", "empty"),
    [
        ({}, True),
        ({"monday": [], "sunday": []}, True),
        ({"sunday": [r("10:00", "11:00")]}, False),
    ],
)
def test_is_empty_means_no_phone_availability(raw: dict[str, object], empty: bool) -> None:
    assert parse_availability(raw).is_empty is empty


def test_no_availability_constant_is_empty() -> None:
    assert NO_AVAILABILITY.is_empty
    assert parse_availability({}) == NO_AVAILABILITY


def test_round_trips_through_the_wire_shape() -> None:
    raw = {
        "monday": [r("08:00", "10:00"), r("14:00", "18:00")],
        "wednesday": [r("09:30", "24:00")],
    }
    availability = parse_availability(raw)
    assert availability.as_mapping() == raw
    assert parse_availability(availability.as_mapping()) == availability


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"monday": [], "sunday": []},
        {"monday": [r("08:00", "10:00"), r("14:00", "18:00")], "wednesday": [r("09:30", "24:00")]},
        {"tuesday": [r("14:00", "16:00"), r("08:00", "09:30")]},
        {"wednesday": [r("10:00", "11:00"), r("09:00", "10:00")]},
        {"saturday": [r("00:00", "24:00")], "friday": [r("23:59", "24:00")], "thursday": [r("00:00", "00:01")]},
        {"monday": [{"start": "09:00", "end": "10:00", "note": "x"}]},
        {day: [r("07:05", "12:00"), r("12:00", "12:30"), r("17:45", "20:15")] for day in WEEKDAYS},
    ],
)
def test_from_mapping_reads_back_what_parse_accepted(raw: dict[str, object]) -> None:
    parsed = parse_availability(raw)
    stored = Availability.from_mapping(parsed.as_mapping())
    assert stored == parsed
    assert stored.as_mapping() == parsed.as_mapping()
    assert stored.joined == parsed.joined
    assert stored.is_empty is parsed.is_empty
    assert hash(stored) == hash(parsed)


@st.composite
def availabilities(draw: st.DrawFn) -> Availability:
    """Valid availabilities: per day some of the stretches between sorted boundaries,
    so ranges may touch but never overlap; 0 and 24:00 included."""
    days = []
    for _ in WEEKDAYS:
        bounds = draw(st.lists(st.integers(0, MINUTES_PER_DAY), unique=True, max_size=8).map(sorted))
        stretches = list(pairwise(bounds))
        kept = draw(st.lists(st.booleans(), min_size=len(stretches), max_size=len(stretches)))
        days.append(tuple(TimeRange(start, end) for (start, end), keep in zip(stretches, kept, strict=True) if keep))
    return Availability(days=tuple(days))


@given(availabilities(), st.randoms())
def test_from_mapping_round_trips_any_valid_availability(availability: Availability, rng: Random) -> None:
    # As it comes in: ranges in any order, the empty days sometimes named.
    raw: dict[str, list[dict[str, str]]] = {}
    for name, ranges in zip(WEEKDAYS, availability.days, strict=True):
        items = [r(format_minutes(t.start), format_minutes(t.end)) for t in ranges]
        rng.shuffle(items)
        if items or rng.random() < 0.5:
            raw[name] = items
    parsed = parse_availability(raw)
    assert parsed == availability
    assert Availability.from_mapping(parsed.as_mapping()) == parsed


def test_availability_is_immutable() -> None:
    availability = parse_availability({"monday": [r("08:00", "10:00")]})
    with pytest.raises(AttributeError):
        availability.days = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("days", "message"),
    [
        (((),) * 6, "availability: expected 7 weekdays, got 6"),
        (
            ((tr("10:00", "11:00"), tr("09:00", "10:00")),) + ((),) * 6,
            "availability.monday: ranges are not sorted by start",
        ),
        (
            ((), (tr("09:00", "11:00"), tr("10:00", "12:00"))) + ((),) * 5,
            "availability.tuesday: ranges 09:00-11:00 and 10:00-12:00 overlap",
        ),
    ],
)
def test_direct_construction_checks_the_same_invariants(days: tuple[tuple[TimeRange, ...], ...], message: str) -> None:
    with pytest.raises(InvalidAvailability, match=message):
        Availability(days=days)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (-1, 60, "start -1 is outside 0-1439 minutes"),
        (1440, 1441, "start 1440 is outside 0-1439 minutes"),
        (0, 1441, "end 1441 is outside 1-1440 minutes"),
        (600, 540, "end 09:00 is not after start 10:00"),
    ],
)
def test_time_range_rejects_impossible_bounds(start: int, end: int, message: str) -> None:
    with pytest.raises(InvalidAvailability, match=message):
        TimeRange(start, end)


def test_time_range_prints_as_hh_mm() -> None:
    assert str(TimeRange(9 * 60 + 5, 1440)) == "09:05-24:00"


@pytest.mark.parametrize(
    ("ranges", "joined"),
    [
        ([r("09:00", "10:00"), r("10:00", "11:00")], (tr("09:00", "11:00"),)),
        ([r("09:00", "10:00"), r("10:00", "11:00"), r("11:00", "12:00")], (tr("09:00", "12:00"),)),
        ([r("09:00", "10:00"), r("10:05", "11:00")], (tr("09:00", "10:00"), tr("10:05", "11:00"))),
        ([], ()),
    ],
)
def test_joined_treats_touching_ranges_as_one_stretch(
    ranges: list[dict[str, str]], joined: tuple[TimeRange, ...]
) -> None:
    availability = parse_availability({"thursday": ranges})
    assert availability.joined[3] == joined
    assert len(availability.on(3)) == len(ranges)  # the ranges themselves stay as given
