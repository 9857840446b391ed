"""The template context of an email: the therapist, the patients and the sender.

Templates read plain mappings (Jinja2); this is where the typed profile and
requests become one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from streams.email.unsubscribe import OPT_OUT_KINDS, OptOut

THERAPIST_FIELDS = ("title", "salutation", "first_name", "last_name", "email", "phone")


@dataclass(frozen=True)
class Identity:
    sender_email: str
    sender_name: str
    # The sender's one-click opt-out (COMM_UNSUBSCRIBE_URL); None: off.
    opt_out: OptOut | None = None


def recipient_name(therapist: TherapistProfile) -> str:
    parts = [therapist.title, therapist.first_name, therapist.last_name]
    return " ".join(str(p) for p in parts if p)


def patient_context(request: PlacementRequest) -> dict[str, Any]:
    # The renderer completes the context (every documented field, None if unknown).
    context = dict(request.patient or {})
    # ISO 8601, as the context has always held it (the local_date filter reads both).
    context["registered_at"] = request.registered_at.isoformat() if request.registered_at else None
    context["placement_request_id"] = request.placement_request_id
    return context


def email_context(
    therapist: TherapistProfile | None, requests: Sequence[PlacementRequest], identity: Identity
) -> dict[str, Any]:
    """``therapist`` None: a manual email to an address without a directory entry."""
    return {
        "therapist": {name: None if therapist is None else getattr(therapist, name) for name in THERAPIST_FIELDS},
        "patients": [patient_context(r) for r in requests],
        "sender": {"name": identity.sender_name, "email": identity.sender_email},
    }


def opt_out_context(identity: Identity, kind: str, therapist_id: int, address: str | None) -> dict[str, Any]:
    """The footer's opt-out link (``unsubscribe_url``) of a contact or follow-up
    email, when the opt-out is on; nothing for any other email."""
    opt_out = identity.opt_out
    if opt_out is None or kind not in OPT_OUT_KINDS or not address:
        return {}
    return {"unsubscribe_url": opt_out.link(therapist_id, address)}
