"""Outages of the broker and the database (CONTRACT §5.7): the worker waits and
retries instead of crashing or dropping work, and catches up afterwards."""

from __future__ import annotations

import asyncio
import time

from streams.demo.broker import LocalBroker
from tests.e2e.harness import Service
from tests.events import match_created, therapist_created
from tests.services import PrivateCluster
from tests.waiting import until


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


async def publish(service: Service, therapist_ids) -> None:
    for therapist_id in therapist_ids:
        await service.therapists(therapist_created(therapist_id))
        await service.matches(match_created(therapist_id * 10, therapist_id, "2026-01-01T10:00:00+01:00"))


def one_email_each(service: Service, therapist_ids) -> None:
    for therapist_id in therapist_ids:
        assert len(service.mailbox.to(address(therapist_id))) == 1, therapist_id


async def test_broker_paused_and_resumed(make_service, tmp_path):
    private = LocalBroker(log_path=tmp_path / "paused-broker.log").start()
    try:
        async with make_service(broker=private) as service:
            worker = await service.up()
            service.smtp.handler.delay = 0.3  # deliveries are still going on during the pause
            await publish(service, range(1, 21))
            await service.mailbox.wait_for(address(1), 1)
            stored = service.query("SELECT count(*) FROM emails")[0][0]
            private.pause()  # SIGSTOP: connections stay open, nothing answers
            paused_at = time.monotonic()
            delivered_before = len(service.smtp.messages)
            # Email delivery runs from the database: it goes on while the broker is frozen.
            await until(
                lambda: len(service.smtp.messages) > delivered_before,
                20,
                "an email delivered while the broker was paused",
                every=0.1,
            )
            await asyncio.sleep(max(0.0, 6 - (time.monotonic() - paused_at)))  # keep it frozen for 6 s
            private.resume()
            assert worker.running
            await publish(service, range(21, 26))  # and new input still flows after the pause
            for therapist_id in range(1, 26):
                await service.mailbox.wait_for(address(therapist_id), 1, timeout=60)
            sent = await service.wait_event("communication.email_sent", count=25, timeout=60)
            assert {e["payload"]["therapist_id"] for e in sent} == set(range(1, 26))
            one_email_each(service, range(1, 26))
            assert stored >= 1 and worker.running
    finally:
        private.stop()


async def test_database_stopped_and_started(make_service):
    cluster = PrivateCluster().start()
    try:
        async with make_service(database_url=cluster.url) as service:
            worker = await service.up()
            await publish(service, [1])
            await service.mailbox.wait_for(address(1), 1)
            # Recorded and reported before the outage: this test is about what comes during it.
            await service.wait_event("communication.email_sent", therapist_id=1)
            cluster.stop()
            await publish(service, range(2, 8))  # decided by the stream, but cannot be stored now
            await service.wait_log("database unavailable")
            assert worker.running and service.mailbox.to(address(2)) == []
            cluster.start()
            for therapist_id in range(2, 8):
                await service.mailbox.wait_for(address(therapist_id), 1, timeout=60)
            # The outbox relay publishes at least once: a consumer tells repeats by event_id.
            sent = await service.wait_event("communication.email_sent", count=7, timeout=60, distinct=True)
            assert {e["payload"]["therapist_id"] for e in sent} == set(range(1, 8))
            one_email_each(service, range(1, 8))
            assert service.query("SELECT count(*), min(status), max(status) FROM emails") == [
                (7, "gesendet", "gesendet")
            ]
            assert worker.running
    finally:
        cluster.destroy()


async def test_worker_stopped_during_a_database_outage_loses_no_send_command(make_service):
    cluster = PrivateCluster().start()
    try:
        async with make_service(database_url=cluster.url) as service:
            worker = await service.up()
            await publish(service, [1])
            await service.mailbox.wait_for(address(1), 1)
            # Recorded as sent (else the stop rightly waits to record it, up to the grace).
            await service.wait_event("communication.email_sent", therapist_id=1)
            cluster.stop()
            await publish(service, range(2, 6))  # decided, then waiting for the database
            await service.wait_log("sender agent: database unavailable")
            assert worker.terminate() < 10.0  # stops promptly, with the commands not stored
            cluster.start()
            await service.start_worker()
            for therapist_id in range(2, 6):  # nothing was acknowledged unstored: all of them go out
                await service.mailbox.wait_for(address(therapist_id), 1, timeout=60)
            one_email_each(service, range(1, 6))
    finally:
        cluster.destroy()
