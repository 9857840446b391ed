"""Durable local state (issue 14): the table in RocksDB under a data directory of
each worker's own. A restarted worker finds its table there and reads nothing of
the changelog it already had; two workers on one host never share a directory; and
the memory store still works, rebuilding the table from the changelog."""

from __future__ import annotations

import re
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.e2e.harness import Service, WorkerProcess, plain_text
from tests.events import match_created, therapist_created

INTERVAL = 8.0  # COMM_CONTACT_INTERVAL in the harness
THERAPISTS = 12
RECOVERED = re.compile(r"table recovered in [\d.]+s from the assignment of partitions \[([\d, ]*)\]: (\d+) changelog")


def address(therapist_id: int) -> str:
    return f"therapeut{therapist_id}@praxis.example"


def recoveries(worker: WorkerProcess) -> list[tuple[list[int], int]]:
    """(active partitions, changelog records read) of each table recovery the worker logged."""
    return [
        ([int(p) for p in partitions.split(",") if p.strip()], int(read))
        for partitions, read in RECOVERED.findall(worker.new_log().decode())
    ]


async def changelog_records(service: Service) -> int:
    """How many records the table's changelog holds (one per table write)."""
    topic = f"{service.environ['COMM_APP_ID']}-therapists-changelog"
    consumer = AIOKafkaConsumer(bootstrap_servers=service.broker.bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum((await consumer.end_offsets(partitions)).values())
    finally:
        await consumer.stop()


def state_dir(worker: WorkerProcess) -> Path:
    """The directory the worker logged at its start (the log is shared by all workers)."""
    found = re.search(r"table state in RocksDB under (\S+) ", worker.new_log().decode())
    assert found, worker.tail()
    return Path(found[1])


async def emailed_once_each(service: Service) -> None:
    for therapist_id in range(1, THERAPISTS + 1):
        await service.therapists(therapist_created(therapist_id))
        await service.matches(match_created(therapist_id * 10, therapist_id, "2026-01-01T10:00:00+01:00"))
    await service.smtp_distinct_messages(THERAPISTS)
    await service.collector.wait_for(
        lambda: len(service.events("communication.email_sent")) >= THERAPISTS, what="email_sent for every email"
    )


async def test_restarted_worker_recovers_its_table_from_rocksdb(service: Service):
    worker = await service.up()
    directory = state_dir(worker)
    assert directory == worker.data_dir.absolute() / service.environ["COMM_APP_ID"] / "worker-0"
    await emailed_once_each(service)
    assert worker.terminate() < 10.0
    assert await changelog_records(service) > THERAPISTS

    restarted = await service.start_worker()
    assert state_dir(restarted) == directory  # its slot again, and the state in it
    # Nothing of the changelog was read again: the table came from RocksDB.
    assert recoveries(restarted) == [([0, 1, 2, 3], 0)]

    # The state is all there: the weekly rule holds across the restart, and the
    # next email carries only the new request.
    await service.matches(match_created(11, 1, "2026-01-02T10:00:00+01:00"))
    first, second = await service.mailbox.wait_for(address(1), 2, timeout=INTERVAL + 20)
    assert second.received_at - first.received_at >= INTERVAL
    assert "Pat11" in plain_text(second) and "Pat10" not in plain_text(second)
    assert len({r.message["Message-ID"] for r in service.smtp.messages}) == THERAPISTS + 1


async def test_a_killed_workers_state_is_rebuilt_from_the_changelog(service: Service):
    """Its RocksDB state may be ahead of the changelog and of what it published, so
    it is not trusted: the restarted worker reads the whole changelog."""
    worker = await service.up()
    await emailed_once_each(service)
    worker.kill()
    written = await changelog_records(service)

    restarted = await service.start_worker()
    assert state_dir(restarted) == state_dir(worker)
    assert "did not stop cleanly" in restarted.new_log().decode()
    assert recoveries(restarted) == [([0, 1, 2, 3], written)]
    await service.matches(match_created(11, 1, "2026-01-02T10:00:00+01:00"))
    first, second = await service.mailbox.wait_for(address(1), 2, timeout=INTERVAL + 20)
    assert second.received_at - first.received_at >= INTERVAL
    assert "Pat11" in plain_text(second) and "Pat10" not in plain_text(second)


async def test_memory_store_rebuilds_the_table_from_the_changelog(service: Service):
    worker = await service.up(COMM_STORE="memory")
    assert "table state in memory" in worker.new_log().decode()
    await emailed_once_each(service)
    worker.terminate()
    written = await changelog_records(service)

    restarted = await service.start_worker(COMM_STORE="memory")
    # The whole changelog was read again.
    assert recoveries(restarted) == [([0, 1, 2, 3], written)]
    await service.matches(match_created(11, 1, "2026-01-02T10:00:00+01:00"))
    first, second = await service.mailbox.wait_for(address(1), 2, timeout=INTERVAL + 20)
    assert second.received_at - first.received_at >= INTERVAL
    assert "Pat11" in plain_text(second) and "Pat10" not in plain_text(second)


async def test_two_workers_on_one_host_get_directories_of_their_own(service: Service, tmp_path: Path):
    shared = str(tmp_path / "one-host")
    first = await service.up(COMM_DATA_DIR=shared)
    second = await service.start_worker(COMM_DATA_DIR=shared)
    app_dir = Path(shared).absolute() / service.environ["COMM_APP_ID"]
    assert state_dir(first) == app_dir / "worker-0"
    assert state_dir(second) == app_dir / "worker-1"
    await emailed_once_each(service)

    first.kill()  # its slot is free again as soon as it is gone
    third = await service.start_worker(COMM_DATA_DIR=shared)
    assert state_dir(third) == app_dir / "worker-0"
    await service.matches(match_created(11, 1, "2026-01-02T10:00:00+01:00"))
    await service.mailbox.wait_for(address(1), 2, timeout=INTERVAL + 30)
    assert second.running and third.running
    assert "is locked" not in service.log_path.read_text()  # no worker waited for another's database


async def test_unusable_data_directory_stops_the_worker_naming_it(service: Service, tmp_path: Path):
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a directory")
    worker = service.worker(COMM_DATA_DIR=str(in_the_way))
    assert worker.process is not None
    assert worker.process.wait(timeout=60) != 0
    output = worker.new_log().decode()
    assert "COMM_DATA_DIR: cannot write the worker's table state to" in output
    assert "Traceback" not in output
