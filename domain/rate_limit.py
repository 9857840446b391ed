"""The provider's send rate (``COMM_SMTP_RATE_LIMIT``): ``14/s``, ``1000/h``.

A rate is a number of emails per unit of time. It is enforced as an evenly spaced
schedule (the generic cell rate algorithm): each email takes the next free slot, one
``interval`` after the previous one, so the limit holds over any window and a restart
brings no burst (the last slot handed out is stored, see
streams/persistence/send_rate.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

_UNITS: dict[str, timedelta] = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
}
_PATTERN = re.compile(r"\s*(\d+)\s*/\s*(s|m|h|d)\s*")


@dataclass(frozen=True)
class Rate:
    count: int
    per: timedelta

    @property
    def interval(self) -> timedelta:
        """The spacing between two emails at this rate."""
        return self.per / self.count

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
