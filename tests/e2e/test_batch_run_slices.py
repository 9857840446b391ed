"""A batch run a slice at a time, on the real broker: with ``COMM_BATCH_RUN_SLICE=2``
each partition's run goes through several slices, each continued by a tick the
worker sends to its own inbox, and every therapist gets exactly one email."""

from __future__ import annotations

import re

from tests.e2e.harness import Service
from tests.events import match_created, therapist_created

THERAPISTS = 24
SLICE = 2
DECIDED = re.compile(rb"batch run \S+ on partition \d+: (\d+) contact email\(s\) decided, in (\d+) slice")


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


async def test_a_run_over_several_slices_emails_every_therapist_once(service: Service):
    await service.up(COMM_BATCH_RUN_SLICE=str(SLICE))
    for therapist_id in range(1, THERAPISTS + 1):
        await service.matches(match_created(therapist_id * 10, therapist_id, "2026-01-01T10:00:00+01:00"))
    await service.forwarded("match_created", THERAPISTS)
    for therapist_id in range(1, THERAPISTS + 1):
        await service.therapists(therapist_created(therapist_id))

    await service.smtp_distinct_messages(THERAPISTS)
    await service.collector.wait_for(
        lambda: len(service.events("communication.email_sent")) >= THERAPISTS, timeout=60, what="email_sent for all"
    )
    for therapist_id in range(1, THERAPISTS + 1):
        assert len(service.mailbox.to(address(therapist_id))) == 1, therapist_id
    runs = [(int(emails), int(slices)) for emails, slices in DECIDED.findall(service.log_path.read_bytes())]
    assert sum(emails for emails, _ in runs) == THERAPISTS
    assert all(slices * SLICE >= emails for emails, slices in runs), runs  # no slice decided more than SLICE
    assert max(slices for _, slices in runs) > 1, runs  # a run went over several slices
