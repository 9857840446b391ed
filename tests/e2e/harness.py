"""End-to-end harness: the real worker process on a Tansu broker, PostgreSQL and an
aiosmtpd server, driven through Kafka topics the way other services drive it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import create_engine, text

from streams.contract.catalogue import messages
from streams.contract.schemas import message_json_schema
from streams.demo.broker import LocalBroker, free_port
from streams.demo.smtp_capture import Received, SmtpCapture
from tests.events import envelope
from tests.services import postgres_database
from tests.waiting import until

T = TypeVar("T")

READY_LINE = b"commsvc worker ready"

# Short intervals so that the weekly rule and batching play out in seconds.
FAST = {
    "COMM_BATCH_SCHEDULE": "2s",
    "COMM_CONTACT_INTERVAL": "8s",
    "COMM_FOLLOW_UP_AFTER": "1h",
    "COMM_TICK_INTERVAL": "200ms",
    "COMM_POLL_INTERVAL": "200ms",
    "COMM_PARTITIONS": "4",
    # Tansu: one record per batch for changelog recovery, short fetch waits,
    # and a short session so that a worker joins its group in ~1 s.
    "COMM_PRODUCER_MAX_BATCH_SIZE": "1",
    "COMM_CONSUMER_FETCH_MAX_WAIT": "50ms",
    "COMM_BROKER_SESSION_TIMEOUT": "2s",
    "COMM_BROKER_HEARTBEAT_INTERVAL": "400ms",
    "COMM_LOG_LEVEL": "INFO",
    # The default (auto) would give every worker a delivery process of its own on a
    # two-core machine, where three test processes each run workers already; the
    # tests that are about the delivery process ask for it. The connections keep
    # their default (3), so the priority classes' order is tested over several.
    "COMM_DELIVERY_PROCESS": "false",
}


@dataclass
class Topics:
    matching: str
    therapists: str
    commands: str
    events: str
    dlq: str

    @classmethod
    def unique(cls, prefix: str) -> Topics:
        return cls(*(f"{prefix}-{name}" for name in ("matching", "therapists", "commands", "events", "dlq")))

    def environ(self) -> dict[str, str]:
        return {
            "COMM_TOPIC_MATCHING": self.matching,
            "COMM_TOPIC_THERAPISTS": self.therapists,
            "COMM_TOPIC_COMMANDS": self.commands,
            "COMM_TOPIC_EVENTS": self.events,
            "COMM_TOPIC_DLQ": self.dlq,
        }


class WorkerProcess:
    """One ``commsvc worker`` subprocess; its log goes to a file the test can read."""

    def __init__(self, environ: dict[str, str], log_path: Path) -> None:
        self.environ = environ
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.ready_after: float | None = None

    def start(self) -> WorkerProcess:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**os.environ, **self.environ},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    @property
    def web_port(self) -> int:
        return int(self.environ["COMM_WEB_PORT"])

    def url(self, path: str) -> str:
        """An address on the worker's web server (probes, metrics)."""
        return f"http://127.0.0.1:{self.web_port}{path}"

    @property
    def data_dir(self) -> Path:
        return Path(self.environ["COMM_DATA_DIR"])

    def new_log(self) -> bytes:
        return self.log_path.read_bytes()[self._offset :]

    async def wait_ready(self, timeout: float = 40.0) -> float:
        def ready() -> bool:
            if READY_LINE in self.new_log():
                return True
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited ({self.process.returncode}):\n{self.tail()}")
            return False

        # polling the log file for the ready line
        await until(ready, timeout, lambda: f"the worker to be ready:\n{self.tail()}")
        self.ready_after = time.monotonic() - self.started_at
        return self.ready_after

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM and wait; returns how long the worker took to stop."""
        return self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, signum: int, timeout: float) -> float:
        assert self.process is not None
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the worker did not stop within {timeout}s of signal {signum}:\n{self.tail()}"
            ) from None
        return time.monotonic() - started

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _rfc3339(value: object) -> bool:
    """jsonschema checks "date-time" only with an optional package: checked here, with
    the offset CONTRACT §1 requires."""
    if not isinstance(value, str):
        return True
    return "T" in value and datetime.fromisoformat(value).tzinfo is not None


class PublishedSchemas:
    """The published JSON Schema of every message on communication-events and
    communication-dlq (``commsvc schema --format jsonschema``, generated from the
    models in streams.messages.outputs). Every record the e2e tests observe there is
    checked against it as it arrives (``Collector.checks``): an event type without a
    schema is a mismatch too."""

    def __init__(self) -> None:
        formats = FormatChecker()
        formats.checks("date-time", raises=ValueError)(_rfc3339)
        published = [
            (message, Draft202012Validator(message_json_schema(message), format_checker=formats))
            for message in messages()
            if message.kind in ("output", "dead_letter")
        ]
        self.events = {message.name: v for message, v in published if message.kind == "output"}
        [self.dead_letters] = [v for message, v in published if message.kind == "dead_letter"]

    def event(self, document: Any) -> str | None:
        """What is wrong with an output event (None: nothing)."""
        event_type = document.get("event_type") if isinstance(document, dict) else None
        validator = self.events.get(event_type) if isinstance(event_type, str) else None
        if validator is None:
            return f"no published schema for event type {event_type!r}"
        return self._check(validator, document)

    def dead_letter(self, document: Any) -> str | None:
        return self._check(self.dead_letters, document)

    @staticmethod
    def _check(validator: Draft202012Validator, document: Any) -> str | None:
        error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.path))), None)
        if error is None:
            return None
        where = "/".join(str(part) for part in error.absolute_path) or "(the record)"
        return f"{where}: {error.message}"


@cache
def published_schemas() -> PublishedSchemas:
    return PublishedSchemas()


@dataclass
class Collector:
    """Reads the output topics in the background and lets tests wait for conditions."""

    bootstrap: str
    topics: list[str]
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    raw: dict[str, list[Any]] = field(default_factory=dict)
    # How to connect (security_protocol, ssl_context, sasl_*), as aiokafka takes it.
    client_options: dict[str, Any] = field(default_factory=dict)
    # topic -> what is wrong with a record of it (None: nothing); see PublishedSchemas.
    checks: dict[str, Callable[[Any], str | None]] = field(default_factory=dict)
    # The records that do not match their published schema, with what is wrong.
    mismatches: list[str] = field(default_factory=list)

    async def start(self) -> Collector:
        self.consumer = AIOKafkaConsumer(
            # No group: nothing to join, every partition from the start.
            *self.topics,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=50,
            enable_auto_commit=False,
            **self.client_options,
        )
        await self.consumer.start()
        self.changed = asyncio.Condition()
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for record in self.consumer:
            self._check(record)
            async with self.changed:
                self.raw.setdefault(record.topic, []).append(record)
                self.records.setdefault(record.topic, []).append(json.loads(record.value))
                self.changed.notify_all()

    def _check(self, record: Any) -> None:
        check = self.checks.get(record.topic)
        if check is None:
            return
        try:
            problem = check(json.loads(record.value))
        except ValueError as exc:
            problem = f"not JSON: {exc}"
        if problem is not None:
            self.mismatches.append(
                f"{record.topic}[{record.partition}]@{record.offset} does not match its published schema: "
                f"{problem}\n{record.value.decode(errors='replace')[:2000]}"
            )

    def raise_mismatch(self) -> None:
        """Fail the test at the first record that does not match its published schema."""
        if self.mismatches:
            raise AssertionError(self.mismatches[0])

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.consumer.stop()

    def of(self, topic: str, event_type: str | None = None, **payload: Any) -> list[dict[str, Any]]:
        found = []
        for document in self.records.get(topic, []):
            if event_type is not None and document.get("event_type") != event_type:
                continue
            body = document.get("payload", document)
            if all(body.get(k) == v for k, v in payload.items()):
                found.append(document)
        return found

    async def wait_for(self, check: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
        async def satisfied() -> T:
            async with self.changed:
                self.raise_mismatch()
                while not (result := check()):
                    await self.changed.wait()
                    self.raise_mismatch()
                return result

        try:
            return await asyncio.wait_for(satisfied(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


class Publisher:
    def __init__(self, bootstrap: str, client_options: dict[str, Any] | None = None) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, **(client_options or {}))

    async def start(self) -> Publisher:
        await self.producer.start()
        return self

    async def send(self, topic: str, key: int | str | bytes | None, value: dict[str, Any] | bytes) -> None:
        raw_key = key if isinstance(key, bytes) or key is None else str(key).encode()
        raw_value = value if isinstance(value, bytes) else json.dumps(value).encode()
        await self.producer.send_and_wait(topic, raw_value, key=raw_key)

    async def stop(self) -> None:
        await self.producer.stop()


class Mailbox:
    """What the SMTP server received, by recipient."""

    def __init__(self, smtp: SmtpCapture) -> None:
        self.smtp = smtp

    def to(self, address: str) -> list[Received]:
        return [r for r in self.smtp.messages if address in r.rcpt_tos]

    async def wait_for(self, address: str, count: int, timeout: float = 30.0) -> list[Received]:
        # the SMTP server runs in its own thread
        await until(
            lambda: len(self.to(address)) >= count,
            timeout,
            lambda: f"{count} emails to {address} ({len(self.to(address))} arrived)",
        )
        return self.to(address)


def inbox_messages(inbox: Collector) -> Iterator[dict[str, Any]]:
    """The messages in the inbox records read so far, those of bundles one by one."""
    for record in next(iter(inbox.records.values()), []):
        if record.get("kind") == "bundle":
            yield from record["messages"]
        else:
            yield record


def plain_text(received: Received) -> str:
    message = received.message
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            return str(part.get_content())
    raise AssertionError("no text/plain part")


def query(database_url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql), params))
    finally:
        engine.dispose()


@dataclass
class Service:
    """Everything one end-to-end test talks to."""

    broker: LocalBroker
    topics: Topics
    database_url: str
    smtp: SmtpCapture
    mailbox: Mailbox
    publisher: Publisher
    collector: Collector
    environ: dict[str, str]
    log_path: Path
    workers: list[WorkerProcess] = field(default_factory=list)
    # Each worker on this "host" runs in a slot: a web port and a data directory of
    # its own. A worker started after another stopped takes over its slot (and its
    # local table state), as a restarted worker would.
    slots: list[WorkerProcess | None] = field(default_factory=list)
    # How the test's own clients connect to the broker (see Collector.client_options).
    client_options: dict[str, Any] = field(default_factory=dict)

    def worker(self, **overrides: str) -> WorkerProcess:
        slot = next((i for i, w in enumerate(self.slots) if w is None or not w.running), len(self.slots))
        if slot == len(self.slots):
            self.slots.append(None)
        placement = {
            "COMM_WEB_HOST": "127.0.0.1",
            "COMM_WEB_PORT": str(free_port()),
            "COMM_DATA_DIR": str(self.log_path.parent / f"data-{self.environ['COMM_APP_ID']}-{slot}"),
        }
        worker = WorkerProcess({**self.environ, **placement, **overrides}, self.log_path)
        self.workers.append(worker)
        self.slots[slot] = worker
        return worker.start()

    async def start_worker(self, **overrides: str) -> WorkerProcess:
        worker = self.worker(**overrides)
        await worker.wait_ready()
        return worker

    async def up(self, **overrides: str) -> WorkerProcess:
        """Start a worker (which creates the topics), then follow the output topics."""
        worker = await self.start_worker(**overrides)
        if not hasattr(self.collector, "task"):
            await self.collector.start()
        return worker

    async def publish(self, topic: str, documents: Iterable[dict[str, Any]], key_field: str) -> None:
        for document in documents:
            await self.publisher.send(topic, document["payload"][key_field], document)

    async def forwarded(self, kind: str, count: int, timeout: float = 60.0) -> None:
        """Wait until the worker has forwarded ``count`` inputs of ``kind`` (e.g.
        ``match_created``) to its therapist inbox. What is published for a therapist
        after that is behind them in the therapist's inbox partition, so the
        therapist agent sees them first, however the input topics were consumed."""
        inbox = Collector(
            self.broker.bootstrap,
            [f"{self.environ['COMM_APP_ID']}-therapist-inbox"],
            client_options=self.client_options,
        )
        await inbox.start()
        try:
            await inbox.wait_for(
                lambda: sum(1 for m in inbox_messages(inbox) if m.get("kind") == kind) >= count,
                timeout=timeout,
                what=f"{count} {kind} forwarded to the therapist inbox",
            )
        finally:
            await inbox.stop()

    async def therapists(self, *documents: dict[str, Any]) -> None:
        await self.publish(self.topics.therapists, documents, "therapist_id")

    async def matches(self, *documents: dict[str, Any]) -> None:
        await self.publish(self.topics.matching, documents, "placement_request_id")

    async def command(
        self, event_type: str, payload: dict[str, Any], *, key: int | None = None, event_id: str | None = None
    ) -> str:
        """Publish a command on communication-commands (keyed by therapist); its event_id."""
        document = envelope(event_type, payload, event_id=event_id, producer="staff-tool")
        therapist = key if key is not None else payload.get("therapist_id", 0)
        await self.publisher.send(self.topics.commands, therapist, document)
        return str(document["event_id"])

    async def rejection(self, command_id: str, timeout: float = 30.0) -> str:
        """The reason given for rejecting ``command_id``."""
        [found] = await self.wait_event("communication.command_rejected", timeout=timeout, command_id=command_id)
        return str(found["payload"]["reason"])

    def events(self, event_type: str | None = None, **payload: Any) -> list[dict[str, Any]]:
        return self.collector.of(self.topics.events, event_type, **payload)

    async def wait_event(
        self, event_type: str, count: int = 1, timeout: float = 30.0, *, distinct: bool = False, **payload: Any
    ) -> list[dict[str, Any]]:
        """Until ``count`` such events arrived (``distinct``: counting a repeated
        event_id once, and returning each once)."""

        def enough() -> list[dict[str, Any]]:
            found = self.events(event_type, **payload)
            if distinct:
                found = list({e["event_id"]: e for e in found}.values())
            return found if len(found) >= count else []

        return await self.collector.wait_for(enough, timeout, f"{count} x {event_type} {payload}")

    async def smtp_count(self, count: int, timeout: float = 60.0) -> None:
        """Until the SMTP server accepted at least ``count`` messages."""
        await until(lambda: len(self.smtp.messages) >= count, timeout, f"{count} emails")

    async def smtp_distinct_messages(self, count: int, timeout: float = 60.0) -> None:
        """Until ``count`` distinct Message-IDs arrived."""
        await until(
            lambda: len({r.message["Message-ID"] for r in self.smtp.messages}) >= count,
            timeout,
            f"{count} distinct emails",
        )

    async def known_for_calls(self, *therapist_ids: int, timeout: float = 30.0) -> None:
        """Until the database side has the therapists' directory entries (calls need them)."""
        wanted = set(therapist_ids)

        def mirrored() -> bool:
            rows = self.query("SELECT therapist_id FROM therapist_directory WHERE NOT deleted")
            return wanted <= {r[0] for r in rows}

        await until(mirrored, timeout, f"therapists {sorted(wanted)} in the directory")

    async def wait_log(self, text: str, timeout: float = 30.0) -> None:
        """Until the workers' log contains ``text``."""
        await until(
            lambda: text.encode() in self.log_path.read_bytes(), timeout, f"{text!r} in the worker log", every=0.1
        )

    def dead_letters(self) -> list[dict[str, Any]]:
        return self.collector.records.get(self.topics.dlq, [])

    def query(self, sql: str, **params: Any) -> list[Any]:
        return query(self.database_url, sql, **params)


