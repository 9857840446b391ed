"""The retention job (COMM_CONTENT_RETENTION, rules in domain/retention.py): content
older than the retention is redacted in the database, in chunks.

A run is claimed once across all workers in ``job_runs`` (as the daily call list
is); the worker that claims it redacts chunk after chunk, each in a transaction of
its own that takes its rows with FOR UPDATE SKIP LOCKED, until a chunk finds
nothing more. Redacted rows carry ``redacted_at`` and are never looked at again,
so a second run (or a chunk replayed after a crash) changes nothing. A run cut
short by a crash is finished by the next one.

What goes, and what stays:
- an email: its bodies (a sent email keeps a German placeholder; a failed one empty
  bodies, so that it cannot be re-queued without new content) and the recorded
  answer; its ids, addresses, subject, times, status and counts stay;
- its batch entries: the patient details (``EXPIRED_PATIENT``) and answer notes;
  the ids, registration time, request status and outcome stay;
- a call: its notes and outcome notes, and the notes of its entries; ids, times,
  status, attempts and outcomes stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from domain.email_status import EmailStatus
from domain.retention import OPEN_CALL_STATUSES
from streams.persistence.db import one_of
from streams.persistence.models import Email, EmailBatch, JobRun, PhoneCall, PhoneCallBatch
from streams.persistence.outbox import insert_ignoring_conflicts
from streams.persistence.patient_data import EXPIRED_EMAIL, EXPIRED_PATIENT, placeholder_html

CONTENT_RETENTION = "content_retention"
# Emails (and calls) per chunk: a transaction short enough not to hold up delivery.
CHUNK = 200


@dataclass(frozen=True)
class Redacted:
    """What one chunk redacted."""

    emails: int = 0
    batch_entries: int = 0
    calls: int = 0
    call_entries: int = 0
    # Fewer rows than a chunk were left: the run is done.
    finished: bool = True

    def __add__(self, other: Redacted) -> Redacted:
        return Redacted(
            self.emails + other.emails,
            self.batch_entries + other.batch_entries,
            self.calls + other.calls,
            self.call_entries + other.call_entries,
            other.finished,
        )


def claim_run(session: Session, run_at: datetime, now: datetime) -> bool:
    """Whether this worker is the one to do the run at ``run_at`` (False: it was
    claimed already, by this worker or another)."""
    # RETURNING says whether this worker inserted the run (rowcount is not reliable
    # for an ORM insert on every driver).
    claimed = session.execute(
        insert_ignoring_conflicts(session, JobRun)
        .values(name=CONTENT_RETENTION, run_at=run_at, done_at=now)
        .returning(JobRun.name)
    ).first()
    return claimed is not None


def redact_chunk(session: Session, cutoff: datetime, now: datetime, limit: int = CHUNK) -> Redacted:
    """Redact up to ``limit`` emails and ``limit`` calls whose content is older than ``cutoff``."""
    emails = session.scalars(
        select(Email)
        .where(
            Email.redacted_at.is_(None),
            or_(
                and_(Email.status == EmailStatus.SENT, Email.sent_at < cutoff),
                and_(Email.status == EmailStatus.FAILED, Email.updated_at < cutoff),
            ),
        )
        .order_by(Email.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for email in emails:
        sent = email.status is EmailStatus.SENT
        email.body_html = placeholder_html(EXPIRED_EMAIL) if sent else ""
        email.body_text = EXPIRED_EMAIL if sent else ""
        email.response_content = None
        email.redacted_at = now
    entries = _redact(
        session,
        EmailBatch,
        EmailBatch.email_id,
        [e.id for e in emails],
        {"patient": dict(EXPIRED_PATIENT), "response_notes": None, "redacted_at": now},
    )
    calls = session.scalars(
        select(PhoneCall)
        .where(
            PhoneCall.redacted_at.is_(None),
            PhoneCall.status.not_in(OPEN_CALL_STATUSES),
            PhoneCall.updated_at < cutoff,
        )
        .order_by(PhoneCall.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for call in calls:
        call.notes = call.outcome_notes = None
        call.redacted_at = now
    call_entries = _redact(
        session,
        PhoneCallBatch,
        PhoneCallBatch.phone_call_id,
        [c.id for c in calls],
        {"notes": None, "redacted_at": now},
    )
    return Redacted(len(emails), entries, len(calls), call_entries, len(emails) < limit and len(calls) < limit)


def _redact(
    session: Session,
    model: type[EmailBatch | PhoneCallBatch],
    parent: InstrumentedAttribute[int],
    ids: list[int],
    values: dict[str, object],
) -> int:
    """Entries of the given emails or calls not redacted yet (an erasure may have been first)."""
    if not ids:
        return 0
    result = session.execute(
        update(model)
        .where(one_of(session, parent, ids), model.redacted_at.is_(None))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
