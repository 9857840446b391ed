"""Query parameters of the API: each read and checked once, a bad one refused with
400 and a message naming it (``BadParameter``), an unknown one too (a misspelt
filter would otherwise return everything).

Times are RFC 3339 with an offset (``2026-11-23T10:15:00+01:00`` or ``…Z``); a
``+`` that arrives as a space (an unencoded ``+`` in a query string means a space)
is read as the ``+`` it was. Dates are ``YYYY-MM-DD``.

A cursor is opaque to clients: the position of the last item of a page in the
list's order, base64url-encoded JSON tagged with the list it belongs to.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Iterable
from datetime import date, datetime

from multidict import MultiMapping

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

_SPACED_OFFSET = re.compile(r" (\d{2}:?\d{2})$")


class BadParameter(ValueError):
    """A parameter the API cannot use; the message names it."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name


class Params:
    """The query parameters of one request, read by name."""

    def __init__(self, query: MultiMapping[str], known: Iterable[str]) -> None:
        self.query = query
        known = tuple(known)
        for name in query:
            if name not in known:
                allowed = ", ".join(known) if known else "none"
                raise BadParameter(name, f"unknown parameter (this route takes: {allowed})")

    def text(self, name: str) -> str | None:
        values = self.query.getall(name, [])
        if len(values) > 1:
            raise BadParameter(name, "given more than once")
        if not values or values[0] == "":
            return None
        return str(values[0])

    def integer(self, name: str) -> int | None:
        value = self.text(name)
        return None if value is None else positive_id(name, value)

    def choices(self, name: str, allowed: Collection[str]) -> tuple[str, ...]:
        """Values from ``allowed``: repeated (``?status=a&status=b``) or comma-separated."""
        chosen: list[str] = []
        for raw in self.query.getall(name, []):
            for value in str(raw).split(","):
                value = value.strip()
                if not value:
                    continue
                if value not in allowed:
                    raise BadParameter(name, f"{value!r} is not one of {', '.join(sorted(allowed))}")
                if value not in chosen:
                    chosen.append(value)
        return tuple(chosen)

    def time(self, name: str) -> datetime | None:
        value = self.text(name)
        return None if value is None else parse_time(name, value)

    def day(self, name: str) -> date | None:
        value = self.text(name)
        if value is None:
            return None
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise ValueError
            return date.fromisoformat(value)
        except ValueError:
            raise BadParameter(name, "not a date (YYYY-MM-DD)") from None

    def limit(self) -> int:
        """``limit``: how many items a page holds, at most MAX_LIMIT (more is capped)."""
        value = self.text("limit")
        if value is None:
            return DEFAULT_LIMIT
        if not value.isdigit() or int(value) < 1:
            raise BadParameter("limit", f"not a whole number from 1 to {MAX_LIMIT}")
        return min(int(value), MAX_LIMIT)

    def cursor(self, tag: str) -> tuple[datetime, int] | None:
        value = self.text("cursor")
        return None if value is None else decode_cursor(tag, value)


def positive_id(name: str, value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**63:
        raise BadParameter(name, "not an id (a whole number above 0)")
    return int(value)


def parse_time(name: str, value: str) -> datetime:
    value = _SPACED_OFFSET.sub(r"+\1", value.strip())
    try:
        if not re.match(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", value):
            raise ValueError
        parsed = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise BadParameter(name, "not an RFC 3339 time (e.g. 2026-11-23T10:15:00+01:00)") from None
    if parsed.tzinfo is None:
        raise BadParameter(name, "the time needs an offset (e.g. +01:00 or Z)")
    return parsed


def encode_cursor(tag: str, position: tuple[datetime, int]) -> str:
    at, item_id = position
    raw = json.dumps([tag, at.isoformat(), item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(tag: str, value: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        found_tag, at, item_id = json.loads(raw)
        position = datetime.fromisoformat(at)
        if found_tag != tag or position.tzinfo is None or not isinstance(item_id, int) or isinstance(item_id, bool):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise BadParameter("cursor", "not a cursor of this list (pass next_cursor as it came)") from None
    return position, item_id
