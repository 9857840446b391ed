"""The database copy of the therapist directory, kept from the therapist agent's
``therapist_profile`` commands; a deleted or blocked therapist's calls are
cancelled and unsent emails fail."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.calls import CallStatus
from streams.persistence.call_booking import cancel_call
from streams.persistence.delivery_results import fail_unsent
from streams.persistence.models import (
    PhoneCall,
    TherapistDirectoryEntry,
)
from streams.persistence.outbox import Channels, add_rows

log = logging.getLogger(__name__)


def update_directory(session: Session, command: Mapping[str, Any], channels: Channels, now: datetime) -> None:
    """Keep the therapist's directory entry; a deleted therapist's calls are cancelled."""
    therapist_id = int(command["therapist_id"])
    entry = session.get(TherapistDirectoryEntry, therapist_id, with_for_update=True)
    if entry is None:
        entry = TherapistDirectoryEntry(
            therapist_id=therapist_id, availability={}, contact_blocked=False, deleted=False
        )
        session.add(entry)
    if command.get("deleted"):
        entry.deleted = True
        entry.updated_at = now
        cancel_all_calls(session, therapist_id, "therapist_deleted", channels, now)
        fail_unsent(session, therapist_id, "therapist deleted: no further contact", channels, now)
        return
    profile = command["profile"]
    for name in ("email", "first_name", "last_name", "title", "salutation", "phone", "timezone"):
        setattr(entry, name, profile.get(name))
    if "availability" in profile:  # absent: a refused update kept the previous one
        entry.availability = profile.get("availability") or {}
    entry.contact_blocked = bool(profile.get("contact_blocked"))
    if entry.contact_blocked:
        cancel_all_calls(session, therapist_id, "contact_blocked", channels, now)
        fail_unsent(session, therapist_id, "therapist blocked for contact", channels, now)
    entry.deleted = False
    entry.updated_at = now


def cancel_all_calls(session: Session, therapist_id: int, reason: str, channels: Channels, now: datetime) -> None:
    scheduled = session.scalars(
        select(PhoneCall)
        .where(PhoneCall.therapist_id == therapist_id, PhoneCall.status == CallStatus.SCHEDULED)
        .with_for_update()
    )
    add_rows(session, [cancel_call(call, reason, channels, now) for call in scheduled])
