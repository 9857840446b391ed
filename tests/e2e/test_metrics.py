"""GET /metrics on the real worker (issue 14 §4): after a run with emails sent and
refused, bad input, a duplicate, a phone call and a draft, the counts are what
happened; Faust's own sensor is there; no label carries an address, a name or an
id; and with COMM_DELIVERY_PROCESS the child's sends are counted by the worker."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from streams.demo.smtp_capture import Received
from tests.e2e.harness import Service, WorkerProcess
from tests.events import match_created, therapist_created
from tests.waiting import until_blocking

# Ids that cannot be mistaken for a partition, a status code or a bucket.
T1, T2, T3 = 7301, 7302, 7303
ALWAYS = {
    day: [{"start": "00:00", "end": "24:00"}]
    for day in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
}
FAST_RETRIES = {"COMM_RETRY_BACKOFF": "1s", "COMM_RETRY_BACKOFF_MAX": "2s", "COMM_MAX_SEND_ATTEMPTS": "3"}
SPLIT = {"COMM_DELIVERY_PROCESS": "true", "COMM_SMTP_CONNECTIONS": "2", **FAST_RETRIES}

Sample = tuple[str, frozenset[tuple[str, str]]]


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def sample(name: str, **labels: str) -> Sample:
    return name, frozenset(labels.items())


def scrape(worker: WorkerProcess) -> dict[Sample, float]:
    """The worker's /metrics, parsed (blocking: call it in a thread)."""
    with urllib.request.urlopen(worker.url("/metrics"), timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        sample(s.name, **s.labels): s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


async def scraped_once(worker: WorkerProcess, expected: Mapping[Sample, float]) -> dict[Sample, float]:
    """Scrape until every ``expected`` sample has its value (the counts follow the run:
    the relay reports, the therapist agent applies); the last scrape."""
    last: dict[Sample, float] = {}

    def check() -> dict[Sample, float] | None:
        nonlocal last
        last = scrape(worker)
        return last if all(last.get(key) == value for key, value in expected.items()) else None

    def missing() -> str:
        wrong = [f"{k[0]}{dict(k[1])}={last.get(k)} (want {v})" for k, v in expected.items() if last.get(k) != v]
        return "; ".join(wrong)

    return await asyncio.to_thread(until_blocking, check, 60, lambda: f"the metrics: {missing()}", every=0.2)


def refuse(*replies_for: tuple[str, list[str]]):
    """Per recipient, the SMTP server's reply to each attempt (then it accepts)."""
    scripts = {recipient: list(replies) for recipient, replies in replies_for}

    def respond(received: Received) -> str | None:
        script = scripts.get(received.rcpt_tos[0], [])
        return script.pop(0) if script else None

    return respond


def labels_reveal_nothing(samples: Mapping[Sample, float], app_id: str, secrets: list[str]) -> None:
    for name, labels in samples:
        for key, value in labels:
            # The service's topics are named after its app id (random hex in the tests).
            shown = value.replace(app_id, "")
            assert "@" not in shown, (name, key, value)
            assert not any(secret in shown for secret in secrets), (name, key, value)


async def test_the_counts_on_metrics_are_what_happened(service: Service) -> None:
    # Therapist 2's mailbox: busy once, then gone for good.
    service.smtp.handler.responder = refuse(
        (address(T2), ["451 4.3.0 greylisted", "550 5.1.1 <mailbox unavailable>: User unknown"])
    )
    worker = await service.up(**FAST_RETRIES, COMM_CALL_MIN_NOTICE="0s")
    topics = service.topics
    first = match_created(73011, T1, "2026-01-01T10:00:00+01:00")
    await service.matches(first, first, match_created(73012, T1, "2026-01-02T10:00:00+01:00"))
    await service.matches(match_created(73021, T2, "2026-01-01T10:00:00+01:00"))
    await service.publisher.send(topics.matching, "bad", b"{this is not json")
    await service.forwarded("match_created", 4)  # so that one batch run finds each therapist's all
    await service.therapists(therapist_created(T1, availability=ALWAYS), therapist_created(T2))
    await service.therapists(therapist_created(T3, email="kein-at-zeichen"))
    await service.mailbox.wait_for(address(T1), 1)
    await service.wait_event("communication.email_suppressed", therapist_id=T2)
    await service.known_for_calls(T1)
    await service.command("communication.schedule_phone_call", {"therapist_id": T1, "placement_request_ids": [73011]})
    draft = {"therapist_id": T1, "subject": "Entwurf", "body_html": "<p>x</p>", "queue": False}
    await service.command("communication.create_email", draft)
    await service.wait_event("communication.email_created", status="entwurf")

    contact, failure = {"kind": "contact_request"}, "commsvc_email_send_failures_total"
    samples = await scraped_once(
        worker,
        {
            sample("commsvc_input_events_total", topic=topics.matching, outcome="accepted"): 3,
            sample("commsvc_input_events_total", topic=topics.matching, outcome="duplicate"): 1,
            sample("commsvc_input_events_total", topic=topics.matching, outcome="rejected"): 1,
            sample("commsvc_input_events_total", topic=topics.therapists, outcome="accepted"): 2,
            sample("commsvc_input_events_total", topic=topics.therapists, outcome="rejected"): 1,
            sample("commsvc_input_events_total", topic=topics.commands, outcome="accepted"): 2,
            sample("commsvc_dlq_records_total", source=topics.matching): 1,
            sample("commsvc_dlq_records_total", source=topics.therapists): 1,
            sample("commsvc_emails_created_total", **contact): 2,
            sample("commsvc_emails_created_total", kind="manual"): 1,
            sample("commsvc_emails_sent_total", **contact): 1,
            sample("commsvc_emails_sent_total", kind="manual"): 0,
            sample(failure, **contact, **{"class": "temporary"}): 1,
            sample(failure, **contact, **{"class": "permanent"}): 1,
            sample(failure, **contact, **{"class": "outage"}): 0,
            sample("commsvc_smtp_send_duration_seconds_count"): 3,
            sample("commsvc_phone_calls_total", event="scheduled"): 1,
            sample("commsvc_alerts_total", code="email_undeliverable"): 1,
            sample("commsvc_email_queue_depth", status="entwurf"): 1,
            sample("commsvc_email_queue_depth", status="in_warteschlange"): 0,
            sample("commsvc_email_queue_depth", status="wird_gesendet"): 0,
            sample("commsvc_email_oldest_queued_seconds"): 0,
            sample("commsvc_outbox_backlog"): 0,
            sample("commsvc_outbox_oldest_seconds"): 0,
        },
    )
    assert samples[sample("commsvc_batch_run_duration_seconds_count")] >= 1
    # Faust's own sensor, in the same page.
    assert samples[sample("faust_messages_received_total")] > 0
    assert sum(v for (name, _), v in samples.items() if name == "faust_topic_messages_sent_total") > 0
    names = {name for name, _ in samples}
    assert {"process_resident_memory_bytes", "faust_table_operations_total"} <= names
    secrets = ["therapeut", "praxis", "Müller", "Eva", "Pat7", "kein-at-zeichen"]
    secrets += [str(n) for n in (T1, T2, T3, 73011, 73012, 73021, 173011, 173012, 173021)]
    labels_reveal_nothing(samples, service.environ["COMM_APP_ID"], secrets)


async def test_the_delivery_process_s_sends_are_counted_by_its_worker(make_service) -> None:
    async with make_service(**SPLIT) as service:
        service.smtp.handler.responder = refuse((address(7311), ["451 4.3.0 greylisted"]))
        worker = await service.up()
        therapists = range(7311, 7316)
        for t in therapists:
            await service.matches(match_created(t * 10, t, "2026-01-01T10:00:00+01:00"))
        await service.therapists(*(therapist_created(t) for t in therapists))
        await service.smtp_distinct_messages(len(therapists))

        contact = {"kind": "contact_request"}
        await scraped_once(
            worker,
            {
                sample("commsvc_emails_sent_total", **contact): 5,
                sample("commsvc_email_send_failures_total", **contact, **{"class": "temporary"}): 1,
                sample("commsvc_smtp_send_duration_seconds_count"): 6,
                sample("commsvc_emails_created_total", **contact): 5,
                sample("commsvc_email_queue_depth", status="in_warteschlange"): 0,
            },
        )
