"""Batched ingest (issue 19): inputs are taken in batches and forwarded in bundles,
and the therapist agent writes each therapist once per batch. A worker killed with
SIGKILL in the middle of such batches and restarted loses no request and doubles
no email: every request is emailed, in exactly one email."""

from __future__ import annotations

import re
from collections import defaultdict

from tests.e2e.harness import Collector, Service, inbox_messages, plain_text
from tests.events import match_created, therapist_created

THERAPISTS = 60
PER_THERAPIST = 10
PATIENT = re.compile(r"\bPat(\d+)\b")


def forwarded(inbox: Collector) -> set[str]:
    """The match.created inputs in the therapist inbox so far (each once, however often)."""
    return {m["event_id"] for m in inbox_messages(inbox) if m.get("kind") == "match_created"}


async def test_sigkill_in_the_middle_of_batches_loses_no_request_and_doubles_no_email(service: Service):
    worker = await service.up()  # creates the topics
    worker.terminate()
    # A backlog, so that the restarted worker takes full batches.
    requests: dict[int, int] = {}  # request -> therapist
    for n in range(PER_THERAPIST):
        for therapist_id in range(1, THERAPISTS + 1):
            request_id = therapist_id * 100 + n
            requests[request_id] = therapist_id
            await service.matches(match_created(request_id, therapist_id, f"2026-01-{n + 1:02d}T10:00:00+01:00"))

    inbox = Collector(service.broker.bootstrap, [f"{service.environ['COMM_APP_ID']}-therapist-inbox"])
    await inbox.start()
    try:
        for killed_at in (len(requests) // 4, len(requests) * 3 // 5):
            worker = await service.start_worker()
            await inbox.wait_for(
                lambda at=killed_at: len(forwarded(inbox)) >= at, timeout=60, what=f"{killed_at} forwarded"
            )
            worker.kill()  # SIGKILL: batches in hand, bundles sent but not all acknowledged
        worker = await service.start_worker()
        await inbox.wait_for(lambda: len(forwarded(inbox)) >= len(requests), timeout=120, what="every match forwarded")
        bundles = [r for r in next(iter(inbox.records.values())) if r.get("kind") == "bundle"]
        assert bundles, "the inputs were forwarded one by one"
    finally:
        await inbox.stop()

    # Every match is in the inbox before its therapist: each therapist's requests all
    # wait when it becomes known, so one email each carries them all.
    for therapist_id in range(1, THERAPISTS + 1):
        await service.therapists(therapist_created(therapist_id))
    await service.smtp_distinct_messages(THERAPISTS, timeout=120)
    await service.collector.wait_for(
        lambda: len({e["payload"]["email_id"] for e in service.events("communication.email_sent")}) >= THERAPISTS,
        timeout=60,
        what="email_sent for every email",
    )
    emailed: dict[str, set[int]] = defaultdict(set)
    for received in service.smtp.messages:
        emailed[received.message["Message-ID"]] |= {int(n) for n in PATIENT.findall(plain_text(received))}
    assert len(service.smtp.messages) == THERAPISTS  # no email twice
    every = sorted(r for patients in emailed.values() for r in patients)
    assert every == sorted(requests)  # every request, each in exactly one email
    assert service.dead_letters() == []
    assert service.query("SELECT status, count(*) FROM emails GROUP BY status") == [("gesendet", THERAPISTS)]
    assert worker.running
