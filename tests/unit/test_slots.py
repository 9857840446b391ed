from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.availability import Availability, TimeRange, parse_availability
from domain.slots import BookedCalls, NoSlot, Slot, find_slot

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
KOLKATA = ZoneInfo("Asia/Kolkata")
MIN = timedelta(minutes=1)


def at(text: str, zone: tzinfo = BERLIN) -> datetime:
    """A local wall time; an ambiguous one is its first occurrence (fold=0)."""
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def hours(**days: str) -> Availability:
    """``hours(monday="09:00-12:00 14:00-17:00")``."""
    return parse_availability(
        {
            day: [{"start": part.split("-")[0], "end": part.split("-")[1]} for part in text.split()]
            for day, text in days.items()
        }
    )


WEEK = hours(**{day: "09:00-12:00 14:00-17:00" for day in ("monday", "tuesday", "wednesday", "thursday", "friday")})


def calls(*pairs: str, zone: tzinfo = BERLIN) -> list[tuple[datetime, datetime]]:
    """``calls("2026-03-02 09:00/09:30")``: local start, and end on the same day."""
    result = []
    for pair in pairs:
        start, end = pair.split("/")
        result.append((at(start, zone), at(f"{start[:10]} {end}", zone)))
    return result


def start_of(result: Slot | NoSlot) -> datetime:
    assert isinstance(result, Slot), result
    return result.start


# -- ordinary weeks (Berlin, week of Monday 2 March 2026, CET = UTC+1) --------------


