"""Builders of input events in the wire format (CONTRACT §1, §3)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from streams.messages import envelope as wire


def envelope(
    event_type: str,
    payload: dict[str, Any],
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    producer: str = "tests",
) -> dict[str, Any]:
    """The service's envelope builder, for another service's event: a new id and
    the current time unless given."""
    return wire.envelope(
        event_type,
        payload,
        event_id=event_id or str(uuid.uuid4()),
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
    )


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def therapist_created(therapist_id: int, **fields: Any) -> dict[str, Any]:
    payload = {
        "therapist_id": therapist_id,
        "email": f"therapeut{therapist_id}@praxis.example",
        "first_name": "Eva",
        "last_name": f"Müller-{therapist_id}",
        "title": "Dr.",
        "salutation": "Frau",
        **fields,
    }
    return envelope("therapist.created", payload)


def match_created(request_id: int, therapist_id: int, registered_at: str, **patient: Any) -> dict[str, Any]:
    return envelope(
        "match.created",
        {
            "placement_request_id": request_id,
            "therapist_id": therapist_id,
            "patient_id": request_id + 100_000,
            "patient": {"registered_at": registered_at, "first_name": f"Pat{request_id}", **patient},
        },
    )


def match_status_changed(request_id: int, therapist_id: int, new_status: str) -> dict[str, Any]:
    return envelope(
        "match.status_changed",
        {
            "placement_request_id": request_id,
            "therapist_id": therapist_id,
            "patient_id": request_id + 100_000,
            "new_status": new_status,
        },
    )
