"""The template context of an email: the therapist, the patients and the sender."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    sender_email: str
    sender_name: str


def recipient_name(therapist: Mapping[str, Any]) -> str:
    parts = [therapist.get("title"), therapist.get("first_name"), therapist.get("last_name")]
    return " ".join(str(p) for p in parts if p)


def patient_context(request: Mapping[str, Any]) -> dict[str, Any]:
    # The renderer completes the context (every documented field, None if unknown).
    context = dict(request.get("patient") or {})
    context["registered_at"] = request.get("registered_at")
    context["placement_request_id"] = request["placement_request_id"]
    return context


def email_context(
    therapist: Mapping[str, Any], requests: Sequence[Mapping[str, Any]], identity: Identity
) -> dict[str, Any]:
    return {
        "therapist": {
            name: therapist.get(name) for name in ("title", "salutation", "first_name", "last_name", "email", "phone")
        },
        "patients": [patient_context(r) for r in requests],
        "sender": {"name": identity.sender_name, "email": identity.sender_email},
    }
