"""The operator's tools (issue 15, parts 2 and 3) against the real worker, Tansu,
PostgreSQL and aiosmtpd, run as ``commsvc`` subprocesses with the service's own
settings: a dead-lettered match is listed, shown, refused while still invalid,
replayed corrected (its email arrives once, and once again after a second replay),
and ``commsvc status --json`` agrees with the database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.demo.broker import free_port
from streams.demo.smtp_capture import Received
from streams.ops.dlq import SUMMARY_FIELDS
from tests.e2e.harness import Service, plain_text
from tests.events import encode, match_created, therapist_created
from tests.waiting import until

INTERVAL = 8.0  # COMM_CONTACT_INTERVAL in the harness
BERLIN = ZoneInfo("Europe/Berlin")
ALWAYS = {
    day: [{"start": "00:00", "end": "24:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}
GONE = "550 5.1.1 <mailbox unavailable>: Recipient address rejected: User unknown"


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def commsvc_blocking(service: Service, *args: str, **environ: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **service.environ, **environ},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


async def commsvc(service: Service, *args: str, **environ: str) -> subprocess.CompletedProcess[bytes]:
    """``commsvc ARGS`` with the service's environment, without holding up the test's
    own clients (the output collector runs on this event loop)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streams.cli",
        *args,
        env={**os.environ, **service.environ, **environ},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, stdout, stderr)


