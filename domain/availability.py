"""A therapist's weekly phone availability, parsed and validated (CONTRACT §3).

The wire shape is a mapping of weekday name (``monday`` … ``sunday``) to a list of
``{"start": "HH:MM", "end": "HH:MM"}`` in the therapist's local time. It becomes an
immutable ``Availability``: per weekday a tuple of ``TimeRange`` sorted by start.

Times are kept as minutes since local midnight rather than ``datetime.time``: a
range may end at ``24:00`` (the end of the day), which ``time`` cannot represent,
and slot finding does arithmetic on them anyway. A range is half-open, so ranges
that touch (``09:00-10:00`` and ``10:00-11:00``) are valid and do not overlap.

Input from outside goes through ``parse_availability``; what it accepted is stored
as ``as_mapping()`` and read back with ``Availability.from_mapping``, which trusts it.

A mistake raises ``InvalidAvailability`` with a message naming the problem and its
place, e.g. ``availability.tuesday[1]: end 09:00 is not after start 10:00``, so it
can go into a DLQ reason or a command rejection unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MINUTES_PER_DAY = 24 * 60

# ``[0-9]`` rather than ``\d``: ``\d`` also matches non-ASCII digits.
_HH_MM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_END_OF_DAY = "24:00"


class InvalidAvailability(ValueError):
    """Availability that cannot be accepted; the message names the place and problem."""


def format_minutes(minutes: int) -> str:
    """``HH:MM`` for minutes since local midnight (1440 is ``24:00``)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, order=True)
class TimeRange:
    """``[start, end)`` in minutes since local midnight; ``end`` may be 1440 (24:00)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < MINUTES_PER_DAY:
            raise InvalidAvailability(f"start {self.start} is outside 0-1439 minutes")
        if not 0 < self.end <= MINUTES_PER_DAY:
            raise InvalidAvailability(f"end {self.end} is outside 1-1440 minutes")
        if self.end <= self.start:
            raise InvalidAvailability(f"end {format_minutes(self.end)} is not after start {format_minutes(self.start)}")

    def __str__(self) -> str:
        return f"{format_minutes(self.start)}-{format_minutes(self.end)}"


@dataclass(frozen=True)
class Availability:
    """Per weekday (index 0 = Monday, as ``date.weekday()``) the ranges sorted by start.

    Constructing one directly checks the same invariants the parser does: seven
    days, each sorted and without overlaps (``from_mapping``, for stored ones, does not).
    """

    days: tuple[tuple[TimeRange, ...], ...]

    def __post_init__(self) -> None:
        if len(self.days) != len(WEEKDAYS):
            raise InvalidAvailability(f"availability: expected 7 weekdays, got {len(self.days)}")
        for name, ranges in zip(WEEKDAYS, self.days, strict=True):
            if list(ranges) != sorted(ranges):
                raise InvalidAvailability(f"availability.{name}: ranges are not sorted by start")
            for earlier, later in pairwise(ranges):
                if later.start < earlier.end:
                    raise InvalidAvailability(f"availability.{name}: ranges {earlier} and {later} overlap")

    @property
    def is_empty(self) -> bool:
        """No range on any day: the follow-up is an email, not a call (CONTRACT §5.4)."""
        return not any(self.days)

    def on(self, weekday: int) -> tuple[TimeRange, ...]:
        """The ranges of a weekday, 0 = Monday … 6 = Sunday."""
        return self.days[weekday]

    @cached_property
    def joined(self) -> tuple[tuple[TimeRange, ...], ...]:
        """Per weekday the ranges with touching ones joined (09:00-10:00 and 10:00-11:00
        become 09:00-11:00): the stretches a single call may fill. Computed once."""
        days: list[tuple[TimeRange, ...]] = []
        for ranges in self.days:
            joined: list[TimeRange] = []
            for time_range in ranges:
                if joined and time_range.start == joined[-1].end:
                    joined[-1] = TimeRange(joined[-1].start, time_range.end)
                else:
                    joined.append(time_range)
            days.append(tuple(joined))
        return tuple(days)

    def as_mapping(self) -> dict[str, list[dict[str, str]]]:
        """The wire shape again (only days with ranges); ``parse_availability`` inverts it."""
        return {
            name: [{"start": format_minutes(r.start), "end": format_minutes(r.end)} for r in ranges]
            for name, ranges in zip(WEEKDAYS, self.days, strict=True)
            if ranges
        }

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Sequence[Mapping[str, str]]]) -> Availability:
        """The inverse of ``as_mapping``, for a mapping it wrote (an availability
        ``parse_availability`` accepted and that was stored): the wire shape is not
        checked again, as every slot search reads one (the dataclasses still check
        their invariants). Anything else goes through ``parse_availability``."""
        days: list[tuple[TimeRange, ...]] = [() for _ in WEEKDAYS]
        for name, ranges in mapping.items():
            days[WEEKDAYS.index(name)] = tuple(TimeRange(_minutes(r["start"]), _minutes(r["end"])) for r in ranges)
        return cls(days=tuple(days))


def _minutes(hh_mm: str) -> int:
    """Minutes for an ``HH:MM`` that ``format_minutes`` wrote (``24:00`` is 1440)."""
    return int(hh_mm[:2]) * 60 + int(hh_mm[3:])


NO_AVAILABILITY = Availability(days=((),) * len(WEEKDAYS))


def parse_availability(raw: object) -> Availability:
    """Validate the wire shape (any JSON-like value) and build an ``Availability``.

    An empty mapping is valid and means "no phone availability". Keys of a range
    other than ``start`` and ``end`` are ignored, as producers may add fields.
    """
    if not isinstance(raw, Mapping):
        raise InvalidAvailability(f"availability: expected a mapping of weekday to ranges, got {type(raw).__name__}")
    days: list[tuple[TimeRange, ...]] = [() for _ in WEEKDAYS]
    for name, items in raw.items():
        if name not in WEEKDAYS:
            raise InvalidAvailability(f"availability.{name}: unknown weekday, expected one of {', '.join(WEEKDAYS)}")
        days[WEEKDAYS.index(name)] = tuple(sorted(_parse_day(f"availability.{name}", items)))
    return Availability(days=tuple(days))


def _parse_day(path: str, items: object) -> list[TimeRange]:
    # A string is a Sequence too, but never a list of ranges.
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise InvalidAvailability(f"{path}: expected a list of ranges, got {type(items).__name__}")
    return [_parse_range(f"{path}[{index}]", item) for index, item in enumerate(items)]


def _parse_range(path: str, item: object) -> TimeRange:
    if not isinstance(item, Mapping):
        raise InvalidAvailability(f'{path}: expected {{"start": "HH:MM", "end": "HH:MM"}}, got {type(item).__name__}')
    for key in ("start", "end"):
        if key not in item:
            raise InvalidAvailability(f"{path}.{key}: missing")
    start = _parse_time(f"{path}.start", item["start"], may_be_end_of_day=False)
    end = _parse_time(f"{path}.end", item["end"], may_be_end_of_day=True)
    if end <= start:
        raise InvalidAvailability(f"{path}: end {format_minutes(end)} is not after start {format_minutes(start)}")
    return TimeRange(start, end)


def _parse_time(path: str, value: object, *, may_be_end_of_day: bool) -> int:
    if value == _END_OF_DAY:
        if not may_be_end_of_day:
            raise InvalidAvailability(f"{path}: 24:00 is only allowed as an end")
        return MINUTES_PER_DAY
    match = _HH_MM.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidAvailability(f"{path}: {value!r} is not a time HH:MM")
    return int(match.group(1)) * 60 + int(match.group(2))
