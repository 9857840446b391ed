"""Payload models of everything the service publishes (CONTRACT §4 and §8): one
model per output event type on communication-events, registered by event type in
``OUTPUT_EVENTS``, and the DLQ record (``DEAD_LETTER``). The service publishes only
through them (``streams.messages.output_envelope.encode_event``,
``streams.kafka.dead_letters``), and ``commsvc schema`` documents them. What they
share (the JSON they write, the envelope) is in ``streams.messages.output_envelope``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated, Literal, TypeVar

from pydantic import Field

from domain.email_status import EmailStatus
from streams.messages.commands import Outcome
from streams.messages.output_envelope import OMITTED, OutputPayload, PublishedModel, Timestamp

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
