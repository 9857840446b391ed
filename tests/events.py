"""Builders of input events in the wire format (CONTRACT §1, §3)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any


def envelope(
    event_type: str,
    payload: dict[str, Any],
    *,
    event_id: str | None = None,
    occurred_at: datetime | None = None,
    producer: str = "tests",
) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": (occurred_at or datetime.now(UTC)).isoformat(),
        "producer": producer,
        "payload": payload,
    }


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
