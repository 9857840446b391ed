"""Payload models of everything the service publishes (CONTRACT §4 and §8): one
model per output event type on communication-events, registered by event type in
``OUTPUT_EVENTS``; ``Event[P]`` is the envelope generic over its payload; and the
DLQ record (``DEAD_LETTER``). The service publishes only through them
(``encode_event``, ``streams.kafka.dead_letters``), and ``commsvc schema`` documents
them.

The JSON is what the service has always written: keys in field order, times as
``datetime.isoformat()`` (with the offset they carry, ``+00:00`` rather than ``Z``),
and a few keys left out rather than null when they do not apply (``OMITTED``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from domain.email_status import EmailStatus
from streams.messages.codec import dumps
from streams.messages.commands import Outcome
from streams.messages.envelope import SCHEMA_VERSION


def _iso(value: datetime) -> str:
    return value.isoformat()


# A time with its offset, written as ``isoformat()`` writes it (pydantic would write
# UTC as ``Z``, which the service never has).
Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


def _none(value: object) -> bool:
    return value is None


# Field metadata: the key is left out of the JSON, rather than written as null, when
# the field has no value (e.g. ``email_id`` of a ``placement_response`` by phone).
OMITTED = Field(exclude_if=_none)


class PublishedModel(BaseModel):
    """A model of something the service publishes. Fields marked ``OMITTED`` are not
    written when None, and are optional (never null) in the JSON Schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        target = handler.resolve_ref_schema(json_schema)
        for name, info in cls.model_fields.items():
            field = target.get("properties", {}).get(name)
            if field is None or info.exclude_if is not _none:
                continue
            field.pop("default", None)
            branches = [branch for branch in field.pop("anyOf", ()) if branch != {"type": "null"}]
            if len(branches) == 1:
                field.update(branches[0])
            elif branches:
                field["anyOf"] = branches
        return json_schema


class OutputPayload(PublishedModel):
    """A payload of communication-events. Each carries the therapist it concerns; the
    few that may concern none (an alert about the SMTP server, the daily call list)
    say so by their type."""

    EVENT_TYPE: ClassVar[str]

    therapist_id: int = Field(description="the therapist the event concerns; also the message key")


P = TypeVar("P", bound=OutputPayload)
M = TypeVar("M", bound=type[OutputPayload])

# event type -> payload model, filled by ``published``.
OUTPUT_EVENTS: dict[str, type[OutputPayload]] = {}


def published(event_type: str) -> Callable[[M], M]:
    """Register a payload model as the payload of ``event_type``."""

    def register(model: M) -> M:
        if event_type in OUTPUT_EVENTS:
            raise ValueError(f"{event_type} has a payload model already")
        model.EVENT_TYPE = event_type
        OUTPUT_EVENTS[event_type] = model
        return model

    return register


class Event(PublishedModel, Generic[P]):
    """The envelope of an output event (CONTRACT §1), with its payload."""

    event_id: UUID
    event_type: str
    schema_version: int = SCHEMA_VERSION
    occurred_at: Timestamp
    producer: Literal["communication-service"] = "communication-service"  # PRODUCER
    payload: P
    causation_id: Annotated[
        str | None,
        OMITTED,
        Field(
            description="the event_id of the input event or command it results from (as that message gave it: "
            "a command refused for its size is answered with whatever id it carried)"
        ),
    ] = None

    @model_validator(mode="after")
    def _type_of_payload(self) -> Event[P]:
        if self.event_type != self.payload.EVENT_TYPE:
            raise ValueError(f"a {self.payload.EVENT_TYPE} payload in a {self.event_type} event")
        return self


_ENVELOPES: dict[type[OutputPayload], type[Event[Any]]] = {}


def event_model(payload: type[P]) -> type[Event[P]]:
    """``Event[payload]``, built once per payload model (pydantic builds its schema then)."""
    model = _ENVELOPES.get(payload)
    if model is None:
        model = _ENVELOPES[payload] = Event[payload]  # type: ignore[valid-type]
    return model


def event_of(payload: P, *, event_id: str | UUID, occurred_at: datetime, causation_id: str | None = None) -> Event[P]:
    return event_model(type(payload))(
        event_id=event_id if isinstance(event_id, UUID) else UUID(event_id),
        event_type=payload.EVENT_TYPE,
        occurred_at=occurred_at,
        payload=payload,
        causation_id=causation_id,
    )


