"""Taking settled placement requests out of calls still to be made (CONTRACT §3):
a request that was closed, accepted or answered is not discussed on the phone."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.calls import CallStatus
from streams.persistence.models import PhoneCall, PhoneCallBatch
from streams.persistence.outbox import event_row


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
            call.cancel_reason = f"no open requests left ({reason})"
            rows.append(
                event_row(
                    topic,
                    "communication.phone_call_cancelled",
                    call.therapist_id,
                    {"phone_call_id": call.id, "reason": call.cancel_reason},
                    now,
                    causation_id=causation,
                )
            )
        else:
            rows.append(
                event_row(
                    topic,
                    "communication.phone_call_updated",
                    call.therapist_id,
                    {
                        "phone_call_id": call.id,
                        "placement_request_ids": left,
                        "removed_placement_request_ids": [e.placement_request_id for e in removed],
                        "reason": reason,
                    },
                    now,
                    causation_id=causation,
                )
            )
    return rows