@pytest.mark.parametrize(
    ("availability", "booked", "now", "options", "expected"),
    [
        pytest.param(WEEK, [], "2026-03-02 09:00", {}, "2026-03-02 09:00", id="exactly-at-range-start"),
        pytest.param(WEEK, [], "2026-03-02 07:13", {}, "2026-03-02 09:00", id="before-range"),
        pytest.param(WEEK, [], "2026-03-02 09:00:01", {}, "2026-03-02 09:05", id="second-after-grid"),
        pytest.param(WEEK, [], "2026-03-02 10:35:00.000001", {}, "2026-03-02 10:40", id="microsecond-after-grid"),
        pytest.param(WEEK, [], "2026-03-02 10:35", {}, "2026-03-02 10:35", id="on-grid-inside"),
        pytest.param(WEEK, [], "2026-03-02 12:00", {}, "2026-03-02 14:00", id="at-range-end"),
        pytest.param(WEEK, [], "2026-03-02 11:56", {}, "2026-03-02 14:00", id="last-slot-passed"),
        pytest.param(
            WEEK, [], "2026-03-02 11:30", {"min_notice": 60 * MIN}, "2026-03-02 14:00", id="notice-into-next-range"
        ),
        pytest.param(
            WEEK, [], "2026-03-02 16:30", {"min_notice": 60 * MIN}, "2026-03-03 09:00", id="notice-into-next-day"
        ),
        pytest.param(
            WEEK, [], "2026-03-02 08:00", {"min_notice": 61 * MIN}, "2026-03-02 09:05", id="notice-rounds-up-to-grid"
        ),
        pytest.param(WEEK, [], "2026-03-06 17:00", {}, "2026-03-09 09:00", id="friday-to-monday"),
        pytest.param(
            WEEK,
            [],
            "2026-03-02 11:30",
            {"duration": 30 * MIN},
            "2026-03-02 11:30",
            id="call-ends-exactly-at-range-end",
        ),
        pytest.param(
            WEEK, [], "2026-03-02 11:35", {"duration": 30 * MIN}, "2026-03-02 14:00", id="call-would-run-past-range-end"
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 09:00/09:30"),
            "2026-03-02 08:00",
            {},
            "2026-03-02 09:30",
            id="back-to-back-after-booked",
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 09:10/09:30"),
            "2026-03-02 09:00",
            {"duration": 10 * MIN},
            "2026-03-02 09:00",
            id="back-to-back-before-booked",
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 09:10/09:30"),
            "2026-03-02 09:00",
            {"duration": 15 * MIN},
            "2026-03-02 09:30",
            id="gap-before-booked-too-short",
        ),
        pytest.param(
            WEEK, calls("2026-03-02 09:00/09:31"), "2026-03-02 09:00", {}, "2026-03-02 09:35", id="booked-ends-off-grid"
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 09:00/09:20", "2026-03-02 09:10/10:00", "2026-03-02 10:00/10:05"),
            "2026-03-02 09:00",
            {},
            "2026-03-02 10:05",
            id="overlapping-and-touching-booked",
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 10:00/10:05", "2026-03-02 09:00/09:20", "2026-03-02 09:10/10:00"),
            "2026-03-02 09:00",
            {},
            "2026-03-02 10:05",
            id="booked-given-unsorted",
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 09:00/09:30", "2026-03-02 09:40/12:00"),
            "2026-03-02 09:00",
            {"duration": 10 * MIN},
            "2026-03-02 09:30",
            id="gap-just-long-enough",
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 09:00/09:30", "2026-03-02 09:40/12:00"),
            "2026-03-02 09:00",
            {"duration": 15 * MIN},
            "2026-03-02 14:00",
            id="gap-too-short-next-range",
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 08:00/12:00", "2026-03-02 14:00/17:00"),
            "2026-03-02 07:00",
            {},
            "2026-03-03 09:00",
            id="whole-day-booked",
        ),
        pytest.param(
            WEEK,
            calls("2026-03-02 08:45/09:50"),
            "2026-03-02 09:10",
            {},
            "2026-03-02 09:50",
            id="booked-call-already-running",
        ),
        pytest.param(
            WEEK, calls("2026-03-03 09:00/09:05"), "2026-03-02 17:00", {}, "2026-03-03 09:05", id="booked-next-morning"
        ),
        pytest.param(
            hours(monday="09:03-10:00"), [], "2026-03-02 08:00", {}, "2026-03-02 09:05", id="range-start-off-grid"
        ),
        pytest.param(
            hours(monday="09:01-09:09", tuesday="09:00-10:00"),
            [],
            "2026-03-02 08:00",
            {},
            "2026-03-03 09:00",
            id="no-grid-point-fits-range-today",
        ),
        pytest.param(
            hours(monday="09:00-09:20 09:20-10:00"),
            [],
            "2026-03-02 08:00",
            {"duration": 30 * MIN},
            "2026-03-02 09:00",
            id="touching-ranges-are-one",
        ),
        pytest.param(
            hours(monday="09:00-09:20 09:25-10:00"),
            [],
            "2026-03-02 08:00",
            {"duration": 30 * MIN},
            "2026-03-02 09:25",
            id="separate-ranges-are-not",
        ),
        pytest.param(WEEK, [], "2026-03-02 09:01", {"slot": 15 * MIN}, "2026-03-02 09:15", id="fifteen-minute-grid"),
        pytest.param(
            hours(sunday="23:00-24:00"),
            [],
            "2026-03-01 12:00",
            {"duration": 60 * MIN},
            "2026-03-01 23:00",
            id="range-until-midnight",
        ),
        pytest.param(
            hours(sunday="23:00-24:00", monday="00:00-02:00"),
            [],
            "2026-03-01 12:00",
            {"duration": 65 * MIN},
            "2026-03-02 00:00",
            id="call-never-crosses-midnight",
        ),
    ],
)
def test_finds_the_earliest_free_slot(
    availability: Availability,
    booked: list[tuple[datetime, datetime]],
    now: str,
    options: dict[str, Any],
    expected: str,
) -> None:
    result = find_slot(availability, BERLIN, at(now), booked=booked, **options)
    assert start_of(result) == at(expected)
    assert start_of(result).tzinfo is UTC


def test_slot_end_is_start_plus_duration_defaulting_to_slot() -> None:
    default = find_slot(WEEK, BERLIN, at("2026-03-02 09:00"))
    assert default == Slot(utc("2026-03-02 08:00"), utc("2026-03-02 08:05"))
    fifteen = find_slot(WEEK, BERLIN, at("2026-03-02 09:00"), slot=15 * MIN)
    assert fifteen == Slot(utc("2026-03-02 08:00"), utc("2026-03-02 08:15"))
    long_call = find_slot(WEEK, BERLIN, at("2026-03-02 09:00"), duration=20 * MIN)
    assert long_call == Slot(utc("2026-03-02 08:00"), utc("2026-03-02 08:20"))


def test_now_in_another_zone_is_the_same_instant() -> None:
    assert find_slot(WEEK, BERLIN, utc("2026-03-02 08:00:01")) == find_slot(
        WEEK, BERLIN, at("2026-03-02 03:00:01", NEW_YORK)
    )


