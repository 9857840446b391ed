"""Ingest benchmark (issue 2): N match.created events over thousands of therapists,
measured in events/s until all of them are in the pending state.

In the same run, over the same events, two baselines:
  * a plain aiokafka consume-and-decode loop (the limit), and
  * a bare Faust app that only repartitions by therapist and makes one table update
    per event (the framework's own floor).

"In the pending state" is observed from outside: the run ends when the latest
changelog values of all therapists hold N waiting requests (the service writes a
therapist once per inbox bundle, which may carry several of its events). Time runs
from the first changelog record to that point, so start-up (group join, recovery)
is excluded for both Faust apps alike.

    .venv/bin/python bench/bench_ingest.py [--events 20000] [--therapists 4000] [--repeats 3]
    .venv/bin/python bench/bench_ingest.py --events 10000 --per-therapist 1 10 100 500 --repeats 3

--per-therapist K gives each therapist K requests (events / K therapists), so the last
events of a therapist arrive at an aggregate already holding up to K - 1 waiting
requests: it shows how the cost per event grows with the aggregate. Each K is one
table row, with the changelog bytes per event of both Faust apps beside their rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from bench_common import PRODUCER_MAX_BATCH, add_producer_batch_option, print_medians

from streams.demo.broker import LocalBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 8
# Producer batch size of both Faust apps: "1" (one record per batch, needed on Tansu for
# table recovery) or "" (Faust's default batching, as on Kafka). Set by --producer-batch.
MAX_BATCH = "1"
# The table store of both Faust apps (--store): the service's default, unless chosen.
STORE = "rocksdb"
FIRST = ["Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hannah", "Ilias", "Jana"]
DIAGNOSES = ["F32.1", "F41.1", "F43.1", "F40.1", "F33.1", "F50.2"]


def events(count: int, therapists: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    now = datetime(2026, 11, 22, tzinfo=UTC)
    out = []
    for request_id in range(1, count + 1):
        therapist_id = rng.randint(1, therapists)
        document = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event_type": "match.created",
            "schema_version": 1,
            "occurred_at": now.isoformat(),
            "producer": "bench",
            "payload": {
                "placement_request_id": request_id,
                "therapist_id": therapist_id,
                "patient_id": 10_000_000 + request_id,
                "patient": {
                    "registered_at": (now - timedelta(days=rng.randint(1, 300))).isoformat(),
                    "first_name": rng.choice(FIRST),
                    "last_name": "M.",
                    "age": rng.randint(18, 80),
                    "gender": rng.choice(["weiblich", "männlich", "divers"]),
                    "insurance": rng.choice(["AOK", "TK", "Barmer", "privat"]),
                    "diagnosis": rng.choice(DIAGNOSES),
                    "availability": "vormittags",
                },
            },
        }
        out.append((str(request_id).encode(), json.dumps(document).encode()))
    return out


async def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        batch = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


class Measured(NamedTuple):
    seconds: float  # from the first changelog record until the target count waits
    changelog_bytes: int  # keys and values of those records


def pending_count(value: bytes | None) -> int:
    """How many requests a changelog value holds waiting: the service's therapist
    state (its ``pending``), or the bare app's list of request ids."""
    if not value:
        return 0
    document = orjson.loads(value)
    if isinstance(document, dict):
        return len(document.get("pending", ()))
    return len(document) if isinstance(document, list) else 0


