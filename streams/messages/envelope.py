"""The event envelope of CONTRACT §1: the schema inputs are checked against, and a
builder of envelopes for the input events the demo and the tests play. Output
events are built through their models (streams/messages/outputs.py) and the
envelope model of streams/messages/output_envelope.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import (
    AwareDatetime,
    Field,
    StrictInt,
)

from streams.messages.fields import WireModel

SCHEMA_VERSION = 1

PRODUCER = "communication-service"


class Envelope(WireModel):
    event_id: UUID
    event_type: str = Field(min_length=1)
    schema_version: StrictInt
    occurred_at: AwareDatetime
    producer: str = Field(min_length=1)
    payload: dict[str, Any]
    causation_id: UUID | None = None


def envelope(
    event_type: str,
    payload: dict[str, Any],
    *,
    event_id: str,
    occurred_at: datetime,
    causation_id: str | None = None,
    producer: str = PRODUCER,
) -> dict[str, Any]:
    """An output envelope (CONTRACT §1); with another ``producer``, the input events
    the tests and the demo play."""
    document: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": occurred_at.isoformat(),
        "producer": producer,
        "payload": payload,
    }
    if causation_id is not None:
        document["causation_id"] = causation_id
    return document