def test_summer_time_moves_the_utc_instant() -> None:
    # 09:00 Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    assert start_of(find_slot(WEEK, BERLIN, utc("2026-03-02 05:00"))) == utc("2026-03-02 08:00")
    assert start_of(find_slot(WEEK, BERLIN, utc("2026-06-01 05:00"))) == utc("2026-06-01 07:00")


# -- DST, Europe/Berlin 2026 ---------------------------------------------------------
# 29 March: 02:00 CET (01:00 UTC) becomes 03:00 CEST; 02:00-02:59 do not exist.
# 25 October: 03:00 CEST (01:00 UTC) becomes 02:00 CET; 02:00-02:59 happen twice.
# All instants below are UTC, so that nothing in the table is itself ambiguous.

NIGHT = hours(sunday="01:30-03:30")
SMALL_HOURS = hours(sunday="02:00-03:00")


@pytest.mark.parametrize(
    ("availability", "booked", "now", "options", "expected"),
    [
        # Spring forward: 01:30-01:55 CET, then 03:00-03:25 CEST.
        pytest.param(NIGHT, [], "2026-03-28 22:00", {}, "2026-03-29 00:30", id="spring-range-start"),
        pytest.param(NIGHT, [], "2026-03-29 00:56", {}, "2026-03-29 01:00", id="spring-01:56-skips-gap-to-03:00"),
        pytest.param(
            NIGHT, [], "2026-03-29 00:55", {}, "2026-03-29 00:55", id="spring-call-ending-at-the-jump-is-fine"
        ),
        pytest.param(
            NIGHT,
            [],
            "2026-03-29 00:51",
            {"duration": 10 * MIN},
            "2026-03-29 01:00",
            id="spring-call-never-spans-the-jump",
        ),
        pytest.param(
            NIGHT,
            [(utc("2026-03-29 00:30"), utc("2026-03-29 01:15"))],
            "2026-03-28 22:00",
            {},
            "2026-03-29 01:15",
            id="spring-booked-across-jump",
        ),
        pytest.param(
            NIGHT,
            [(utc("2026-03-29 00:30"), utc("2026-03-29 01:30"))],
            "2026-03-28 22:00",
            {},
            "2026-04-04 23:30",
            id="spring-night-full-next-sunday",
        ),
        pytest.param(
            NIGHT,
            [],
            "2026-03-28 22:00",
            {"duration": 60 * MIN},
            "2026-04-04 23:30",
            id="spring-night-has-no-real-hour-without-the-jump",
        ),
        pytest.param(
            NIGHT,
            [],
            "2026-03-28 22:00",
            {"duration": 30 * MIN},
            "2026-03-29 00:30",
            id="spring-half-hour-before-the-jump",
        ),
        pytest.param(
            SMALL_HOURS, [], "2026-03-28 12:00", {}, "2026-04-05 00:00", id="spring-02:00-03:00-does-not-exist"
        ),
        # Fall back: 01:30-02:55 CEST once, the repeated 02:00-02:55 CET never, 03:00-03:25 CET.
        pytest.param(NIGHT, [], "2026-10-24 20:00", {}, "2026-10-24 23:30", id="fall-range-start"),
        pytest.param(NIGHT, [], "2026-10-25 00:50", {}, "2026-10-25 00:50", id="fall-02:50-summer"),
        pytest.param(NIGHT, [], "2026-10-25 00:55", {}, "2026-10-25 00:55", id="fall-call-ending-at-the-jump-is-fine"),
        pytest.param(NIGHT, [], "2026-10-25 00:56", {}, "2026-10-25 02:00", id="fall-repeated-hour-not-used-again"),
        pytest.param(NIGHT, [], "2026-10-25 01:05", {}, "2026-10-25 02:00", id="fall-02:05-winter-waits-for-03:00"),
        pytest.param(
            NIGHT,
            [],
            "2026-10-25 00:51",
            {"duration": 10 * MIN},
            "2026-10-25 02:00",
            id="fall-call-never-spans-the-jump",
        ),
        pytest.param(
            NIGHT,
            [],
            "2026-10-24 20:00",
            {"duration": 90 * MIN},
            "2026-10-24 23:30",
            id="fall-90-minutes-end-at-the-jump",
        ),
        pytest.param(
            NIGHT,
            [],
            "2026-10-25 00:26",
            {"duration": 30 * MIN},
            "2026-10-25 00:30",
            id="fall-last-half-hour-before-the-jump",
        ),
        pytest.param(
            NIGHT,
            [(utc("2026-10-24 23:30"), utc("2026-10-25 02:10"))],
            "2026-10-24 20:00",
            {},
            "2026-10-25 02:10",
            id="fall-booked-across-jump",
        ),
        pytest.param(
            SMALL_HOURS, [], "2026-10-24 12:00", {}, "2026-10-25 00:00", id="fall-02:00-03:00-first-occurrence"
        ),
        pytest.param(
            SMALL_HOURS,
            [],
            "2026-10-24 12:00",
            {"duration": 60 * MIN},
            "2026-10-25 00:00",
            id="fall-02:00-03:00-summer-hour",
        ),
        pytest.param(
            SMALL_HOURS,
            [],
            "2026-10-25 00:58",
            {},
            "2026-11-01 01:00",
            id="fall-02:00-03:00-second-pass-is-not-offered",
        ),
    ],
)
def test_dst_weekends_2026_in_berlin(
    availability: Availability,
    booked: list[tuple[datetime, datetime]],
    now: str,
    options: dict[str, Any],
    expected: str,
) -> None:
    result = find_slot(availability, BERLIN, utc(now), booked=booked, **options)
    assert start_of(result) == utc(expected)


