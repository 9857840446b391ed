"""Latency benchmark (issue 19): how long a therapist waits for what the service
sends, measured from outside the worker.

- **Confirmation**: from publishing ``match.status_changed → accepted`` to the
  confirmation's arrival at the SMTP server.
- **Batch email**: from the batch run's scheduled time to the arrival of each contact
  email it decides (this includes up to one ``COMM_TICK_INTERVAL`` before the run
  starts).
- **email_sent**: from the arrival at the SMTP server to the ``communication.email_sent``
  event reaching a consumer of communication-events.

Two loads:

- **low**: one acceptance a second (``--samples`` of them, default 200);
- **burst**: a batch run decides ``--burst`` contact emails (default 1,000) for as many
  therapists, and ``--samples`` acceptances for other therapists are published during
  the burst (evenly over its first ``--spread`` seconds): the confirmations should
  overtake the contact emails.

The worker runs with the broker settings the README gives for Tansu and otherwise
the defaults; ``--env NAME=VALUE`` adds settings (e.g. ``COMM_POLL_INTERVAL=1s`` to
see a previous default). The SMTP server (bench/smtp_sink.py) runs in a process of
its own and timestamps each arrival; the database is a fresh PostgreSQL database.

    .venv/bin/python bench/bench_latency.py [--samples 200] [--burst 1000] [--repeats 1]
        [--load low burst] [--env NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from bench_delivery import (
    REGISTERED_AT,
    DirectoryCount,
    Sink,
    email_rows,
    published,
    therapist,
    wait_for,
    wait_for_topic,
)

from streams.demo.broker import LocalBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.services import postgres_database  # noqa: E402

PATIENT = {"first_name": "Anna", "last_name": "B.", "age": 34, "insurance": "AOK", "diagnosis": "F32.1"}
# Confirmation therapists have ids from here on, so their addresses tell them apart.
CONFIRMED_BASE = 100_000
BATCH_EVERY = 60


@dataclass
class Samples:
    """Latencies in seconds, by what was measured."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, values: list[float]) -> None:
        self.values.setdefault(name, []).extend(values)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


class Run:
    """One worker on a fresh database, with a sink and a consumer of its events."""

    def __init__(self, broker: LocalBroker, database_url: str, work: Path, extra: dict[str, str]) -> None:
        self.broker = broker
        self.database_url = database_url
        self.app_id = f"lat-{uuid.uuid4().hex[:6]}"
        self.sink = Sink(work, self.app_id)
        self.environ = {
            "COMM_KAFKA_BROKER": broker.url,
            "COMM_APP_ID": self.app_id,
            "COMM_DATABASE_URL": database_url,
            "COMM_SMTP_HOST": "127.0.0.1",
            "COMM_SMTP_PORT": str(self.sink.port),
            "COMM_DATA_DIR": str(work / self.app_id),
            "COMM_WEB_HOST": "127.0.0.1",
            "COMM_WEB_PORT": str(free_port()),
            **{
                f"COMM_TOPIC_{t.upper()}": self.topic(t)
                for t in ("matching", "therapists", "commands", "events", "dlq")
            },
            "COMM_BATCH_SCHEDULE": f"{BATCH_EVERY}s",
            # The README's settings for Tansu ("Running on Tansu").
            "COMM_PRODUCER_MAX_BATCH_SIZE": "1",
            "COMM_CONSUMER_FETCH_MAX_WAIT": "20ms",
            "COMM_BROKER_SESSION_TIMEOUT": "2s",
            "COMM_BROKER_HEARTBEAT_INTERVAL": "400ms",
            "COMM_LOG_LEVEL": "WARNING",
            **extra,
        }
        self.log = work / f"{self.app_id}.log"
        self.worker: subprocess.Popen[bytes] | None = None
        self.producer: AIOKafkaProducer | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.sent_events: dict[str, float] = {}  # Message-ID -> when email_sent was consumed
        self._consuming: asyncio.Task[None] | None = None

    def topic(self, name: str) -> str:
        return f"{self.app_id}-{name}"

    async def start(self) -> None:
        with open(self.log, "wb") as out:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env={**os.environ, **self.environ},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        await wait_for_topic(self.broker, self.topic("events"), self.worker)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap, linger_ms=0)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(
            self.topic("events"),
            bootstrap_servers=self.broker.bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
        )
        await self.consumer.start()
        self._consuming = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        assert self.consumer is not None
        async for record in self.consumer:
            received = time.time()
            event = json.loads(record.value)
            if event["event_type"] == "communication.email_sent":
                self.sent_events.setdefault(event["payload"]["message_id"], received)

    async def publish(self, topic: str, event_type: str, payload: dict, key: int) -> float:
        assert self.producer is not None
        await self.producer.send_and_wait(self.topic(topic), published(event_type, payload), key=str(key).encode())
        return time.time()

    async def setup(self, therapist_ids: list[int], with_requests: bool) -> None:
        """Every therapist known (and with a waiting request, if asked) before the measurement."""
        assert self.producer is not None
        for t in therapist_ids:
            await self.producer.send(
                self.topic("therapists"), published("therapist.created", therapist(t)), key=str(t).encode()
            )
            if with_requests:
                await self.producer.send(self.topic("matching"), created(t), key=str(t).encode())
        await self.producer.flush()
        directory = DirectoryCount(self.database_url)
        try:
            await wait_for(lambda: directory.size() >= len(therapist_ids), 120, "the directory holds every therapist")
        finally:
            directory.close()

    def arrivals(self) -> dict[str, tuple[float, str]]:
        """recipient -> (arrival time, Message-ID), first arrival per recipient."""
        found: dict[str, tuple[float, str]] = {}
        for line in self.sink.path.read_text().splitlines():
            at, message_id, recipients = line.split(" ", 2)
            found.setdefault(recipients, (float(at), message_id))
        return found

    async def stop(self) -> None:
        if self._consuming is not None:
            self._consuming.cancel()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.worker is not None:
            self.worker.terminate()
            self.worker.wait(timeout=30)
        self.sink.stop()


