"""Batch-run schedules: cron in a time zone (DST-correct) and fixed intervals."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.durations import format_duration, parse_duration
from domain.schedule import IntervalSchedule, due_run, parse_cron, parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def local(*args):
    return datetime(*args, tzinfo=BERLIN)


DAILY_9 = parse_cron("0 9 * * *", BERLIN)


@pytest.mark.parametrize(
    ("now", "latest", "following"),
    [
        (local(2026, 11, 22, 8, 59, 59), local(2026, 11, 21, 9, 0), local(2026, 11, 22, 9, 0)),
        (local(2026, 11, 22, 9, 0), local(2026, 11, 22, 9, 0), local(2026, 11, 23, 9, 0)),
        (local(2026, 11, 22, 9, 0, 1), local(2026, 11, 22, 9, 0), local(2026, 11, 23, 9, 0)),
        # 09:00 local on both sides of the spring-forward change (UTC offset moves)
        (local(2026, 3, 29, 12, 0), local(2026, 3, 29, 9, 0), local(2026, 3, 30, 9, 0)),
        (local(2026, 10, 25, 12, 0), local(2026, 10, 25, 9, 0), local(2026, 10, 26, 9, 0)),
    ],
)
def test_daily_cron_in_local_time(now, latest, following):
    assert DAILY_9.latest_at_or_before(now) == latest
    assert DAILY_9.next_after(now) == following


def test_cron_at_0900_is_0800_utc_in_winter_and_0700_utc_in_summer():
    assert DAILY_9.next_after(datetime(2026, 1, 10, tzinfo=UTC)) == datetime(2026, 1, 10, 8, 0, tzinfo=UTC)
    assert DAILY_9.next_after(datetime(2026, 7, 10, tzinfo=UTC)) == datetime(2026, 7, 10, 7, 0, tzinfo=UTC)


def test_nonexistent_local_time_runs_at_end_of_gap():
    at_0230 = parse_cron("30 2 * * *", BERLIN)
    run = at_0230.next_after(local(2026, 3, 28, 12, 0))
    assert run == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST, the end of the gap
    assert at_0230.next_after(run) == local(2026, 3, 30, 2, 30)


def test_ambiguous_local_time_runs_once_at_first_occurrence():
    at_0230 = parse_cron("30 2 * * *", BERLIN)
    first = at_0230.next_after(local(2026, 10, 24, 12, 0))
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert at_0230.next_after(first) == local(2026, 10, 26, 2, 30)  # not 02:30 CET that day


@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        ("*/15 * * * *", local(2026, 5, 4, 10, 7), local(2026, 5, 4, 10, 15)),
        ("0 9 * * 1-5", local(2026, 5, 8, 10, 0), local(2026, 5, 11, 9, 0)),  # Fri -> Mon
        ("0 9 * * 0", local(2026, 5, 8, 10, 0), local(2026, 5, 10, 9, 0)),  # Sunday is 0
        ("0 9 * * 7", local(2026, 5, 8, 10, 0), local(2026, 5, 10, 9, 0)),  # and 7
        ("0 8,17 * * *", local(2026, 5, 4, 9, 0), local(2026, 5, 4, 17, 0)),
        ("0 9 1 * *", local(2026, 5, 4, 9, 0), local(2026, 6, 1, 9, 0)),
        # day-of-month and day-of-week both restricted: either matches (Vixie cron)
        ("0 9 13 * 5", local(2026, 5, 4, 9, 0), local(2026, 5, 8, 9, 0)),
    ],
)
def test_cron_fields(expression, now, expected):
    assert parse_cron(expression, BERLIN).next_after(now) == expected


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("0 9 * *", "five fields"),
        ("61 9 * * *", "outside 0-59"),
        ("0 24 * * *", "outside 0-23"),
        ("x 9 * * *", "invalid value"),
        ("*/0 9 * * *", "invalid step"),
        ("0 9 30 2 *", "never fires"),
    ],
)
def test_invalid_cron_is_refused_with_a_reason(expression, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_cron(expression, BERLIN)


def test_interval_schedule_is_aligned_to_the_epoch():
    every_30s = parse_schedule("30s", BERLIN)
    assert isinstance(every_30s, IntervalSchedule)
    now = datetime(2026, 11, 22, 7, 59, 44, tzinfo=UTC)
    assert every_30s.latest_at_or_before(now) == datetime(2026, 11, 22, 7, 59, 30, tzinfo=UTC)
    assert every_30s.next_after(now) == datetime(2026, 11, 22, 8, 0, 0, tzinfo=UTC)


def test_due_run_collapses_missed_runs_into_the_latest():
    last = local(2026, 11, 19, 9, 0)
    assert due_run(DAILY_9, last, local(2026, 11, 22, 10, 0)) == local(2026, 11, 22, 9, 0)
    assert due_run(DAILY_9, local(2026, 11, 22, 9, 0), local(2026, 11, 22, 10, 0)) is None
    assert due_run(DAILY_9, None, local(2026, 11, 22, 10, 0)) == local(2026, 11, 22, 9, 0)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7d", timedelta(days=7)),
        ("40s", timedelta(seconds=40)),
        ("250ms", timedelta(milliseconds=250)),
        ("2w", timedelta(weeks=2)),
        ("15m", timedelta(minutes=15)),
        ("3h", timedelta(hours=3)),
    ],
)
def test_durations(text, value):
    assert parse_duration(text) == value
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["7", "d", "7 days", "-1d", "1.5h", "7D", ""])
def test_invalid_durations_are_refused(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)
