"""Which due email goes out first when many are due at once.

Most urgent kind first (a patient's confirmation before a manual email before a
follow-up before a new contact request), then the email whose oldest placement
request has waited longest (emails without a registration time last), then the
email created first. The delivery queue sorts by this in SQL, so that it can
take only the first few; ``delivery_order`` states the same order in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from domain.decisions import CONFIRMATION, CONTACT_REQUEST, FOLLOW_UP, MANUAL

# Stored with each email (the ``priority`` column); lower goes first.
PRIORITY: Mapping[str, int] = MappingProxyType({CONFIRMATION: 0, MANUAL: 1, FOLLOW_UP: 2, CONTACT_REQUEST: 3})

# Stands in for a missing registration time; never compared with a real one,
# because ``delivery_order`` orders missing times after present ones first.
_NO_TIME = datetime.min.replace(tzinfo=UTC)


def priority_of(kind: str) -> int:
    """The priority of an email of ``kind``; an unknown kind waits like a contact request."""
    return PRIORITY.get(kind, PRIORITY[CONTACT_REQUEST])


def delivery_order(
    priority: int, oldest_registered_at: datetime | None, email_id: int
) -> tuple[int, bool, datetime, int]:
    """Sort key of a due email: priority, then oldest registration (missing last), then id."""
    if oldest_registered_at is None:
        return (priority, True, _NO_TIME, email_id)
    return (priority, False, oldest_registered_at, email_id)
