"""The database copy of the therapist directory, kept from the therapist agent's
``therapist_profile`` commands; a deleted or blocked therapist's calls are
cancelled and unsent emails fail."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.calls import CallStatus
from streams.messages.send_commands import DirectoryUpdate
from streams.persistence.call_booking import cancel_call
from streams.persistence.delivery_results import fail_unsent
from streams.persistence.models import (
    PhoneCall,
    TherapistDirectoryEntry,
)
from streams.persistence.outbox import Channels, add_rows

log = logging.getLogger(__name__)


def update_directory(session: Session, update: DirectoryUpdate, channels: Channels, now: datetime) -> None:
    """Keep the therapist's directory entry; a deleted therapist's calls are cancelled."""
    therapist_id = update.therapist_id
    entry = session.get(TherapistDirectoryEntry, therapist_id, with_for_update=True)
    if entry is None:
        entry = TherapistDirectoryEntry(
            therapist_id=therapist_id, availability={}, contact_blocked=False, deleted=False
        )
        session.add(entry)
    if update.deleted:
        entry.deleted = True
        entry.updated_at = now
        cancel_all_calls(session, therapist_id, "therapist_deleted", channels, now)
        fail_unsent(session, therapist_id, "therapist deleted: no further contact", channels, now)
        return
    profile = update.profile
    if profile is None:
        raise ValueError(f"directory update for therapist {therapist_id}: neither a profile nor deleted")
    for name in ("email", "first_name", "last_name", "title", "salutation", "phone", "timezone"):
        setattr(entry, name, getattr(profile, name))
    # A refused availability was replaced by the previous one before it came here.
    entry.availability = dict(profile.availability)
    entry.contact_blocked = profile.contact_blocked
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
