"""When old content is forgotten (domain/retention.py): daily at 03:00 local time,
or as often as a retention shorter than a day; due is what is older than it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from domain.retention import cutoff, retention_schedule

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("now", "latest", "following"),
    [
        # 03:00 Berlin is 02:00 UTC in winter, 01:00 UTC in summer
        (
            datetime(2026, 11, 23, 8, 0, tzinfo=UTC),
            datetime(2026, 11, 23, 2, 0, tzinfo=UTC),
            datetime(2026, 11, 24, 2, 0, tzinfo=UTC),
        ),
        (
            datetime(2026, 7, 1, 0, 30, tzinfo=UTC),
            datetime(2026, 6, 30, 1, 0, tzinfo=UTC),
            datetime(2026, 7, 1, 1, 0, tzinfo=UTC),
        ),
    ],
)
def test_daily_at_three_in_the_morning_local_time(now, latest, following):
    for retention in (timedelta(days=1), timedelta(days=180)):
        schedule = retention_schedule(retention, BERLIN)
        assert schedule.latest_at_or_before(now) == latest
        assert schedule.next_after(now) == following


def test_a_retention_shorter_than_a_day_runs_as_often_as_the_retention():
    schedule = retention_schedule(timedelta(seconds=3), BERLIN)
    now = datetime(2026, 11, 23, 8, 0, 1, tzinfo=UTC)
    assert schedule.latest_at_or_before(now) == datetime(2026, 11, 23, 8, 0, 0, tzinfo=UTC)
    assert schedule.next_after(now) == datetime(2026, 11, 23, 8, 0, 3, tzinfo=UTC)


def test_due_is_what_is_older_than_the_retention():
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert cutoff(now, timedelta(days=180)) == datetime(2026, 5, 27, 8, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="longer than zero"):
        cutoff(now, timedelta(0))
