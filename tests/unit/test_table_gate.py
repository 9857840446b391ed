"""The gate between the therapist agent's table work and Faust giving the table's
partitions up (a stop, a rebalance): the batch in hand finishes first, none starts
after, and one that still finds the tables gone writes nothing, acknowledges
nothing and dead-letters nothing, so that its records come again."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest

from streams.kafka import app as kafka_app
from streams.kafka.table_gate import TableGate, TablesClosed
from streams.settings import Settings
from tests.fakes import FakeClock, RecordStream, recording_topics, sent
from tests.unit.test_therapist_agent import MONDAY, PARTITIONS, SETTINGS, match, therapist_on
from tests.unit.test_therapist_batches import CountingTable, bundle

A = therapist_on(1)


async def until(condition: Any) -> None:
    """Let the other tasks run until ``condition()`` holds (a few hundred turns at most)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def test_a_stop_waits_for_the_batch_in_hand_and_refuses_the_next() -> None:
    gate, release = TableGate(), asyncio.Event()

    async def batch() -> None:
        async with gate.batch():
            await release.wait()
            gate.check()  # the tables are still there for the batch's writes

    in_hand = asyncio.create_task(batch())
    await until(lambda: gate._busy == 1)
    stopping = asyncio.create_task(gate.stop(wait=30))
    await until(lambda: gate._stopping)
    assert not stopping.done()
    release.set()
    await in_hand
    await stopping
    with pytest.raises(TablesClosed):
        async with gate.batch():
            pass


async def test_a_batch_still_in_hand_when_the_wait_ends_finds_the_tables_gone() -> None:
    gate, release = TableGate(), asyncio.Event()

    async def batch() -> None:
        async with gate.batch():
            await release.wait()
            gate.check()

    in_hand = asyncio.create_task(batch())
    await until(lambda: gate._busy == 1)
    await gate.stop(wait=0.01)
    release.set()
    with pytest.raises(TablesClosed):
        await in_hand


async def test_a_batch_waits_out_a_rebalance() -> None:
    gate = TableGate()
    await gate.pause(wait=1)
    with pytest.raises(TablesClosed):
        gate.check()
    entered = asyncio.Event()

    async def batch() -> None:
        async with gate.batch():
            gate.check()
            entered.set()

    waiting = asyncio.create_task(batch())
    await until(lambda: True)
    assert not entered.is_set()
    gate.resume()
    await waiting
    assert entered.is_set()


async def test_a_stop_during_a_rebalance_refuses_the_waiting_batch() -> None:
    gate = TableGate()
    await gate.pause(wait=1)

    async def batch() -> None:
        async with gate.batch():
            pass

    waiting = asyncio.create_task(batch())
    await until(lambda: True)
    await gate.stop(wait=1)
    gate.resume()  # a stop is final
    with pytest.raises(TablesClosed):
        await waiting


async def test_the_agent_leaves_a_batch_it_cannot_finish_for_later() -> None:
    """The e2e failure this gate fixes: SIGTERM while a batch is in hand. Here the
    broker holds the batch's send commands past the stop's wait."""
    gate, table = TableGate(), CountingTable()
    from streams.agents.therapist import TherapistAgent

    agent = TherapistAgent(SETTINGS, recording_topics(), table, FakeClock(MONDAY), gate=gate)  # type: ignore[arg-type]
    agent.topics.send_commands.hold = True  # type: ignore[attr-defined]
    stream = RecordStream([bundle(match(1, A, 30), match(2, A, 20))])
    running = asyncio.create_task(agent(stream))  # type: ignore[arg-type]
    await until(lambda: agent.topics.send_commands.held)  # type: ignore[attr-defined]
    await gate.stop(wait=0.01)
    agent.topics.send_commands.release()  # type: ignore[attr-defined]
    await running

    assert A not in table  # nothing written on tables that are gone
    assert stream.acked == []  # so the records come again after the restart
    assert sent(agent.topics.dlq) == []  # and none is taken for bad


async def test_the_agent_finishes_the_batch_in_hand_before_a_stop_goes_on() -> None:
    gate, table = TableGate(), CountingTable()
    from streams.agents.therapist import TherapistAgent

    agent = TherapistAgent(SETTINGS, recording_topics(), table, FakeClock(MONDAY), gate=gate)  # type: ignore[arg-type]
    agent.topics.send_commands.hold = True  # type: ignore[attr-defined]
    stream = RecordStream([bundle(match(1, A, 30))])
    running = asyncio.create_task(agent(stream))  # type: ignore[arg-type]
    await until(lambda: agent.topics.send_commands.held)  # type: ignore[attr-defined]
    stopping = asyncio.create_task(gate.stop(wait=30))
    await until(lambda: gate._stopping)
    assert not stopping.done()  # the stop waits for the batch
    agent.topics.send_commands.release()  # type: ignore[attr-defined]
    await running
    await stopping
    assert A in table and len(stream.acked) == 1


@pytest.fixture
def app() -> kafka_app.ServiceFaustApp:
    settings = Settings.from_environ({"COMM_PARTITIONS": str(PARTITIONS)})
    return kafka_app.create_app(settings)


async def test_the_app_stops_the_gate_before_its_tables(
    app: kafka_app.ServiceFaustApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    async def faust_stop_consumer(self: faust.App) -> None:
        seen.append(self.table_gate._stopping)

    monkeypatch.setattr(faust.App, "_stop_consumer", faust_stop_consumer)
    await app._stop_consumer()
    assert seen == [True]


async def test_the_app_pauses_the_gate_while_partitions_change_hands(
    app: kafka_app.ServiceFaustApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    async def revoked(self: faust.App, revoked: set[Any]) -> None:
        seen.append(f"revoked, paused={not self.table_gate._resumed.is_set()}")

    async def assigned(self: faust.App, assigned: set[Any], generation_id: int = 0) -> None:
        seen.append(f"assigned, paused={not self.table_gate._resumed.is_set()}")

    monkeypatch.setattr(faust.App, "_on_partitions_revoked", revoked)
    monkeypatch.setattr(faust.App, "_on_partitions_assigned", assigned)
    await app._on_partitions_revoked(set())
    await app._on_partitions_assigned(set())
    assert seen == ["revoked, paused=True", "assigned, paused=True"]
    assert app.table_gate._resumed.is_set()  # resumed once the assignment is in place