async def watch_changelog(
    bootstrap: str, topic: str, target: int, process: subprocess.Popen[bytes], log: Path
) -> Measured:
    """Seconds from the first changelog record until ``target`` requests are waiting
    in the table (the latest value of each key counts), and the records' bytes.

    A table write may carry several events (the service writes each therapist once
    per inbox bundle), so requests are counted in the values, not records. Records
    are read (Fetch), not counted by end offsets: Tansu's ListOffsets reports the
    first offset of the last batch, which undercounts as soon as records are batched."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    await consumer.start()
    try:
        first, size = None, 0
        waiting: dict[bytes | None, int] = {}
        seen = 0
        deadline = time.monotonic() + 600
        while seen < target:
            if process.poll() is not None:
                raise RuntimeError(f"process exited: {log.read_text()[-3000:]}")
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for records in batches.values():
                for r in records:
                    if first is None:
                        first = time.monotonic()
                    size += len(r.key or b"") + len(r.value or b"")
                    count = pending_count(r.value)
                    seen += count - waiting.get(r.key, 0)
                    waiting[r.key] = count
            if time.monotonic() > deadline:
                raise TimeoutError(f"{seen}/{target} requests waiting")
        assert first is not None
        return Measured(time.monotonic() - first, size)
    finally:
        await consumer.stop()


async def plain_aiokafka(bootstrap: str, topic: str, count: int) -> Measured:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < count:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batches.values():
                for record in records:
                    json.loads(record.value)
                    if started is None:
                        started = time.monotonic()
                    seen += 1
        assert started is not None
        return Measured(time.monotonic() - started, 0)
    finally:
        await consumer.stop()


def start(command: list[str], environ: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(command, env={**os.environ, **environ}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


async def bare_faust(broker: LocalBroker, topic: str, count: int, work: Path) -> Measured:
    app_id = f"bare-{uuid.uuid4().hex[:6]}"
    await create_topics(broker.bootstrap, [f"{app_id}-by-therapist", f"{app_id}-pending-changelog"])
    log = work / f"{app_id}.log"
    process = start(
        [sys.executable, str(ROOT / "bench" / "bare_faust.py"), "worker", "-l", "warn"],
        {
            "BENCH_BROKER": broker.url,
            "BENCH_TOPIC": topic,
            "BENCH_APP_ID": app_id,
            "BENCH_PARTITIONS": str(PARTITIONS),
            "BENCH_MAX_BATCH": MAX_BATCH,
            "BENCH_STORE": STORE,
            "BENCH_DATADIR": str(work / f"{app_id}-data"),
        },
        log,
    )
    try:
        return await watch_changelog(broker.bootstrap, f"{app_id}-pending-changelog", count, process, log)
    finally:
        stop(process)


async def service_worker(broker: LocalBroker, topic: str, count: int, work: Path) -> Measured:
    app_id = f"svc-{uuid.uuid4().hex[:6]}"
    # Created here so that polling its end offsets cannot auto-create it first.
    await create_topics(broker.bootstrap, [f"{app_id}-therapists-changelog"])
    log = work / f"{app_id}.log"
    environ = {
        "COMM_KAFKA_BROKER": broker.url,
        "COMM_APP_ID": app_id,
        "COMM_TOPIC_MATCHING": topic,
        "COMM_TOPIC_THERAPISTS": f"{app_id}-therapists",
        "COMM_TOPIC_COMMANDS": f"{app_id}-commands",
        "COMM_TOPIC_EVENTS": f"{app_id}-events",
        "COMM_TOPIC_DLQ": f"{app_id}-dlq",
        "COMM_DATABASE_URL": f"sqlite:///{work / (app_id + '.db')}",
        "COMM_PARTITIONS": str(PARTITIONS),
        "COMM_PRODUCER_MAX_BATCH_SIZE": MAX_BATCH,
        "COMM_CONSUMER_FETCH_MAX_WAIT": "50ms",
        "COMM_BROKER_SESSION_TIMEOUT": "2s",
        "COMM_BROKER_HEARTBEAT_INTERVAL": "400ms",
        "COMM_TABLE_STANDBY_REPLICAS": "0",
        "COMM_TICK_INTERVAL": "1h",
        "COMM_LOG_LEVEL": "WARNING",
        "COMM_DATA_DIR": str(work / "data"),
        "COMM_STORE": STORE,
        "COMM_WEB_HOST": "127.0.0.1",
        "COMM_WEB_PORT": str(free_port()),
    }
    process = start([sys.executable, "-m", "streams.cli", "worker"], environ, log)
    try:
        return await watch_changelog(broker.bootstrap, f"{app_id}-therapists-changelog", count, process, log)
    finally:
        stop(process)


async def one_size(
    broker: LocalBroker, events_count: int, therapists: int, repeats: int, tag: str
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Rates (events/s) and changelog bytes per event of each consumer, per repeat."""
    records = events(events_count, therapists)
    rates: dict[str, list[float]] = {"plain aiokafka": [], "bare Faust": [], "service worker": []}
    sizes: dict[str, list[float]] = {"bare Faust": [], "service worker": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for repeat in range(repeats):
            topic = f"bench-matching-{tag}-{repeat}"
            await create_topics(broker.bootstrap, [topic])
            await produce(broker.bootstrap, topic, records)
            runs = {
                "plain aiokafka": plain_aiokafka(broker.bootstrap, topic, events_count),
                "bare Faust": bare_faust(broker, topic, events_count, work),
                "service worker": service_worker(broker, topic, events_count, work),
            }
            for name, run in runs.items():
                measured = await run
                rates[name].append(events_count / measured.seconds)
                if name in sizes:
                    sizes[name].append(measured.changelog_bytes / events_count)
                print(
                    f"repeat {repeat + 1}: {name:<15} {events_count / measured.seconds:9.0f} events/s "
                    f"({measured.seconds:.2f}s, {measured.changelog_bytes / events_count:,.0f} changelog bytes/event)",
                    flush=True,
                )
    return rates, sizes


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--therapists", type=int, default=4_000)
    parser.add_argument(
        "--per-therapist", type=int, nargs="+", help="requests per therapist (instead of --therapists), one row each"
    )
    parser.add_argument("--repeats", type=int, default=3)
    add_producer_batch_option(parser)
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb", help="both apps' table store")
    args = parser.parse_args()
    global MAX_BATCH, STORE
    MAX_BATCH = PRODUCER_MAX_BATCH[args.producer_batch]
    STORE = args.store
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_path=Path(tmp) / "tansu.log") as broker:
        if not args.per_therapist:
            results, _ = await one_size(broker, args.events, args.therapists, args.repeats, "all")
            print(
                f"\n{args.events} match.created events over {args.therapists} therapists, {PARTITIONS} partitions, "
                f"producer batching: {args.producer_batch}, store: {STORE}, median of {args.repeats} runs:\n"
            )
            medians = print_medians("consumer", "events/s", results)
            print(f"\nservice / bare Faust = {medians['service worker'] / medians['bare Faust']:.2f}")
            print(f"service / plain aiokafka = {medians['service worker'] / medians['plain aiokafka']:.2f}")
            return
        rows = []
        for k in args.per_therapist:
            rates, sizes = await one_size(broker, args.events, max(1, args.events // k), args.repeats, f"k{k}")
            rows.append((k, {n: statistics.median(v) for n, v in rates.items()}, sizes))
    print(
        f"\n{args.events} match.created events, K requests per therapist, {PARTITIONS} partitions, "
        f"producer batching: {args.producer_batch}, store: {STORE}, medians of {args.repeats} runs:\n"
    )
    print(
        "| K | plain aiokafka (events/s) | bare Faust (events/s) | service (events/s) | service / bare Faust "
        "| changelog bytes/event, bare Faust | changelog bytes/event, service |"
    )
    print("|---|---|---|---|---|---|---|")
    for k, median, sizes in rows:
        print(
            f"| {k} | {median['plain aiokafka']:.0f} | {median['bare Faust']:.0f} | {median['service worker']:.0f} "
            f"| {median['service worker'] / median['bare Faust']:.2f} "
            f"| {statistics.median(sizes['bare Faust']):,.0f} | {statistics.median(sizes['service worker']):,.0f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
