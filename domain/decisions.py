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
class SendManualEmail:
    """An email a person asked for (``communication.create_email``).

    ``content`` is what the command said about the email (template and context, or
    subject and body, recipient, placement requests); the rules do not look inside.
    ``requests`` are the named placement requests still waiting here, whose details
    travel with the email; the others are looked up downstream.
    """

    email_key: str
    command_id: str
    therapist: TherapistProfile | None
    content: Mapping[str, Any]
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


Decision = SendEmail | DropRequest | SettleEmailedRequest | SendManualEmail | RejectCommand | SyncDirectory
