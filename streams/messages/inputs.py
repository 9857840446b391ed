"""Payload schemas of the input topics (CONTRACT §3): matching-events and therapist-events."""

from __future__ import annotations

from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    EmailStr,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
)

from streams.messages.fields import Id, Line, Name, Short, Status, WireModel, within_text_limit


class Patient(WireModel):
    registered_at: AwareDatetime
    first_name: Line | None = None
    last_name: Line | None = None
    gender: Line | None = None
    age: StrictInt | None = Field(None, ge=0, le=150)
    insurance: str | None = None
    diagnosis: str | None = None
    availability: str | None = None
    notes: str | None = None

    _text_limit = field_validator(
        "first_name", "last_name", "gender", "insurance", "diagnosis", "availability", "notes"
    )(within_text_limit)


class MatchCreated(WireModel):
    placement_request_id: Id
    therapist_id: Id
    patient_id: Id
    patient: Patient


class MatchStatusChanged(WireModel):
    placement_request_id: Id
    therapist_id: Id
    patient_id: Id
    new_status: Status
    old_status: Status | None = None


def _iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone (expected an IANA name such as Europe/Berlin)") from None
    return value


class TherapistUpserted(WireModel):
    therapist_id: Id
    email: Annotated[EmailStr, Field(max_length=255)]
    first_name: Name
    last_name: Name
    title: Short | None = None
    salutation: Short | None = None
    phone: Short | None = None
    timezone: Annotated[str, AfterValidator(_iana_zone), Field(max_length=64)] | None = None
    contact_blocked: StrictBool = False
    # Checked by domain.availability at ingest: an invalid one is refused on its own
    # and the rest of the event still applies (issue 5).
    availability: dict[str, Any] | None = None


class TherapistDeleted(WireModel):
    therapist_id: Id


# event_type -> payload model, per input topic kind
MATCHING_EVENTS: dict[str, type[WireModel]] = {
    "match.created": MatchCreated,
    "match.status_changed": MatchStatusChanged,
}


THERAPIST_EVENTS: dict[str, type[WireModel]] = {
    "therapist.created": TherapistUpserted,
    "therapist.updated": TherapistUpserted,
    "therapist.deleted": TherapistDeleted,
}
