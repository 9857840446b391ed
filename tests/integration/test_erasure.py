"""``communication.erase_patient`` on the real databases (PostgreSQL on the running
server, SQLite), with the real templates: the patient leaves every row, the other
patients of a batch email stay readable, and a replay changes nothing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Text, cast, select, update

from domain.batching import derived_key
from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from streams.email.context import Identity
from streams.email.rendering import Renderer, RenderError
from streams.messages import inbox
from streams.messages.commands import ErasePatient
from streams.messages.output_envelope import event_model
from streams.messages.outputs import OUTPUT_EVENTS, PhoneCallCompleted, PhoneCallUpdated, RequestOutcome
from streams.messages.send_commands import DirectoryUpdate, RequestDetails, SendEmail
from streams.persistence import email_creation, erasure, processed_commands, waiting_requests
from streams.persistence.directory import update_directory
from streams.persistence.erasure import WITHDRAWN
from streams.persistence.models import (
    Base,
    Email,
    EmailBatch,
    EmailStatus,
    OutboxMessage,
    PhoneCall,
    PhoneCallBatch,
    WaitingRequest,
)
from streams.persistence.outbox import Channels, add_rows, event_row, inbox_row
from streams.persistence.patient_data import ERASED_EMAIL, ERASED_NOTE, ERASED_PATIENT

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CHANNELS = Channels(events="communication-events", inbox="inbox")
IDENTITY = Identity("vermittlung@therapieplatz.example", "Therapieplatz-Vermittlung")
RENDER = Renderer(BERLIN).render
HANDLERS = erasure.handlers(RENDER, IDENTITY)

ERIKA = {"first_name": "Erika", "last_name": "Mustermann", "diagnosis": "F32.1 Depression", "notes": "nur vormittags"}
JONAS = {"first_name": "Jonas", "last_name": "Beispiel", "diagnosis": "F41.1 Angststörung"}
LENA = {"first_name": "Lena", "last_name": "Probst", "diagnosis": "F43.1 Belastungsstörung"}
ERIKA_ID, JONAS_ID, LENA_ID = 5001, 5002, 5003
# Whatever identifies Erika or says something about her.
ERIKA_TRACES = ("Erika", "Mustermann", "F32.1", "Depression", "vormittags", "ruft Erika")


def profile(therapist_id: int) -> TherapistProfile:
    return TherapistProfile(therapist_id, f"t{therapist_id}@praxis.example", "Eva", "Müller", "Dr.", "Frau")


def request(request_id: int, patient_id: int, patient: dict[str, Any]) -> PlacementRequest:
    return PlacementRequest(request_id, patient_id, datetime(2026, 1, request_id % 28 + 1, tzinfo=UTC), patient)


def send_command(key: str, therapist_id: int, requests: list[PlacementRequest], **fields: Any) -> SendEmail:
    fields.setdefault("email_kind", "contact_request")
    fields.setdefault("template", "batch_request" if len(requests) > 1 else "initial_contact")
    fields.setdefault("limited", True)
    return SendEmail(
        email_key=key,
        therapist_id=therapist_id,
        therapist=profile(therapist_id),
        requests=tuple(requests),
        decided_at=NOW,
        **fields,
    )


def store(database, command: SendEmail, *, sent: bool = True) -> int:
    [email_id] = database.transaction(
        email_creation.store_send_commands, [command], RENDER, IDENTITY, CHANNELS, NOW - timedelta(days=3)
    )
    assert email_id is not None
    if sent:
        database.transaction(
            lambda s: s.execute(
                update(Email)
                .where(Email.id == email_id)
                .values(status=EmailStatus.SENT, sent_at=NOW - timedelta(days=2))
            )
        )
    return email_id


def setup(database) -> dict[str, int]:
    """A sent batch email to therapist 1 about Erika, Jonas and Lena, with an answer and
    a call about it; Erika also waits for therapist 2."""
    for therapist_id in (1, 2):
        database.transaction(update_directory, DirectoryUpdate(therapist_id, profile(therapist_id)), CHANNELS, NOW)
    batch = store(
        database,
        send_command(
            "batch-1", 1, [request(101, ERIKA_ID, ERIKA), request(102, JONAS_ID, JONAS), request(103, LENA_ID, LENA)]
        ),
    )
    database.transaction(
        waiting_requests.keep, [RequestDetails(2, request(201, ERIKA_ID, ERIKA))], NOW - timedelta(days=1)
    )

    def answer_and_call(session):
        email = session.get(Email, batch)
        email.response_received, email.response_content = True, "Frau Mustermann gern, Herr Beispiel nicht"
        for entry in email.batches:
            entry.response_notes = f"Notiz zu {entry.patient['first_name']}"
        call = PhoneCall(
            call_key="call-1",
            therapist_id=1,
            email_id=batch,
            scheduled_at=NOW,
            duration_minutes=5,
            reason="follow_up",
            status="completed",
            notes="ruft Erika zurück",
            outcome_notes="Erika: F32.1 besprochen",
        )
        call.batches = [
            PhoneCallBatch(placement_request_id=101, patient_id=ERIKA_ID, outcome="needs_info", notes="Erika fragt"),
            PhoneCallBatch(placement_request_id=102, patient_id=JONAS_ID, outcome="rejected", notes="Jonas nein"),
        ]
        session.add(call)
        session.flush()
        # What the call commands published about it, as the outbox keeps it for a while.
        updated = PhoneCallUpdated(therapist_id=1, phone_call_id=call.id, notes="ruft Erika zurück")
        completed = PhoneCallCompleted(
            therapist_id=1,
            phone_call_id=call.id,
            status="completed",
            outcomes=[
                RequestOutcome(placement_request_id=101, outcome="needs_info", notes="Erika fragt"),
                RequestOutcome(placement_request_id=102, outcome="rejected", notes="Jonas nein"),
            ],
        )
        add_rows(session, [event_row(CHANNELS.events, updated, NOW), event_row(CHANNELS.events, completed, NOW)])
        # A follow-up of the email, on its way to the therapist agent, with the requests' details.
        follow_up = inbox.FollowUpEmail(1, batch, NOW, tuple(b.as_request() for b in email.batches))
        add_rows(session, [inbox_row(CHANNELS, follow_up, NOW)])

    database.transaction(answer_and_call)
    return {"batch": batch}


def erase(database, patient_id: int = ERIKA_ID, command_id: str | None = None) -> str:
    command = processed_commands.Command(
        command_id or str(uuid.uuid4()), erasure.ERASE_PATIENT, ErasePatient(patient_id=patient_id), None
    )
    return database.transaction(processed_commands.execute, command, CHANNELS, NOW, HANDLERS)


def events(database, event_type: str) -> list[dict[str, Any]]:
    def read(session):
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.topic == CHANNELS.events))
        return [(row.key, json.loads(row.value)) for row in rows]

    return [{"key": key, **doc} for key, doc in database.transaction(read) if doc["event_type"] == event_type]


def events_in(session, event_type: str) -> list[dict[str, Any]]:
    rows = session.scalars(select(OutboxMessage.value).where(OutboxMessage.topic == CHANNELS.events))
    return [doc for doc in map(json.loads, rows) if doc["event_type"] == event_type]


def every_text(database) -> str:
    """Every value of every row of every table, as text (what a person with the
    database could read)."""

    def read(session):
        found = []
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(*(cast(c, Text) for c in table.columns))):
                found.extend(str(v) for v in row if v is not None)
        return "\n".join(found)

    return database.transaction(read)


def test_the_patient_leaves_every_row_and_the_others_stay_readable(database):
    ids = setup(database)
    before = every_text(database)
    assert all(trace in before for trace in ERIKA_TRACES)

    assert erase(database) == "done"

    after = every_text(database)
    assert [trace for trace in ERIKA_TRACES if trace in after] == []
    [erased] = events(database, "communication.patient_erased")
    assert erased["key"] == str(ERIKA_ID)
    assert erased["payload"] == {
        "therapist_id": None,
        "patient_id": ERIKA_ID,
        "waiting_requests": 1,
        "emails": 1,
        "batch_entries": 1,
        "call_entries": 1,
        "delivered_emails": 1,
    }

    def check(session):
        email = session.get(Email, ids["batch"])
        # Re-rendered: the other two are there, with their diagnoses, and the card says why it is empty.
        for other in (JONAS, LENA):
            assert other["last_name"] in email.body_text and other["diagnosis"] in email.body_html
        assert ERASED_NOTE in email.body_text and ERASED_NOTE in email.body_html
        assert "Nr. 1 von 3" in email.body_text  # the request is still in it
        assert email.status is EmailStatus.SENT and email.redacted_at is None
        assert email.response_received and email.response_content is None  # free text: cannot be split
        entries = {b.placement_request_id: b for b in email.batches}
        assert entries[101].patient == ERASED_PATIENT and entries[101].response_notes is None
        assert entries[101].redacted_at == NOW
        assert entries[102].patient == JONAS and entries[102].response_notes == "Notiz zu Jonas"
        [waiting] = session.scalars(select(WaitingRequest)).all()
        assert (waiting.placement_request_id, waiting.patient) == (201, ERASED_PATIENT)
        call = session.scalars(select(PhoneCall)).one()
        assert call.notes is None and call.outcome_notes is None  # free text about the call
        outcomes = {b.placement_request_id: (b.outcome, b.notes) for b in call.batches}
        assert outcomes == {101: ("needs_info", None), 102: ("rejected", "Jonas nein")}
        # The call events lose the patient's notes, and stay valid events.
        [updated] = events_in(session, "communication.phone_call_updated")
        assert "notes" not in updated["payload"]
        [completed] = events_in(session, "communication.phone_call_completed")
        assert [o["notes"] for o in completed["payload"]["outcomes"]] == [None, "Jonas nein"]
        for event in (updated, completed):
            assert event_model(OUTPUT_EVENTS[event["event_type"]]).model_validate(event)
        [follow_up] = session.scalars(select(OutboxMessage).where(OutboxMessage.topic == CHANNELS.inbox)).all()
        decoded = inbox.decode(follow_up.value.encode())
        assert isinstance(decoded, inbox.FollowUpEmail)
        assert [dict(r.patient) for r in decoded.requests] == [ERASED_PATIENT, JONAS, LENA]

    database.transaction(check)


def test_a_waiting_request_of_an_erased_patient_still_goes_out_without_their_details(database):
    setup(database)
    erase(database)
    # Therapist 2's batch run: the request is emailed, its card says the details were deleted.
    command = send_command("batch-2", 2, [PlacementRequest(201, ERIKA_ID, datetime(2026, 1, 2, tzinfo=UTC))])
    email_id = store(database, command, sent=False)

    def check(session):
        email = session.get(Email, email_id)
        assert email.placement_request_ids == [201]
        assert ERASED_NOTE in email.body_text and "Erika" not in email.body_text
        assert email.batches[0].patient == ERASED_PATIENT

    database.transaction(check)


def test_details_still_on_their_way_during_the_erasure_are_not_stored_after_it(database):
    """A match.created of Erika's, registered before her erasure, that was still on the
    internal topics when it ran: its request is kept with the marker, not her details.
    A request registered after the erasure is a new proposal, stored as it comes."""
    setup(database)
    erase(database)
    in_flight = request(301, ERIKA_ID, ERIKA)  # registered in January, before the erasure
    later = PlacementRequest(302, ERIKA_ID, NOW + timedelta(days=1), {"first_name": "Erika", "age": 35})
    database.transaction(
        waiting_requests.keep,
        [RequestDetails(3, in_flight), RequestDetails(3, later), RequestDetails(3, request(303, JONAS_ID, JONAS))],
        NOW + timedelta(days=2),
    )

    def check(session):
        rows = {r.placement_request_id: r.patient for r in session.scalars(select(WaitingRequest))}
        assert rows[301] == ERASED_PATIENT
        assert rows[302] == {"first_name": "Erika", "age": 35}
        assert rows[303] == JONAS  # other patients are not touched

    database.transaction(check)


def test_a_replay_changes_nothing_and_a_new_erasure_reports_zeros(database):
    setup(database)
    command_id = str(uuid.uuid4())
    assert erase(database, command_id=command_id) == "done"
    once = every_text(database)
    assert erase(database, command_id=command_id) == "replayed"
    assert every_text(database) == once
    assert len(events(database, "communication.patient_erased")) == 1

    assert erase(database) == "done"  # a new command: nothing left to erase
    [_, again] = events(database, "communication.patient_erased")
    counts = {k: v for k, v in again["payload"].items() if k not in ("therapist_id", "patient_id")}
    assert set(counts.values()) == {0}
    # Nothing else changed but the new command and its event.
    assert every_text(database).count("Jonas") == once.count("Jonas")


def stored_manual(database, key: str, status: EmailStatus) -> int:
    """A manual email about Erika, as staff wrote it (free text), in ``status``."""

    def work(session):
        email = Email(
            email_key=key,
            therapist_id=1,
            kind="manual",
            template=None,
            subject="Rückfrage",
            body_html="<p>Zu Frau Mustermann (F32.1): passt Montag?</p>",
            body_text="Zu Frau Mustermann (F32.1): passt Montag?",
            recipient_email="t1@praxis.example",
            recipient_name="Dr. Eva Müller",
            sender_email=IDENTITY.sender_email,
            sender_name=IDENTITY.sender_name,
            placement_request_ids=[101],
            status=status,
            message_id=f"<{key}@therapieplatz.example>",
            queued_at=NOW if status is EmailStatus.QUEUED else None,
            next_attempt_at=NOW if status is EmailStatus.QUEUED else None,
            sent_at=NOW if status is EmailStatus.SENT else None,
            batches=[EmailBatch(placement_request_id=101, patient_id=ERIKA_ID, patient=dict(ERIKA))],
        )
        session.add(email)
        session.flush()
        return email.id

    return database.transaction(work)


def test_a_manual_email_that_cannot_be_rendered_again_loses_its_content(database):
    sent = stored_manual(database, "m-sent", EmailStatus.SENT)
    queued = stored_manual(database, "m-queued", EmailStatus.QUEUED)
    failed = stored_manual(database, "m-failed", EmailStatus.FAILED)
    erase(database)
    assert [trace for trace in ERIKA_TRACES if trace in every_text(database)] == []

    def check(session):
        delivered = session.get(Email, sent)
        assert (delivered.body_text, delivered.status) == (ERASED_EMAIL, EmailStatus.SENT)
        assert ERASED_EMAIL in delivered.body_html and delivered.redacted_at == NOW
        # Not sent yet: it must not go out as written, so it fails (staff may write it again).
        withdrawn = session.get(Email, queued)
        assert (withdrawn.status, withdrawn.error_message) == (EmailStatus.FAILED, WITHDRAWN)
        assert (withdrawn.body_html, withdrawn.body_text, withdrawn.next_attempt_at) == ("", "", None)
        # Failed already: empty, so that a re-queue needs new content.
        assert (session.get(Email, failed).body_html, session.get(Email, failed).body_text) == ("", "")

    database.transaction(check)
    [erased] = events(database, "communication.patient_erased")
    assert (erased["payload"]["emails"], erased["payload"]["delivered_emails"]) == (3, 1)
    [failure] = events(database, "communication.email_failed")
    assert failure["payload"]["email_id"] == queued and failure["payload"]["will_retry"] is False

    def window_released(session):
        rows = session.scalars(select(OutboxMessage.value).where(OutboxMessage.topic == CHANNELS.inbox))
        return [inbox.decode(v.encode()) for v in rows]

    assert inbox.EmailFailed(1, "m-queued") in database.transaction(window_released)


def test_a_follow_up_email_is_rendered_again_with_the_date_it_follows_up(database):
    ids = setup(database)
    follow_up = store(
        database,
        send_command(
            derived_key("follow_up", ids["batch"]),  # as the therapist agent derives it
            1,
            [request(101, ERIKA_ID, ERIKA), request(103, LENA_ID, LENA)],
            email_kind="follow_up",
            template="follow_up",
            context={"original_sent_at": (NOW - timedelta(days=2)).isoformat()},
        ),
    )
    original = database.transaction(lambda s: s.get(Email, follow_up).body_text)
    assert "am 21.11.2026" in original
    erase(database)

    def check(session):
        email = session.get(Email, follow_up)
        assert "am 21.11.2026" in email.body_text and "Lena" in email.body_text and "Erika" not in email.body_text

    database.transaction(check)


def test_an_unsent_contact_email_that_cannot_be_rendered_again_fails_and_its_requests_wait_again(database):
    database.transaction(update_directory, DirectoryUpdate(1, profile(1)), CHANNELS, NOW)
    queued = store(
        database, send_command("batch-q", 1, [request(101, ERIKA_ID, ERIKA), request(102, JONAS_ID, JONAS)]), sent=False
    )

    def broken(template, context, therapist_id=None):
        raise RenderError(f"template {template!r}: broken since")

    command = processed_commands.Command(
        str(uuid.uuid4()), erasure.ERASE_PATIENT, ErasePatient(patient_id=ERIKA_ID), None
    )
    handlers = erasure.handlers(broken, IDENTITY)
    assert database.transaction(processed_commands.execute, command, CHANNELS, NOW, handlers) == "done"

    def check(session):
        email = session.get(Email, queued)
        assert (email.status, email.error_message, email.body_text) == (EmailStatus.FAILED, WITHDRAWN, "")
        messages = [
            inbox.decode(v.encode())
            for v in session.scalars(select(OutboxMessage.value).where(OutboxMessage.topic == CHANNELS.inbox))
        ]
        [failed] = [m for m in messages if isinstance(m, inbox.EmailFailed)]
        assert failed.email_key == "batch-q"
        assert [(r.placement_request_id, dict(r.patient)) for r in failed.returned] == [
            (101, ERASED_PATIENT),
            (102, JONAS),
        ]

    database.transaction(check)
