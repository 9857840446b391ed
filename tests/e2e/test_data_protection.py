"""Patient data protection (issue 18) on the real worker, broker, database and SMTP
server: the therapist table never holds a patient's details, an erased patient
leaves every row while the other patients stay readable, and old content is
redacted after COMM_CONTENT_RETENTION."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from sqlalchemy import Text, cast, create_engine, select

from streams.kafka.topics import internal_topic_names
from streams.ops.topic_reader import Broker, open_reader, read_to_end
from streams.persistence.models import Base
from streams.persistence.patient_data import ERASED_NOTE
from streams.settings import Settings
from tests.e2e.harness import Service, plain_text
from tests.events import envelope, match_status_changed, therapist_created
from tests.waiting import until

ERASE = "communication.erase_patient"
ALWAYS = {
    day: [{"start": "00:00", "end": "24:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}
ERIKA, JONAS, LENA, WANDA = 5001, 5002, 5003, 5004
PATIENTS = {
    ERIKA: {"first_name": "Erika", "last_name": "Mustermann", "diagnosis": "F32.1 Depression", "notes": "vormittags"},
    JONAS: {"first_name": "Jonas", "last_name": "Beispiel", "diagnosis": "F41.1 Angststörung"},
    LENA: {"first_name": "Lena", "last_name": "Probst", "diagnosis": "F43.1 Belastungsstörung"},
    WANDA: {"first_name": "Wanda", "last_name": "Zurückgezogen", "diagnosis": "F60.3", "notes": "abends"},
}


def traces(patient_id: int) -> list[str]:
    """What would identify the patient or say something about them."""
    return [value for value in PATIENTS[patient_id].values() if isinstance(value, str)]


def match(request_id: int, therapist_id: int, patient_id: int, registered_at: str) -> dict[str, Any]:
    payload = {
        "placement_request_id": request_id,
        "therapist_id": therapist_id,
        "patient_id": patient_id,
        "patient": {"registered_at": registered_at, **PATIENTS[patient_id]},
    }
    return envelope("match.created", payload)


async def changelog(service: Service) -> dict[bytes, bytes]:
    """The latest value of every key of the therapist table's changelog (what a
    compacted topic keeps)."""
    settings = Settings.from_environ(service.environ)
    topic = internal_topic_names(settings)["changelog"]
    latest: dict[bytes, bytes] = {}
    async with open_reader(Broker(settings)) as consumer:
        async for record in read_to_end(consumer, Broker(settings), topic):
            latest[record.key] = record.value
    return latest


def therapist_values(values: dict[bytes, bytes]) -> dict[int, dict[str, Any]]:
    found = {}
    for raw in values.values():
        value = json.loads(raw) if raw is not None else None
        if isinstance(value, dict) and "therapist_id" in value:  # (not a partition's bookmark)
            found[value["therapist_id"]] = value
    return found


def every_text(service: Service) -> str:
    """Every value of every row of every table, as text."""
    engine = create_engine(service.database_url)
    try:
        with engine.connect() as connection:
            return "\n".join(
                str(v)
                for table in Base.metadata.sorted_tables
                for row in connection.execute(select(*(cast(c, Text) for c in table.columns)))
                for v in row
                if v is not None
            )
    finally:
        engine.dispose()


def published_text(service: Service) -> str:
    """communication-events without staff's call notes (published as staff wrote them,
    patient_data.EVENT_TEXT)."""
    documents = []
    for event in service.events():
        payload = dict(event["payload"])
        payload.pop("notes", None)
        if "outcomes" in payload:
            payload["outcomes"] = [{**o, "notes": None} for o in payload["outcomes"]]
        documents.append(json.dumps({**event, "payload": payload}, ensure_ascii=False))
    return "\n".join(documents)


async def table_holds_no_patient_details(service: Service, expected: dict[int, Any]) -> dict[int, dict[str, Any]]:
    """Until the table's values show what ``expected`` says (therapist -> check of its
    value), then: not one of them names a patient or their diagnosis or notes."""
    deadline = asyncio.get_running_loop().time() + 30.0
    while True:  # the changelog is read anew each time, until it shows the expected state
        values = therapist_values(await changelog(service))
        if all(t in values and check(values[t]) for t, check in expected.items()):
            break
        assert asyncio.get_running_loop().time() < deadline, f"the table did not reach the expected state: {values}"
        await asyncio.sleep(0.2)
    dumped = json.dumps(list(values.values()), ensure_ascii=False)
    found = [trace for patient in PATIENTS for trace in traces(patient) if trace in dumped]
    assert found == [], f"patient details in the therapist table: {found}"
    return values


def pending(value: dict[str, Any]) -> set[int]:
    return {r["placement_request_id"] for r in value.get("pending", [])}


async def test_an_erased_patient_leaves_every_row_and_the_table_never_holds_patient_details(service: Service):
    await service.up()
    # Three patients for therapist 1 (one email, as the therapist arrives after them),
    # Erika also for therapist 2 (not known yet: the request waits), Wanda for
    # therapist 4 (she withdraws before it is emailed).
    await service.matches(
        match(101, 1, ERIKA, "2026-01-01T10:00:00+01:00"),
        match(102, 1, JONAS, "2026-01-02T10:00:00+01:00"),
        match(103, 1, LENA, "2026-01-03T10:00:00+01:00"),
        match(201, 2, ERIKA, "2026-01-01T10:00:00+01:00"),
        match(401, 4, WANDA, "2026-01-04T10:00:00+01:00"),
    )
    await service.forwarded("match_created", 5)
    await service.therapists(therapist_created(1, availability=ALWAYS))
    [sent] = await service.wait_event("communication.email_sent", therapist_id=1)
    batch_id = sent["payload"]["email_id"]
    assert sent["payload"]["placement_request_ids"] == [101, 102, 103]
    await service.matches(match_status_changed(401, 4, "withdrawn"))
    await service.wait_event("communication.placement_dropped", placement_request_id=401)
    await service.matches(match_status_changed(102, 1, "accepted"))  # a confirmation to therapist 1
    await service.wait_event("communication.email_sent", count=2, therapist_id=1)

    # The therapist's answer and a call about it, with staff's notes.
    await service.command(
        "communication.record_email_response",
        {
            "email_id": batch_id,
            "received_at": "2026-11-23T10:15:00+01:00",
            "content": "Frau Mustermann gern",
            "responses": [{"placement_request_id": 101, "outcome": "needs_info"}],
        },
        key=1,
    )
    await service.command(
        "communication.update_email_batch",
        {"email_id": batch_id, "placement_request_id": 101, "outcome": "needs_info", "notes": "Erika: vormittags"},
        key=1,
    )
    await service.known_for_calls(1)
    await service.command("communication.schedule_phone_call", {"therapist_id": 1, "placement_request_ids": [101, 103]})
    [booked] = await service.wait_event("communication.phone_call_scheduled", therapist_id=1)
    call_id = booked["payload"]["phone_call_id"]
    await service.command(
        "communication.update_phone_call", {"phone_call_id": call_id, "notes": "Erika ruft an"}, key=1
    )
    await service.command(
        "communication.record_call_outcome",
        {
            "phone_call_id": call_id,
            "status": "completed",
            "outcomes": [
                {"placement_request_id": 101, "outcome": "needs_info", "notes": "Mustermann: F32.1 besprochen"},
                {"placement_request_id": 103, "outcome": "rejected", "notes": "Lena: keine Kapazität"},
            ],
        },
        key=1,
    )
    await service.wait_event("communication.phone_call_completed", phone_call_id=call_id)
    before = every_text(service)
    assert all(trace in before for trace in traces(ERIKA))

    # Minimal copies: emailed, dropped, confirmed or waiting, the table knows ids and times.
    values = await table_holds_no_patient_details(
        service,
        {
            1: lambda v: {"101", "102", "103"} <= set(v["settled"]) and not pending(v),
            2: lambda v: pending(v) == {201},
            4: lambda v: "401" in v["settled"] and not pending(v),
        },
    )
    assert values[1]["settled"]["102"][0] == "confirmed"

    command_id = await service.command(ERASE, {"patient_id": ERIKA, "reason": "Art. 17 DSGVO"}, key=ERIKA)
    [erased] = await service.wait_event("communication.patient_erased", patient_id=ERIKA)
    assert erased["causation_id"] == command_id and erased["payload"]["therapist_id"] is None
    [record] = [r for r in service.collector.raw[service.topics.events] if b"patient_erased" in r.value]
    assert record.key == str(ERIKA).encode()  # about a patient: keyed by the patient
    counts = {k: v for k, v in erased["payload"].items() if k not in ("therapist_id", "patient_id")}
    assert counts == {"waiting_requests": 1, "emails": 1, "batch_entries": 1, "call_entries": 1, "delivered_emails": 1}

    # No row holds her name, diagnosis or notes; the other two are intact.
    after = every_text(service)
    assert [trace for trace in traces(ERIKA) if trace in after] == []
    [(body_html, body_text)] = service.query("SELECT body_html, body_text FROM emails WHERE id = :id", id=batch_id)
    for other in (JONAS, LENA):
        assert all(trace in body_text and trace in body_html for trace in traces(other))
    assert ERASED_NOTE in body_text
    outcomes = service.query(
        "SELECT placement_request_id, outcome, notes FROM phone_call_batches WHERE phone_call_id = :id ORDER BY 1",
        id=call_id,
    )
    assert [tuple(row) for row in outcomes] == [(101, "needs_info", None), (103, "rejected", "Lena: keine Kapazität")]
    # Events carry ids (staff's call notes aside, which are published as given).
    assert [t for p in PATIENTS for t in traces(p) if t in published_text(service)] == []

    # The same command again changes nothing; a new one finds nothing left.
    await service.command(ERASE, {"patient_id": ERIKA}, key=ERIKA, event_id=command_id)
    again = await service.command(ERASE, {"patient_id": ERIKA}, key=ERIKA)
    erasures = await service.wait_event("communication.patient_erased", count=2, distinct=True, patient_id=ERIKA)
    assert [e["causation_id"] for e in erasures] == [command_id, again]
    assert set(erasures[1]["payload"].values()) == {None, ERIKA, 0}
    assert every_text(service).count("Jonas") == after.count("Jonas")

    # Her waiting request still goes out, without her details.
    await service.therapists(therapist_created(2))
    [email] = await service.mailbox.wait_for("therapeut2@praxis.example", 1)
    assert ERASED_NOTE in plain_text(email) and not any(t in plain_text(email) for t in traces(ERIKA))
    await service.wait_event("communication.email_sent", therapist_id=2)
    values = await table_holds_no_patient_details(service, {2: lambda v: "201" in v["settled"]})
    assert len(service.events("communication.patient_erased")) == 2
    log = service.log_path.read_text(errors="replace")
    assert "patient 5001 erased" in log and [t for p in PATIENTS for t in traces(p) if t in log] == []


async def test_content_older_than_the_retention_is_redacted_and_newer_content_is_not(make_service):
    retention = timedelta(seconds=3)
    async with make_service(COMM_CONTENT_RETENTION="3s") as service:
        await service.up()
        await service.therapists(therapist_created(5), therapist_created(6))
        await service.matches(match(501, 5, JONAS, "2026-01-02T10:00:00+01:00"))
        [first] = await service.wait_event("communication.email_sent", therapist_id=5)
        await service.command(
            "communication.update_email_batch",
            {
                "email_id": first["payload"]["email_id"],
                "placement_request_id": 501,
                "outcome": "accepted",
                "notes": "Jonas ab Januar",
            },
            key=5,
        )
        await service.wait_event("communication.placement_response", placement_request_id=501)
        await service.matches(match(601, 6, LENA, "2026-01-03T10:00:00+01:00"))
        await service.wait_event("communication.email_sent", therapist_id=6)

        def emails() -> list[Any]:
            return service.query(
                "SELECT e.id, e.sent_at, e.redacted_at, e.status, e.placement_request_ids, e.body_text, "
                "b.patient, b.response_notes, b.response_outcome, b.redacted_at FROM emails e "
                "JOIN email_batches b ON b.email_id = e.id ORDER BY e.id"
            )

        def never_early() -> None:
            # Redacted only once older than the retention; until then, untouched.
            for row in emails():
                if row.redacted_at is not None:
                    assert row.sent_at <= row.redacted_at - retention
                else:
                    assert any(t in row.body_text for p in (JONAS, LENA) for t in traces(p))

        def redacted(count: int) -> list[Any]:
            never_early()
            done = [row for row in emails() if row.redacted_at is not None]
            return done if len(done) >= count else []

        await until(lambda: redacted(1), 20, "the first email to be redacted")
        await until(lambda: redacted(2), 20, "both emails to be redacted")
        never_early()
        for row in emails():
            assert row.status == "gesendet" and row.placement_request_ids in ([501], [601])
            assert "Aufbewahrungsfrist" in row.body_text and row.response_notes is None
            assert row.patient == {"expired": True}
        assert [row.response_outcome for row in emails()] == ["accepted", None]  # outcomes stay
        text = every_text(service)
        assert [t for p in (JONAS, LENA) for t in traces(p) if t in text] == []