def encode_event(
    payload: OutputPayload, *, event_id: str | UUID, occurred_at: datetime, causation_id: str | None = None
) -> bytes:
    """The JSON of an output event: the one way an output envelope is made."""
    event = event_of(payload, event_id=event_id, occurred_at=occurred_at, causation_id=causation_id)
    return dumps(event.model_dump(mode="json"))


# -- closed value sets ------------------------------------------------------------------

EmailKind = Literal["contact_request", "follow_up", "confirmation", "manual"]
EmailField = Literal["subject", "body_html", "body_text"]
ResponseChannel = Literal["email", "phone"]
# Why a call was booked; ``retry`` is in CONTRACT §4 (a retry is rescheduled today).
CallReason = Literal["follow_up", "manual", "retry", "undeliverable", "phone_only"]
# How a call ended (record_call_outcome's ``status``).
CallEnd = Literal["completed", "no_answer", "busy", "wrong_number"]
# A placement request dropped before it was emailed: its new status, or why the
# therapist cannot be contacted.
DropReason = Literal["cancelled", "withdrawn", "rejected", "closed", "accepted", "therapist_deleted", "contact_blocked"]
LiftReason = Literal["address_changed", "lifted_by_staff"]
Severity = Literal["warning", "error"]
BounceType = Literal["hard", "soft", "complaint"]
ContactChannel = Literal["email", "phone_only"]
PreferenceSource = Literal["one_click", "command"]

EmailId = Annotated[int, Field(description="the email (as in the read API and the commands)")]
CallId = Annotated[int, Field(description="the phone call (as in the read API and the commands)")]
RequestIds = Annotated[list[int], Field(description="the placement requests it is about")]


# -- emails -----------------------------------------------------------------------------


@published("communication.email_created")
class EmailCreated(OutputPayload):
    email_id: EmailId
    kind: EmailKind
    template: str | None = Field(description="the template it was rendered from; null for a written manual email")
    subject: str = Field(description="the subject; for an email whose template failed, the template's name")
    placement_request_ids: RequestIds
    status: EmailStatus = Field(
        description="entwurf (a draft), in_warteschlange (queued for sending) or fehlgeschlagen (its template failed)"
    )


@published("communication.email_queued")
class EmailQueued(OutputPayload):
    email_id: EmailId


@published("communication.email_updated")
class EmailUpdated(OutputPayload):
    """A draft or failed email was edited (``communication.update_email``)."""

    email_id: EmailId
    changed: list[EmailField] = Field(description="the fields that were changed")
    status: EmailStatus


@published("communication.email_sent")
class EmailSent(OutputPayload):
    email_id: EmailId
    message_id: str = Field(description="the RFC 5322 Message-ID")
    sent_at: Timestamp
    placement_request_ids: RequestIds


@published("communication.email_failed")
class EmailFailed(OutputPayload):
    """An attempt failed; ``will_retry`` says whether another one is scheduled."""

    email_id: EmailId
    error: str | None = Field(description="what went wrong (the SMTP server's answer, or why it was not sent)")
    retry_count: int = Field(description="attempts failed so far")
    will_retry: bool
    next_attempt_at: Timestamp | None = Field(description="when it is tried again; null when it is not")


class EmailResponse(PublishedModel):
    placement_request_id: int
    outcome: Outcome


@published("communication.email_response_recorded")
class EmailResponseRecorded(OutputPayload):
    email_id: EmailId
    received_at: Timestamp
    responses: list[EmailResponse] = Field(description="the answer per request (empty: the email as a whole)")


@published("communication.email_suppressed")
class EmailSuppressed(OutputPayload):
    """The therapist's address cannot be reached: no email goes to it until the
    address changes or staff lift the suppression."""

    address_hash: str = Field(description="SHA-256 (hex) of the address, trimmed and case-folded")
    reason: str = Field(description="the delivery failure that showed it")
    email_id: int | None = Field(description="the email that failed")


@published("communication.email_suppression_lifted")
class EmailSuppressionLifted(OutputPayload):
    address_hash: str = Field(description="SHA-256 (hex) of the address, trimmed and case-folded")
    reason: LiftReason
    comment: Annotated[str | None, OMITTED, Field(description="the staff's reason, when they gave one")] = None


