"""The retention job (COMM_CONTENT_RETENTION) on the real databases (PostgreSQL on the
running server, SQLite): content older than the retention is redacted and newer
content is not; ids, times, statuses and outcomes stay; a second run changes
nothing; a run happens once across workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, select

from domain.retention import cutoff
from streams.delivery.scheduled import ScheduledWork
from streams.delivery.wakeups import Wakeups
from streams.persistence import retention
from streams.persistence.models import Base, Email, EmailBatch, EmailStatus, JobRun, PhoneCall, PhoneCallBatch
from streams.persistence.outbox import Channels
from streams.persistence.patient_data import EXPIRED_EMAIL, EXPIRED_PATIENT
from streams.settings import Settings
from tests.fakes import FakeClock
from tests.integration.test_calls import POLICY

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
DAYS = timedelta(days=1)
RETENTION = 5 * DAYS
CHANNELS = Channels(events="communication-events", inbox="inbox")


def email(key: str, status: EmailStatus, at: datetime, patient: str) -> Email:
    """An email about ``patient``, created (and sent, or failed) at ``at``."""
    return Email(
        email_key=key,
        therapist_id=7,
        kind="contact_request",
        template="initial_contact",
        subject="Anfrage zu einem Psychotherapieplatz",
        body_html=f"<p>{patient}: F32.1</p>",
        body_text=f"{patient}: F32.1",
        recipient_email="t7@praxis.example",
        recipient_name="Dr. Eva Müller",
        sender_email="vermittlung@therapieplatz.example",
        sender_name="Therapieplatz-Vermittlung",
        placement_request_ids=[int(key[1:])],
        status=status,
        message_id=f"<{key}@therapieplatz.example>",
        created_at=at,
        updated_at=at,
        sent_at=at if status is EmailStatus.SENT else None,
        response_received=status is EmailStatus.SENT,
        response_content=f"{patient} gern" if status is EmailStatus.SENT else None,
        batches=[
            EmailBatch(
                placement_request_id=int(key[1:]),
                patient_id=int(key[1:]) + 1000,
                registered_at=at - 30 * DAYS,
                patient={"first_name": patient, "diagnosis": "F32.1"},
                response_outcome="accepted" if status is EmailStatus.SENT else None,
                response_notes=f"{patient} ab Januar" if status is EmailStatus.SENT else None,
                created_at=at,
            )
        ],
    )


def call(key: str, status: str, at: datetime, patient: str) -> PhoneCall:
    return PhoneCall(
        call_key=key,
        therapist_id=7,
        scheduled_at=at,
        duration_minutes=5,
        reason="follow_up",
        status=status,
        notes=f"{patient} zurückrufen",
        outcome_notes=f"{patient} besprochen" if status != "scheduled" else None,
        created_at=at,
        updated_at=at,
        batches=[PhoneCallBatch(placement_request_id=int(key[1:]), patient_id=1, outcome="needs_info", notes=patient)],
    )


OLD, NEW = NOW - 10 * DAYS, NOW - 1 * DAYS
# Old content that is final: redacted.
EXPIRED = {"e1": "Anna", "e2": "Bernd", "c1": "Clara"}
# New, or not final (queued, a draft, a call still to be made): kept.
KEPT = {"e3": "Dora", "e4": "Emil", "e5": "Frieda", "c2": "Gustav", "c3": "Hanna"}


def setup(database) -> None:
    def add(session):
        session.add_all(
            [
                email("e1", EmailStatus.SENT, OLD, "Anna"),
                email("e2", EmailStatus.FAILED, OLD, "Bernd"),
                email("e3", EmailStatus.SENT, NEW, "Dora"),
                email("e4", EmailStatus.QUEUED, OLD, "Emil"),
                email("e5", EmailStatus.DRAFT, OLD, "Frieda"),
                call("c1", "completed", OLD, "Clara"),
                call("c2", "completed", NEW, "Gustav"),
                call("c3", "scheduled", OLD, "Hanna"),
            ]
        )

    database.transaction(add)


def every_text(database) -> str:
    def read(session):
        found = []
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(*(cast(c, Text) for c in table.columns))):
                found.extend(str(v) for v in row if v is not None)
        return "\n".join(found)

    return database.transaction(read)


def redact(database, limit: int = retention.CHUNK) -> retention.Redacted:
    return database.transaction(retention.redact_chunk, cutoff(NOW, RETENTION), NOW, limit)


def test_content_older_than_the_retention_is_redacted_and_newer_content_is_not(database):
    setup(database)
    assert redact(database) == retention.Redacted(emails=2, batch_entries=2, calls=1, call_entries=1, finished=True)
    remaining = every_text(database)
    assert [name for name in EXPIRED if EXPIRED[name] in remaining] == []
    assert all(name in remaining for name in KEPT.values())

    def check(session):
        emails = {e.email_key: e for e in session.scalars(select(Email))}
        sent, failed = emails["e1"], emails["e2"]
        assert (sent.body_text, sent.response_content, sent.redacted_at) == (EXPIRED_EMAIL, None, NOW)
        assert EXPIRED_EMAIL in sent.body_html
        # Kept: ids, times, status, the answer's outcome.
        assert (sent.status, sent.sent_at, sent.placement_request_ids, sent.response_received) == (
            EmailStatus.SENT,
            OLD,
            [1],
            True,
        )
        [entry] = sent.batches
        assert (entry.patient, entry.response_notes, entry.response_outcome) == (EXPIRED_PATIENT, None, "accepted")
        assert (entry.placement_request_id, entry.patient_id, entry.registered_at) == (1, 1001, OLD - 30 * DAYS)
        # A failed email keeps no content, so a re-queue needs new content.
        assert (failed.body_html, failed.body_text, failed.status) == ("", "", EmailStatus.FAILED)
        for key in ("e3", "e4", "e5"):
            assert emails[key].redacted_at is None and emails[key].batches[0].redacted_at is None
        calls = {c.call_key: c for c in session.scalars(select(PhoneCall))}
        old = calls["c1"]
        assert (old.notes, old.outcome_notes, old.status, old.redacted_at) == (None, None, "completed", NOW)
        assert [(b.outcome, b.notes) for b in old.batches] == [("needs_info", None)]
        assert calls["c2"].redacted_at is None and calls["c3"].notes == "Hanna zurückrufen"

    database.transaction(check)


def test_a_second_run_changes_nothing(database):
    setup(database)
    redact(database)
    once = every_text(database)
    assert redact(database) == retention.Redacted(finished=True)
    assert every_text(database) == once


def test_a_run_goes_in_chunks_until_nothing_is_left(database):
    setup(database)
    chunks = [redact(database, limit=1) for _ in range(3)]
    assert [c.finished for c in chunks] == [False, False, True]
    assert sum((c.emails for c in chunks), 0) == 2 and sum((c.calls for c in chunks), 0) == 1
    remaining = every_text(database)
    assert [name for name in EXPIRED.values() if name in remaining] == []


def settings(**environ: str) -> Settings:
    return Settings.from_environ({"COMM_CONTENT_RETENTION": "5d", **environ})


def worker(database, clock: FakeClock, **environ: str) -> ScheduledWork:
    return ScheduledWork(settings(**environ), database, CHANNELS, Wakeups(), clock, POLICY)


async def test_a_run_is_done_once_across_workers_and_the_next_one_is_due_a_day_later(database):
    setup(database)
    clock = FakeClock(NOW)
    first, second = worker(database, clock), worker(database, clock)
    done = await first.expire_content()
    assert done is not None and (done.emails, done.calls, done.finished) == (2, 1, True)
    assert await second.expire_content() is None  # claimed already
    assert await first.expire_content() is None  # and done

    def runs(session: Any) -> list[datetime]:
        return list(session.scalars(select(JobRun.run_at).where(JobRun.name == retention.CONTENT_RETENTION)))

    # The latest 03:00 Berlin time at or before 08:00 UTC on 23 November.
    assert database.transaction(runs) == [datetime(2026, 11, 23, 2, 0, tzinfo=UTC)]
    clock.advance(DAYS)
    again = await second.expire_content()
    assert again is not None and (again.emails, again.calls) == (0, 0)  # content newer than 5 days stays
    assert len(database.transaction(runs)) == 2
