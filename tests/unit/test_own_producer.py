"""The outbox relay's own producer: started at the first send, and a start that
fails (the broker not reachable yet) leaves no half-started producer behind."""

from __future__ import annotations

from typing import Any

import pytest

from streams.kafka import own_producer
from streams.kafka.own_producer import OwnProducer
from streams.settings import Settings


class FakeProducer:
    instances: list[FakeProducer] = []
    fail_start = True

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.started = self.stopped = False
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []
        FakeProducer.instances.append(self)

    async def start(self) -> None:
        if FakeProducer.fail_start:
            raise ConnectionError("no broker yet")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic: str, *, value: bytes, key: bytes | None, partition: int | None) -> Any:
        self.sent.append((topic, key, value, partition))
        return "acknowledgement"


async def test_a_failed_start_is_cleaned_up_and_the_next_send_starts_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(own_producer, "AIOKafkaProducer", FakeProducer)
    FakeProducer.instances, FakeProducer.fail_start = [], True
    producer = OwnProducer(Settings.from_environ({"COMM_KAFKA_BROKER": "kafka://broker-a:9092;kafka://broker-b:9093"}))
    with pytest.raises(ConnectionError):
        await producer.send("events", b"7", b"{}", None, None, None)
    [first] = FakeProducer.instances
    assert first.stopped
    assert first.options["bootstrap_servers"] == "broker-a:9092,broker-b:9093"
    assert first.options["enable_idempotence"] is False and first.options["acks"] == "all"

    FakeProducer.fail_start = False
    assert await producer.send("events", b"7", b"{}", None, None, None) == "acknowledgement"
    assert await producer.send("events", None, b"{}", 2, None, None) == "acknowledgement"
    [_, second] = FakeProducer.instances  # started once, then reused
    assert second.sent == [("events", b"7", b"{}", None), ("events", None, b"{}", 2)]
    await producer.close()
    assert second.stopped
