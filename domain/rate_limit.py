"""The provider's send rate (``COMM_SMTP_RATE_LIMIT``): ``14/s``, ``1000/h``.

A rate is a number of emails per unit of time. It is enforced as an evenly spaced
schedule (the generic cell rate algorithm with no burst allowance): each email takes
the next free slot, one ``interval`` after the previous one, so the limit holds over
any window, an idle spell earns no burst (the next slot is never before now), and a
restart or a new worker brings none either (the last slot handed out is stored, see
streams/persistence/send_rate.py).

Slots are handed out only a short ``horizon`` ahead: an email is claimed just before
it may go, so the ones over the limit wait in the queue, in priority order, and a
slot reserved but not used (a worker stopped, an attempt failed) costs at most a
horizon's worth of sending, always in the direction of sending slower.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_UNITS: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_PATTERN = re.compile(r"\s*(\d+)\s*/\s*(s|m|h|d)\s*")
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Rate:
    count: int
    per: timedelta

    @property
    def interval(self) -> timedelta:
        """The spacing between two emails at this rate, rounded up to the microsecond
        (``1/3`` of a second would otherwise round down: a hair too fast)."""
        return timedelta(microseconds=-(-(self.per // _MICROSECOND) // self.count))

    def __str__(self) -> str:
        unit = next(name for name, length in _UNITS.items() if length == self.per)
        return f"{self.count}/{unit}"


def parse_rate(text: str) -> Rate:
    """Parse ``<count>/<unit>``, unit one of s, m, h, d (e.g. ``14/s``, ``1000/h``)."""
    match = _PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"invalid rate {text!r}: expected a number of emails per unit (s, m, h, d), e.g. 14/s")
    count = int(match.group(1))
    if count < 1:
        raise ValueError(f"invalid rate {text!r}: at least one email per unit")
    return Rate(count, _UNITS[match.group(2)])


@dataclass(frozen=True)
class Reservation:
    """Send times for emails, in order, and the last slot to store (where the next
    reservation starts)."""

    slots: tuple[datetime, ...]
    last_slot: datetime | None


def _last(last_slot: datetime | None, now: datetime, horizon: timedelta) -> datetime | None:
    """The stored last slot, but never beyond the horizon: no slot is handed out
    further ahead, so one beyond it means the clock was stepped back, and waiting
    for it would stall delivery for as long. Every slot handed out lies before this
    bound, so starting from it keeps the rate."""
    return None if last_slot is None else min(last_slot, now + horizon)


def next_slot(last_slot: datetime | None, now: datetime, rate: Rate, horizon: timedelta) -> datetime:
    """When the next email may go: one interval after the last slot handed out, but
    never before now (an idle spell earns no burst)."""
    last = _last(last_slot, now, horizon)
    return now if last is None else max(now, last + rate.interval)


def capacity(last_slot: datetime | None, now: datetime, rate: Rate, horizon: timedelta) -> int:
    """How many emails may go within ``horizon`` from now (slots in [now, now + horizon));
    at least one whenever the next slot is within it, however slow the rate."""
    ahead = now + horizon - next_slot(last_slot, now, rate, horizon)
    if ahead <= timedelta(0):
        return 0
    return math.ceil(ahead / rate.interval)


def until_free(last_slot: datetime | None, now: datetime, rate: Rate, horizon: timedelta) -> timedelta:
    """How long until a slot comes within the horizon (zero when one is)."""
    if capacity(last_slot, now, rate, horizon):
        return timedelta(0)
    return next_slot(last_slot, now, rate, horizon) - (now + horizon) + _MICROSECOND


def reserve(last_slot: datetime | None, now: datetime, count: int, rate: Rate, horizon: timedelta) -> Reservation:
    """The send times of ``count`` emails, evenly spaced from the next free slot, but
    no more than ``capacity`` allows (a request for more gets that many)."""
    taken = min(count, capacity(last_slot, now, rate, horizon))
    if taken <= 0:
        return Reservation((), _last(last_slot, now, horizon))
    start = next_slot(last_slot, now, rate, horizon)
    slots = tuple(start + i * rate.interval for i in range(taken))
    return Reservation(slots, slots[-1])