def test_fall_back_slots_are_each_wall_time_once() -> None:
    """Booking the 02:00-03:00 night slot after slot walks 02:00 … 02:55 summer time once."""
    booked: list[tuple[datetime, datetime]] = []
    now = utc("2026-10-24 12:00")
    for _ in range(13):
        slot = find_slot(SMALL_HOURS, BERLIN, now, booked=booked, horizon=timedelta(days=2))
        if isinstance(slot, NoSlot):
            break
        booked.append((slot.start, slot.end))
    local = [start.astimezone(BERLIN).strftime("%H:%M %Z") for start, _ in booked]
    assert local == [f"02:{minute:02d} CEST" for minute in range(0, 60, 5)]


# -- other time zones ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "availability", "now", "options", "expected"),
    [
        pytest.param(
            NEW_YORK,
            hours(monday="09:00-17:00"),
            "2026-03-02 12:00",
            {},
            "2026-03-02 14:00",
            id="new-york-winter-utc-5",
        ),
        pytest.param(
            NEW_YORK,
            hours(monday="09:00-17:00"),
            "2026-06-01 12:00",
            {},
            "2026-06-01 13:00",
            id="new-york-summer-utc-4",
        ),
        # The US changes on 8 March 2026, three weeks before Europe.
        pytest.param(
            NEW_YORK,
            hours(sunday="01:30-03:30"),
            "2026-03-08 06:56",
            {},
            "2026-03-08 07:00",
            id="new-york-spring-forward",
        ),
        # New York repeats 01:00-01:59 on 1 November; after 01:55 EDT comes 02:00 EST.
        pytest.param(
            NEW_YORK, hours(sunday="01:30-03:30"), "2026-11-01 05:56", {}, "2026-11-01 07:00", id="new-york-fall-back"
        ),
        # 09:00 Monday in Tokyo is midnight UTC, still Sunday evening in Berlin.
        pytest.param(
            TOKYO, hours(monday="09:00-12:00"), "2026-03-01 22:00", {}, "2026-03-02 00:00", id="tokyo-monday-morning"
        ),
        pytest.param(
            TOKYO, hours(sunday="23:00-24:00"), "2026-03-01 10:00", {}, "2026-03-01 14:00", id="tokyo-sunday-night"
        ),
        # The grid is local: hourly slots in India (UTC+5:30) start at :30 UTC.
        pytest.param(
            KOLKATA,
            hours(monday="09:00-11:00"),
            "2026-03-02 03:31",
            {"slot": 60 * MIN},
            "2026-03-02 04:30",
            id="kolkata-local-hour-grid",
        ),
    ],
)
def test_hours_are_local_to_the_therapist(
    zone: tzinfo,
    availability: Availability,
    now: str,
    options: dict[str, Any],
    expected: str,
) -> None:
    assert start_of(find_slot(availability, zone, utc(now), **options)) == utc(expected)


