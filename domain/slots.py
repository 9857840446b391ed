"""The next free phone-call slot in a therapist's availability (CONTRACT §5.4, §5.5).

``find_slot`` returns the earliest call start that

- lies on the slot grid of the therapist's *local* wall clock (the seconds since
  local midnight are a multiple of ``slot``, so 5-minute slots start at 09:00,
  09:05, … Berlin time in summer and in winter),
- is at or after ``now + min_notice`` and at most ``horizon`` after ``now``,
- leaves the whole call ``[start, start + duration)`` inside the availability of
  that local day (ranges that touch count as one: 09:00-10:00 plus 10:00-11:00 is
  09:00-11:00; a call never runs past local midnight),
- overlaps none of the therapist's booked calls (half-open, so back to back is fine),
- and, with a staff ``capacity``, overlaps fewer than ``capacity`` of all booked
  calls of all therapists.

It answers ``Slot`` (UTC instants) or ``NoSlot`` with a reason a person can read;
running out of slots is an ordinary outcome, not an error.

DST, decided deliberately:

- Grid points are local wall times. A wall time that does not exist (spring
  forward, Berlin 29 March 2026 02:00-02:59) is skipped; a range that starts in
  the gap begins at the transition (03:00), one that lies wholly in it is empty.
- A wall time that exists twice (fall back, Berlin 25 October 2026 02:00-02:59)
  is used once, at its first occurrence (fold=0). The second pass through that
  hour offers no call starts: a range 02:00-03:00 on that night offers 02:00 …
  02:55 summer time, and the next start after them is 03:00 winter time.
- A call never contains a UTC-offset change, so its length on the therapist's
  clock equals its real length ``duration``. A call that *ends* exactly at the
  change (01:55-02:00 winter time, the clock then reading 03:00) never sees the
  clock jump and is allowed.
- A range is the instants from when the local clock first shows its start until
  it first shows its end; a range 01:30-03:30 lasts 1 hour real time on 29 March
  and 3 hours on 25 October, within which the rules above pick the starts.

Speed: booked calls are turned once into sorted integer arrays (``BookedCalls``).
The search walks the availability windows of each local day in order; a candidate
that collides jumps to the end of the blocking call (merged with the calls that
touch it) instead of stepping one slot at a time, so one search costs about one
bisection per day visited and per blocking block of calls, not per booked call.
Assumes that no zone changes its offset and changes it back within one local day
(none does), so a day whose two midnights share one offset has no change inside.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from domain.availability import Availability, TimeRange
from domain.durations import format_duration

Interval = tuple[datetime, datetime]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
_US = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
_MINUTE_US = 60_000_000
_DAY_US = 86_400_000_000

DEFAULT_SLOT = timedelta(minutes=5)
DEFAULT_HORIZON = timedelta(weeks=4)


@dataclass(frozen=True)
class Slot:
    """A free call, as UTC instants; ``end - start`` is the call's duration."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class NoSlot:
    """No call fits; ``reason`` says why, for an event or a log line."""

    reason: str


@dataclass(frozen=True)
class BookedCalls:
    """Booked calls as sorted integer arrays (microseconds since the epoch).

    Build it once with ``BookedCalls.of`` and reuse it for many searches: sorting
    a thousand calls costs more than a search does. It holds two views:
    the calls merged into disjoint busy blocks (calls that overlap or touch become
    one block), which a candidate jumps past, and the sorted starts and ends of the
    individual calls, whose difference counts the calls overlapping an interval.
    """

    block_starts: tuple[int, ...] = ()
    block_ends: tuple[int, ...] = ()
    starts: tuple[int, ...] = ()
    ends: tuple[int, ...] = ()

    @classmethod
    def of(cls, calls: Iterable[Interval]) -> BookedCalls:
        """From ``(start, end)`` pairs of aware datetimes, in any order."""
        pairs = sorted((_to_us(start, "booked call start"), _to_us(end, "booked call end")) for start, end in calls)
        block_starts: list[int] = []
        block_ends: list[int] = []
        for start, end in pairs:
            if end <= start:
                raise ValueError(
                    f"a booked call must end after it starts: {_from_us(start).isoformat()} "
                    f"to {_from_us(end).isoformat()}"
                )
            if block_ends and start <= block_ends[-1]:
                block_ends[-1] = max(block_ends[-1], end)
            else:
                block_starts.append(start)
                block_ends.append(end)
        return cls(
            block_starts=tuple(block_starts),
            block_ends=tuple(block_ends),
            starts=tuple(start for start, _ in pairs),
            ends=tuple(sorted(end for _, end in pairs)),
        )

    def __len__(self) -> int:
        return len(self.starts)

    def blocking_end(self, start: int, end: int) -> int | None:
        """The end of the busy block overlapping ``[start, end)``, or None if free.

        Of several overlapping blocks it is the last one's end, the first instant a
        call starting at or after ``start`` could begin without hitting any of them.
        """
        index = bisect_left(self.block_starts, end) - 1
        if index >= 0 and self.block_ends[index] > start:
            return self.block_ends[index]
        return None

    def count_overlapping(self, start: int, end: int) -> int:
        # Every call ending at or before ``start`` also starts before ``end``.
        return bisect_left(self.starts, end) - bisect_right(self.ends, start)

    def next_end_after(self, moment: int) -> int | None:
        index = bisect_right(self.ends, moment)
        return self.ends[index] if index < len(self.ends) else None


