"""Crash safety (CONTRACT §5.7): a worker killed with SIGKILL at any moment and
restarted loses no placement request and sends no second email for the same
batch; a re-send can only happen between the SMTP server's acceptance and the
status commit, and then it carries the same Message-ID."""

from __future__ import annotations

import re
from collections import defaultdict

import pytest

from streams.delivery.loop import resend_bound
from tests.e2e.harness import plain_text
from tests.events import match_created, therapist_created

THERAPISTS = 150
PATIENT = re.compile(r"\bPat(\d+)\b")


@pytest.mark.parametrize(
    "delivery",
    [{}, {"COMM_DELIVERY_PROCESS": "true", "COMM_SMTP_CONNECTIONS": "3"}],
    ids=["in-process", "delivery-process-3-connections"],
)
async def test_sigkill_during_delivery_loses_nothing_and_doubles_nothing(make_service, delivery):
    # Short claims, so that an email a killed worker had claimed is taken over quickly.
    async with make_service(COMM_DELIVERY_LEASE="3s", COMM_POLL_INTERVAL="100ms", **delivery) as service:
        worker = await service.up()
        service.smtp.handler.delay = 0.02
        requests: dict[int, int] = {}  # request -> therapist
        # The matches first: they wait for their therapist, so each therapist's
        # requests are all there when it becomes known, whenever a batch run falls.
        # The therapists are published once every match is in the therapist inbox:
        # the two input topics are consumed side by side, and a therapist known
        # before its matches arrived would be emailed about part of them (the rest
        # rightly waiting a week).
        for therapist_id in range(1, THERAPISTS + 1):
            for n in range(1 + therapist_id % 3):
                request_id = therapist_id * 10 + n
                requests[request_id] = therapist_id
                await service.matches(match_created(request_id, therapist_id, f"2026-01-0{n + 1}T10:00:00+01:00"))
        await service.forwarded("match_created", len(requests))
        for therapist_id in range(1, THERAPISTS + 1):
            await service.therapists(therapist_created(therapist_id))

        for killed_after in (20, 80):
            await service.smtp_count(killed_after)
            worker.kill()  # SIGKILL: no chance to finish anything
            worker = await service.start_worker()

        await service.smtp_distinct_messages(THERAPISTS, timeout=120)
        by_message_id: dict[str, list[frozenset[int]]] = defaultdict(list)
        for received in service.smtp.messages:
            found = frozenset(int(n) for n in PATIENT.findall(plain_text(received)))
            by_message_id[received.message["Message-ID"]].append(found)
        # A re-sent email is the same email: same Message-ID, same requests.
        for copies in by_message_id.values():
            assert len(set(copies)) == 1
        emailed = [r for copies in by_message_id.values() for r in copies[0]]
        assert sorted(emailed) == sorted(requests)  # every request, each in exactly one email
        assert len(by_message_id) == THERAPISTS  # one email per therapist
        # Only what was accepted but not yet recorded can go out again: per kill at
        # most the open group, the groups being committed and one reply per connection.
        duplicates = len(service.smtp.messages) - len(by_message_id)
        bound = resend_bound(int(delivery.get("COMM_SMTP_CONNECTIONS", "1")))
        assert duplicates <= 2 * bound, f"{duplicates} re-sends for two kills"

        # A re-sent email publishes email_sent again: wait for every email, not a count.
        # Sends are recorded in groups just after the server accepts them, with the
        # status and the email_sent event in one transaction: wait for the events
        # before reading the statuses.
        await service.collector.wait_for(
            lambda: len({e["payload"]["email_id"] for e in service.events("communication.email_sent")}) >= THERAPISTS,
            timeout=60,
            what="email_sent for every email",
        )
        rows = service.query("SELECT status, count(*) FROM emails GROUP BY status")
        assert rows == [("gesendet", THERAPISTS)]
        sent_ids = {e["payload"]["email_id"] for e in service.events("communication.email_sent")}
        assert sent_ids == {row[0] for row in service.query("SELECT id FROM emails")}
        assert worker.running
