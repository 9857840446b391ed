"""Pydantic schemas of the wire format (CONTRACT §1, §3) and the input parser.

``parse_input`` turns the raw bytes of a message into a validated ``InputEvent``
or a ``Rejection`` whose reason names the field at fault. Reasons never contain
the offending value: it may be a patient's data, and the DLQ record keeps the
original bytes anyway.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
PRODUCER = "communication-service"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

_CONTROL = re.compile(r"[\r\n\x00]")


def _single_line(value: str) -> str:
    # Names end up in email headers; a line break there could inject headers.
    if _CONTROL.search(value):
        raise ValueError("must not contain line breaks or NUL characters")
    return value


Line = Annotated[str, AfterValidator(_single_line)]
# Ids and texts are bounded by the database columns they end up in: a value that
# could never be stored is refused here (DLQ), not retried forever downstream.
Id = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
Status = Annotated[str, Field(min_length=1, max_length=32)]
Short = Annotated[str, AfterValidator(_single_line), Field(max_length=64)]
Name = Annotated[str, AfterValidator(_single_line), Field(min_length=1, max_length=255)]


class _Model(BaseModel):
    # Producers may add fields (CONTRACT: "extend it freely"); unknown ones are kept.
    model_config = ConfigDict(extra="allow", frozen=True)


class Envelope(_Model):
    event_id: UUID
    event_type: str = Field(min_length=1)
    schema_version: StrictInt
    occurred_at: AwareDatetime
    producer: str = Field(min_length=1)
    payload: dict[str, Any]
    causation_id: UUID | None = None


# -- matching-events ---------------------------------------------------------------


# Free-text fields are bounded (COMM_MAX_TEXT_FIELD_BYTES, handed in as validation
# context); without a context, this default.
DEFAULT_MAX_TEXT_BYTES = 8 * 1024


def _within_text_limit(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return value
    limit = (info.context or {}).get("max_text_bytes", DEFAULT_MAX_TEXT_BYTES)
    size = len(value.encode("utf-8"))
    if size > limit:
        raise ValueError(
            f"is {size} bytes, over the limit of {limit} bytes for a text field (COMM_MAX_TEXT_FIELD_BYTES)"
        )
    return value


class Patient(_Model):
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
    )(_within_text_limit)


class MatchCreated(_Model):
    placement_request_id: Id
    therapist_id: Id
    patient_id: Id
    patient: Patient


class MatchStatusChanged(_Model):
    placement_request_id: Id
    therapist_id: Id
    patient_id: Id
    new_status: Status
    old_status: Status | None = None


# -- therapist-events --------------------------------------------------------------


def _iana_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone (expected an IANA name such as Europe/Berlin)") from None
    return value


class TherapistUpserted(_Model):
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


class TherapistDeleted(_Model):
    therapist_id: Id


# event_type -> payload model, per input topic kind
MATCHING_EVENTS: dict[str, type[_Model]] = {
    "match.created": MatchCreated,
    "match.status_changed": MatchStatusChanged,
}
THERAPIST_EVENTS: dict[str, type[_Model]] = {
    "therapist.created": TherapistUpserted,
    "therapist.updated": TherapistUpserted,
    "therapist.deleted": TherapistDeleted,
}


# -- communication-commands ---------------------------------------------------------

Outcome = Literal["accepted", "rejected", "no_capacity", "needs_info"]


class CreateEmail(_Model):
    therapist_id: Id
    template: str | None = Field(None, min_length=1, max_length=64)
    context: dict[str, Any] | None = None
    subject: Line | None = Field(None, min_length=1, max_length=255)
    body_html: str | None = Field(None, min_length=1)
    body_text: str | None = None
    placement_request_ids: list[Id] = Field(default_factory=list)
    recipient_email: Annotated[EmailStr, Field(max_length=255)] | None = None
    recipient_name: Line | None = Field(None, max_length=255)
    queue: StrictBool = True
    respect_contact_limit: StrictBool = True

    @model_validator(mode="after")
    def _content(self) -> CreateEmail:
        from_template = self.template is not None
        written = self.subject is not None or self.body_html is not None
        if from_template == written:
            raise ValueError("give either template (and optionally context) or subject and body_html")
        if written and (self.subject is None or self.body_html is None):
            raise ValueError("subject and body_html are both needed when no template is given")
        return self


class UpdateEmail(_Model):
    email_id: Id
    subject: Line | None = Field(None, min_length=1, max_length=255)
    body_html: str | None = Field(None, min_length=1)
    body_text: str | None = None
    status: str | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateEmail:
        if all(v is None for v in (self.subject, self.body_html, self.body_text, self.status)):
            raise ValueError("nothing to change: give subject, body_html, body_text or status")
        return self


class Response(_Model):
    placement_request_id: Id
    outcome: Outcome


class RecordEmailResponse(_Model):
    email_id: Id
    received_at: AwareDatetime
    content: str | None = None
    responses: list[Response] = Field(default_factory=list)


class UpdateEmailBatch(_Model):
    email_id: Id
    placement_request_id: Id
    outcome: Outcome
    notes: str | None = None


class ScheduleCall(_Model):
    therapist_id: Id
    placement_request_ids: list[Id] = Field(min_length=1)
    scheduled_at: AwareDatetime | None = None
    notes: str | None = None


class UpdateCall(_Model):
    phone_call_id: Id
    scheduled_at: AwareDatetime | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateCall:
        if self.scheduled_at is None and self.notes is None:
            raise ValueError("nothing to change: give scheduled_at or notes")
        return self


class CancelCall(_Model):
    phone_call_id: Id
    reason: str | None = Field(None, max_length=500)


class CallRequestOutcome(_Model):
    placement_request_id: Id
    outcome: Outcome
    notes: str | None = None


class CallOutcome(_Model):
    phone_call_id: Id
    status: Literal["completed", "no_answer", "busy", "wrong_number"]
    notes: str | None = None
    outcomes: list[CallRequestOutcome] = Field(default_factory=list)


class LiftEmailSuppression(_Model):
    therapist_id: Id
    reason: str | None = Field(None, max_length=500)


COMMANDS: dict[str, type[_Model]] = {
    "communication.lift_email_suppression": LiftEmailSuppression,
    "communication.create_email": CreateEmail,
    "communication.update_email": UpdateEmail,
    "communication.record_email_response": RecordEmailResponse,
    "communication.update_email_batch": UpdateEmailBatch,
    "communication.schedule_phone_call": ScheduleCall,
    "communication.update_phone_call": UpdateCall,
    "communication.cancel_phone_call": CancelCall,
    "communication.record_call_outcome": CallOutcome,
}


class InputEvent(BaseModel):
    """A validated input: its envelope and its typed payload."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    envelope: Envelope
    payload: Any

    @property
    def event_id(self) -> str:
        return str(self.envelope.event_id)

    @property
    def event_type(self) -> str:
        return self.envelope.event_type

    @property
    def occurred_at(self) -> datetime:
        return self.envelope.occurred_at


