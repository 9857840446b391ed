"""Placement requests: a patient proposed to a therapist by the matching service."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# A request in one of these statuses is no longer open (CONTRACT §3).
CLOSING_STATUSES = frozenset({"cancelled", "withdrawn", "rejected", "closed"})
ACCEPTED = "accepted"


@dataclass(frozen=True)
class PlacementRequest:
    placement_request_id: int
    patient_id: int
    registered_at: datetime
    # What the event says about the patient (name, age, diagnosis, …). The rules
    # never look inside; it is carried to the email and the database.
    # Special-category personal data: never part of a repr (and so of a log line).
    patient: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    status: str | None = None


def registration_order(requests: Iterable[PlacementRequest]) -> list[PlacementRequest]:
    """Oldest registration first; the request id breaks ties so the order is total."""
    return sorted(requests, key=lambda r: (r.registered_at.astimezone(UTC), r.placement_request_id))
