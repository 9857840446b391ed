"""The patient details of placement requests waiting for their email.

The therapist table keeps only ids and times (its value is one Kafka record, and
a sought-after therapist may have hundreds of requests waiting); the details wait
here, and are joined in when the email is made. A request that was in an email
before (one that failed, or a confirmation) finds its details in that email's
batch entry instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from domain.placement import PlacementRequest
from streams.messages.send_commands import RequestDetails
from streams.persistence.db import one_of
from streams.persistence.models import EmailBatch, ErasedPatient, WaitingRequest
from streams.persistence.patient_data import ERASED_PATIENT


def keep(session: Session, details: Sequence[RequestDetails], now: datetime) -> None:
    """Store (or replace: a request proposed again may say more) requests' details,
    in one statement."""
    if not details:
        return
    erased = _erased(session, sorted({d.request.patient_id for d in details}))
    rows: dict[int, dict[str, Any]] = {}
    for detail in details:  # the last word on a request wins
        request = detail.request
        erased_at = erased.get(request.patient_id)
        # Registered before the patient's erasure, on its way during it: not stored.
        gone = erased_at is not None and request.registered_at <= erased_at
        rows[request.placement_request_id] = {
            "placement_request_id": request.placement_request_id,
            "therapist_id": detail.therapist_id,
            "patient_id": request.patient_id,
            "registered_at": request.registered_at,
            "patient": dict(ERASED_PATIENT) if gone else dict(request.patient or {}),
            "updated_at": now,
        }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(WaitingRequest)
    changed = {
        name: statement.excluded[name]
        for name in ("therapist_id", "patient_id", "registered_at", "patient", "updated_at")
    }
    session.execute(
        statement.on_conflict_do_update(index_elements=["placement_request_id"], set_=changed), list(rows.values())
    )


def _erased(session: Session, patient_ids: Sequence[int]) -> dict[int, datetime]:
    """When each of these patients was erased (those that were)."""
    found = session.execute(
        select(ErasedPatient.patient_id, ErasedPatient.erased_at).where(
            one_of(session, ErasedPatient.patient_id, patient_ids)
        )
    )
    return {patient_id: erased_at for patient_id, erased_at in found}


def forget(session: Session, request_ids: Sequence[int]) -> None:
    if request_ids:
        session.execute(
            delete(WaitingRequest)
            .where(one_of(session, WaitingRequest.placement_request_id, list(request_ids)))
            .execution_options(synchronize_session=False)
        )


def with_details(session: Session, requests: Iterable[PlacementRequest]) -> list[PlacementRequest]:
    """The requests, each with its patient details: as given, else from the waiting
    row, else from the last email the request was in (else none are known)."""
    given = list(requests)
    missing = [r.placement_request_id for r in given if not r.patient]
    if not missing:
        return given
    known = _waiting(session, missing)
    known.update(_last_emailed(session, [r for r in missing if r not in known]))
    return [
        replace(r, patient=known[r.placement_request_id]) if not r.patient and r.placement_request_id in known else r
        for r in given
    ]


def _waiting(session: Session, request_ids: list[int]) -> dict[int, dict[str, Any]]:
    rows = session.execute(
        select(WaitingRequest.placement_request_id, WaitingRequest.patient).where(
            one_of(session, WaitingRequest.placement_request_id, request_ids)
        )
    )
    return {request_id: dict(patient) for request_id, patient in rows}


def _last_emailed(session: Session, request_ids: list[int]) -> dict[int, dict[str, Any]]:
    if not request_ids:
        return {}
    rows = session.execute(
        select(EmailBatch.placement_request_id, EmailBatch.patient)
        .where(one_of(session, EmailBatch.placement_request_id, request_ids))
        .order_by(EmailBatch.id.desc())
    )
    found: dict[int, dict[str, Any]] = {}
    for request_id, patient in rows:
        found.setdefault(request_id, dict(patient))
    return found