@published("communication.bounce_recorded")
class BounceRecorded(OutputPayload):
    """A bounce or complaint about a sent email was recorded (``record_bounce``)."""

    email_id: EmailId
    type: BounceType
    soft_bounce_count: int = Field(description="soft bounces in a row for the address, after this one")
    suppressed: bool = Field(description="whether this bounce suppressed the address")


@published("communication.contact_preference_changed")
class ContactPreferenceChanged(OutputPayload):
    """The therapist is now contacted by this channel. phone_only: no contact or
    follow-up emails, waiting requests go to calls; confirmations still go by email."""

    channel: ContactChannel
    source: PreferenceSource = Field(description="one_click: the therapist's opt-out link; command: staff")
    comment: Annotated[str | None, OMITTED, Field(description="the staff's reason, when they gave one")] = None


@published("communication.email_opened")
class EmailOpened(OutputPayload):
    """Opt-in tracking (COMM_TRACK_OPENS): the email's image was first fetched. Mail
    clients that prefetch images count as opens."""

    email_id: EmailId
    first_opened_at: Timestamp
    open_count: int = Field(description="fetches of the image so far (published once, at the first)")


@published("communication.email_link_clicked")
class EmailLinkClicked(OutputPayload):
    """Opt-in tracking (COMM_TRACK_CLICKS): a link of the email was first followed."""

    email_id: EmailId
    link_position: int = Field(description="which link of the email, counted from 1 in the order of the HTML body")
    clicked_at: Timestamp


# -- placement requests -----------------------------------------------------------------


@published("communication.placement_response")
class PlacementResponse(OutputPayload):
    """A therapist's answer about one placement request, for the matching service."""

    placement_request_id: int
    patient_id: int | None = Field(description="null for a request booked into a call without an email")
    outcome: Outcome
    channel: ResponseChannel
    email_id: Annotated[int | None, OMITTED, Field(description="the email answered (channel email)")] = None
    phone_call_id: Annotated[int | None, OMITTED, Field(description="the call it was given in (channel phone)")] = None


@published("communication.placement_dropped")
class PlacementDropped(OutputPayload):
    """A placement request left the waiting batch without being emailed."""

    placement_request_id: int
    patient_id: int
    reason: DropReason


# -- phone calls ------------------------------------------------------------------------


@published("communication.phone_call_scheduled")
class PhoneCallScheduled(OutputPayload):
    phone_call_id: CallId
    scheduled_at: Timestamp
    duration_minutes: int
    placement_request_ids: RequestIds
    reason: CallReason


@published("communication.phone_call_rescheduled")
class PhoneCallRescheduled(OutputPayload):
    phone_call_id: CallId
    scheduled_at: Timestamp
    previous_scheduled_at: Timestamp
    attempt: int = Field(description="the attempt the new time is for (1 for a call moved by staff)")


@published("communication.phone_call_updated")
class PhoneCallUpdated(OutputPayload):
    """A scheduled call changed without moving: requests taken out of it (answered or
    closed meanwhile), or staff's notes."""

    phone_call_id: CallId
    placement_request_ids: Annotated[
        list[int] | None, OMITTED, Field(description="the requests the call is still about")
    ] = None
    removed_placement_request_ids: Annotated[
        list[int] | None, OMITTED, Field(description="the requests taken out of it")
    ] = None
    reason: Annotated[str | None, OMITTED, Field(description="why they were taken out")] = None
    notes: Annotated[str | None, OMITTED, Field(description="the call's notes, as staff set them")] = None


@published("communication.phone_call_reminder")
class PhoneCallReminder(OutputPayload):
    phone_call_id: CallId
    scheduled_at: Timestamp
    late: bool = Field(description="sent later than COMM_CALL_REMINDER_BEFORE before the call (after downtime)")


class RequestOutcome(PublishedModel):
    placement_request_id: int
    outcome: Outcome
    notes: str | None


@published("communication.phone_call_completed")
class PhoneCallCompleted(OutputPayload):
    phone_call_id: CallId
    status: CallEnd
    outcomes: list[RequestOutcome]


@published("communication.phone_call_cancelled")
class PhoneCallCancelled(OutputPayload):
    phone_call_id: CallId
    reason: str