class Rejection(BaseModel):
    model_config = ConfigDict(frozen=True)

    reason: str
    event_id: str | None = None
    event_type: str | None = None


def parse_input(
    value: bytes | None,
    known: dict[str, type[_Model]],
    *,
    max_bytes: int | None = None,
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
    limit_name: str = "COMM_MAX_EVENT_BYTES",
) -> InputEvent | Rejection:
    """Validate a raw message against the envelope and the payload schema of its type.

    ``max_bytes``: a larger message is refused whole, naming its largest field."""
    if value is None:
        return Rejection(reason="empty message (no value)")
    if max_bytes is not None and len(value) > max_bytes:
        return oversize(value, max_bytes, limit_name)
    try:
        document = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Rejection(reason=f"not UTF-8 text (invalid byte at position {exc.start})")
    except json.JSONDecodeError as exc:
        return Rejection(reason=f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if not isinstance(document, dict):
        return Rejection(reason=f"envelope must be a JSON object, not {type(document).__name__}")
    event_id = document.get("event_id") if isinstance(document.get("event_id"), str) else None
    event_type = document.get("event_type") if isinstance(document.get("event_type"), str) else None
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as exc:
        return Rejection(reason=f"invalid envelope: {describe(exc)}", event_id=event_id, event_type=event_type)
    if envelope.schema_version != SCHEMA_VERSION:
        return Rejection(
            reason=f"schema_version: unsupported version {envelope.schema_version} (supported: {SCHEMA_VERSION})",
            event_id=event_id,
            event_type=event_type,
        )
    model = known.get(envelope.event_type)
    if model is None:
        return Rejection(
            reason=f"event_type: unknown event type {envelope.event_type!r} on this topic "
            f"(expected one of {', '.join(sorted(known))})",
            event_id=event_id,
            event_type=event_type,
        )
    try:
        payload = model.model_validate(envelope.payload, context={"max_text_bytes": max_text_bytes})
    except ValidationError as exc:
        return Rejection(
            reason=f"invalid payload: {describe(exc, 'payload')}", event_id=event_id, event_type=event_type
        )
    return InputEvent(envelope=envelope, payload=payload)


def oversize(value: bytes, limit: int, limit_name: str) -> Rejection:
    """A message over the size limit, with the field that makes it large (if it is
    JSON) and its envelope's id and type where they can be read."""
    reason = f"the message is {len(value)} bytes, over the limit of {limit} bytes ({limit_name})"
    try:
        document = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return Rejection(reason=reason)
    if not isinstance(document, dict):
        return Rejection(reason=reason)
    path, size = largest_field(document)
    if path:
        reason += f"; its largest field is {path} ({size} bytes)"
    event_id, event_type = document.get("event_id"), document.get("event_type")
    return Rejection(
        reason=reason,
        event_id=event_id if isinstance(event_id, str) else None,
        event_type=event_type if isinstance(event_type, str) else None,
    )


def largest_field(document: Any, path: str = "") -> tuple[str, int]:
    """The dotted path of the largest text value in a JSON document, and its size."""
    best = ("", 0)
    stack: list[tuple[str, Any]] = [(path, document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            size = len(value.encode("utf-8"))
            if size > best[1]:
                best = (where, size)
        elif isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return best


def describe(error: ValidationError, prefix: str | None = None) -> str:
    """``field.path: message`` for each problem, without the input values."""
    problems = []
    for problem in error.errors(include_input=False, include_url=False, include_context=False):
        path = ".".join(str(part) for part in (prefix, *problem["loc"]) if part is not None)
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.append(f"{path}: {message}" if path else message)
    return "; ".join(problems)


def envelope(
    event_type: str,
    payload: dict[str, Any],
    *,
    event_id: str,
    occurred_at: datetime,
    causation_id: str | None = None,
) -> dict[str, Any]:
    """An output envelope (CONTRACT §1)."""
    document: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "schema_version": SCHEMA_VERSION,
        "occurred_at": occurred_at.isoformat(),
        "producer": PRODUCER,
        "payload": payload,
    }
    if causation_id is not None:
        document["causation_id"] = causation_id
    return document