NO_CALLS = BookedCalls()


def find_slot(
    availability: Availability,
    zone: tzinfo,
    now: datetime,
    *,
    booked: BookedCalls | Iterable[Interval] = NO_CALLS,
    duration: timedelta | None = None,
    slot: timedelta = DEFAULT_SLOT,
    min_notice: timedelta = timedelta(0),
    horizon: timedelta = DEFAULT_HORIZON,
    staff_calls: BookedCalls | Iterable[Interval] = NO_CALLS,
    capacity: int | None = None,
) -> Slot | NoSlot:
    """The earliest free call start (see the module docstring), or why there is none.

    ``zone`` is the therapist's time zone (the caller builds the ``ZoneInfo``);
    ``availability`` is in its wall-clock time. ``duration`` defaults to ``slot``.
    ``booked`` are the therapist's calls, ``staff_calls`` the calls of all
    therapists, counted against ``capacity`` (None: unlimited). Both may be
    ``BookedCalls`` built once, or plain ``(start, end)`` pairs in any order, which
    are sorted on every call. A start may lie exactly ``horizon`` after ``now``.
    """
    length = slot if duration is None else duration
    _check_arguments(now, length, slot, min_notice, horizon, capacity)
    if availability.is_empty:
        return NoSlot("the therapist has no phone availability")
    if capacity == 0:
        return NoSlot("the staff capacity for calls is 0")
    search = _Search(
        zone=zone,
        earliest=_to_us(now + min_notice, "now"),
        latest=_to_us(now + horizon, "now"),
        duration=length // _US,
        grid=slot // _US,
        booked=booked if isinstance(booked, BookedCalls) else BookedCalls.of(booked),
        staff=None
        if capacity is None
        else (staff_calls if isinstance(staff_calls, BookedCalls) else BookedCalls.of(staff_calls)),
        capacity=capacity,
    )
    if search.earliest > search.latest:
        return NoSlot(
            f"the minimum notice of {format_duration(min_notice)} reaches past the "
            f"search horizon of {format_duration(horizon)}"
        )
    start = search.run(availability.joined)
    if start is None:
        return NoSlot(search.reason(format_duration(length)))
    return Slot(start=_from_us(start), end=_from_us(start + search.duration))


@dataclass
class _Search:
    """One run of ``find_slot``: its bounds, and what blocked the candidates seen."""

    zone: tzinfo
    earliest: int
    latest: int
    duration: int
    grid: int
    booked: BookedCalls
    staff: BookedCalls | None
    capacity: int | None
    fitted: bool = field(default=False, init=False)
    blocked_by_calls: bool = field(default=False, init=False)
    blocked_by_capacity: bool = field(default=False, init=False)

    def run(self, windows: tuple[tuple[TimeRange, ...], ...]) -> int | None:
        """Local days in order, their pieces in order, the windows of each in order:
        the first free start found is the earliest."""
        day = _local_date(self.earliest, self.zone)
        # After a fall-back across midnight an instant can read as the previous date
        # while belonging to the next day's span, hence the extra day.
        last_day = _local_date(self.latest, self.zone) + _ONE_DAY
        while day <= last_day:
            ranges = windows[day.weekday()]
            if ranges:
                for piece in _day_pieces(day, self.zone):
                    if piece.hi <= self.earliest:
                        continue
                    if piece.lo > self.latest:
                        return None
                    for time_range in ranges:
                        low = max(piece.lo, piece.origin + time_range.start * _MINUTE_US, self.earliest)
                        high = min(piece.hi, piece.origin + time_range.end * _MINUTE_US)
                        start = self._first_free(low, high, piece.origin)
                        if start is not None:
                            return start
            day += _ONE_DAY
        return None

    def _first_free(self, low: int, high: int, origin: int) -> int | None:
        """The first free grid start of a call inside ``[low, high)``, one UTC offset."""
        start = _ceil_to_grid(low, origin, self.grid)
        while start + self.duration <= high and start <= self.latest:
            end = start + self.duration
            self.fitted = True
            blocked_until = self.booked.blocking_end(start, end)
            if blocked_until is not None:
                self.blocked_by_calls = True
                start = _ceil_to_grid(blocked_until, origin, self.grid)
                continue
            if (
                self.staff is not None
                and self.capacity is not None
                and (self.staff.count_overlapping(start, end) >= self.capacity)
            ):
                # The count can only drop once one of the overlapping calls has ended.
                self.blocked_by_capacity = True
                next_end = self.staff.next_end_after(start)
                assert next_end is not None  # at least one call overlaps, so one ends later
                start = _ceil_to_grid(next_end, origin, self.grid)
                continue
            return start
        return None

    def reason(self, length: str) -> str:
        between = f"between {_local_text(self.earliest, self.zone)} and {_local_text(self.latest, self.zone)}"
        if not self.fitted:
            return f"no {length} call fits into the therapist's availability {between}"
        causes = [
            name
            for name, hit in (("booked calls", self.blocked_by_calls), ("staff capacity", self.blocked_by_capacity))
            if hit
        ]
        return f"every {length} slot in the therapist's availability {between} is taken ({' and '.join(causes)})"


