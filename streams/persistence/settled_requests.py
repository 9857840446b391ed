"""Placement requests settled after they were emailed (CONTRACT §3): their status
is recorded on their batch entries, and a request that was closed, accepted or
answered is taken out of calls still to be made (it is not discussed on the phone)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from domain.calls import CallStatus
from domain.placement import ACCEPTED, CLOSING_STATUSES
from streams.messages.outputs import PhoneCallCancelled, PhoneCallUpdated
from streams.messages.send_commands import SettleRequest
from streams.persistence.models import EmailBatch, PhoneCall, PhoneCallBatch
from streams.persistence.outbox import Channels, add_rows, event_row


def drop_from_calls(
    session: Session,
    topic: str,
    request_ids: Iterable[int],
    reason: str,
    now: datetime,
    causation: str | None = None,
) -> list[dict[str, Any]]:
    """Remove the requests from scheduled calls; a call left about nothing is
    cancelled. The events that report it, for the outbox."""
    ids = list(request_ids)
    if not ids:
        return []
    entries = session.scalars(
        select(PhoneCallBatch)
        .join(PhoneCall)
        .where(PhoneCallBatch.placement_request_id.in_(ids), PhoneCall.status == CallStatus.SCHEDULED)
        .with_for_update()
    ).all()
    rows = []
    for call in {entry.call for entry in entries}:
        removed = [e for e in entries if e.call is call]
        for entry in removed:
            call.batches.remove(entry)
        call.updated_at = now
        left = [b.placement_request_id for b in call.batches]
        if not left:
            call.status = CallStatus.CANCELLED
            call.cancel_reason = cancel_reason = f"no open requests left ({reason})"
            cancelled = PhoneCallCancelled(therapist_id=call.therapist_id, phone_call_id=call.id, reason=cancel_reason)
            rows.append(event_row(topic, cancelled, now, causation_id=causation))
        else:
            updated = PhoneCallUpdated(
                therapist_id=call.therapist_id,
                phone_call_id=call.id,
                placement_request_ids=left,
                removed_placement_request_ids=[e.placement_request_id for e in removed],
                reason=reason,
            )
            rows.append(event_row(topic, updated, now, causation_id=causation))
    return rows


def settle_request(session: Session, settle: SettleRequest, channels: Channels, now: datetime) -> None:
    """A request already emailed changed status: record it on its batch entries;
    closed or accepted, it is no longer part of a call still to be made."""
    request_id, status = settle.placement_request_id, settle.status
    session.execute(
        update(EmailBatch)
        .where(EmailBatch.placement_request_id == request_id)
        .values(request_status=status, updated_at=now)
    )
    if status in CLOSING_STATUSES or status == ACCEPTED:
        add_rows(session, drop_from_calls(session, channels.events, [request_id], f"request {status}", now))