@asynccontextmanager
async def open_service(
    *,
    broker: LocalBroker,
    tmp_path: Path,
    node: Any = None,
    database_url: str | None = None,
    smtp: SmtpCapture | None = None,
    client_options: dict[str, Any] | None = None,
    **settings: str,
) -> AsyncIterator[Service]:
    """Everything a test talks to, with topics and an app id of its own; workers are
    started by the test (``service.up()``) and killed on the way out. The test's own
    clients connect with ``client_options`` (aiokafka's: TLS, SASL), the workers with
    the COMM_KAFKA_* settings."""
    client_options = client_options or {}
    prefix = f"t{uuid.uuid4().hex[:8]}"
    topics = Topics.unique(prefix)
    smtp = smtp or SmtpCapture()
    smtp.start()
    async with _database(database_url) as url:
        environ = {
            **FAST,
            **topics.environ(),
            "COMM_KAFKA_BROKER": broker.url,
            "COMM_APP_ID": prefix,
            "COMM_DATABASE_URL": url,
            "COMM_SMTP_HOST": "127.0.0.1",
            "COMM_SMTP_PORT": str(smtp.port),
            **settings,
        }
        publisher = await Publisher(broker.bootstrap, client_options).start()
        collector = Collector(broker.bootstrap, [topics.events, topics.dlq], client_options=client_options)
        schemas = published_schemas()
        collector.checks = {topics.events: schemas.event, topics.dlq: schemas.dead_letter}
        log_path = tmp_path / f"worker-{prefix}.log"
        svc = Service(
            broker,
            topics,
            url,
            smtp,
            Mailbox(smtp),
            publisher,
            collector,
            environ,
            log_path,
            client_options=client_options,
        )
        try:
            yield svc
        finally:
            for worker in svc.workers:
                if worker.running:
                    worker.kill()
            if hasattr(collector, "task"):
                await collector.stop()
            await publisher.stop()
            smtp.stop()
            report = getattr(node, "rep_call", None)
            if report is not None and report.failed and log_path.exists():
                print(f"--- worker log ({log_path}) ---\n" + log_path.read_text(errors="replace")[-8000:])
            # Also a test that never waited for the mismatching record fails.
            collector.raise_mismatch()


@asynccontextmanager
async def _database(url: str | None) -> AsyncIterator[str]:
    if url is not None:
        yield url
        return
    with postgres_database() as fresh:
        yield fresh
