"""What the rules decide; the edge carries it out (send, publish, persist)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile

# Email kinds (CONTRACT §4 ``kind``).
CONTACT_REQUEST = "contact_request"
FOLLOW_UP = "follow_up"
CONFIRMATION = "confirmation"
MANUAL = "manual"


@dataclass(frozen=True)
class SendEmail:
    """Create and send one email. ``email_key`` is stable, so a replayed decision
    names the same email and is recognised downstream."""

    email_key: str
    kind: str
    template: str
    therapist: TherapistProfile
    requests: tuple[PlacementRequest, ...]
    decided_at: datetime
    # Extra template context (e.g. the date of the email a follow-up refers to).
    context: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DropRequest:
    """A request leaves the pending batch without being emailed."""

    placement_request_id: int
    patient_id: int
    reason: str


@dataclass(frozen=True)
class SettleEmailedRequest:
    """A request that is already in an email changed status (closed or accepted):
    downstream records it and leaves it out of any follow-up."""

    placement_request_id: int
    patient_id: int
    status: str


@dataclass(frozen=True)
class ManualEmailContent:
    """What a ``communication.create_email`` says about its email: a template (and
    extra context) or a subject and body; a recipient other than the therapist's
    directory address; the placement requests it is about; whether it is queued at
    once and counts toward the weekly limit. Staff-written text and context may be
    about patients: none of it is part of a repr (and so of a log line)."""

    template: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict, repr=False)
    subject: str | None = field(default=None, repr=False)
    body_html: str | None = field(default=None, repr=False)
    body_text: str | None = field(default=None, repr=False)
    placement_request_ids: tuple[int, ...] = ()
    recipient_email: str | None = field(default=None, repr=False)
    recipient_name: str | None = field(default=None, repr=False)
    queue: bool = True
    respect_contact_limit: bool = True


@dataclass(frozen=True)
class SendManualEmail:
    """An email a person asked for (``communication.create_email``).

    ``content`` is what the command said about the email; the rules read only its
    flags and the placement requests it names.
    ``requests`` are the named placement requests still waiting here, whose details
    travel with the email; the others are looked up downstream.
    """

    email_key: str
    command_id: str
    therapist: TherapistProfile | None
    content: ManualEmailContent
    requests: tuple[PlacementRequest, ...]
    queue: bool
    limited: bool
    decided_at: datetime


@dataclass(frozen=True)
class RejectCommand:
    """A well-formed command that cannot be carried out, and why."""

    command_id: str
    command_type: str
    reason: str


@dataclass(frozen=True)
class SyncDirectory:
    """The therapist's directory entry changed (or the therapist was deleted):
    downstream keeps its copy (phone availability for calls) in step."""

    profile: TherapistProfile | None
    deleted: bool


@dataclass(frozen=True)
class KeepRequestDetails:
    """A new request is waiting: downstream keeps its patient details (the table
    holds only ids and times, so a therapist's state stays small however many wait)."""

    request: PlacementRequest


@dataclass(frozen=True)
class ForgetRequestDetails:
    """A waiting request left without being emailed: its details are no longer needed."""

    placement_request_ids: tuple[int, ...]


@dataclass(frozen=True)
class SuppressAddress:
    """The therapist's address cannot be reached (a permanent recipient failure, a
    hard bounce, a complaint): no email goes to it until the address changes or staff
    lift the suppression. ``email_key`` names the decision: the failed email's key,
    or the bounce command's id."""

    address: str
    reason: str
    email_id: int | None
    email_key: str


@dataclass(frozen=True)
class LiftSuppression:
    address: str
    reason: str
    causation_id: str
    comment: str | None = None


@dataclass(frozen=True)
class BookCall:
    """Reach the therapist by phone about these requests instead of by email (their
    address is suppressed, or they asked for phone only): downstream books the next
    free slot. ``reason``: undeliverable or phone_only."""

    call_key: str
    requests: tuple[PlacementRequest, ...]
    reason: str
    decided_at: datetime


@dataclass(frozen=True)
class ReportBounce:
    """A bounce or complaint was recorded (``bounce_recorded``), once per command."""

    command_id: str
    email_id: int
    type: str
    soft_bounce_count: int
    suppressed: bool


@dataclass(frozen=True)
class ReportContactPreference:
    """The therapist is now contacted by ``channel`` (``contact_preference_changed``)."""

    channel: str
    source: str  # "command" (staff) | "one_click" (the therapist's opt-out link)
    comment: str | None
    causation_id: str


@dataclass(frozen=True)
class AlertStaff:
    """Something a person should look at (``communication.alert``); ``key`` names the
    decision, so a replay repeats the same alert."""

    code: str
    severity: str
    message: str
    key: str
    email_id: int | None = None


Decision = (
    SendEmail
    | DropRequest
    | SettleEmailedRequest
    | SendManualEmail
    | RejectCommand
    | SyncDirectory
    | KeepRequestDetails
    | ForgetRequestDetails
    | SuppressAddress
    | LiftSuppression
    | BookCall
    | ReportBounce
    | ReportContactPreference
    | AlertStaff
)
