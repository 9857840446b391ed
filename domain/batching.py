"""Batching (CONTRACT §5.2): every waiting request of a therapist goes into one email."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from domain.placement import PlacementRequest, registration_order

INITIAL_CONTACT = "initial_contact"
BATCH_REQUEST = "batch_request"

# Namespace of the service's derived identifiers (stable across replays).
KEY_NAMESPACE = uuid.UUID("5b0f7f8e-3d57-4c1e-9f3a-6a2f0c6a8e11")


def contact_template(request_count: int) -> str:
    if request_count < 1:
        raise ValueError("a contact email needs at least one placement request")
    return INITIAL_CONTACT if request_count == 1 else BATCH_REQUEST


def contact_email_key(therapist_id: int, run_at: datetime) -> str:
    """The same therapist and batch run always give the same email key."""
    instant = run_at.astimezone(UTC).isoformat()
    return str(uuid.uuid5(KEY_NAMESPACE, f"contact:{therapist_id}:{instant}"))


def derived_key(*parts: object) -> str:
    return str(uuid.uuid5(KEY_NAMESPACE, ":".join(str(part) for part in parts)))


def batch_requests(pending: Iterable[PlacementRequest]) -> tuple[PlacementRequest, ...]:
    return tuple(registration_order(pending))


def oldest_registration(requests: Iterable[PlacementRequest]) -> datetime | None:
    return min((r.registered_at.astimezone(UTC) for r in requests), default=None)
