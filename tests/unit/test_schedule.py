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


def utc(*args):
    return datetime(*args, tzinfo=UTC)


# Berlin, 2026: on 29 March 02:00-03:00 local does not exist (01:00 UTC jumps from
# 02:00 CET to 03:00 CEST); on 25 October 02:00-03:00 local happens twice (01:00 UTC
# goes back from 03:00 CEST to 02:00 CET). Like cron daemons, an expression with a
# wildcard minute or hour field (``*``, ``*/n``) runs at every matching local time
# that occurs, so in both hours of October and in neither of March; a fixed time
# runs once that day: at its first occurrence, or at the end of the gap.
@pytest.mark.parametrize(
    ("expression", "start", "end", "runs"),
    [
        pytest.param(
            "*/30 * * * *",
            utc(2026, 10, 24, 23, 0),  # 01:00 CEST
            utc(2026, 10, 25, 2, 30),  # 03:30 CET
            [
                utc(2026, 10, 24, 23, 30),  # 01:30 CEST
                utc(2026, 10, 25, 0, 0),  # 02:00 CEST
                utc(2026, 10, 25, 0, 30),  # 02:30 CEST
                utc(2026, 10, 25, 1, 0),  # 02:00 CET, the repeated hour
                utc(2026, 10, 25, 1, 30),  # 02:30 CET
                utc(2026, 10, 25, 2, 0),  # 03:00 CET
                utc(2026, 10, 25, 2, 30),  # 03:30 CET
            ],
            id="autumn-wildcard-hour-runs-in-both-occurrences",
        ),
        pytest.param(
            "0 * * * *",
            utc(2026, 10, 24, 22, 0),  # 00:00 CEST
            utc(2026, 10, 25, 3, 0),  # 04:00 CET
            [
                utc(2026, 10, 24, 23, 0),
                utc(2026, 10, 25, 0, 0),
                utc(2026, 10, 25, 1, 0),
                utc(2026, 10, 25, 2, 0),
                utc(2026, 10, 25, 3, 0),
            ],
            id="autumn-hourly-runs-every-hour",
        ),
        pytest.param(
            "*/30 2 * * *",
            utc(2026, 10, 24, 12, 0),
            utc(2026, 10, 26, 12, 0),
            [
                utc(2026, 10, 25, 0, 0),
                utc(2026, 10, 25, 0, 30),
                utc(2026, 10, 25, 1, 0),
                utc(2026, 10, 25, 1, 30),
                utc(2026, 10, 26, 1, 0),
                utc(2026, 10, 26, 1, 30),
            ],
            id="autumn-wildcard-minute-runs-in-both-occurrences",
        ),
        pytest.param(
            "30 2 * * *",
            utc(2026, 10, 24, 12, 0),
            utc(2026, 10, 26, 12, 0),
            [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],  # 02:30 CEST only, then 02:30 CET next day
            id="autumn-fixed-time-runs-once-at-first-occurrence",
        ),
        pytest.param(
            "0 0-23 * * *",
            utc(2026, 10, 24, 23, 30),
            utc(2026, 10, 25, 2, 0),
            [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 2, 0)],  # a listed hour is a fixed time
            id="autumn-listed-hours-are-fixed-times",
        ),
        pytest.param(
            "*/30 * * * *",
            utc(2026, 3, 28, 23, 30),  # 00:30 CET
            utc(2026, 3, 29, 2, 0),  # 04:00 CEST
            [
                utc(2026, 3, 29, 0, 0),  # 01:00 CET
                utc(2026, 3, 29, 0, 30),  # 01:30 CET
                utc(2026, 3, 29, 1, 0),  # 03:00 CEST: nothing in the missing hour
                utc(2026, 3, 29, 1, 30),  # 03:30 CEST
                utc(2026, 3, 29, 2, 0),  # 04:00 CEST
            ],
            id="spring-wildcard-hour-has-no-runs-in-the-missing-hour",
        ),
        pytest.param(
            "15 * * * *",
            utc(2026, 3, 28, 23, 30),
            utc(2026, 3, 29, 2, 0),
            [utc(2026, 3, 29, 0, 15), utc(2026, 3, 29, 1, 15)],  # 01:15 CET, 03:15 CEST; no 02:15
            id="spring-wildcard-hour-skips-the-missing-time",
        ),
        pytest.param(
            "30 2 * * *",
            utc(2026, 3, 28, 12, 0),
            utc(2026, 3, 30, 12, 0),
            [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)],  # 03:00 CEST (end of the gap), then 02:30 CEST
            id="spring-fixed-time-runs-once-at-the-end-of-the-gap",
        ),
        pytest.param(
            "0 9 * * *",
            utc(2026, 10, 24, 12, 0),
            utc(2026, 10, 26, 12, 0),
            [utc(2026, 10, 25, 8, 0), utc(2026, 10, 26, 8, 0)],
            id="autumn-fixed-time-outside-the-change",
        ),
    ],
)
def test_runs_around_dst_changes(expression, start, end, runs):
    plan = parse_cron(expression, BERLIN)
    # next_after walks forward through exactly these runs ...
    forward, moment = [], start
    while (moment := plan.next_after(moment)) <= end:
        forward.append(moment)
    assert forward == runs
    # ... latest_at_or_before walks back through the same ones ...
    backward, moment = [], end
    while (moment := plan.latest_at_or_before(moment)) > start:
        backward.append(moment)
        moment -= timedelta(seconds=1)
    assert backward == runs[::-1]
    # ... and a scheduler ticking every minute (as due_run is used) makes each one
    # due exactly once, at its instant.
    due, last, tick = [], plan.latest_at_or_before(start), start
    while tick <= end:
        if (run := due_run(plan, last, tick)) is not None:
            due.append((tick, run))
            last = run
        tick += timedelta(minutes=1)
    assert due == [(run, run) for run in runs]


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
