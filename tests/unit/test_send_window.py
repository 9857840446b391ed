"""Send windows (COMM_SEND_WINDOW): parsing, and when a window is open in a
therapist's time zone, DST-correct. Every instant is fixed; none depends on today."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.decisions import CONFIRMATION, CONTACT_REQUEST, FOLLOW_UP, MANUAL
from domain.send_window import DailyRange, is_open, next_open, parse_send_window, windowed_kinds
from streams.settings import Settings, SettingsError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
SECOND = timedelta(seconds=1)

OFFICE = "mon-fri 08:00-18:00"
SPLIT = "mon-fri 08:00-12:00, mon-fri 14:00-18:00, sat 09:00-12:00"
LONG_WEEKEND = "fri-mon 10:00-16:00"
FRIDAY_NIGHT = "fri 22:00-24:00, sat 00:00-06:00"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# 2026: Monday 12 January (CET, UTC+1), Monday 13 July (CEST, UTC+2). Berlin moves
# to summer time on Sunday 29 March (01:00 UTC: 02:00 CET becomes 03:00 CEST) and
# back on Sunday 25 October (01:00 UTC: 03:00 CEST becomes 02:00 CET, so 02:00-03:00
# happens twice). New York moves on Sunday 8 March, Tokyo never.
OPEN_AT = [
    # window edges ±1 s, winter: 08:00-18:00 CET is 07:00-17:00 UTC
    (OFFICE, BERLIN, utc(2026, 1, 12, 6, 59, 59), False),
    (OFFICE, BERLIN, utc(2026, 1, 12, 7, 0, 0), True),
    (OFFICE, BERLIN, utc(2026, 1, 12, 7, 0, 1), True),
    (OFFICE, BERLIN, utc(2026, 1, 12, 16, 59, 59), True),
    (OFFICE, BERLIN, utc(2026, 1, 12, 17, 0, 0), False),
    (OFFICE, BERLIN, utc(2026, 1, 12, 17, 0, 1), False),
    # summer: the same window is 06:00-16:00 UTC
    (OFFICE, BERLIN, utc(2026, 7, 13, 5, 59, 59), False),
    (OFFICE, BERLIN, utc(2026, 7, 13, 6, 0, 0), True),
    (OFFICE, BERLIN, utc(2026, 7, 13, 15, 59, 59), True),
    (OFFICE, BERLIN, utc(2026, 7, 13, 16, 0, 0), False),
    (OFFICE, BERLIN, utc(2026, 1, 17, 11, 0), False),  # Saturday
    # a therapist in New York: 08:00-18:00 EST is 13:00-23:00 UTC (Berlin's would be open)
    (OFFICE, NEW_YORK, utc(2026, 1, 12, 12, 59, 59), False),
    (OFFICE, NEW_YORK, utc(2026, 1, 12, 13, 0, 0), True),
    (OFFICE, NEW_YORK, utc(2026, 1, 12, 22, 59, 59), True),
    (OFFICE, NEW_YORK, utc(2026, 1, 12, 23, 0, 0), False),
    # New York is already on summer time (EDT) on 9 March, Berlin not yet
    (OFFICE, NEW_YORK, utc(2026, 3, 9, 11, 59, 59), False),
    (OFFICE, NEW_YORK, utc(2026, 3, 9, 12, 0, 0), True),
    # Tokyo: Monday 08:00 JST is Sunday 23:00 UTC; Saturday 00:30 JST is Friday in UTC
    (OFFICE, TOKYO, utc(2026, 1, 11, 22, 59, 59), False),
    (OFFICE, TOKYO, utc(2026, 1, 11, 23, 0, 0), True),
    (OFFICE, TOKYO, utc(2026, 1, 16, 8, 59, 59), True),
    (OFFICE, TOKYO, utc(2026, 1, 16, 9, 0, 0), False),
    (OFFICE, TOKYO, utc(2026, 1, 16, 15, 30), False),
    # spring forward: a window starting that day, in summer time already
    ("sun 08:00-18:00", BERLIN, utc(2026, 3, 29, 5, 59, 59), False),
    ("sun 08:00-18:00", BERLIN, utc(2026, 3, 29, 6, 0, 0), True),
    ("sat 08:00-18:00", BERLIN, utc(2026, 3, 28, 7, 0, 0), True),  # the day before, winter time
    # a range containing the skipped hour: 01:00 CET to 04:00 CEST, two hours
    ("sun 01:00-04:00", BERLIN, utc(2026, 3, 28, 23, 59, 59), False),
    ("sun 01:00-04:00", BERLIN, utc(2026, 3, 29, 0, 0, 0), True),
    ("sun 01:00-04:00", BERLIN, utc(2026, 3, 29, 1, 59, 59), True),
    ("sun 01:00-04:00", BERLIN, utc(2026, 3, 29, 2, 0, 0), False),
    # a range starting in the skipped hour opens at the transition (03:00 CEST)
    ("sun 02:30-04:00", BERLIN, utc(2026, 3, 29, 0, 59, 59), False),
    ("sun 02:30-04:00", BERLIN, utc(2026, 3, 29, 1, 0, 0), True),
    ("sun 02:30-04:00", BERLIN, utc(2026, 3, 29, 1, 59, 59), True),
    ("sun 02:30-04:00", BERLIN, utc(2026, 3, 29, 2, 0, 0), False),
    # a range wholly in the skipped hour is closed that day
    ("sun 02:10-02:50", BERLIN, utc(2026, 3, 29, 1, 0, 0), False),
    # fall back: a window starting that day, in winter time already
    ("sun 08:00-18:00", BERLIN, utc(2026, 10, 25, 6, 59, 59), False),
    ("sun 08:00-18:00", BERLIN, utc(2026, 10, 25, 7, 0, 0), True),
    # a range containing the repeated hour: 01:00 CEST to 04:00 CET, four hours
    ("sun 01:00-04:00", BERLIN, utc(2026, 10, 24, 22, 59, 59), False),
    ("sun 01:00-04:00", BERLIN, utc(2026, 10, 24, 23, 0, 0), True),
    ("sun 01:00-04:00", BERLIN, utc(2026, 10, 25, 2, 59, 59), True),
    ("sun 01:00-04:00", BERLIN, utc(2026, 10, 25, 3, 0, 0), False),
    # a start in the repeated hour is its first pass (CEST); open through the second
    ("sun 02:30-18:00", BERLIN, utc(2026, 10, 25, 0, 29, 59), False),
    ("sun 02:30-18:00", BERLIN, utc(2026, 10, 25, 0, 30, 0), True),
    ("sun 02:30-18:00", BERLIN, utc(2026, 10, 25, 1, 15), True),  # 02:15 CET
    # an end in the repeated hour is its first pass too; closed in the second
    ("sun 00:00-02:30", BERLIN, utc(2026, 10, 25, 0, 29, 59), True),
    ("sun 00:00-02:30", BERLIN, utc(2026, 10, 25, 0, 30, 0), False),
    ("sun 00:00-02:30", BERLIN, utc(2026, 10, 25, 1, 15), False),  # 02:15 CET
    # several ranges: a lunch break and Saturday morning
    (SPLIT, BERLIN, utc(2026, 1, 12, 10, 59, 59), True),
    (SPLIT, BERLIN, utc(2026, 1, 12, 11, 0, 0), False),
    (SPLIT, BERLIN, utc(2026, 1, 12, 12, 59, 59), False),
    (SPLIT, BERLIN, utc(2026, 1, 12, 13, 0, 0), True),
    (SPLIT, BERLIN, utc(2026, 1, 17, 8, 0, 0), True),
    (SPLIT, BERLIN, utc(2026, 1, 17, 11, 0, 0), False),
    (SPLIT, BERLIN, utc(2026, 1, 18, 10, 0), False),  # Sunday
    # days that wrap around the week
    (LONG_WEEKEND, BERLIN, utc(2026, 1, 16, 9, 0), True),  # Friday
    (LONG_WEEKEND, BERLIN, utc(2026, 1, 18, 12, 0), True),  # Sunday
    (LONG_WEEKEND, BERLIN, utc(2026, 1, 12, 14, 59, 59), True),  # Monday
    (LONG_WEEKEND, BERLIN, utc(2026, 1, 13, 12, 0), False),  # Tuesday
    (LONG_WEEKEND, BERLIN, utc(2026, 1, 15, 12, 0), False),  # Thursday
    # until midnight (24:00), and on into the next day with a second range
    (FRIDAY_NIGHT, BERLIN, utc(2026, 1, 16, 20, 59, 59), False),
    (FRIDAY_NIGHT, BERLIN, utc(2026, 1, 16, 21, 0, 0), True),
    (FRIDAY_NIGHT, BERLIN, utc(2026, 1, 16, 22, 59, 59), True),  # Friday 23:59:59
    (FRIDAY_NIGHT, BERLIN, utc(2026, 1, 16, 23, 0, 0), True),  # Saturday 00:00
    (FRIDAY_NIGHT, BERLIN, utc(2026, 1, 17, 4, 59, 59), True),
    (FRIDAY_NIGHT, BERLIN, utc(2026, 1, 17, 5, 0, 0), False),
    ("mon 20:00-24:00", BERLIN, utc(2026, 1, 12, 22, 59, 59), True),
    ("mon 20:00-24:00", BERLIN, utc(2026, 1, 12, 23, 0, 0), False),  # Tuesday 00:00
    # seconds
    ("mon 08:00:30-08:00:45", BERLIN, utc(2026, 1, 12, 7, 0, 29), False),
    ("mon 08:00:30-08:00:45", BERLIN, utc(2026, 1, 12, 7, 0, 30), True),
    ("mon 08:00:30-08:00:45", BERLIN, utc(2026, 1, 12, 7, 0, 44), True),
    ("mon 08:00:30-08:00:45", BERLIN, utc(2026, 1, 12, 7, 0, 45), False),
]


@pytest.mark.parametrize(("window", "zone", "at", "expected"), OPEN_AT)
def test_is_open(window, zone, at, expected):
    assert is_open(parse_send_window(window), zone, at) is expected
    # the instant counts, not the zone it is written in
    assert is_open(parse_send_window(window), zone, at.astimezone(TOKYO)) is expected


NEXT_OPEN = [
    # Friday 18:00 to Monday 08:00, winter
    (OFFICE, BERLIN, utc(2026, 1, 16, 17, 0), utc(2026, 1, 19, 7, 0)),
    # one second before the start, and one after the end
    (OFFICE, BERLIN, utc(2026, 1, 12, 6, 59, 59), utc(2026, 1, 12, 7, 0)),
    (OFFICE, BERLIN, utc(2026, 1, 12, 17, 0, 1), utc(2026, 1, 13, 7, 0)),
    # over the spring change: Friday 18:00 CET to Monday 08:00 CEST
    (OFFICE, BERLIN, utc(2026, 3, 27, 17, 0), utc(2026, 3, 30, 6, 0)),
    # over the autumn change: Friday 18:00 CEST to Monday 08:00 CET
    (OFFICE, BERLIN, utc(2026, 10, 23, 16, 0), utc(2026, 10, 26, 7, 0)),
    # another therapist's zone
    (OFFICE, NEW_YORK, utc(2026, 1, 12, 7, 0), utc(2026, 1, 12, 13, 0)),
    (OFFICE, TOKYO, utc(2026, 1, 16, 9, 0), utc(2026, 1, 18, 23, 0)),
    # a start in the skipped hour opens at the transition
    ("sun 02:30-04:00", BERLIN, utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 1, 0)),
    # a range wholly in the skipped hour opens a week later
    ("sun 02:10-02:50", BERLIN, utc(2026, 3, 28, 12, 0), utc(2026, 4, 5, 0, 10)),
    # a start in the repeated hour: its first pass
    ("sun 02:30-18:00", BERLIN, utc(2026, 10, 24, 12, 0), utc(2026, 10, 25, 0, 30)),
    # an end in the repeated hour: the second pass stays closed, next week it opens
    ("sun 00:00-02:30", BERLIN, utc(2026, 10, 25, 1, 15), utc(2026, 10, 31, 23, 0)),
    # after the lunch break; after Saturday morning, Monday
    (SPLIT, BERLIN, utc(2026, 1, 12, 11, 0), utc(2026, 1, 12, 13, 0)),
    (SPLIT, BERLIN, utc(2026, 1, 17, 11, 0), utc(2026, 1, 19, 7, 0)),
    (LONG_WEEKEND, BERLIN, utc(2026, 1, 12, 15, 0), utc(2026, 1, 16, 9, 0)),
    (FRIDAY_NIGHT, BERLIN, utc(2026, 1, 17, 5, 0), utc(2026, 1, 23, 21, 0)),
]


@pytest.mark.parametrize(("window", "zone", "at", "expected"), NEXT_OPEN)
def test_next_open(window, zone, at, expected):
    opens = next_open(parse_send_window(window), zone, at)
    assert opens == expected
    assert is_open(parse_send_window(window), zone, opens)
    assert not is_open(parse_send_window(window), zone, opens - SECOND)


def test_next_open_of_an_open_window_is_the_instant_itself_in_its_own_zone():
    at = datetime(2026, 1, 12, 9, 30, tzinfo=BERLIN)
    assert next_open(parse_send_window(OFFICE), BERLIN, at) is at
    later = next_open(parse_send_window(OFFICE), NEW_YORK, at)
    assert later.tzinfo is BERLIN and later == utc(2026, 1, 12, 13, 0)
    assert next_open(parse_send_window(OFFICE), BERLIN, utc(2026, 1, 17, 9, 0)).tzinfo is UTC


@pytest.mark.parametrize(
    "window", [OFFICE, SPLIT, FRIDAY_NIGHT, "sun 02:30-18:00", "sun 00:00-02:30", "sun 01:00-04:00"]
)
@pytest.mark.parametrize("days", [(2026, 3, 26), (2026, 10, 22)])
def test_next_open_agrees_with_is_open_through_both_changes(window, days):
    """Every 5 minutes over four days around a change: the answer is open, and no
    second between the asked instant and the answer is (checked at its edge)."""
    parsed = parse_send_window(window)
    start = utc(*days)
    for step in range(4 * 24 * 12):
        at = start + step * timedelta(minutes=5)
        opens = next_open(parsed, BERLIN, at)
        assert opens >= at and is_open(parsed, BERLIN, opens)
        assert opens == at or not is_open(parsed, BERLIN, opens - SECOND)
        assert is_open(parsed, BERLIN, at) is (opens == at)


def test_an_instant_without_a_time_zone_is_refused():
    with pytest.raises(ValueError, match="has no time zone"):
        is_open(parse_send_window(OFFICE), BERLIN, datetime(2026, 1, 12, 9, 0))
    with pytest.raises(ValueError, match="has no time zone"):
        next_open(parse_send_window(OFFICE), BERLIN, datetime(2026, 1, 12, 9, 0))


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        (OFFICE, [DailyRange(frozenset(range(5)), time(8), time(18))]),
        ("  Mon-FRI   08:00-18:00 ", [DailyRange(frozenset(range(5)), time(8), time(18))]),
        (LONG_WEEKEND, [DailyRange(frozenset({4, 5, 6, 0}), time(10), time(16))]),
        ("sun 09:00-24:00", [DailyRange(frozenset({6}), time(9), None)]),
        ("sun 09:00-24:00:00", [DailyRange(frozenset({6}), time(9), None)]),
        ("wed 08:00:30-08:01:15", [DailyRange(frozenset({2}), time(8, 0, 30), time(8, 1, 15))]),
        (
            "mon-fri 08:00-12:00, sat 09:00-12:00",
            [DailyRange(frozenset(range(5)), time(8), time(12)), DailyRange(frozenset({5}), time(9), time(12))],
        ),
    ],
)
def test_parse(text, ranges):
    window = parse_send_window(text)
    assert list(window.ranges) == ranges
    assert str(window) == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "an empty part"),
        ("mon-fri 08:00-18:00,", "an empty part"),
        ("monday 08:00-18:00", "expected days and hours such as 'mon-fri 08:00-18:00'"),
        ("mon-fri 8:00-18:00", "expected days and hours"),
        ("mon-fri", "expected days and hours"),
        ("mon-fre 08:00-18:00", "days are mon, tue, wed, thu, fri, sat, sun"),
        ("mon-fri 18:00-08:00", "the end must be after the start, on the same day"),
        ("fri 22:00-06:00", "the end must be after the start, on the same day"),
        ("mon 08:00-08:00", "the end must be after the start"),
        ("mon 24:00-24:00", "24:00 is not a time of day"),
        ("mon 08:60-09:00", "08:60 is not a time of day"),
        ("mon 08:00:60-09:00", "08:00:60 is not a time of day"),
        ("mon 22:00-24:30", "24:30 is not a time of day"),
        ("mon-fri 08:00-18:00, sat 12:00-09:00", "'sat 12:00-09:00': the end must be after the start"),
    ],
)
def test_parse_errors_say_what_is_wrong(text, message):
    with pytest.raises(ValueError, match="invalid send window") as error:
        parse_send_window(text)
    assert message in str(error.value)


def test_the_setting_parses_and_an_invalid_one_names_the_variable():
    settings = Settings.from_environ({"COMM_SEND_WINDOW": OFFICE, "COMM_SEND_WINDOW_CONFIRMATIONS": "true"})
    assert settings.send_window == parse_send_window(OFFICE) and settings.send_window_confirmations
    assert Settings.from_environ({}).send_window is None
    with pytest.raises(SettingsError) as error:
        Settings.from_environ({"COMM_SEND_WINDOW": "mon-fri 18:00-08:00"})
    assert "COMM_SEND_WINDOW" in str(error.value) and "the end must be after the start" in str(error.value)


def test_contact_and_follow_up_emails_are_windowed_confirmations_on_request_manual_never():
    assert windowed_kinds(confirmations=False) == {CONTACT_REQUEST, FOLLOW_UP}
    assert windowed_kinds(confirmations=True) == {CONTACT_REQUEST, FOLLOW_UP, CONFIRMATION}
    assert MANUAL not in windowed_kinds(confirmations=True)
