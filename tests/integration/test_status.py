"""What ``commsvc status`` reads, against the real services: the database part on
PostgreSQL and SQLite, the broker part on Tansu (lag of the worker group, dead
letters of the last 24 h, suppressions from the table's changelog), and what it
says when one of them does not answer."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import SecretStr
from sqlalchemy import func, insert, select

from domain.therapist import TherapistProfile
from domain.therapist_state import Suppression, TherapistState
from streams.demo.broker import LocalBroker, free_port
from streams.kafka.admin import ensure_topics
from streams.kafka.dead_letters import dead_letter
from streams.messages.codec import dumps, state_to_wire
from streams.messages.envelope import envelope
from streams.ops import status, status_database
from streams.ops.topic_reader import Broker, BrokerUnavailable
from streams.persistence.db import Database
from streams.persistence.models import OUTBOX, CallStatus, Email, EmailStatus, PhoneCall
from streams.settings import Settings

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 in Berlin
EVENTS = "communication-events"


def add_email(session, n: int, status_: EmailStatus, *, queued_at=None, updated_at=NOW, next_attempt_at=None):
    session.add(
        Email(
            email_key=f"k{n}",
            therapist_id=n,
            kind="contact_request",
            template="initial_contact",
            subject="Anfrage",
            body_html="<p>Pat</p>",
            body_text="Pat",
            recipient_email=f"t{n}@praxis.example",
            recipient_name="Eva Müller",
            sender_email="vermittlung@therapieplatz.example",
            sender_name="Vermittlung",
            status=status_,
            queued_at=queued_at,
            next_attempt_at=next_attempt_at,
            message_id=f"<{n}@x>",
            created_at=NOW - timedelta(days=2),
            updated_at=updated_at,
        )
    )


def outbox_event(event_type: str, payload: dict, created_at: datetime, published: bool = True) -> dict:
    document = envelope(event_type, payload, event_id=str(uuid.uuid4()), occurred_at=created_at)
    return {
        "topic": EVENTS,
        "key": "7",
        "value": dumps(document).decode(),
        "created_at": created_at,
        "published_at": created_at if published else None,
    }


def call(session, n: int, at: datetime, status_: CallStatus) -> None:
    session.add(
        PhoneCall(
            call_key=f"c{n}", therapist_id=7, scheduled_at=at, duration_minutes=5, reason="follow_up", status=status_
        )
    )


def scenario(session) -> None:
    add_email(session, 1, EmailStatus.DRAFT)
    add_email(
        session, 2, EmailStatus.QUEUED, queued_at=NOW - timedelta(hours=3), next_attempt_at=NOW + timedelta(hours=1)
    )
    add_email(
        session, 3, EmailStatus.QUEUED, queued_at=NOW - timedelta(hours=1), next_attempt_at=NOW - timedelta(minutes=5)
    )
    add_email(session, 4, EmailStatus.SENT)
    add_email(session, 5, EmailStatus.SENT)
    add_email(session, 6, EmailStatus.FAILED, updated_at=NOW - timedelta(hours=2))
    add_email(session, 7, EmailStatus.FAILED, updated_at=NOW - timedelta(hours=30))  # before the window
    session.flush()
    failed = {"email_id": 6, "error": "550", "retry_count": 1, "will_retry": False, "next_attempt_at": None}
    rows = [
        outbox_event("communication.email_failed", failed, NOW - timedelta(hours=2)),
        outbox_event("communication.email_failed", {**failed, "will_retry": True}, NOW - timedelta(hours=3)),
        outbox_event("communication.email_failed", failed, NOW - timedelta(hours=26)),  # before the window
        outbox_event("communication.alert", {"code": "email_failed", "message": "x"}, NOW - timedelta(hours=2)),
        outbox_event("communication.alert", {"code": "smtp_unavailable", "message": "y"}, NOW - timedelta(hours=1)),
        outbox_event("communication.email_sent", {"email_id": 4}, NOW - timedelta(minutes=30), published=False),
        # The subject of an email is no alert, whatever it says.
        outbox_event("communication.email_created", {"subject": "communication.alert"}, NOW - timedelta(minutes=20)),
    ]
    session.execute(insert(OUTBOX), rows)
    call(session, 1, datetime(2026, 11, 22, 23, 30, tzinfo=UTC), CallStatus.COMPLETED)  # 00:30 in Berlin: today
    call(session, 2, datetime(2026, 11, 23, 14, 0, tzinfo=UTC), CallStatus.SCHEDULED)
    call(session, 3, datetime(2026, 11, 23, 15, 0, tzinfo=UTC), CallStatus.SCHEDULED)
    call(session, 4, datetime(2026, 11, 23, 23, 30, tzinfo=UTC), CallStatus.SCHEDULED)  # tomorrow in Berlin
    call(session, 5, datetime(2026, 11, 22, 22, 30, tzinfo=UTC), CallStatus.CANCELLED)  # yesterday


def test_the_database_part_counts_what_the_tables_hold(database: Database):
    database.transaction(scenario)
    settings = Settings.from_environ({})
    read = database.transaction(
        lambda session: status_database.read(
            session, NOW, zone=settings.timezone, events_topic=EVENTS, window=timedelta(hours=24), timeout=5
        )
    )
    assert read.emails == {"entwurf": 1, "in_warteschlange": 2, "wird_gesendet": 0, "gesendet": 2, "fehlgeschlagen": 2}
    assert read.oldest_queued is not None and read.oldest_queued.email_id == 2
    assert read.oldest_queued.queued_at == NOW - timedelta(hours=3)
    assert read.most_overdue == timedelta(minutes=5)  # email 3; email 2 is not due yet
    assert (read.failed_attempts, read.failed_for_good) == (2, 1)
    assert read.alerts == {"email_failed": 1, "smtp_unavailable": 1}
    assert read.outbox_backlog == 1 and read.outbox_oldest is not None and read.outbox_oldest.topic == EVENTS
    assert read.outbox_oldest_age == timedelta(minutes=30)
    assert read.day.isoformat() == "2026-11-23"
    assert read.calls_today == {"completed": 1, "scheduled": 2}
    with database.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Email)) == sum(read.emails.values())


# -- the broker ------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as running:
        yield running


@pytest.fixture
async def settings(broker: LocalBroker) -> AsyncIterator[Settings]:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    configured = Settings.from_environ(
        {
            "COMM_KAFKA_BROKER": broker.url,
            "COMM_APP_ID": prefix,
            "COMM_PARTITIONS": "2",
            **{
                f"COMM_TOPIC_{name.upper()}": f"{prefix}-{name}"
                for name in ("matching", "therapists", "commands", "events", "dlq")
            },
        }
    )
    await ensure_topics(configured)
    yield configured


async def produce(broker: LocalBroker, records: list[tuple[str, int, bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
    await producer.start()
    try:
        for topic, partition, key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def commit(broker: LocalBroker, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def therapist(therapist_id: int, *, suppressed: bool = False, deleted: bool = False) -> bytes:
    state = TherapistState(therapist_id, profile=TherapistProfile(therapist_id, "t@praxis.example", "Eva", "Müller"))
    state.deleted = deleted
    if suppressed:
        state.suppression = Suppression("t@praxis.example", "550 5.1.1", 1, NOW)
    return dumps(state_to_wire(state))


def dead(source: str, received_at: datetime) -> bytes:
    return dead_letter(
        reason="not JSON", topic=source, partition=0, offset=1, key=b"1", value=b"{", received_at=received_at
    )


async def test_the_broker_part_reads_lag_dead_letters_and_suppressions(broker: LocalBroker, settings: Settings):
    now = datetime.now(UTC)
    matching, therapists = settings.topic_matching, settings.topic_therapists
    changelog = f"{settings.app_id}-therapists-changelog"
    await produce(
        broker,
        [
            *[(matching, 0, b"1", b"{}") for _ in range(5)],
            *[(matching, 1, b"2", b"{}") for _ in range(3)],
            (therapists, 0, b"7", b"{}"),
            (settings.topic_dlq, 0, b"1", dead(matching, now - timedelta(hours=1))),
            (settings.topic_dlq, 1, b"1", dead(matching, now - timedelta(hours=2))),
            (settings.topic_dlq, 1, b"7", dead(therapists, now - timedelta(minutes=5))),
            (settings.topic_dlq, 0, b"1", dead(matching, now - timedelta(hours=30))),  # before the window
            (changelog, 0, b"1", therapist(1, suppressed=True)),
            (changelog, 1, b"2", therapist(2, suppressed=True)),
            (changelog, 0, b"3", therapist(3)),
            (changelog, 1, b"4", therapist(4, suppressed=True, deleted=True)),
            (changelog, 0, b"5", therapist(5, suppressed=True)),
            (changelog, 0, b"5", therapist(5)),  # lifted since
            (changelog, 1, b"2", None),  # and a tombstone
            (changelog, 0, b'"bookmark-0"', b'{"last_run": "2026-11-23T09:00:00+01:00"}'),
        ],
    )
    # The input events' offsets are the ingest consumer's group's (streams.agents.ingest_consumer).
    await commit(
        broker, f"{settings.app_id}-ingest", {TopicPartition(matching, 0): 4, TopicPartition(therapists, 0): 1}
    )
    read = await status.read_broker(Broker(settings, 10.0), now, lambda line: None)

    lag = {t.topic: t for t in read.lag}
    assert list(lag) == [matching, therapists, settings.topic_commands]
    assert lag[matching].partitions[0].committed == 4 and lag[matching].partitions[0].lag == 1
    assert lag[matching].partitions[1].committed is None and lag[matching].partitions[1].lag == 3
    assert lag[matching].lag == 4 and lag[therapists].lag == 0 and lag[settings.topic_commands].lag == 0
    assert read.group == settings.app_id
    assert {t.topic: t.group for t in read.lag} == {
        matching: f"{settings.app_id}-ingest",
        therapists: f"{settings.app_id}-ingest",
        settings.topic_commands: settings.app_id,
    }
    assert read.dlq_records == 3 and read.dlq_by_source == {matching: 2, therapists: 1}
    assert read.suppressed_addresses == 1


async def test_a_topic_read_ends_at_the_offsets_taken_at_its_start(broker: LocalBroker, settings: Settings):
    from streams.ops.dlq import read_all

    await produce(broker, [(settings.topic_dlq, 0, b"1", dead(settings.topic_matching, NOW))])
    records, ends = await read_all(Broker(settings, 10.0))
    assert [r.id for r in records] == ["0:0"] and ends == {0: 1, 1: 0}


async def test_a_broker_that_refuses_connections_is_named(settings: Settings):
    closed = settings.model_copy(update={"kafka_broker": f"kafka://127.0.0.1:{free_port()}"})
    with pytest.raises(BrokerUnavailable, match=r"the broker at 127\.0\.0\.1:\d+ is not reachable"):
        await status.read_broker(Broker(closed, 5.0), NOW, lambda line: None)


async def test_a_broker_that_never_answers_is_named_after_the_timeout(settings: Settings):
    with socket.socket() as silent:  # accepts connections, says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        mute = settings.model_copy(update={"kafka_broker": f"kafka://127.0.0.1:{port}"})
        started = asyncio.get_running_loop().time()
        with pytest.raises(BrokerUnavailable, match=rf"the broker at 127\.0\.0\.1:{port} .*within 1s"):
            await status.read_broker(Broker(mute, 1.0), NOW, lambda line: None)
        assert asyncio.get_running_loop().time() - started < 10


async def test_status_shows_the_broker_part_when_the_database_does_not_answer(settings: Settings):
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    settings = settings.model_copy(update={"database_url": SecretStr(url)})
    database = Database(url)
    try:
        collected = await status.collect(settings, database, NOW, answer_within=5.0, progress=lambda line: None)
    finally:
        database.dispose()
    assert collected.database is None and collected.broker is not None
    assert collected.errors["database"].startswith("the database at postgresql+psycopg://postgres@127.0.0.1:")
    assert "is not reachable (connection failed" in collected.errors["database"]
    document = status.as_json(collected)
    assert document["emails"] is None and document["consumer_lag"] is not None
    json.dumps(document)  # serialisable as it is


async def test_a_database_without_the_schema_says_to_migrate(settings: Settings, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    database = Database(url)
    try:
        with pytest.raises(status.DatabaseUnavailable, match=r"has no schema yet .*; run commsvc migrate"):
            await status.read_database(settings.model_copy(update={"database_url": SecretStr(url)}), database, NOW, 5)
    finally:
        database.dispose()