# -- no slot ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("availability", "booked", "now", "options", "reason"),
    [
        pytest.param(
            Availability(days=((),) * 7),
            [],
            "2026-03-02 09:00",
            {},
            "the therapist has no phone availability",
            id="empty-availability",
        ),
        pytest.param(
            parse_availability({}),
            [],
            "2026-03-02 09:00",
            {},
            "the therapist has no phone availability",
            id="empty-mapping",
        ),
        pytest.param(
            hours(monday="09:00-10:00"),
            [],
            "2026-03-03 09:00",
            {"horizon": timedelta(days=6) - timedelta(seconds=1)},
            "no 5m call fits into the therapist's availability between "
            "2026-03-03T09:00+01:00 and 2026-03-09T08:59+01:00",
            id="horizon-ends-before-next-range",
        ),
        pytest.param(
            hours(monday="09:00-09:20"),
            [],
            "2026-03-02 08:00",
            {"duration": 30 * MIN, "horizon": timedelta(weeks=4)},
            "no 30m call fits into the therapist's availability",
            id="range-too-short-for-duration",
        ),
        pytest.param(
            hours(monday="09:00-10:00"),
            calls("2026-03-02 09:00/10:00", "2026-03-09 08:00/11:00"),
            "2026-03-01 09:00",
            {"horizon": timedelta(days=10)},
            "every 5m slot in the therapist's availability between "
            "2026-03-01T09:00+01:00 and 2026-03-11T09:00+01:00 is taken (booked calls)",
            id="all-booked-within-horizon",
        ),
        pytest.param(
            WEEK,
            [],
            "2026-03-02 09:00",
            {"min_notice": timedelta(days=5), "horizon": timedelta(days=4)},
            "the minimum notice of 5d reaches past the search horizon of 4d",
            id="notice-beyond-horizon",
        ),
        pytest.param(
            WEEK, [], "2026-03-02 09:00", {"capacity": 0}, "the staff capacity for calls is 0", id="zero-capacity"
        ),
    ],
)
def test_reports_why_there_is_no_slot(
    availability: Availability,
    booked: list[tuple[datetime, datetime]],
    now: str,
    options: dict[str, Any],
    reason: str,
) -> None:
    result = find_slot(availability, BERLIN, at(now), booked=booked, **options)
    assert isinstance(result, NoSlot)
    assert result.reason.startswith(reason)


def test_a_start_exactly_at_the_horizon_counts() -> None:
    monday_only = hours(monday="09:00-10:00")
    now = at("2026-03-03 09:00")
    assert start_of(find_slot(monday_only, BERLIN, now, horizon=timedelta(days=6))) == at("2026-03-09 09:00")
    assert start_of(find_slot(WEEK, BERLIN, now, horizon=timedelta(0))) == now


# -- staff capacity ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("staff", "capacity", "booked", "expected"),
    [
        pytest.param(calls("2026-03-02 09:00/09:30"), None, [], "2026-03-02 09:00", id="no-capacity-ignores-staff"),
        pytest.param(calls("2026-03-02 09:00/09:30"), 1, [], "2026-03-02 09:30", id="capacity-1-moves-the-slot"),
        pytest.param(calls("2026-03-02 09:00/09:30"), 2, [], "2026-03-02 09:00", id="capacity-2-room-for-one-more"),
        pytest.param(
            calls("2026-03-02 09:00/09:10", "2026-03-02 09:00/09:30"),
            2,
            [],
            "2026-03-02 09:10",
            id="capacity-2-waits-for-the-first-to-end",
        ),
        pytest.param(
            calls("2026-03-02 08:50/09:00", "2026-03-02 09:05/09:30"),
            1,
            [],
            "2026-03-02 09:00",
            id="staff-calls-back-to-back",
        ),
        pytest.param(
            calls("2026-03-02 09:00/09:12"),
            1,
            calls("2026-03-02 09:15/09:40"),
            "2026-03-02 09:40",
            id="capacity-and-own-calls-together",
        ),
        pytest.param(
            calls("2026-03-02 09:00/12:00", "2026-03-02 14:00/14:07"),
            1,
            [],
            "2026-03-02 14:10",
            id="capacity-jumps-to-grid-after-end",
        ),
    ],
)
def test_staff_capacity(
    staff: list[tuple[datetime, datetime]],
    capacity: int | None,
    booked: list[tuple[datetime, datetime]],
    expected: str,
) -> None:
    result = find_slot(WEEK, BERLIN, at("2026-03-02 09:00"), booked=booked, staff_calls=staff, capacity=capacity)
    assert start_of(result) == at(expected)