async def end_offsets(service: Service, topic: str) -> int:
    """How many records ``topic`` holds, over all its partitions."""
    consumer = AIOKafkaConsumer(bootstrap_servers=service.broker.bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


def dlq_id(service: Service, index: int) -> str:
    record = service.collector.raw[service.topics.dlq][index]
    return f"{record.partition}:{record.offset}"


async def test_a_dead_lettered_match_is_listed_shown_refused_while_invalid_and_replayed_once(
    service: Service, tmp_path: Path
):
    await service.up()
    await service.therapists(therapist_created(1))
    bad = match_created(4711, 1, "gestern")
    # The same match with another mistake, sent as an input of its own: the worker's reason for it.
    other_mistake = json.loads(encode(match_created(4711, 1, "2026-09-01T10:00:00+02:00")))
    other_mistake["payload"]["patient_id"] = "einhundert"
    await service.matches(bad, other_mistake)
    first, second = await service.collector.wait_for(
        lambda: len(found := service.dead_letters()) >= 2 and found, what="two dead letters"
    )
    assert first["event_id"] == bad["event_id"] and "registered_at" in first["reason"]
    bad_id = dlq_id(service, 0)

    # list: one line per record, exactly the fields, no value.
    listed = await commsvc(service, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    assert [tuple(line) for line in lines] == [SUMMARY_FIELDS] * 2
    [summary] = [line for line in lines if line["id"] == bad_id]
    assert summary == {
        "id": bad_id,
        "received_at": first["received_at"],
        "source_topic": service.topics.matching,
        "source_partition": first["partition"],
        "source_offset": first["offset"],
        "key": "4711",
        "event_type": "match.created",
        "event_id": bad["event_id"],
        "reason": first["reason"],
    }
    assert b"Pat4711" not in listed.stdout
    assert b"2 of 2 record(s)" in listed.stderr
    by_reason = await commsvc(service, "dlq", "list", "--reason", "PATIENT_ID")
    assert by_reason.returncode == 0 and len(by_reason.stdout.decode().splitlines()) == 1
    assert by_reason.stdout.decode().startswith(dlq_id(service, 1) + "  ")

    # show: the value included; --value: byte for byte.
    shown = await commsvc(service, "dlq", "show", bad_id)
    assert shown.returncode == 0, shown.stderr
    assert b'"first_name": "Pat4711"' in shown.stdout and first["reason"].encode() in shown.stdout
    raw = await commsvc(service, "dlq", "show", bad_id, "--value")
    assert raw.stdout == encode(bad)
    for wrong, message in (("4711", b"expected PARTITION:OFFSET"), ("99:0", b"has no partition 99")):
        refused = await commsvc(service, "dlq", "show", wrong)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
    beyond = f"{bad_id.split(':')[0]}:1000"
    refused = await commsvc(service, "dlq", "show", beyond)
    assert refused.returncode == 1 and f"no record {beyond}".encode() in refused.stderr

    # replay, still invalid: the worker's own reason, and nothing published.
    before = await end_offsets(service, service.topics.matching)
    still_bad = {key: value for key, value in other_mistake.items() if key != "event_id"}
    still_bad_file = tmp_path / "still-bad.json"
    still_bad_file.write_bytes(encode(still_bad))
    refused = await commsvc(service, "dlq", "replay", bad_id, "--value-file", str(still_bad_file), "--yes")
    assert refused.returncode == 1
    assert f"the worker would refuse the corrected value: {second['reason']}".encode() in refused.stderr
    corrected = json.loads(encode(bad))
    corrected["payload"]["patient"]["registered_at"] = "2026-09-01T10:00:00+02:00"
    corrected_file = tmp_path / "corrected.json"
    corrected_file.write_bytes(encode(corrected))
    # No terminal to ask on, and no --yes.
    unconfirmed = await commsvc(service, "dlq", "replay", bad_id, "--value-file", str(corrected_file))
    assert unconfirmed.returncode == 1 and b"pass --yes" in unconfirmed.stderr
    assert await end_offsets(service, service.topics.matching) == before

    # replay, corrected: its email arrives.
    replayed = await commsvc(service, "dlq", "replay", bad_id, "--value-file", str(corrected_file), "--yes")
    assert replayed.returncode == 0, replayed.stderr
    assert f"match.created {bad['event_id']}".encode() in replayed.stdout
    [email] = await service.mailbox.wait_for(address(1), 1)
    assert "Pat4711" in plain_text(email)

    # replayed again: recognised as the same event. A request that arrives after it
    # is emailed once the weekly window has passed, without 4711.
    again = await commsvc(service, "dlq", "replay", bad_id, "--value-file", str(corrected_file), "--yes")
    assert again.returncode == 0, again.stderr
    await service.forwarded("match_created", 2)
    await service.matches(match_created(4712, 1, "2026-10-01T10:00:00+02:00"))
    _, later = await service.mailbox.wait_for(address(1), 2, timeout=INTERVAL + 30)
    assert "Pat4712" in plain_text(later) and "Pat4711" not in plain_text(later)
    assert service.query("SELECT count(*) FROM email_batches WHERE placement_request_id = 4711") == [(1,)]
    assert await end_offsets(service, service.topics.matching) == before + 3


def dead_mailbox(*addresses: str):
    def respond(received: Received) -> str | None:
        return GONE if received.rcpt_tos[0] in addresses else None

    return respond


def sql_counts(service: Service) -> dict[str, Any]:
    today = datetime.now(UTC).astimezone(BERLIN).date()
    start = datetime.combine(today, datetime.min.time(), BERLIN).astimezone(UTC)
    end = datetime.combine(today + timedelta(days=1), datetime.min.time(), BERLIN).astimezone(UTC)
    return {
        "emails": dict(service.query("SELECT status, count(*) FROM emails GROUP BY status")),
        "failed": service.query("SELECT count(*) FROM emails WHERE status = 'fehlgeschlagen'")[0][0],
        "unpublished": service.query("SELECT count(*) FROM outbox WHERE published_at IS NULL")[0][0],
        "calls_today": service.query(
            "SELECT count(*) FROM phone_calls WHERE scheduled_at >= :start AND scheduled_at < :end",
            start=start,
            end=end,
        )[0][0],
        "date": today.isoformat(),
    }


async def test_status_agrees_with_the_database_and_the_broker(service: Service):
    service.smtp.handler.responder = dead_mailbox(address(3))
    await service.up()
    await service.therapists(therapist_created(2, availability=ALWAYS), therapist_created(3))
    await service.matches(
        match_created(21, 2, "2026-01-01T10:00:00+01:00"),
        match_created(31, 3, "2026-01-02T10:00:00+01:00"),
        match_created(32, 3, "vorgestern"),  # to the DLQ
    )
    await service.mailbox.wait_for(address(2), 1)
    await service.wait_event("communication.email_suppressed", therapist_id=3)
    await service.known_for_calls(2)
    await service.command("communication.schedule_phone_call", {"therapist_id": 2, "placement_request_ids": [21]})
    await service.wait_event("communication.phone_call_scheduled", therapist_id=2)
    await until(
        lambda: service.query("SELECT count(*) FROM outbox WHERE published_at IS NULL") == [(0,)],
        30,
        "the outbox relayed",
    )

    inputs = (service.topics.matching, service.topics.therapists, service.topics.commands)

    def caught_up() -> dict[str, Any] | None:
        # The workers commit every few seconds: until every input is committed.
        ran = commsvc_blocking(service, "status", "--json")
        assert ran.returncode == 0, ran.stderr
        document = json.loads(ran.stdout)
        lags = document["consumer_lag"]["topics"]
        return document if all(lags[topic]["lag"] == 0 for topic in inputs) else None

    document = await until(caught_up, 60, "the consumer lag to reach 0", every=0.5)
    sql = sql_counts(service)

    assert document["errors"] == {}
    assert {k: v for k, v in document["emails"]["by_status"].items() if v} == sql["emails"]
    assert document["emails"]["oldest_queued"] is None and sql["emails"].get("in_warteschlange") is None
    assert document["failures_24h"]["failed_for_good"] == sql["failed"] == 1
    failed_events = service.events("communication.email_failed")
    assert document["failures_24h"]["attempts"] == len(failed_events) == 1
    alerts = [e["payload"]["code"] for e in service.events("communication.alert")]
    assert (
        document["alerts_24h"]["by_code"] == {code: alerts.count(code) for code in alerts} == {"email_undeliverable": 1}
    )
    assert document["outbox"] == {"backlog": sql["unpublished"], "oldest": None} == {"backlog": 0, "oldest": None}
    assert document["calls_today"]["date"] == sql["date"]
    assert document["calls_today"]["total"] == sql["calls_today"]
    assert document["dlq_24h"]["records"] == len(service.dead_letters()) == 1
    assert document["dlq_24h"]["by_source"] == {service.topics.matching: 1}
    lag = document["consumer_lag"]
    assert lag["group"] == service.environ["COMM_APP_ID"]
    groups = {topic: lag["topics"][topic]["group"] for topic in inputs}
    assert groups == {
        service.topics.matching: service.environ["COMM_APP_ID"] + "-ingest",  # the ingest consumer's
        service.topics.therapists: service.environ["COMM_APP_ID"] + "-ingest",
        service.topics.commands: service.environ["COMM_APP_ID"],  # Faust's
    }
    published = {service.topics.matching: 3, service.topics.therapists: 2, service.topics.commands: 1}
    for topic, count in published.items():
        assert sum(p["end"] for p in lag["topics"][topic]["partitions"].values()) == count
    assert document["suppressed_addresses"] == 1

    screen = await commsvc(service, "status")
    assert screen.returncode == 0, screen.stderr
    text = screen.stdout.decode()
    assert "Suppressed      1 address(es)" in text and "DLQ             1 record(s) in the last 24h" in text
    for output in (text, json.dumps(document)):
        assert "@praxis.example" not in output and "Pat" not in output and "Müller" not in output

    # A broker that does not answer: the database part still shows, and the broker is named.
    port = free_port()
    partial = await commsvc(
        service, "status", "--json", "--timeout", "2", COMM_KAFKA_BROKER=f"kafka://127.0.0.1:{port}"
    )
    assert partial.returncode == 1
    document = json.loads(partial.stdout)
    assert document["emails"]["by_status"]["gesendet"] >= 1 and document["consumer_lag"] is None
    assert f"the broker at 127.0.0.1:{port}" in document["errors"]["broker"]
    assert f"broker: the broker at 127.0.0.1:{port}".encode() in partial.stderr
