"""When contact and follow-up emails may go out (``COMM_SEND_WINDOW``).

A window is a set of weekdays and a daily time range, read in each therapist's time
zone: ``mon-fri 08:00-18:00``; several are separated by commas
(``mon-fri 08:00-18:00, sat 09:00-12:00``). Day ranges may wrap (``fri-mon``). A time
range may not cross midnight: ``fri 22:00-24:00, sat 00:00-06:00`` says "Friday
night". Times are ``HH:MM`` or ``HH:MM:SS``; an end of ``24:00`` is midnight.

DST, decided deliberately (as for call slots in ``domain.slots``): a range on a local
day is open from the instant the therapist's clock first shows its start until the
instant it first shows its end.

- A start or end in the skipped hour (spring forward, Berlin 29 March 2026
  02:00-02:59) is the transition (03:00 summer time), so ``02:30-04:00`` that day
  opens at 03:00, and a range wholly in the gap is closed that day.
- A start or end in the repeated hour (fall back, Berlin 25 October 2026 02:00-02:59)
  is its first occurrence (summer time): ``02:30-18:00`` opens at 02:30 summer time
  and stays open through the second pass of 02:00-02:30; ``00:00-02:30`` closes at
  02:30 summer time and stays closed in the second pass.
- So a range lasts its length on the clock, except across a change: ``01:00-04:00``
  is 2 hours long on 29 March and 4 hours on 25 October.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from domain.decisions import CONFIRMATION, CONTACT_REQUEST, FOLLOW_UP
from domain.schedule import first_showing

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = r"\d{2}:\d{2}(?::\d{2})?"
_PART = re.compile(rf"(?P<first>[a-z]{{3}})(?:-(?P<last>[a-z]{{3}}))?\s+(?P<start>{_TIME})-(?P<end>{_TIME})")
_MIDNIGHT = ("24:00", "24:00:00")
_ONE_DAY = timedelta(days=1)
# A window opens at least once a week; the extra days cover a week whose only
# opening lies wholly in a skipped hour.
_SEARCH_DAYS = 15


@dataclass(frozen=True)
class DailyRange:
    weekdays: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: time
    end: time | None  # None: until midnight (24:00)


@dataclass(frozen=True)
class SendWindow:
    ranges: tuple[DailyRange, ...]
    text: str

    def __str__(self) -> str:
        return self.text


def parse_send_window(text: str) -> SendWindow:
    """Parse ``<day>[-<day>] HH:MM[:SS]-HH:MM[:SS][, ...]`` (days mon..sun, end may be 24:00)."""
    ranges = []
    for raw in text.split(","):
        part = " ".join(raw.strip().lower().split())
        if not part:
            raise ValueError(f"invalid send window {text.strip()!r}: an empty part (a comma too many?)")
        match = _PART.fullmatch(part)
        if match is None:
            raise ValueError(
                f"invalid send window {raw.strip()!r}: expected days and hours such as 'mon-fri 08:00-18:00'"
            )
        first, last = match.group("first"), match.group("last") or match.group("first")
        if first not in DAYS or last not in DAYS:
            raise ValueError(f"invalid send window {raw.strip()!r}: days are {', '.join(DAYS)}")
        start_day, end_day = DAYS.index(first), DAYS.index(last)
        days = range(start_day, end_day + 1) if start_day <= end_day else [*range(start_day, 7), *range(end_day + 1)]
        start = _clock(match.group("start"), raw)
        end = None if match.group("end") in _MIDNIGHT else _clock(match.group("end"), raw)
        if end is not None and end <= start:
            raise ValueError(f"invalid send window {raw.strip()!r}: the end must be after the start, on the same day")
        ranges.append(DailyRange(frozenset(days), start, end))
    return SendWindow(tuple(ranges), text.strip())


def _clock(value: str, raw: str) -> time:
    hours, minutes, *seconds = (int(part) for part in value.split(":"))
    second = seconds[0] if seconds else 0
    if hours > 23 or minutes > 59 or second > 59:
        raise ValueError(f"invalid send window {raw.strip()!r}: {value} is not a time of day")
    return time(hours, minutes, second)


def windowed_kinds(confirmations: bool) -> frozenset[str]:
    """The email kinds a send window holds back: contact requests and follow-ups,
    confirmations only when asked to (``COMM_SEND_WINDOW_CONFIRMATIONS``); never
    manual emails, which staff send on purpose."""
    return frozenset({CONTACT_REQUEST, FOLLOW_UP, *([CONFIRMATION] if confirmations else [])})


def is_open(window: SendWindow, zone: tzinfo, at: datetime) -> bool:
    """Whether ``window`` is open at the instant ``at`` (aware), in the time zone
    ``zone`` (the therapist's). Ranges are half-open: open at the start, closed at
    the end."""
    instant = _utc(at)
    day = instant.astimezone(zone).date()
    return any(opens <= instant < closes for opens, closes in _openings(window, zone, day - _ONE_DAY, 3))


def next_open(window: SendWindow, zone: tzinfo, at: datetime) -> datetime:
    """The first instant at or after ``at`` (aware) when ``window`` is open in
    ``zone``: ``at`` itself when it is open, else the next opening, as an aware
    datetime in the time zone of ``at`` (the same instant in any zone)."""
    instant = _utc(at)
    day = instant.astimezone(zone).date()
    for opens, closes in _openings(window, zone, day - _ONE_DAY, _SEARCH_DAYS):
        if closes > instant:
            return at if opens <= instant else opens.astimezone(at.tzinfo)
    raise ValueError(f"send window {window.text!r} does not open within {_SEARCH_DAYS} days of {at.isoformat()}")


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone: a send window needs an instant")
    return at.astimezone(UTC)


def _openings(window: SendWindow, zone: tzinfo, first_day: date, days: int) -> Iterator[tuple[datetime, datetime]]:
    """The window's non-empty open intervals (UTC, half-open) on ``days`` local days
    from ``first_day``, earliest start first. Each lies inside its local day (a range
    does not cross midnight), so sorting day by day orders them all."""
    for offset in range(days):
        day = first_day + offset * _ONE_DAY
        yield from sorted(_day_openings(window, zone, day))


def _day_openings(window: SendWindow, zone: tzinfo, day: date) -> Iterator[tuple[datetime, datetime]]:
    for part in window.ranges:
        if day.weekday() not in part.weekdays:
            continue
        opens = first_showing(datetime.combine(day, part.start), zone)
        end = datetime.combine(day + _ONE_DAY, time()) if part.end is None else datetime.combine(day, part.end)
        closes = first_showing(end, zone)
        if opens < closes:
            yield opens, closes
