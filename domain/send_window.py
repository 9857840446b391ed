"""When contact and follow-up emails may go out (``COMM_SEND_WINDOW``).

A window is a set of weekdays and a daily time range, read in each therapist's time
zone: ``mon-fri 08:00-18:00``; several are separated by commas
(``mon-fri 08:00-18:00, sat 09:00-12:00``). A time range may not cross midnight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PART = re.compile(r"(?P<first>[a-z]{3})(?:-(?P<last>[a-z]{3}))?\s+(?P<start>\d{2}:\d{2})-(?P<end>\d{2}:\d{2}|24:00)")


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
    """Parse ``<day>[-<day>] HH:MM-HH:MM[, ...]`` (days mon..sun, end may be 24:00)."""
    ranges = []
    for raw in text.split(","):
        part = " ".join(raw.strip().lower().split())
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
        end = None if match.group("end") == "24:00" else _clock(match.group("end"), raw)
        if end is not None and end <= start:
            raise ValueError(f"invalid send window {raw.strip()!r}: the end must be after the start, on the same day")
        ranges.append(DailyRange(frozenset(days), start, end))
    return SendWindow(tuple(ranges), text.strip())


def _clock(value: str, raw: str) -> time:
    hours, minutes = (int(part) for part in value.split(":"))
    if hours > 23 or minutes > 59:
        raise ValueError(f"invalid send window {raw.strip()!r}: {value} is not a time of day")
    return time(hours, minutes)