def created(t: int) -> bytes:
    return published(
        "match.created",
        {
            "placement_request_id": t,
            "therapist_id": t,
            "patient_id": 10_000 + t,
            "patient": {"registered_at": REGISTERED_AT, **PATIENT},
        },
    )


def address(t: int) -> str:
    return therapist(t)["email"]


async def accept(run: Run, t: int) -> float:
    """A request for therapist ``t`` is accepted; when the acceptance was published."""
    assert run.producer is not None
    await run.producer.send_and_wait(run.topic("matching"), created(t), key=str(t).encode())
    return await run.publish(
        "matching",
        "match.status_changed",
        {"placement_request_id": t, "therapist_id": t, "patient_id": 10_000 + t, "new_status": "accepted"},
        t,
    )


async def low_load(run: Run, samples: int, results: Samples) -> None:
    ids = [CONFIRMED_BASE + i for i in range(samples)]
    warm_up = CONFIRMED_BASE + samples
    await run.setup([*ids, warm_up], with_requests=False)
    # Not measured: the first email after the start (the delivery process may still
    # be starting, the SMTP connections are opened).
    await accept(run, warm_up)
    await wait_for(lambda: address(warm_up) in run.arrivals(), 60, "the warm-up confirmation arrived")
    published_at: dict[int, float] = {}
    start = time.monotonic()
    for i, t in enumerate(ids):
        await asyncio.sleep(max(0.0, start + i - time.monotonic()))  # one event a second, on the clock
        published_at[t] = await accept(run, t)
    await wait_for(lambda: len(run.arrivals()) >= samples + 1, 120, "every confirmation arrived")
    arrivals = run.arrivals()
    slowest = max(range(samples), key=lambda i: arrivals[address(ids[i])][0] - published_at[ids[i]])
    print(f"  low load: the slowest confirmation was sample {slowest + 1} of {samples}", flush=True)
    await record(run, published_at, "confirmation, low load", results)