@dataclass(frozen=True)
class _Piece:
    """Part of a local day with one UTC offset: instants ``[lo, hi)``, and the instant
    ``origin`` at which this offset's wall clock shows 00:00 (wall = instant - origin)."""

    lo: int
    hi: int
    origin: int


def _day_pieces(day: date, zone: tzinfo) -> list[_Piece]:
    """The instants of a local day, split where the UTC offset changes.

    Wall times the day has already shown (the repeated hour after falling back) are
    cut off, so each wall time of the day belongs to one instant: its first.
    """
    midnight = (day.toordinal() - _EPOCH_ORDINAL) * _DAY_US  # wall 00:00, read as UTC
    # Fast path, nearly every day: both midnights exist once and with the same offset,
    # so the offset does not change in between (the assumption in the module docstring).
    midnight_offset = _midnight_offset(day, zone)
    if midnight_offset is not None and midnight_offset == _midnight_offset(day + _ONE_DAY, zone):
        origin = midnight - midnight_offset // _US
        return [_Piece(lo=origin, hi=origin + _DAY_US, origin=origin)]
    low = _day_start(day, zone)
    day_end = _day_start(day + _ONE_DAY, zone)
    pieces: list[_Piece] = []
    wall_reached = 0
    while low < day_end:
        offset = _offset_at(low, zone)
        high = day_end
        if _offset_at(day_end - 1, zone) != offset:
            high = _next_offset_change(low, day_end - 1, zone)
        origin = midnight - offset
        first_new = max(low, origin + wall_reached)
        if first_new < high:
            pieces.append(_Piece(lo=first_new, hi=high, origin=origin))
        wall_reached = max(wall_reached, high - origin)
        low = high
    return pieces


def _midnight_offset(day: date, zone: tzinfo) -> timedelta | None:
    """The UTC offset at the day's local midnight, or None if midnight is skipped or
    repeated (its two folds disagree). Checking both folds catches a change whose gap
    or overlap straddles midnight, which comparing two midnights alone would miss."""
    first = zone.utcoffset(datetime(day.year, day.month, day.day))
    return first if first == zone.utcoffset(datetime(day.year, day.month, day.day, fold=1)) else None


def _day_start(day: date, zone: tzinfo) -> int:
    """The first instant of a local day: its midnight (the first one if it repeats),
    or the end of the gap when midnight itself is skipped."""
    wall = datetime.combine(day, time())
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return _to_us(first, "midnight")
    # In a gap the two folds give instants on either side of the transition.
    other = _to_us(wall.replace(tzinfo=zone, fold=1).astimezone(UTC), "midnight")
    low, high = sorted((_to_us(first, "midnight"), other))
    return _next_offset_change(low, high, zone)


def _next_offset_change(low: int, high: int, zone: tzinfo) -> int:
    """The first instant in ``(low, high]`` with another offset than ``low``'s,
    given that ``high`` has one."""
    offset = _offset_at(low, zone)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(middle, zone) == offset:
            low = middle
        else:
            high = middle
    return high


def _offset_at(instant: int, zone: tzinfo) -> int:
    offset = _from_us(instant).astimezone(zone).utcoffset()
    if offset is None:
        raise ValueError(f"time zone {zone!r} gives no UTC offset")
    return offset // _US


def _ceil_to_grid(instant: int, origin: int, grid: int) -> int:
    return origin - ((origin - instant) // grid) * grid


def _check_arguments(
    now: datetime,
    duration: timedelta,
    slot: timedelta,
    min_notice: timedelta,
    horizon: timedelta,
    capacity: int | None,
) -> None:
    if now.utcoffset() is None:
        raise ValueError("now must be time-zone-aware")
    if slot <= timedelta(0):
        raise ValueError("the slot length must be positive")
    if duration <= timedelta(0):
        raise ValueError("the call duration must be positive")
    if min_notice < timedelta(0):
        raise ValueError("the minimum notice must not be negative")
    if horizon < timedelta(0):
        raise ValueError("the search horizon must not be negative")
    if capacity is not None and capacity < 0:
        raise ValueError("the staff capacity must not be negative")


def _to_us(moment: datetime, what: str) -> int:
    if moment.utcoffset() is None:
        raise ValueError(f"{what} must be time-zone-aware: {moment.isoformat()}")
    return (moment - _EPOCH) // _US


def _from_us(instant: int) -> datetime:
    return _EPOCH + timedelta(microseconds=instant)


def _local_date(instant: int, zone: tzinfo) -> date:
    return _from_us(instant).astimezone(zone).date()


def _local_text(instant: int, zone: tzinfo) -> str:
    return _from_us(instant).astimezone(zone).isoformat(timespec="minutes")
