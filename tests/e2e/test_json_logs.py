"""COMM_LOG_FORMAT=json on the real worker: every line of the worker's output (and of
its delivery process) is a JSON object, with ids as fields and no personal data."""

from __future__ import annotations

import json

from tests.e2e.harness import Service
from tests.events import envelope, match_created, therapist_created
from tests.services import postgres_database

PASSWORD = "pw-Zq81xkT"  # PostgreSQL trusts local connections, so any password works


async def test_a_json_run_logs_only_valid_json_with_ids_and_no_personal_data(make_service):
    with postgres_database() as database_url:
        url = database_url.replace("postgres@", f"postgres:{PASSWORD}@")
        async with make_service(
            database_url=url,
            COMM_LOG_FORMAT="json",
            COMM_LOG_LEVEL="DEBUG",
            COMM_DELIVERY_PROCESS="true",
        ) as service:
            await run_scenario(service)
            for worker in service.workers:
                worker.terminate()
            output = service.log_path.read_text()

    lines = output.splitlines()
    assert len(lines) > 50
    documents = []
    for number, line in enumerate(lines, 1):
        try:
            documents.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line[:300]!r}") from None
    assert all({"time", "level", "logger", "message"} <= d.keys() for d in documents)
    for secret in (PASSWORD, "Pat701", "Pat702", "F41.1", "Müller-70", "therapeut70@"):
        assert secret not in output, secret
    sent = [d for d in documents if "sent to therapist" in d["message"]]
    assert sent and all(d["email_id"] and d["therapist_id"] == 70 for d in sent)
    forwarded = [d for d in documents if d.get("event_id") and d.get("topic") and "offset" in d]
    assert forwarded, "no line carries an event id with its Kafka record"
    assert any(d["logger"].startswith("aiokafka") or d["logger"].startswith("faust") for d in documents)


async def run_scenario(service: Service) -> None:
    await service.up()
    await service.therapists(therapist_created(70))
    await service.matches(
        match_created(701, 70, "2026-03-01T10:00:00+01:00", diagnosis="F41.1", last_name="Schmidt"),
        match_created(702, 70, "2026-03-02T10:00:00+01:00"),
    )
    await service.mailbox.wait_for("therapeut70@praxis.example", 1)
    await service.wait_event("communication.email_sent", therapist_id=70)
    # an invalid event: dead-lettered with its reason logged
    await service.publisher.send(service.topics.matching, 70, envelope("match.created", {"therapist_id": 70}))
    await service.collector.wait_for(lambda: service.dead_letters(), what="a dead letter")
