"""When batch runs happen: a cron expression in a time zone, or a fixed interval.

Both kinds answer the same two questions, for a given instant: which run was the
latest at or before it, and which run comes next after it. Runs are instants
(aware datetimes); the cron kind is evaluated in local wall-clock time of its
zone, so ``0 9 * * *`` means 09:00 Berlin time in summer and in winter.

DST, as cron daemons (Vixie cron and its descendants) handle it:

* a *wildcard* expression, one whose minute or hour field starts with ``*``
  (``*/30 * * * *``, ``0 * * * *``, ``*/10 2 * * *``), follows the local clock: it runs
  at every matching local time that actually occurs. In the fall-back hour, which
  happens twice, it runs in both occurrences (no 90-minute hole in a half-hourly
  schedule); in the spring-forward gap, which does not happen, it has no runs.
* a *fixed-time* expression (``30 2 * * *``, ``0 9,17 * * 1-5``, also ``0 0-23 * * *``)
  runs once a day at each of its times: a time that exists twice runs at its first
  occurrence; a time that does not exist runs at the first instant after the gap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Protocol

from domain.durations import parse_duration

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A cron expression that matches no day within this many days is refused.
_MAX_SEARCH_DAYS = 366 * 8 + 2


class Schedule(Protocol):
    def latest_at_or_before(self, moment: datetime) -> datetime: ...

    def next_after(self, moment: datetime) -> datetime: ...


@dataclass(frozen=True)
class IntervalSchedule:
    """Runs every ``every``, aligned to the Unix epoch so that all workers agree."""

    every: timedelta

    def __post_init__(self) -> None:
        if self.every <= timedelta(0):
            raise ValueError("an interval schedule needs a positive interval")

    def latest_at_or_before(self, moment: datetime) -> datetime:
        return _EPOCH + ((moment.astimezone(UTC) - _EPOCH) // self.every) * self.every

    def next_after(self, moment: datetime) -> datetime:
        return self.latest_at_or_before(moment) + self.every


@dataclass(frozen=True)
class CronSchedule:
    """A five-field cron expression (minute hour day-of-month month day-of-week)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday … 6 = Saturday, as in cron
    day_of_month_restricted: bool
    day_of_week_restricted: bool
    zone: tzinfo
    # The minute or hour field starts with ``*``: see the module docstring for DST.
    wildcard: bool = False

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days_of_month
        dow = (day.isoweekday() % 7) in self.days_of_week
        # Vixie cron: when both fields are restricted, either may match.
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return dom or dow
        return dom and dow

    def _runs_on(self, day: date) -> list[datetime]:
        """The runs of one local day, ascending, as aware (UTC) instants."""
        if not self._day_matches(day):
            return []
        runs: set[datetime] = set()
        for hour in self.hours:
            for minute in self.minutes:
                wall = datetime.combine(day, time(hour, minute))
                if self.wildcard:
                    runs.update(_occurrences(wall, self.zone))
                else:
                    runs.add(first_showing(wall, self.zone))
        return sorted(runs)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        day = moment.astimezone(self.zone).date() + timedelta(days=1)
        for _ in range(_MAX_SEARCH_DAYS):
            candidates = [run for run in self._runs_on(day) if run <= moment.astimezone(UTC)]
            if candidates:
                return max(candidates)
            day -= timedelta(days=1)
        raise ValueError("cron schedule never fires")

    def next_after(self, moment: datetime) -> datetime:
        day = moment.astimezone(self.zone).date() - timedelta(days=1)
        for _ in range(_MAX_SEARCH_DAYS):
            candidates = [run for run in self._runs_on(day) if run > moment.astimezone(UTC)]
            if candidates:
                return min(candidates)
            day += timedelta(days=1)
        raise ValueError("cron schedule never fires")


def _occurrences(wall: datetime, zone: tzinfo) -> set[datetime]:
    """Every instant whose local time is ``wall``: none in a gap, two in a repeated hour."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return {first}  # the usual case: the offset does not change around ``wall``
    # The folds differ in a repeated hour (both are ``wall``) and in a gap (neither is).
    return {instant for instant in (first, second) if _local(instant, zone) == wall}


def first_showing(wall: datetime, zone: tzinfo) -> datetime:
    """The first instant (UTC) at which the clock of ``zone`` shows ``wall``: for a
    repeated time its first occurrence, for one skipped by a DST change the change
    itself (see the module docstring; send windows open and close the same way)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if _local(first, zone) == wall:
        return first  # exists; for an ambiguous time fold=0 is the first occurrence
    # In a gap: the two folds give instants on either side of it. The run happens at
    # the first second whose local time is past ``wall``, which is the transition.
    other = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = int(min(first, other).timestamp()), int(max(first, other).timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _local(datetime.fromtimestamp(middle, UTC), zone) > wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _local(instant: datetime, zone: tzinfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def due_run(schedule: Schedule, last_run: datetime | None, now: datetime) -> datetime | None:
    """The latest run in ``(last_run, now]``, or None when nothing is due.

    Several missed runs collapse into the latest one: a batch run sends whatever
    is waiting, so running it once catches up.
    """
    latest = schedule.latest_at_or_before(now).astimezone(UTC)
    if last_run is not None and latest <= last_run.astimezone(UTC):
        return None
    return latest


_FIELD_BOUNDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"invalid step {step_text!r} in the {name} field")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            if not (first.isdigit() and last.isdigit()):
                raise ValueError(f"invalid range {base!r} in the {name} field")
            start, end = int(first), int(last)
        elif base.isdigit():
            start = int(base)
            end = high if step_text else start
        else:
            raise ValueError(f"invalid value {base!r} in the {name} field")
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise ValueError(f"{base!r} is outside {low}-{high} in the {name} field")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def parse_cron(expression: str, zone: tzinfo) -> CronSchedule:
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"invalid cron expression {expression!r}: expected five fields (minute hour day-of-month month day-of-week)"
        )
    parsed = [_parse_field(text, *bounds) for text, bounds in zip(fields, _FIELD_BOUNDS, strict=True)]
    minutes, hours, days_of_month, months, days_of_week = parsed
    schedule = CronSchedule(
        minutes=minutes,
        hours=hours,
        days_of_month=days_of_month,
        months=months,
        days_of_week=frozenset(d % 7 for d in days_of_week),
        day_of_month_restricted=fields[2] != "*",
        day_of_week_restricted=fields[4] != "*",
        zone=zone,
        wildcard=fields[0].startswith("*") or fields[1].startswith("*"),
    )
    schedule.next_after(_EPOCH)  # refuses expressions that never fire (e.g. 30 February)
    return schedule


def parse_schedule(text: str, zone: tzinfo) -> Schedule:
    """A cron expression (five fields) or an interval such as ``30s``."""
    if len(text.split()) == 1:
        return IntervalSchedule(parse_duration(text))
    return parse_cron(text, zone)