async def burst(run: Run, emails: int, samples: int, spread: float, results: Samples) -> None:
    contacted = list(range(1, emails + 1))
    confirmed = [CONFIRMED_BASE + i for i in range(samples)]
    boundary = (int(time.time()) // BATCH_EVERY + 1) * BATCH_EVERY
    await run.setup(contacted, with_requests=True)
    await run.setup(confirmed, with_requests=False)
    waiting = DirectoryCount(run.database_url)
    try:
        await wait_for(lambda: waiting.size("waiting_requests") >= emails, 120, "every request waits")
    finally:
        waiting.close()
    if time.time() > boundary - 1 or run.arrivals():
        raise RuntimeError("the setup was not finished before the batch run; use a smaller --burst")
    await asyncio.sleep(boundary - time.time())  # waiting for the batch run's point on the clock
    published_at: dict[int, float] = {}
    for i, t in enumerate(confirmed):
        await asyncio.sleep(max(0.0, boundary + spread * i / samples - time.time()))
        published_at[t] = await accept(run, t)
    await wait_for(lambda: len(run.arrivals()) >= emails + samples, 300, "every email arrived")
    arrivals = run.arrivals()
    results.add("contact email, burst (from the run)", [arrivals[address(t)][0] - boundary for t in contacted])
    await record(run, published_at, "confirmation, burst", results)
    confirmations_last = max(arrivals[address(t)][0] for t in confirmed)
    contacts_last = max(arrivals[address(t)][0] for t in contacted)
    print(
        f"  burst: last confirmation {confirmations_last - boundary:.2f}s, "
        f"last contact email {contacts_last - boundary:.2f}s after the run",
        flush=True,
    )


async def record(run: Run, published_at: dict[int, float], name: str, results: Samples) -> None:
    arrivals = run.arrivals()
    expected = {arrivals[address(t)][1] for t in published_at}
    await wait_for(lambda: expected <= run.sent_events.keys(), 60, "every email_sent event consumed")
    results.add(name, [arrivals[address(t)][0] - at for t, at in published_at.items()])
    # Where the time goes: up to the email's storing (three Kafka hops), and after it (delivery).
    stored = stored_at(run.database_url)
    results.add(f"  published -> stored ({name})", [stored[address(t)] - at for t, at in published_at.items()])
    results.add(f"  stored -> arrived ({name})", [arrivals[address(t)][0] - stored[address(t)] for t in published_at])
    sent = []
    for t in published_at:
        arrived, message_id = arrivals[address(t)]
        if message_id in run.sent_events:
            sent.append(run.sent_events[message_id] - arrived)
    results.add(f"email_sent after arrival ({name})", sent)


def stored_at(database_url: str) -> dict[str, float]:
    """recipient -> when the worker stored the email (its ``created_at``)."""
    from datetime import UTC

    rows = email_rows(database_url, "recipient_email, created_at")
    return {to: (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() for to, at in rows}


def report(results: Samples) -> None:
    print("| latency | samples | p50 (ms) | p99 (ms) | max (ms) |")
    print("|---|---|---|---|---|")
    for name, values in results.values.items():
        if not values:
            print(f"| {name} | 0 | | | |")
            continue
        ms = [v * 1000 for v in values]
        print(f"| {name} | {len(ms)} | {statistics.median(ms):.0f} | {percentile(ms, 0.99):.0f} | {max(ms):.0f} |")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--burst", type=int, default=1000, help="contact emails decided by the burst's batch run")
    parser.add_argument("--spread", type=float, default=2.0, help="seconds over which the burst's acceptances go")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--load", nargs="+", choices=["low", "burst"], default=["low", "burst"])
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the worker")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    results = Samples()
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_path=Path(tmp) / "tansu.log") as broker:
        for repeat in range(args.repeats):
            for load in args.load:
                if load == "burst":  # the setup gets a whole batch interval
                    await asyncio.sleep(BATCH_EVERY - time.time() % BATCH_EVERY + 0.5)  # a point on the clock
                with postgres_database() as url:
                    run = Run(broker, url, Path(tmp), extra)
                    await run.start()
                    try:
                        if load == "low":
                            await low_load(run, args.samples, results)
                        else:
                            await burst(run, args.burst, args.samples, args.spread, results)
                    finally:
                        await run.stop()
                print(f"repeat {repeat + 1}, {load} load: done", flush=True)
    settings = ", ".join(f"{k}={v}" for k, v in extra.items()) or "defaults"
    print(f"\nworker settings: Tansu's (README) and {settings}; {args.repeats} run(s) pooled:\n")
    report(results)


if __name__ == "__main__":
    asyncio.run(main())