class ListedCall(PublishedModel):
    phone_call_id: CallId
    therapist_id: int
    therapist_name: str | None = Field(description="title, first and last name, as the directory has them")
    phone: str | None
    scheduled_at: Timestamp
    duration_minutes: int
    reason: CallReason
    attempt: int
    placement_request_ids: RequestIds


@published("communication.daily_call_list")
class DailyCallList(OutputPayload):
    """The calls of one local day (COMM_TIMEZONE), in order, for the staff who make them."""

    therapist_id: None = Field(default=None, description="always null: the list is about every therapist")  # type: ignore[assignment]
    date: date
    calls: list[ListedCall]


# -- patients --------------------------------------------------------------------------


@published("communication.patient_erased")
class PatientErased(OutputPayload):
    """``erase_patient`` removed a patient's details from everything the service
    keeps (counts of what changed; zeros when nothing was left to erase). Emails
    already delivered cannot be recalled from the recipients' mailboxes, and copies
    on Kafka topics stay until the topics' retention."""

    therapist_id: None = Field(  # type: ignore[assignment]
        None, description="always null: a patient may concern several therapists; the key is the patient id"
    )
    patient_id: int
    waiting_requests: int = Field(description="waiting requests whose details were removed (the requests stay)")
    emails: int = Field(
        description="stored emails that no longer hold the patient: re-rendered without them, or, when that "
        "cannot be done (manual emails), emptied (unsent ones fail)"
    )
    batch_entries: int = Field(description="batch entries that lost the patient's details")
    call_entries: int = Field(description="phone-call entries whose notes were removed")
    delivered_emails: int = Field(description="of those emails, how many had been delivered (not recallable)")


# -- the service itself -----------------------------------------------------------------


@published("communication.command_rejected")
class CommandRejected(OutputPayload):
    """A well-formed command that could not be carried out; nothing changed."""

    therapist_id: int | None = Field(  # type: ignore[assignment]
        description="the therapist the command was keyed by; null when its key was none"
    )
    command_id: str = Field(description="the command's event_id")
    command_type: str
    reason: str


@published("communication.alert")
class Alert(OutputPayload):
    """Something a person should look at."""

    therapist_id: int | None = Field(  # type: ignore[assignment]
        description="the therapist it concerns; null for an alert about the service itself"
    )
    severity: Severity
    code: str = Field(
        description="what kind of alert: email_failed, email_undeliverable, template_override_broken, "
        "no_call_slot, call_no_answer, call_busy, call_wrong_number, smtp_unavailable, event_unpublishable, "
        "phone_only_without_hours"
    )
    email_id: Annotated[int | None, OMITTED, Field(description="the email it is about")] = None
    phone_call_id: Annotated[int | None, OMITTED, Field(description="the call it is about")] = None
    outbox_id: Annotated[int | None, OMITTED, Field(description="the event set aside (event_unpublishable)")] = None
    message: str


# -- communication-dlq -------------------------------------------------------------------


class DeadLetter(PublishedModel):
    """A record of communication-dlq (CONTRACT §5.8): input that could not be accepted,
    with the reason and the original message, so it can be fixed and replayed. Not an
    envelope: the record itself is the message."""

    reason: str = Field(description="what was wrong, naming the field")
    source_topic: str
    partition: int
    offset: int
    received_at: Timestamp
    key: str | None = Field(description="the original key (base64 when key_encoding says so); null if none")
    key_encoding: Annotated[Literal["base64"] | None, OMITTED, Field(description="base64: the key is not UTF-8")] = None
    event_id: Annotated[str | None, OMITTED, Field(description="the envelope's event_id, if it could be read")] = None
    event_type: Annotated[str | None, OMITTED, Field(description="the envelope's event_type, if it could be read")] = (
        None
    )
    value: str | None = Field(
        description="the original bytes as UTF-8 text (base64 when value_encoding says so); null when the "
        "message was empty or too large to copy (value_omitted)"
    )
    value_encoding: Annotated[
        Literal["base64"] | None, OMITTED, Field(description="base64: the value is not UTF-8")
    ] = None
    value_bytes: Annotated[int | None, OMITTED, Field(description="the size of a value too large to copy")] = None
    value_omitted: Annotated[str | None, OMITTED, Field(description="why the value is not here, and where it is")] = (
        None
    )


DEAD_LETTER = DeadLetter
