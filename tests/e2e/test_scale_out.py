"""Scale-out and time-driven work (CONTRACT §5.7): workers share the partitions,
a killed worker's partitions and state move to the others, batch runs happen
exactly once per due run and catch up after a restart that missed one."""

from __future__ import annotations

import asyncio
import re
import time
from collections import defaultdict
from datetime import UTC, datetime

from tests.e2e.harness import Service, plain_text
from tests.events import match_created, therapist_created

PATIENT = re.compile(r"\bPat(\d+)\b")
INTERVAL = 8.0


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def requests_in(service: Service) -> list[int]:
    return [int(n) for r in service.smtp.messages for n in PATIENT.findall(plain_text(r))]


async def test_two_workers_share_the_work_and_survive_losing_one(service: Service):
    first = await service.up()
    second = await service.start_worker()
    for therapist_id in range(1, 41):
        await service.therapists(therapist_created(therapist_id))
        await service.matches(match_created(therapist_id * 10, therapist_id, "2026-01-01T10:00:00+01:00"))
    await service.smtp_distinct_messages(40)
    # The group split the partitions between the two.
    owned = owned_partitions(service)
    assert owned[worker_id(service, 0)] and owned[worker_id(service, 1)]
    assert sorted(owned[worker_id(service, 0)] + owned[worker_id(service, 1)]) == [0, 1, 2, 3]

    first.kill()  # its partitions, table state and claims move to the survivor
    for therapist_id in range(1, 51):
        if therapist_id > 40:
            await service.therapists(therapist_created(therapist_id))
        await service.matches(match_created(therapist_id * 10 + 1, therapist_id, "2026-01-02T10:00:00+01:00"))
    await service.smtp_distinct_messages(90, timeout=90)

    emailed = requests_in(service)
    assert sorted(set(emailed)) == sorted([t * 10 for t in range(1, 41)] + [t * 10 + 1 for t in range(1, 51)])
    by_message = {r.message["Message-ID"] for r in service.smtp.messages}
    assert len(by_message) == 90  # 40 therapists twice, 10 once: nothing doubled
    sends = defaultdict(list)
    for received in service.smtp.messages:
        sends[received.rcpt_tos[0]].append(received.received_at)
    for therapist_id in range(1, 41):
        times = sorted(set(sends[address(therapist_id)]))
        assert len(times) == 2 and times[1] - times[0] >= INTERVAL, therapist_id
    assert second.running
    assert owned_partitions(service)[worker_id(service, 1)] == [0, 1, 2, 3]  # the survivor took over


def worker_id(service: Service, index: int) -> str:
    return re.findall(r"commsvc worker ready \(id (\S+),", service.log_path.read_text())[index]


def owned_partitions(service: Service) -> dict[str, list[int]]:
    """The latest assignment each worker logged."""
    latest: dict[str, list[int]] = {}
    for worker, partitions in re.findall(
        r"worker (\S+) owns inbox partitions \[([\d, ]*)\]", service.log_path.read_text()
    ):
        latest[worker] = [int(p) for p in partitions.split(",") if p.strip()]
    return latest


async def test_missed_batch_run_happens_at_restart(make_service):
    every = 20  # seconds between batch runs
    async with make_service(COMM_BATCH_SCHEDULE=f"{every}s") as service:
        worker = await service.up()
        await service.therapists(therapist_created(1))
        await service.matches(match_created(10, 1, "2026-01-01T10:00:00+01:00"))
        await service.mailbox.wait_for(address(1), 1, timeout=every + 10)  # the table has its bookmark now
        await service.therapists(therapist_created(2))
        await service.matches(match_created(20, 2, "2026-01-01T10:00:00+01:00"))
        await service.wait_event("communication.email_sent", therapist_id=1)
        worker.terminate()
        missed = (int(time.time()) // every + 1) * every  # the next run, while no worker is up
        while time.time() < missed + 1:
            await asyncio.sleep(0.2)  # waiting for the scheduled run to pass unattended
        restarted = time.time()
        await service.start_worker()
        [email] = await service.mailbox.wait_for(address(2), 1, timeout=every)
        assert "Pat20" in plain_text(email)
        # caught up at the first tick after start, not at the next scheduled run
        assert email.received_at < missed + every, (
            datetime.fromtimestamp(email.received_at, UTC),
            datetime.fromtimestamp(missed + every, UTC),
        )
        assert email.received_at - restarted < 15


async def test_retry_due_while_the_worker_was_down_happens_at_restart(make_service):
    async with make_service(COMM_RETRY_BACKOFF="6s", COMM_RETRY_BACKOFF_MAX="6s") as service:
        replies = iter(["451 4.3.0 try later"])
        service.smtp.handler.responder = lambda received: next(replies, None)
        worker = await service.up()
        await service.therapists(therapist_created(1))
        await service.matches(match_created(10, 1, "2026-01-01T10:00:00+01:00"))
        [failure] = await service.wait_event("communication.email_failed", therapist_id=1)
        due = datetime.fromisoformat(failure["payload"]["next_attempt_at"]).timestamp()
        worker.terminate()
        while time.time() < due + 1:
            await asyncio.sleep(0.2)  # the retry falls due while no worker is running
        await service.start_worker()
        await service.mailbox.wait_for(address(1), 1, timeout=30)
        # the status and its event are committed together, a moment after the send
        await service.wait_event("communication.email_sent", therapist_id=1)
        assert service.query("SELECT status, retry_count FROM emails") == [("gesendet", 1)]
        assert len(service.events("communication.email_sent", therapist_id=1)) == 1
