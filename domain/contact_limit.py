"""The weekly contact limit (CONTRACT §5.1), computed over a sliding window of send times.

At most one contact-request email per therapist in any window of ``interval``,
measured between send times: a new one may go out at ``now`` only when the latest
earlier one was sent at least ``interval`` before. The window is half-open, so
exactly ``interval`` after the previous send is allowed.

The interval is a duration, not a calendar step: all arithmetic is done in UTC,
because Python adds a timedelta to a zoned datetime in wall-clock time (and
compares two datetimes of the same zone as if they were naive), which would make
a "week" across a DST change 167 or 169 hours long.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta


def next_contact_at(sent_at: Iterable[datetime], interval: timedelta) -> datetime | None:
    """The first instant a new contact email may be sent, or None if there is no history."""
    latest = max((t.astimezone(UTC) for t in sent_at), default=None)
    return None if latest is None else latest + interval


def may_contact(sent_at: Iterable[datetime], now: datetime, interval: timedelta) -> bool:
    allowed_from = next_contact_at(sent_at, interval)
    return allowed_from is None or now.astimezone(UTC) >= allowed_from


def sliding_window(sent_at: Iterable[datetime], now: datetime, interval: timedelta) -> tuple[datetime, ...]:
    """The send times that still constrain a send at ``now`` or later, oldest first.

    Anything sent at or before ``now - interval`` can no longer block a send, so it
    is dropped from the history that is kept.
    """
    horizon = now.astimezone(UTC) - interval
    return tuple(sorted(u for u in (t.astimezone(UTC) for t in sent_at) if u > horizon))
