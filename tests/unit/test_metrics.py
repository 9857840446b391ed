"""What the service counts, where, and how it is exposed: the Prometheus names, the
counts made by the agents, the delivery loop and the relay (against fakes), the
delivery process's counts passed to the worker, and the database gauges measured
when scraped."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiosmtplib
import pytest
from faust.sensors.prometheus import PrometheusMonitor
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from domain.decisions import CONFIRMATION, CONTACT_REQUEST, ManualEmailContent
from domain.email_status import EmailStatus
from domain.placement import PlacementRequest
from domain.retry import RetryPolicy
from domain.therapist import TherapistProfile
from streams.agents.commands import CommandAgent
from streams.agents.ingest import matching_ingest, therapist_ingest
from streams.agents.therapist import TherapistAgent
from streams.agents.ticks import partition_of
from streams.bootstrap import call_policy
from streams.delivery import process
from streams.delivery.loop import DeliveryService
from streams.delivery.mailer import SmtpUnavailable
from streams.delivery.relay import OutboxRelay
from streams.delivery.wakeups import Wakeups
from streams.kafka.app import create_app
from streams.messages import inbox
from streams.messages.codec import dumps
from streams.ops.metrics import (
    FORWARDED,
    BacklogCollector,
    ForwardedMetrics,
    Outcome,
    PrometheusMetrics,
    SendFailure,
    apply_forwarded,
    serve_metrics,
)
from streams.persistence import processed_commands
from streams.persistence.backlog import Backlog
from streams.persistence.outbox import Channels, PendingMessage, inbox_row
from streams.settings import Settings
from tests.events import encode, envelope, match_created, therapist_created
from tests.fakes import (
    WAIT,
    FakeClock,
    FakeDeliveryStore,
    Record,
    RecordingDatabase,
    RecordingMailer,
    RecordingMetrics,
    RecordStream,
    claimed_email,
    recipient,
    recording_mailers,
    recording_topics,
    taken,
)

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
MONDAY = datetime(2026, 11, 23, 8, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # the batch run is at 09:00
PARTITIONS = 4
SETTINGS = Settings.from_environ({"COMM_PARTITIONS": str(PARTITIONS), "COMM_BATCH_SCHEDULE": "0 9 * * *"})
POLICY = RetryPolicy(max_attempts=3, base=timedelta(seconds=30), cap=timedelta(hours=1))
DELIVERY = Settings.from_environ({"COMM_POLL_INTERVAL": "10ms", "COMM_SMTP_OUTAGE_BACKOFF_MAX": "10ms"})
CHANNELS = Channels(events="communication-events", inbox="svc-therapist-inbox")

SERVICE_METRICS = {
    "commsvc_input_events": "counter",
    "commsvc_dlq_records": "counter",
    "commsvc_emails_created": "counter",
    "commsvc_emails_sent": "counter",
    "commsvc_email_send_failures": "counter",
    "commsvc_email_queue_depth": "gauge",
    "commsvc_email_oldest_queued_seconds": "gauge",
    "commsvc_outbox_backlog": "gauge",
    "commsvc_outbox_oldest_seconds": "gauge",
    "commsvc_batch_run_duration_seconds": "histogram",
    "commsvc_smtp_send_duration_seconds": "histogram",
    "commsvc_phone_calls": "counter",
    "commsvc_alerts": "counter",
}


def scraped(registry: CollectorRegistry) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(generate_latest(registry).decode())}


def value(families: dict[str, Any], sample: str, **labels: str) -> float:
    [found] = [
        s.value for family in families.values() for s in family.samples if s.name == sample and s.labels == labels
    ]
    return float(found)


def backlog_now() -> Backlog:
    return Backlog(
        emails={EmailStatus.DRAFT: 1, EmailStatus.QUEUED: 4, EmailStatus.SENDING: 2},
        oldest_due=timedelta(seconds=90),
        unpublished=3,
        oldest_unpublished=None,
    )


# --- the names and what they show ---------------------------------------------------


def test_the_service_metrics_carry_the_names_dashboards_rely_on() -> None:
    metrics = PrometheusMetrics()
    metrics.registry.register(BacklogCollector(backlog_now))
    metrics.input_event("matching-events", Outcome.ACCEPTED)
    metrics.input_event("matching-events", Outcome.ACCEPTED)
    metrics.input_event("matching-events", Outcome.REJECTED)
    metrics.dead_lettered("matching-events")
    metrics.email_created(CONTACT_REQUEST)
    metrics.email_sent(CONTACT_REQUEST)
    metrics.send_failed(CONFIRMATION, SendFailure.OUTAGE)
    metrics.smtp_send_took(0.02)
    metrics.batch_run_took(0.3)
    metrics.phone_call("scheduled")
    metrics.alert("email_failed")

    families = scraped(metrics.registry)
    assert {name: families[name].type for name in SERVICE_METRICS} == SERVICE_METRICS
    assert value(families, "commsvc_input_events_total", topic="matching-events", outcome="accepted") == 2
    assert value(families, "commsvc_input_events_total", topic="matching-events", outcome="rejected") == 1
    assert value(families, "commsvc_dlq_records_total", source="matching-events") == 1
    assert value(families, "commsvc_emails_created_total", kind=CONTACT_REQUEST) == 1
    assert value(families, "commsvc_emails_sent_total", kind=CONTACT_REQUEST) == 1
    assert value(families, "commsvc_emails_sent_total", kind=CONFIRMATION) == 0  # there before the first
    assert value(families, "commsvc_email_send_failures_total", kind=CONFIRMATION, **{"class": "outage"}) == 1
    assert value(families, "commsvc_email_send_failures_total", kind=CONFIRMATION, **{"class": "temporary"}) == 0
    assert value(families, "commsvc_smtp_send_duration_seconds_count") == 1
    assert value(families, "commsvc_smtp_send_duration_seconds_bucket", le="0.025") == 1
    assert value(families, "commsvc_batch_run_duration_seconds_sum") == pytest.approx(0.3)
    assert value(families, "commsvc_phone_calls_total", event="scheduled") == 1
    assert value(families, "commsvc_alerts_total", code="email_failed") == 1
    assert value(families, "commsvc_email_queue_depth", status="in_warteschlange") == 4
    assert value(families, "commsvc_email_queue_depth", status="wird_gesendet") == 2
    assert value(families, "commsvc_email_queue_depth", status="entwurf") == 1
    assert value(families, "commsvc_email_oldest_queued_seconds") == 90
    assert value(families, "commsvc_outbox_backlog") == 3
    assert value(families, "commsvc_outbox_oldest_seconds") == 0


def test_the_worker_serves_faust_s_sensor_and_the_process_s_metrics_from_the_same_registry() -> None:
    app = create_app(Settings.from_environ({"COMM_STORE": "memory"}))
    metrics = PrometheusMetrics()
    serve_metrics(app, metrics, Unreachable(), lambda: NOW, page=False)  # type: ignore[arg-type]

    assert isinstance(app.monitor, PrometheusMonitor)
    names = set(scraped(metrics.registry))
    assert {"faust_messages_received", "faust_table_operations", "faust_topic_messages_sent"} <= names
    assert {"process_resident_memory_bytes", "python_info", "commsvc_emails_sent"} <= names
    assert "commsvc_outbox_backlog" not in names  # the database did not answer; the rest is served


class Unreachable:
    def transaction(self, *_: object) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))


# --- what the relay publishes ---------------------------------------------------------


def published(event_type: str, payload: dict[str, Any]) -> str:
    """An event as the relay reads it from the outbox (the service's compact JSON),
    also with payloads no output model allows: metrics must not trip over them."""
    document = envelope(event_type, {"therapist_id": 7, **payload}, occurred_at=NOW, producer="communication-service")
    return dumps(document).decode()


def test_the_events_the_relay_publishes_count_created_emails_phone_calls_and_alerts() -> None:
    metrics = RecordingMetrics()
    # A subject that looks like another event's type is not mistaken for it.
    tricky = {"email_id": 1, "kind": "manual", "subject": '"event_type":"communication.alert"'}
    for value_ in (
        published("communication.email_created", {"email_id": 1, "kind": CONTACT_REQUEST}),
        published("communication.email_created", tricky),
        published("communication.email_sent", {"email_id": 1}),
        published("communication.phone_call_scheduled", {"phone_call_id": 3}),
        published("communication.phone_call_completed", {"phone_call_id": 3, "status": "completed"}),
        published("communication.alert", {"severity": "error", "code": "smtp_unavailable", "message": "…"}),
        published("communication.alert", {"severity": "error"}),  # no code: not counted, not a failure
        str(inbox_row(CHANNELS, inbox.EmailSent(7, "key", True, NOW), NOW)["value"]),
        "{not json",
        '{"event_type":"communication.alert"',
    ):
        metrics.reported(value_)

    assert metrics.of("email_created") == {(CONTACT_REQUEST,): 1, ("manual",): 1}
    assert metrics.of("phone_call") == {("scheduled",): 1, ("completed",): 1}
    assert metrics.of("alert") == {("smtp_unavailable",): 1}


class Acknowledging:
    """A producer that acknowledges every message, except those for ``refuse``."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse

    async def send(self, topic: str, key: bytes | None, value: bytes, *_: object) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refuse is not None and self.refuse.encode() in value:
            done.set_exception(ConnectionError("broker gone"))
        else:
            done.set_result(None)
        return done


class NoDatabase:
    async def run(self, work: Any, *args: Any) -> None:
        return None


async def test_the_relay_counts_what_the_broker_took_and_only_on_the_events_topic() -> None:
    metrics = RecordingMetrics()
    batch = [
        PendingMessage(1, CHANNELS.events, "7", published("communication.alert", {"code": "email_failed"})),
        PendingMessage(2, "elsewhere", "7", published("communication.alert", {"code": "not_an_output"})),
        PendingMessage(3, CHANNELS.events, "7", published("communication.alert", {"code": "not_taken"})),
        PendingMessage(4, CHANNELS.events, "7", published("communication.alert", {"code": "after_it"})),
    ]
    relay = OutboxRelay(
        Settings.from_environ({}),
        NoDatabase(),  # type: ignore[arg-type]
        Acknowledging(refuse="not_taken"),
        CHANNELS.events,
        asyncio.Event(),
        "w",
        lambda: NOW,
        metrics=metrics,
    )
    assert not await relay._publish(batch)
    assert metrics.of("alert") == {("email_failed",): 1}  # 3 failed; 4 waits for it


# --- the delivery loop ----------------------------------------------------------------


@asynccontextmanager
async def delivering(
    store: FakeDeliveryStore, mailers: list[RecordingMailer], clock: FakeClock, metrics: RecordingMetrics
) -> AsyncIterator[DeliveryService]:
    service = DeliveryService(DELIVERY, store, mailers, POLICY, Wakeups(), clock, metrics=metrics)
    await service.start()
    try:
        yield service
    finally:
        await asyncio.wait_for(service.stop(), WAIT)


async def test_the_delivery_loop_counts_sends_and_failures_by_kind_and_times_each_smtp_transaction() -> None:
    emails = [claimed_email(1), claimed_email(2, kind=CONFIRMATION), claimed_email(3), claimed_email(4)]
    store, [mailer], clock, metrics = FakeDeliveryStore(emails), recording_mailers(1), FakeClock(), RecordingMetrics()
    mailer.fail(recipient(3), aiosmtplib.SMTPResponseException(450, "4.2.1 mailbox busy, try later"))
    mailer.fail(recipient(4), aiosmtplib.SMTPResponseException(550, "5.1.1 no such user"))
    async with delivering(store, [mailer], clock, metrics):
        await store.until(lambda: len(store.sent) == 2 and len(store.failures) == 2, "two sent, two failed")

    assert metrics.of("email_sent") == {(CONTACT_REQUEST,): 1, (CONFIRMATION,): 1}
    assert metrics.of("send_failed") == {
        (CONTACT_REQUEST, SendFailure.TEMPORARY): 1,
        (CONTACT_REQUEST, SendFailure.PERMANENT): 1,
    }
    assert len(metrics.durations["smtp_send"]) == 4  # accepted or refused, each was a transaction
    assert all(seconds >= 0 for seconds in metrics.durations["smtp_send"])


async def test_an_smtp_outage_counts_as_outage_and_is_no_smtp_transaction() -> None:
    store, [mailer], metrics = FakeDeliveryStore([claimed_email(1)]), recording_mailers(1), RecordingMetrics()
    mailer.fail_every(SmtpUnavailable("cannot open an SMTP session: connection refused"))
    async with delivering(store, [mailer], FakeClock(), metrics):
        await store.until(lambda: len(store.released) >= 2, "two rounds of the outage")
        mailer.fail_every(None)
        await store.until(lambda: len(store.sent) == 1, "sent once the server is back")

    outages = metrics.of("send_failed")[(CONTACT_REQUEST, SendFailure.OUTAGE)]
    assert outages >= 2
    assert metrics.of("email_sent") == {(CONTACT_REQUEST,): 1}
    assert len(metrics.durations["smtp_send"]) == 1  # only the send that reached the server


# --- the delivery process ---------------------------------------------------------------


def test_the_delivery_process_passes_its_counts_to_the_worker_until_it_is_gone() -> None:
    counts, child_end = multiprocessing.get_context("spawn").Pipe(duplex=False)
    metrics = RecordingMetrics()
    reader = threading.Thread(target=process._count_forwarded, args=(counts, metrics))
    reader.start()
    child = ForwardedMetrics(child_end.send)
    child.email_sent(CONTACT_REQUEST)
    child.email_sent(CONTACT_REQUEST)
    child.send_failed(CONFIRMATION, SendFailure.TEMPORARY)
    child.smtp_send_took(0.5)
    child.rate_waited(0.25)
    child.dead_lettered("not-forwarded")  # not the delivery loop's: the base counts nothing
    child_end.close()  # the child is gone
    reader.join(timeout=5)

    assert not reader.is_alive()
    assert metrics.of("email_sent") == {(CONTACT_REQUEST,): 2}
    assert metrics.of("send_failed") == {(CONFIRMATION, SendFailure.TEMPORARY): 1}
    assert metrics.durations == {"smtp_send": [0.5], "rate_wait": [0.25]}
    assert metrics.of("dead_lettered") == {}
    child.email_sent(CONTACT_REQUEST)  # after the worker's end closed: dropped, no error


def test_only_the_delivery_loop_s_counts_are_taken_from_the_delivery_process() -> None:
    metrics = RecordingMetrics()
    apply_forwarded(metrics, ("alert", ("forged",)))
    apply_forwarded(metrics, ("email_sent", "not a tuple"))
    apply_forwarded(metrics, "nonsense")
    assert metrics.counts == {}
    assert {"email_sent", "send_failed", "smtp_send_took", "rate_waited"} == FORWARDED


# --- the agents -------------------------------------------------------------------------


async def test_ingest_counts_what_it_refuses_and_leaves_the_applied_ones_to_the_therapist_agent() -> None:
    topics, metrics = recording_topics(), RecordingMetrics()
    records = [
        Record(b"{not json", b"x", "matching-events", 0, 1),
        Record(encode(match_created(1, 7, "2026-09-01T10:00:00+02:00")), b"1", "matching-events", 0, 2),
    ]
    await matching_ingest(topics, lambda: NOW, SETTINGS, metrics).take(taken(records))
    bad_hours = therapist_created(7, availability={"monday": [{"start": "12:00", "end": "10:00"}]})
    bad_hours["occurred_at"] = (NOW - timedelta(minutes=1)).isoformat()
    await therapist_ingest(topics, lambda: NOW, SETTINGS, metrics).take(
        taken([Record(encode(bad_hours), b"7", "therapist-events")])
    )

    assert metrics.of("input_event") == {("matching-events", Outcome.REJECTED): 1}
    # The refused availability is dead-lettered; the rest of the event applies.
    assert metrics.of("dead_lettered") == {("matching-events",): 1, ("therapist-events",): 1}


async def test_the_therapist_agent_counts_applied_inputs_duplicates_and_refused_commands() -> None:
    metrics = RecordingMetrics()
    agent_ = therapist_agent(metrics)
    partition = partition_of(7, PARTITIONS)
    await agent_.handle(upserted(7), partition)
    await agent_.handle(match(1, 7), partition)
    await agent_.handle(match(1, 7), partition)  # the same event again
    await agent_.handle(inbox.CreateEmail("c-1", 8, ManualEmailContent(subject="Hallo", body_html="<p>x</p>")), 0)
    await agent_.handle(inbox.EmailSent(7, "unknown-key", True, MONDAY), partition)  # feedback: no input

    assert metrics.of("input_event") == {
        ("therapist-events", Outcome.ACCEPTED): 1,
        ("matching-events", Outcome.ACCEPTED): 1,
        ("matching-events", Outcome.DUPLICATE): 1,
        ("communication-commands", Outcome.REJECTED): 1,  # therapist 8 is unknown
    }


async def test_the_therapist_agent_times_due_batch_runs_only() -> None:
    metrics = RecordingMetrics()
    agent_ = therapist_agent(metrics)
    clock = agent_.clock
    assert isinstance(clock, FakeClock)
    await agent_.handle(upserted(7), partition_of(7, PARTITIONS))
    await agent_.handle(inbox.Tick(clock.now), 1)  # the first tick sets the bookmark
    await agent_.handle(inbox.Tick(clock.now), 1)  # no run due
    assert "batch_run" not in metrics.durations
    clock.now = MONDAY.replace(hour=9, minute=1)
    await agent_.handle(inbox.Tick(clock.now), 1)
    assert len(metrics.durations["batch_run"]) == 1


async def test_the_therapist_agent_counts_what_it_dead_letters() -> None:
    metrics = RecordingMetrics()
    agent_ = therapist_agent(metrics)
    await agent_(RecordStream([Record(b"not json", b"7", "svc-therapist-inbox")]))  # type: ignore[arg-type]
    assert metrics.of("dead_lettered") == {("svc-therapist-inbox",): 1}
    assert metrics.of("input_event") == {}  # not an input it could name


def therapist_agent(metrics: RecordingMetrics) -> TherapistAgent:
    table: dict[object, object] = {}
    return TherapistAgent(SETTINGS, recording_topics(), table, FakeClock(MONDAY), metrics=metrics)  # type: ignore[arg-type]


def upserted(therapist_id: int) -> inbox.TherapistUpserted:
    profile = TherapistProfile(therapist_id=therapist_id, email="praxis@example.org", first_name="Eva", last_name="M")
    return inbox.TherapistUpserted("t-1", therapist_id, MONDAY - timedelta(days=1), profile)


def match(request_id: int, therapist_id: int) -> inbox.MatchCreated:
    request = PlacementRequest(request_id, request_id + 1000, MONDAY - timedelta(days=30), {"first_name": "Pat"})
    return inbox.MatchCreated(f"m-{request_id}", therapist_id, request)


def command(command_type: str, payload: dict[str, Any], offset: int = 0) -> Record:
    document = envelope(command_type, payload, producer="staff-tool")
    return Record(encode(document), b"7", "communication-commands", 0, offset)


async def test_the_command_agent_counts_each_command_by_its_outcome(monkeypatch: pytest.MonkeyPatch) -> None:
    outcomes = iter(["done", "rejected", "replayed"])
    monkeypatch.setattr(processed_commands, "execute", lambda *_: next(outcomes))
    metrics = RecordingMetrics()
    agent_ = CommandAgent(
        recording_topics(),
        RecordingDatabase(),  # type: ignore[arg-type]
        CHANNELS,
        Wakeups(),
        lambda: NOW,
        call_policy(SETTINGS),
        SETTINGS,
        metrics=metrics,
    )
    cancel = {"phone_call_id": 9, "reason": "Praxis geschlossen"}
    stream = RecordStream(
        [
            command("communication.cancel_phone_call", cancel, 0),
            command("communication.cancel_phone_call", cancel, 1),
            command("communication.cancel_phone_call", cancel, 2),
            command("communication.cancel_phone_call", {"reason": "no call named"}, 3),  # malformed: DLQ
            command("communication.lift_email_suppression", {"therapist_id": 7}, 4),  # the therapist agent's
        ]
    )
    await agent_(stream)  # type: ignore[arg-type]

    assert metrics.of("input_event") == {
        ("communication-commands", Outcome.ACCEPTED): 1,
        ("communication-commands", Outcome.REJECTED): 2,
        ("communication-commands", Outcome.DUPLICATE): 1,
    }
    assert metrics.of("dead_lettered") == {("communication-commands",): 1}


# --- the database gauges ------------------------------------------------------------------


def test_the_backlog_is_measured_when_scraped_at_most_once_per_max_age() -> None:
    measured: list[int] = []

    def measure() -> Backlog:
        measured.append(1)
        return backlog_now()

    registry = CollectorRegistry()
    registry.register(BacklogCollector(measure, max_age=60))
    assert measured == []  # registering measures nothing
    first, second = scraped(registry), scraped(registry)
    assert len(measured) == 1
    assert value(first, "commsvc_outbox_backlog") == value(second, "commsvc_outbox_backlog") == 3


def test_while_the_database_does_not_answer_the_backlog_gauges_are_left_out() -> None:
    answers: list[Backlog | Exception] = [OperationalError("SELECT", {}, Exception("down")), backlog_now()]

    def measure() -> Backlog:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    registry = CollectorRegistry()
    registry.register(BacklogCollector(measure, max_age=0))
    assert not {"commsvc_outbox_backlog", "commsvc_email_queue_depth"} & set(scraped(registry))
    assert value(scraped(registry), "commsvc_outbox_backlog") == 3  # back with the database


def test_a_database_that_hangs_holds_one_scrape_and_the_others_report_the_last_measurement() -> None:
    hang, hanging = threading.Event(), threading.Event()
    measured: list[int] = []

    def measure() -> Backlog:
        measured.append(1)
        if len(measured) == 2:
            hanging.set()
            hang.wait(WAIT)
        return backlog_now()

    registry = CollectorRegistry()
    registry.register(BacklogCollector(measure, max_age=0))
    scraped(registry)
    stuck = threading.Thread(target=scraped, args=(registry,))
    stuck.start()
    assert hanging.wait(WAIT)
    meanwhile = scraped(registry)  # does not wait for the hanging one
    assert value(meanwhile, "commsvc_outbox_backlog") == 3
    assert len(measured) == 2
    hang.set()
    stuck.join(WAIT)
