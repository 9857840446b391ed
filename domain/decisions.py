"""What the rules decide; the edge carries it out (send, publish, persist)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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


Decision = SendEmail | DropRequest | SettleEmailedRequest
