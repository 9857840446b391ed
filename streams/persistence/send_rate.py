"""The provider's send rate for the service as a whole (``COMM_SMTP_RATE_LIMIT``).

The provider counts per account, so every worker and delivery process takes its
send slots from one schedule in the database: a row per rate (``send_rates``)
holding the last slot handed out. A reservation locks that row (SELECT … FOR UPDATE
on PostgreSQL; SQLite begins every transaction IMMEDIATE, so writers take turns
anyway), computes the slots with domain.rate_limit and stores the last one, in one
short transaction. What is reserved in it (the emails claimed for those slots) is
committed with it, so two reservations never hand out the same time.

Times are the database's clock (PostgreSQL's ``clock_timestamp()``, read once the
lock is held): one clock for every host, whatever their own clocks say. A host
whose clock ran ahead would otherwise take slots the others see as later, and send
closer to theirs than the rate allows. Each host maps that clock onto its own
monotonic clock (``DatabaseClock``) to wait for a slot. SQLite is one file on one
host, whose clock every process shares.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from domain.rate_limit import Rate, capacity, reserve, until_free
from streams.clock import utcnow
from streams.persistence.models import SendRate
from streams.persistence.outbox import insert_ignoring_conflicts

T = TypeVar("T")

# The schedule of the SMTP provider (the only rate-limited one so far).
SMTP = "smtp"
# The soonest a slot is handed out: time for the answer to reach its sender (the
# rest of the transaction, the commit, the way back), so that the first slot is not
# already past when it arrives (streams.delivery.pacing gives up missed ones).
LEAD = timedelta(milliseconds=50)


class DatabaseClock:
    """The database's clock on this host's ``time.monotonic()``.

    A reading of the database's clock took place before its answer arrived, so
    ``reading - arrival`` is a lower bound of the offset between the two clocks; the
    greatest of the recent ones (from the fastest answer) is the closest, and still
    never makes a slot early. One offset for all claims keeps their slots an interval
    apart on this host too, however long each answer took. Recent: within
    ``WINDOW`` seconds, so that the clocks' drift (a few milliseconds at most
    meanwhile, when NTP slews the database's clock) does not add up; and none from
    before a reading ``STEP`` below them, the database's clock set back.
    """

    WINDOW = 10.0
    STEP = 0.5

    def __init__(self) -> None:
        self._bounds: deque[tuple[float, float]] = deque()  # (arrival, lower bound)
        self._lock = threading.Lock()

    def offset(self, reading: datetime, arrival: float) -> float:
        """Take in a reading of the database's clock that arrived at ``arrival``
        (this host's monotonic clock); the offset to use now (database - here)."""
        bound = reading.timestamp() - arrival
        with self._lock:
            if self._bounds and bound < max(b for _, b in self._bounds) - self.STEP:
                self._bounds.clear()
            self._bounds.append((arrival, bound))
            while arrival - self._bounds[0][0] > self.WINDOW:
                self._bounds.popleft()
            return max(b for _, b in self._bounds)


@dataclass(frozen=True)
class SendSlots:
    """Send times reserved in one go, on the database's clock."""

    slots: tuple[datetime, ...]
    reserved_at: datetime  # the database's clock when they were reserved
    offset: float  # the database's clock minus this host's monotonic clock, in seconds
    # None could be reserved because of the rate: how long until one is free (zero
    # when the rate was not the reason).
    until_free: timedelta = timedelta(0)

    @property
    def deadlines(self) -> list[float]:
        """Each slot on this host's monotonic clock (``time.monotonic()``)."""
        return [slot.timestamp() - self.offset for slot in self.slots]


def take_at_rate(
    session: Session,
    rate: Rate,
    horizon: timedelta,
    take: Callable[[int], Sequence[T]],
    clock: DatabaseClock,
    name: str = SMTP,
) -> tuple[list[T], SendSlots]:
    """Take (``take(n)``, at most n) as many items as ``rate`` lets go within
    ``horizon``, and reserve a slot for each, in the caller's transaction: the row
    stays locked until it commits, so what ``take`` changes and the slots are
    committed together."""
    last_slot = _locked(session, name)
    reading = database_now(session)
    offset = clock.offset(reading, time.monotonic())
    now = reading + LEAD
    free = capacity(last_slot, now, rate, horizon)
    if free == 0:
        reservation = reserve(last_slot, now, 0, rate, horizon)
        _store(session, name, last_slot, reservation.last_slot)
        return [], SendSlots((), reading, offset, until_free(last_slot, now, rate, horizon))
    items = list(take(free))[:free]
    reservation = reserve(last_slot, now, len(items), rate, horizon)
    _store(session, name, last_slot, reservation.last_slot)
    return items, SendSlots(reservation.slots, reading, offset)


def reserve_slots(
    session: Session, count: int, rate: Rate, horizon: timedelta, clock: DatabaseClock, name: str = SMTP
) -> SendSlots:
    """Up to ``count`` send slots within ``horizon``."""
    _, slots = take_at_rate(session, rate, horizon, lambda free: range(min(count, free)), clock, name)
    return slots


def database_now(session: Session) -> datetime:
    """The database's clock (SQLite: the host's), read now, not at the start of the
    transaction: a reservation may have waited for the lock."""
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.execute(select(func.clock_timestamp())).scalar_one()
        return value.astimezone(UTC)
    return utcnow()


def _locked(session: Session, name: str) -> datetime | None:
    """The last slot of the schedule, its row locked (created on first use)."""
    query = select(SendRate.last_slot_at).where(SendRate.name == name).with_for_update()
    row = session.execute(query).first()
    if row is None:
        session.execute(insert_ignoring_conflicts(session, SendRate).values(name=name, last_slot_at=None))
        row = session.execute(query).one()
    last_slot: datetime | None = row[0]
    return last_slot


def _store(session: Session, name: str, before: datetime | None, after: datetime | None) -> None:
    if after != before:
        session.execute(update(SendRate).where(SendRate.name == name).values(last_slot_at=after))
