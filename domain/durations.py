"""Durations written as an integer and a unit, as in ``7d`` or ``40s``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS: dict[str, timedelta] = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
_PATTERN = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """Parse ``<integer><unit>`` with unit one of ms, s, m, h, d, w."""
    match = _PATTERN.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: expected an integer and a unit (ms, s, m, h, d, w), e.g. 7d or 40s"
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_duration(value: timedelta) -> str:
    """The shortest exact ``<integer><unit>`` form of ``value``."""
    total_ms = round(value / timedelta(milliseconds=1))
    for unit in ("w", "d", "h", "m", "s"):
        unit_ms = round(_UNITS[unit] / timedelta(milliseconds=1))
        if total_ms and total_ms % unit_ms == 0:
            return f"{total_ms // unit_ms}{unit}"
    return f"{total_ms}ms"
