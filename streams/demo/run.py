"""``commsvc demo``: the whole pipeline on one machine, on a realistic scenario.

Starts an embedded Kafka-compatible broker (Tansu), a local SMTP capture that writes
every email as an ``.eml`` file, and a real worker on a SQLite file; then plays a
scenario with intervals short enough that batching and the weekly contact limit
are visible within a minute, and checks and summarises what happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.demo.broker import LocalBroker, free_port
from streams.demo.observed import Observed, say
from streams.demo.scenario import (
    APP_ID,
    BATCH_EVERY,
    BERLIN,
    FOLLOW_UP_AFTER,
    INTERVAL,
    THERAPISTS,
    input_event,
    match_event,
    status_event,
    therapist_event,
)
from streams.demo.smtp_capture import SmtpCapture
from streams.demo.summary import NO_CALL, summary_checks


class Demo:
    def __init__(self, output: Path) -> None:
        self.output = output
        self.observed = Observed()
        self.names = {t[0]: " ".join(p for p in (t[2], t[3], t[4]) if p) for t in THERAPISTS}

    async def run(self) -> int:
        self._prepare_output()
        say(self.observed, f"output directory: {self.output}")
        broker = LocalBroker(log_path=self.output / "broker.log").start()
        say(self.observed, f"embedded broker (Tansu) listening on {broker.bootstrap}")
        smtp = SmtpCapture(self.output / "emails").start()
        say(self.observed, f"SMTP capture listening on 127.0.0.1:{smtp.port}, writing .eml files")
        worker = self._start_worker(broker, smtp)
        try:
            await self._wait_ready(worker)
            return await self._play(broker)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
            smtp.stop()
            broker.stop()

    def _prepare_output(self) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        # The broker starts empty: table state left by an earlier run would not match it.
        for stale in ("emails", "data"):
            shutil.rmtree(self.output / stale, ignore_errors=True)
        for stale in ("demo.db", "demo.db-wal", "demo.db-shm", "worker.log", "broker.log"):
            (self.output / stale).unlink(missing_ok=True)

    def _start_worker(self, broker: LocalBroker, smtp: SmtpCapture) -> subprocess.Popen[bytes]:
        environ = {
            **os.environ,
            "COMM_KAFKA_BROKER": broker.url,
            "COMM_APP_ID": APP_ID,
            "COMM_DATABASE_URL": f"sqlite:///{self.output / 'demo.db'}",
            "COMM_DATA_DIR": str(self.output / "data"),
            # Probes and metrics on a free local port (the default 6066 may be taken).
            "COMM_WEB_HOST": "127.0.0.1",
            "COMM_WEB_PORT": str(free_port()),
            "COMM_SMTP_HOST": "127.0.0.1",
            "COMM_SMTP_PORT": str(smtp.port),
            "COMM_BATCH_SCHEDULE": f"{BATCH_EVERY}s",
            "COMM_CONTACT_INTERVAL": f"{INTERVAL}s",
            "COMM_FOLLOW_UP_AFTER": f"{FOLLOW_UP_AFTER}s",
            "COMM_CALL_MIN_NOTICE": "1h",
            "COMM_CALL_CAPACITY": "1",  # one person makes the calls: they do not overlap
            "COMM_TICK_INTERVAL": "250ms",
            "COMM_POLL_INTERVAL": "250ms",
            "COMM_PARTITIONS": "4",
            "COMM_PRODUCER_MAX_BATCH_SIZE": "1",
            "COMM_CONSUMER_FETCH_MAX_WAIT": "20ms",
            "COMM_BROKER_SESSION_TIMEOUT": "2s",
            "COMM_BROKER_HEARTBEAT_INTERVAL": "400ms",
            "COMM_TABLE_STANDBY_REPLICAS": "0",
            "COMM_LOG_LEVEL": "INFO",
        }
        log = open(self.output / "worker.log", "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"], env=environ, stdout=log, stderr=subprocess.STDOUT
            )
        finally:
            log.close()

    async def _wait_ready(self, worker: subprocess.Popen[bytes]) -> None:
        log = self.output / "worker.log"
        deadline = time.monotonic() + 60
        while b"commsvc worker ready" not in log.read_bytes():
            if worker.poll() is not None or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                raise RuntimeError(f"the worker did not start; last log lines:\n{tail}")
            await asyncio.sleep(0.1)  # polling the worker's log for its ready line
        say(self.observed, "worker ready (SQLite database demo.db, schema migrated)")

    async def _play(self, broker: LocalBroker) -> int:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        consumer = AIOKafkaConsumer(
            "communication-events",
            "communication-dlq",
            bootstrap_servers=broker.bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            fetch_max_wait_ms=50,
        )
        await producer.start()
        await consumer.start()
        watcher = asyncio.create_task(self._watch(consumer))
        try:
            await self._scenario(producer)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await consumer.stop()
            await producer.stop()
        return self._summary()

    async def _send(
        self, producer: AIOKafkaProducer, topic: str, key: object, document: dict[str, Any] | bytes
    ) -> None:
        value = document if isinstance(document, bytes) else json.dumps(document).encode()
        await producer.send_and_wait(topic, value, key=str(key).encode())

    async def _scenario(self, producer: AIOKafkaProducer) -> None:
        say(self.observed, "phase 1: 12 therapists register; 26 patients are proposed to them")
        for entry in THERAPISTS[:12]:
            await self._send(producer, "therapist-events", entry[0], therapist_event(entry))
        request_id = 100
        plan = {1: 4, 2: 1, 3: 3, 4: 2, 5: 1, 6: 2, 7: 5, 8: 1, 9: 2, 10: 1, 11: 2, 12: 2}
        first_batch: dict[int, list[int]] = {}
        for therapist_id, count in plan.items():
            for _ in range(count):
                request_id += 1
                first_batch.setdefault(therapist_id, []).append(request_id)
                await self._send(
                    producer,
                    "matching-events",
                    request_id,
                    match_event(request_id, therapist_id, waiting_days=30 + (request_id * 13) % 90),
                )
        say(self.observed, "           two requests for Dr. Johanna Braun, who has not registered yet")
        for n in range(2):
            request_id += 1
            await self._send(producer, "matching-events", request_id, match_event(request_id, 13, 60 + n))
        cancelled = first_batch[7][1]
        say(self.observed, f"           request {cancelled} is withdrawn before any email goes out")
        await self._send(producer, "matching-events", cancelled, status_event(cancelled, 7, "withdrawn"))
        duplicate = match_event(first_batch[3][0], 3, 45)
        say(self.observed, "           one event is delivered twice; two messages are malformed")
        await self._send(producer, "matching-events", first_batch[3][0], duplicate)
        await self._send(producer, "matching-events", first_batch[3][0], duplicate)
        await self._send(producer, "matching-events", "broken", b"{ this is not JSON")
        broken_therapist = therapist_event(THERAPISTS[5])
        broken_therapist["payload"]["email"] = "alex.kaya-at-praxis"
        await self._send(producer, "therapist-events", 6, broken_therapist)

        await self._until(lambda: len(self.observed.sent) >= 12, "the first batch run's 12 emails", 30)
        say(self.observed, "phase 2: Paul Neumann answers by email (so no follow-up call for him);")
        answer = {
            "email_id": self.observed.sent[12][0][1],
            "received_at": datetime.now(UTC).isoformat(),
            "content": "Leider derzeit keine Plätze frei.",
            "responses": [{"placement_request_id": r, "outcome": "no_capacity"} for r in first_batch[12]],
        }
        await self._send(
            producer, "communication-commands", 12, input_event("communication.record_email_response", answer)
        )
        say(self.observed, "         Dr. Braun registers; 8 more patients for therapists emailed already;")
        say(self.observed, "         a therapist accepts a patient (confirmation goes out at once)")
        await self._send(producer, "therapist-events", 13, therapist_event(THERAPISTS[12]))
        for therapist_id in (1, 1, 2, 3, 3, 4, 5, 9):
            request_id += 1
            await self._send(producer, "matching-events", request_id, match_event(request_id, therapist_id, 10))
        accepted = first_batch[10][0]
        await self._send(producer, "matching-events", accepted, status_event(accepted, 10, "accepted"))
        say(self.observed, f"         therapists 1-5 and 9 must wait {INTERVAL}s after their first email")
        await self._until(
            lambda: (
                all(
                    len([s for s in self.observed.sent[t] if self.observed.kinds.get(s[1]) == "contact_request"]) >= 2
                    for t in (1, 2, 3, 4, 5, 9)
                )
                and 13 in self.observed.sent
                and any(self.observed.kinds.get(s[1]) == "confirmation" for s in self.observed.sent[10])
            ),
            "the second round of emails",
            INTERVAL + 30,
        )
        say(self.observed, f"phase 3: emails unanswered after {FOLLOW_UP_AFTER}s get a call in the therapist's hours")
        await self._until(
            lambda: (
                len(self.observed.calls) >= 10
                and any(self.observed.kinds.get(s[1]) == "follow_up" for s in self.observed.sent[6])
            ),
            "the follow-up calls and Alex Kaya's follow-up email",
            FOLLOW_UP_AFTER + INTERVAL + 20,
        )
        await self._until(
            lambda: len(self.observed.dead) >= 2 and len(self.observed.dropped) >= 1, "the dead letters", 10
        )

    async def _until(self, condition: Any, what: str, within: float) -> None:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            await asyncio.sleep(0.1)  # the watcher task records events as they arrive

    async def _watch(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            document = json.loads(record.value)
            if record.topic == "communication-dlq":
                self.observed.dead.append(document["reason"])
                say(self.observed, f"dead letter from {document['source_topic']}: {document['reason']}")
                continue
            payload = document["payload"]
            kind = document["event_type"].removeprefix("communication.")
            therapist_id = payload.get("therapist_id")
            if kind == "email_created":
                self.observed.templates[payload["email_id"]] = payload["template"]
                self.observed.kinds[payload["email_id"]] = payload["kind"]
            elif kind == "email_sent":
                count = len(payload["placement_request_ids"])
                self.observed.sent[therapist_id].append((self.observed.now(), payload["email_id"], payload["sent_at"]))
                template = self.observed.templates.get(payload["email_id"], "?")
                say(self.observed, f"email sent to {self.names[therapist_id]:<26} {template:<16} {count} request(s)")
            elif kind == "phone_call_scheduled":
                local = datetime.fromisoformat(payload["scheduled_at"]).astimezone(BERLIN)
                when = local.strftime("%a %d.%m. %H:%M")
                self.observed.calls[therapist_id] = (when, payload["placement_request_ids"])
                requests = len(payload["placement_request_ids"])
                say(
                    self.observed, f"call booked with {self.names[therapist_id]:<26} {when}, {requests} open request(s)"
                )
            elif kind == "placement_dropped":
                self.observed.dropped.append((therapist_id, payload["placement_request_id"], payload["reason"]))
                say(self.observed, f"request {payload['placement_request_id']} dropped ({payload['reason']})")

    def _summary(self) -> int:
        observed = self.observed
        print("\nSummary")
        print("-------")
        print(f"{'therapist':<28} {'emails':>6}  templates (seconds after start)")
        for therapist_id, name in sorted(self.names.items()):
            sent = observed.sent.get(therapist_id, [])
            shown = ", ".join(f"{observed.templates.get(e, '?')} ({t:.1f})" for t, e, _ in sent)
            print(f"{name:<28} {len(sent):>6}  {shown}")
        print("\nFollow-up calls (emails still unanswered after the follow-up time):")
        for therapist_id, (when, requests) in sorted(observed.calls.items()):
            print(f"  {self.names[therapist_id]:<28} {when} Berlin time, requests {', '.join(map(str, requests))}")
        for therapist_id, reason in NO_CALL:
            print(f"  {self.names[therapist_id]:<28} no call: {reason}")
        total = sum(len(v) for v in observed.sent.values())
        emails = sorted((self.output / "emails").glob("*.eml"))
        print(f"\n{total} emails sent ({len(emails)} .eml files in {self.output / 'emails'})")
        print(f"{len(observed.dropped)} request(s) dropped, {len(observed.dead)} message(s) dead-lettered")
        checks = summary_checks(observed, self.names, len(emails))
        print("\nChecks:")
        for check in checks:
            print(f"  {check.line()}")
        print(f"database: {self.output / 'demo.db'}   worker log: {self.output / 'worker.log'}")
        problems = [problem for check in checks for problem in check.problems]
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        return 1 if problems else 0


def run_demo(output: str) -> int:
    try:
        return asyncio.run(Demo(Path(output).resolve()).run())
    except (RuntimeError, TimeoutError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
