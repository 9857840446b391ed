"""The outbox relay against a real database, with a stand-in producer (an adapter
test): order, the published prefix, and parking what can never be published."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from sqlalchemy import select

from streams.delivery.relay import LEASE, OutboxRelay
from streams.persistence import outbox
from streams.persistence.models import Lease, OutboxMessage
from streams.settings import Settings

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class Producer:
    """Takes messages like aiokafka's producer; some fail."""

    def __init__(self, refuse: dict[str, BaseException]) -> None:
        self.refuse = refuse
        self.sent: list[str] = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        future = asyncio.get_running_loop().create_future()
        text = value.decode()
        if text in self.refuse:
            future.set_exception(self.refuse[text])
        else:
            self.sent.append(text)
            future.set_result(None)
        return future


def write(database, *values):
    database.transaction(lambda s: outbox.add_rows(s, [outbox.message_row("t", "k", v, NOW) for v in values]))


def rows(database):
    return database.transaction(
        lambda s: [
            (r.value, r.published_at is not None, r.failed_reason)
            for r in s.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
        ]
    )


def relay(database, producer):
    return OutboxRelay(Settings.from_environ({}), database, producer, "events", asyncio.Event(), "w", lambda: NOW)


async def test_an_unpublishable_message_is_parked_and_the_rest_goes_on(database):
    write(database, "a", "too-big", "c")
    producer = Producer({"too-big": MessageSizeTooLargeError("the message is 2000000 bytes")})
    assert await relay(database, producer)._publish(database.transaction(outbox.unpublished, 10))
    assert producer.sent == ["a", "c"]
    stored = rows(database)
    assert [(v, done) for v, done, _ in stored[:3]] == [("a", True), ("too-big", True), ("c", True)]
    assert "MessageSizeTooLargeError" in stored[1][2]
    [alert] = [json.loads(v) for v, done, _ in stored[3:]]
    assert alert["event_type"] == "communication.alert" and alert["payload"]["code"] == "event_unpublishable"


async def test_a_transient_failure_keeps_the_order(database):
    write(database, "a", "slow", "c")
    producer = Producer({"slow": KafkaTimeoutError()})
    assert not await relay(database, producer)._publish(database.transaction(outbox.unpublished, 10))
    assert [(v, done) for v, done, _ in rows(database)] == [("a", True), ("slow", False), ("c", False)]
    assert [m.value for m in database.transaction(outbox.unpublished, 10)] == ["slow", "c"]


async def test_the_lease_is_taken_once_and_renewed_after_a_third_of_it(database):
    clock = {"now": NOW}
    settings = Settings.from_environ({})
    lease = timedelta(seconds=30)

    def relay_of(worker):
        return OutboxRelay(settings, database, Producer({}), "events", asyncio.Event(), worker, lambda: clock["now"])

    def expires_at():
        return database.transaction(lambda s: s.get(Lease, LEASE).expires_at.astimezone(UTC))

    first, second = relay_of("a"), relay_of("b")
    assert await first._hold(lease)
    assert expires_at() == NOW + lease
    assert not await second._hold(lease), "one relay at a time"
    clock["now"] = NOW + timedelta(seconds=5)
    assert await first._hold(lease)
    assert expires_at() == NOW + lease, "not written again within a third of the lease"
    first.held_at -= lease.total_seconds() / 3  # as if ten seconds had passed
    assert await first._hold(lease)
    assert expires_at() == NOW + timedelta(seconds=5) + lease, "renewed"
    assert not await second._hold(lease)