def test_capacity_reason_names_staff_capacity() -> None:
    staff = calls("2026-03-02 09:00/10:00")
    result = find_slot(
        hours(monday="09:00-10:00"),
        BERLIN,
        at("2026-03-02 09:00"),
        staff_calls=staff,
        capacity=1,
        horizon=timedelta(days=1),
    )
    assert isinstance(result, NoSlot)
    assert result.reason.endswith("is taken (staff capacity)")


# -- BookedCalls and argument checks ------------------------------------------------


def test_booked_calls_merge_overlapping_and_touching_calls_into_blocks() -> None:
    booked = BookedCalls.of(
        calls("2026-03-02 10:00/10:05", "2026-03-02 09:00/09:20", "2026-03-02 09:10/10:00", "2026-03-02 11:00/11:05")
    )
    assert len(booked) == 4
    assert len(booked.block_starts) == 2


def test_prebuilt_booked_calls_give_the_same_answer() -> None:
    pairs = calls("2026-03-02 09:00/09:30", "2026-03-02 09:35/12:00", "2026-03-02 14:00/14:05")
    now = at("2026-03-02 08:00")
    assert find_slot(WEEK, BERLIN, now, booked=pairs) == find_slot(WEEK, BERLIN, now, booked=BookedCalls.of(pairs))
    assert start_of(find_slot(WEEK, BERLIN, now, booked=BookedCalls.of(pairs))) == at("2026-03-02 09:30")


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([(datetime(2026, 3, 2, 9), utc("2026-03-02 09:30"))], "booked call start must be time-zone-aware"),
        ([(utc("2026-03-02 09:30"), utc("2026-03-02 09:30"))], "must end after it starts"),
        ([(utc("2026-03-02 09:30"), utc("2026-03-02 09:00"))], "must end after it starts"),
    ],
)
def test_booked_calls_reject_bad_intervals(pairs: list[tuple[datetime, datetime]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BookedCalls.of(pairs)


@pytest.mark.parametrize(
    ("now", "options", "message"),
    [
        (datetime(2026, 3, 2, 9), {}, "now must be time-zone-aware"),
        (utc("2026-03-02 09:00"), {"slot": timedelta(0)}, "slot length must be positive"),
        (utc("2026-03-02 09:00"), {"duration": -MIN}, "duration must be positive"),
        (utc("2026-03-02 09:00"), {"min_notice": -MIN}, "notice must not be negative"),
        (utc("2026-03-02 09:00"), {"horizon": -MIN}, "horizon must not be negative"),
        (utc("2026-03-02 09:00"), {"capacity": -1}, "capacity must not be negative"),
    ],
)
def test_rejects_impossible_arguments(now: datetime, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        find_slot(WEEK, BERLIN, now, **options)


# -- property: the answer is the brute-force earliest valid grid point ----------------

# Each zone with instants (UTC) near which its offset changes in 2026, where mistakes
# hide: Lord Howe changes by 30 minutes, Santiago at midnight; Tokyo and Kolkata never.
ZONE_CHANGES = {
    BERLIN: ("2026-03-29 01:00", "2026-10-25 01:00", "2026-06-10 12:00"),
    NEW_YORK: ("2026-03-08 07:00", "2026-11-01 06:00"),
    TOKYO: ("2026-03-02 00:00",),
    KOLKATA: ("2026-03-02 00:00",),
    ZoneInfo("Australia/Lord_Howe"): ("2026-04-04 15:00", "2026-10-03 15:30"),
    ZoneInfo("America/Santiago"): ("2026-04-05 03:00", "2026-09-06 04:00"),
}


@st.composite
def day_ranges(draw: st.DrawFn) -> list[dict[str, str]]:
    step = draw(st.sampled_from([1, 5, 30]))
    bounds = [point * step for point in sorted(draw(st.sets(st.integers(0, 1440 // step), min_size=2, max_size=6)))]
    touching = draw(st.booleans())  # such as 09:00-10:00 and 10:00-11:00
    pairs = pairwise(bounds) if touching else zip(bounds[::2], bounds[1::2], strict=False)
    return [{"start": f"{s // 60:02d}:{s % 60:02d}", "end": f"{e // 60:02d}:{e % 60:02d}"} for s, e in pairs]


WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@st.composite
def intervals(draw: st.DrawFn, now: datetime, days: int) -> list[tuple[datetime, datetime]]:
    step = draw(st.sampled_from([1, 5]))  # on the grid, calls meet candidates back to back
    result = []
    for _ in range(draw(st.integers(0, 10))):
        start = now + step * timedelta(minutes=draw(st.integers(-180 // step, days * 1440 // step)))
        result.append((start, start + step * timedelta(minutes=draw(st.integers(1, 180 // step)))))
    return result


def brute_force(
    availability: Availability,
    zone: tzinfo,
    now: datetime,
    booked: list[tuple[datetime, datetime]],
    staff: list[tuple[datetime, datetime]],
    capacity: int | None,
    duration: timedelta,
    slot: timedelta,
    min_notice: timedelta,
    horizon: timedelta,
) -> datetime | None:
    """Every UTC 5-minute step, checked against every rule directly (zone offsets here
    are multiples of 5 minutes, so every local grid point is such a step)."""
    candidate = now.astimezone(UTC).replace(second=0, microsecond=0)
    candidate -= timedelta(minutes=candidate.minute % 5)
    while candidate <= now + horizon:
        if valid(availability, zone, candidate, now, booked, staff, capacity, duration, slot, min_notice):
            return candidate
        candidate += 5 * MIN
    return None


def valid(
    availability: Availability,
    zone: tzinfo,
    start: datetime,
    now: datetime,
    booked: list[tuple[datetime, datetime]],
    staff: list[tuple[datetime, datetime]],
    capacity: int | None,
    duration: timedelta,
    slot: timedelta,
    min_notice: timedelta,
) -> bool:
    """Each rule checked on its own, cheapest first."""
    end = start + duration
    local = start.astimezone(zone)
    wall = local.hour * 60 + local.minute
    if start < now + min_notice or local.second or wall % (slot // MIN):
        return False
    if local.replace(fold=0).astimezone(UTC) != start:
        return False  # the second occurrence of a repeated wall time
    if not any(r.start <= wall and wall + duration // MIN <= r.end for r in merged(availability, local.weekday())):
        return False
    if any(b_start < end and start < b_end for b_start, b_end in booked):
        return False
    overlapping_staff = sum(1 for s_start, s_end in staff if s_start < end and start < s_end)
    if capacity is not None and overlapping_staff >= capacity:
        return False
    # No offset change inside the call: its wall-clock length is its real length.
    offsets = {(start + k * MIN).astimezone(zone).utcoffset() for k in range(duration // MIN)}
    return len(offsets) == 1


def merged(availability: Availability, weekday: int) -> list[TimeRange]:
    result: list[TimeRange] = []
    for time_range in availability.on(weekday):
        if result and time_range.start <= result[-1].end:
            result[-1] = TimeRange(result[-1].start, max(result[-1].end, time_range.end))
        else:
            result.append(time_range)
    return result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_the_answer_is_the_earliest_valid_grid_point(data: st.DataObject) -> None:
    zone = data.draw(st.sampled_from(list(ZONE_CHANGES)))
    change = utc(data.draw(st.sampled_from(ZONE_CHANGES[zone])))
    now = change + timedelta(microseconds=data.draw(st.integers(-2 * 86_400 * 10**6, 3600 * 10**7)))
    if data.draw(st.booleans()):  # on the 5-minute grid, so that exact boundaries get hit
        now = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    raw = {day: data.draw(day_ranges()) for day in WEEKDAY_NAMES if data.draw(st.integers(0, 3)) > 0}
    availability = parse_availability(raw)
    booked = data.draw(intervals(now, days=4))
    staff = data.draw(intervals(now, days=1))
    capacity = data.draw(st.sampled_from([None, 1, 2]))
    slot = data.draw(st.sampled_from([5, 10, 15, 30])) * MIN
    duration = data.draw(st.sampled_from([None, 5, 10, 25, 60, 95]))
    length = slot if duration is None else duration * MIN
    min_notice = data.draw(st.sampled_from([0, 0, 15, 600])) * MIN
    horizon = MIN * data.draw(
        st.one_of(st.just(3 * 1440), st.integers(0, 3 * 1440), st.integers(0, 864).map(lambda fives: 5 * fives))
    )

    result = find_slot(
        availability,
        zone,
        now,
        booked=booked,
        staff_calls=staff,
        capacity=capacity,
        duration=None if duration is None else duration * MIN,
        slot=slot,
        min_notice=min_notice,
        horizon=horizon,
    )
    expected = (
        None
        if availability.is_empty
        else brute_force(availability, zone, now, booked, staff, capacity, length, slot, min_notice, horizon)
    )
    if expected is None:
        assert isinstance(result, NoSlot)
    else:
        assert result == Slot(expected, expected + length)
