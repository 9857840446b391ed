"""Delivery benchmark (issue 3): N therapists with a waiting request each -> all
emails delivered to a local SMTP server, in emails/s per worker.

In the same run, over the same messages: a bare aiosmtplib loop sending the
pre-rendered messages over one connection (the limit of SMTP on this machine).
The SMTP server runs in a process of its own and timestamps each arrival.

The setup (every therapist known, every request waiting) is finished before the
batch run that decides the emails: the worker is started just after a batch-run
boundary, and the script waits until the directory holds every therapist, well
before the next run. The worker's rate is then measured from the first to the last
arrival; the "batch run -> last email" time is reported too (it includes rendering
and storing every email). A run whose emails did not all come from that one batch
run is refused. The database is PostgreSQL (a fresh database on the local server)
or SQLite (--database sqlite).

    .venv/bin/python bench/bench_delivery.py [--therapists 1000] [--repeats 3] [--database postgresql]
        [--connections N] [--delivery-process auto|true|false] [--patients 1] [--timeline]
        [--server-delay-ms 0]

Without --connections and --delivery-process the worker runs with its defaults.
--patients N gives each therapist N waiting requests, so each email is a batch of N
patients (the bare loop sends the same messages).

--server-delay-ms D makes the SMTP server (the worker's and the bare loop's) accept
each message D milliseconds after its data, as a real server that checks and queues
mail, or one at a network's distance, would.

--timeline prints, per hundred emails, when the k-th email was stored, recorded as
sent and arrived (seconds after the batch run): it shows which stage holds up the
others.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiosmtplib
from aiokafka import AIOKafkaProducer
from bench_common import PRODUCER_MAX_BATCH, add_producer_batch_option, print_medians

from streams.demo.broker import LocalBroker, free_port
from streams.persistence.db import normalise_url
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.events import encode, envelope  # noqa: E402
from tests.services import postgres_database  # noqa: E402

# Every therapist gets the same kind of request; only the ids differ.
PATIENT = {"first_name": "Anna", "last_name": "B.", "age": 34, "insurance": "AOK", "diagnosis": "F32.1"}
REGISTERED_AT = "2026-01-01T10:00:00+01:00"


def therapist(t: int) -> dict:
    return {
        "therapist_id": t,
        "email": f"t{t}@praxis.example",
        "first_name": "Eva",
        "last_name": f"M{t}",
        "salutation": "Frau",
        "title": "Dr.",
    }


def published(event_type: str, payload: dict) -> bytes:
    return encode(envelope(event_type, payload, producer="bench"))


class Sink:
    def __init__(self, work: Path, name: str, delay_ms: float = 0.0) -> None:
        self.path = work / f"{name}.arrivals"
        self.path.touch()
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "smtp_sink.py"), str(self.path), str(self.port), str(delay_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "ready"

    def arrivals(self) -> list[float]:
        return [float(line.split(" ", 1)[0]) for line in self.path.read_text().splitlines()]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


async def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)  # polling a file the sink appends to


async def pipeline(
    broker: LocalBroker,
    database_url: str,
    therapists: int,
    work: Path,
    max_batch: str,
    delivery: dict[str, str],
    timeline: bool = False,
    patients: int = 1,
    server_delay_ms: float = 0.0,
) -> tuple[float, float, Path]:
    """(emails/s from first to last arrival, seconds from batch run to last arrival, eml dir)."""
    app_id = f"deliv-{uuid.uuid4().hex[:6]}"
    sink = Sink(work, app_id, server_delay_ms)
    every = 30 if therapists * patients <= 5000 else 60  # the setup fits in one interval
    if server_delay_ms:  # and every email arrives within it, even over one connection
        sending = therapists * (server_delay_ms / 1000 + 0.005)
        every = max(every, 30 * math.ceil((sending + 10) / 30))
    environ = {
        "COMM_KAFKA_BROKER": broker.url,
        "COMM_APP_ID": app_id,
        "COMM_DATABASE_URL": database_url,
        "COMM_SMTP_HOST": "127.0.0.1",
        "COMM_SMTP_PORT": str(sink.port),
        "COMM_DATA_DIR": str(work / "data"),
        "COMM_WEB_HOST": "127.0.0.1",
        "COMM_WEB_PORT": str(free_port()),
        **{f"COMM_TOPIC_{t.upper()}": f"{app_id}-{t}" for t in ("matching", "therapists", "commands", "events", "dlq")},
        "COMM_BATCH_SCHEDULE": f"{every}s",
        "COMM_PARTITIONS": "8",
        "COMM_PRODUCER_MAX_BATCH_SIZE": max_batch,
        "COMM_CONSUMER_FETCH_MAX_WAIT": "50ms",
        "COMM_BROKER_SESSION_TIMEOUT": "2s",
        "COMM_BROKER_HEARTBEAT_INTERVAL": "400ms",
        "COMM_TABLE_STANDBY_REPLICAS": "0",
        "COMM_POLL_INTERVAL": "200ms",
        "COMM_LOG_LEVEL": "WARNING",
        **delivery,
    }
    log = work / f"{app_id}.log"
    # Start just after a batch-run boundary: the whole interval is left for the setup.
    while time.time() % every > 1:
        await asyncio.sleep(0.1)  # waiting for a point on the clock
    measured_run = (int(time.time()) // every + 1) * every
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**os.environ, **environ},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        await producer.start()
        # Wait for the worker to create its topics, then publish everything at once.
        await wait_for_topic(broker, f"{app_id}-therapist-inbox", worker)
        for t in range(1, therapists + 1):
            await producer.send(
                f"{app_id}-therapists",
                published("therapist.created", therapist(t)),
                key=str(t).encode(),
            )
            for p in range(patients):
                request = request_id(t, p, patients)
                await producer.send(
                    f"{app_id}-matching",
                    published(
                        "match.created",
                        {
                            "placement_request_id": request,
                            "therapist_id": t,
                            "patient_id": request,
                            "patient": {"registered_at": REGISTERED_AT, **PATIENT},
                        },
                    ),
                    key=str(t).encode(),
                )
        await producer.flush()
        await producer.stop()
        directory = DirectoryCount(database_url)
        try:
            await wait_for(lambda: directory.size() >= therapists, 60, "the directory holds every therapist")
            await wait_for(
                lambda: directory.size("waiting_requests") >= therapists * patients, 120, "every request is waiting"
            )
        finally:
            directory.close()
        if time.time() > measured_run - 2:
            raise RuntimeError("the setup was not finished before the batch run; use fewer therapists")
        await asyncio.sleep(measured_run - 0.5 - time.time())  # waiting for a point on the clock
        before = cpu_seconds(worker.pid)
        await wait_for(lambda: len(sink.arrivals()) >= therapists, 300, "all emails delivered")
        after = cpu_seconds(worker.pid)
        arrivals = sorted(sink.arrivals())
        if timeline:
            print_timeline(database_url, measured_run, arrivals)
        if not measured_run <= arrivals[0] <= arrivals[-1] < measured_run + every:
            raise RuntimeError("the emails did not all come from the one batch run")
        cpu = {name: (after[name] - before.get(name, 0.0)) / therapists * 1000 for name in after}
        print("  CPU per email (ms): " + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items()), flush=True)
        peak = peak_memory_mib(worker.pid)
        print("  peak RSS (MiB): " + ", ".join(f"{name} {mib:.0f}" for name, mib in peak.items()), flush=True)
        return (therapists - 1) / (arrivals[-1] - arrivals[0]), arrivals[-1] - measured_run, sink.path
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        sink.stop()


def worker_processes(pid: int) -> dict[str, int]:
    """The worker's pid and its delivery process's, if it has one."""
    found = {"worker": pid}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if "spawn_main" in Path(f"/proc/{child}/cmdline").read_text():
            found["delivery process"] = int(child)
    return found


def cpu_seconds(pid: int) -> dict[str, float]:
    """CPU time (user + system) of the worker and of its delivery process, if any."""
    tick = os.sysconf("SC_CLK_TCK")

    def of(process: int) -> float:
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    return {name: of(process) for name, process in worker_processes(pid).items()}


def peak_memory_mib(pid: int) -> dict[str, float]:
    """The largest resident memory each of the worker's processes has had (VmHWM)."""

    def of(process: int) -> float:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM")

    return {name: of(process) for name, process in worker_processes(pid).items()}


def email_rows(database_url: str, columns: str) -> list[tuple]:
    """``SELECT columns FROM emails`` on the worker's database."""
    from sqlalchemy import create_engine, text

    engine = create_engine(normalise_url(database_url))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(f"SELECT {columns} FROM emails")).all()]
    finally:
        engine.dispose()


def print_timeline(database_url: str, start: float, arrivals: list[float]) -> None:
    rows = email_rows(database_url, "created_at, sent_at")
    stored = sorted(created.timestamp() - start for created, _ in rows)
    sent = sorted(at.timestamp() - start for _, at in rows if at is not None)
    arrived = [at - start for at in arrivals]
    print("   email   stored  recorded sent  arrived  (seconds after the batch run)")
    for k in range(0, len(stored), 100):
        print(f"  {k + 1:6d} {stored[k]:8.2f} {sent[k]:13.2f} {arrived[k]:8.2f}")


class DirectoryCount:
    """How many therapists the worker's directory holds (0 until it is migrated)."""

    def __init__(self, database_url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(normalise_url(database_url))

    def size(self, table: str = "therapist_directory") -> int:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as connection:
                return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
        except SQLAlchemyError:  # not migrated yet
            return 0

    def close(self) -> None:
        self.engine.dispose()


async def wait_for_topic(broker: LocalBroker, name: str, worker: subprocess.Popen[bytes]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 60
        while name not in await admin.list_topics():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            await asyncio.sleep(0.1)  # the worker creates its topics at start
    finally:
        await admin.close()


async def bare_loop(messages: list[bytes], work: Path, server_delay_ms: float = 0.0) -> float:
    sink = Sink(work, f"bare-{uuid.uuid4().hex[:6]}", server_delay_ms)
    try:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port, start_tls=False)
        await client.connect()
        for raw in messages:
            await client.sendmail("vermittlung@therapieplatz.example", ["t@praxis.example"], raw)
        await client.quit()
        await wait_for(lambda: len(sink.arrivals()) >= len(messages), 60, "bare loop")
        arrivals = sorted(sink.arrivals())
        return (len(messages) - 1) / (arrivals[-1] - arrivals[0])
    finally:
        sink.stop()


def request_id(therapist_id: int, index: int, patients: int) -> int:
    return therapist_id * patients + index


def rendered_messages(therapists: int, patients: int = 1) -> list[bytes]:
    """The same kind of message the worker sends, rendered once up front."""
    from zoneinfo import ZoneInfo

    from domain.batching import contact_template
    from domain.placement import PlacementRequest
    from domain.therapist import TherapistProfile
    from streams.delivery.mime import OutgoingEmail, build_message, message_id_for
    from streams.email.context import Identity, email_context
    from streams.email.rendering import Renderer

    renderer = Renderer(ZoneInfo("Europe/Berlin"))
    identity = Identity("vermittlung@therapieplatz.example", "Therapieplatz-Vermittlung")
    out = []
    for t in range(1, therapists + 1):
        recipient = therapist(t)
        requests = [
            PlacementRequest(r, r, datetime.fromisoformat(REGISTERED_AT), PATIENT)
            for r in (request_id(t, p, patients) for p in range(patients))
        ]
        profile = TherapistProfile(**recipient)
        rendered = renderer.render(contact_template(len(requests)), email_context(profile, requests, identity), t)
        outgoing = OutgoingEmail(
            message_id_for(str(uuid.uuid4()), identity.sender_email),
            identity.sender_email,
            identity.sender_name,
            recipient["email"],
            "Dr. Eva M",
            rendered.subject,
            rendered.text,
            rendered.html,
        )
        out.append(build_message(outgoing, datetime.now(UTC)).data)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--therapists", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument(
        "--connections", type=int, default=None, help="COMM_SMTP_CONNECTIONS of the worker (default: its default)"
    )
    parser.add_argument(
        "--delivery-process",
        choices=["auto", "true", "false"],
        default=None,
        help="COMM_DELIVERY_PROCESS of the worker (default: its default, auto)",
    )
    parser.add_argument("--patients", type=int, default=1, help="waiting requests per therapist (patients per email)")
    parser.add_argument("--timeline", action="store_true", help="per 100 emails: when stored, sent and arrived")
    parser.add_argument(
        "--server-delay-ms",
        type=float,
        default=0.0,
        help="the SMTP server (for the worker and the bare loop) accepts each message this late, as a real one",
    )
    add_producer_batch_option(parser)
    args = parser.parse_args()
    if not 0 <= args.server_delay_ms <= 60_000:
        parser.error("--server-delay-ms must be between 0 and 60000")
    max_batch = PRODUCER_MAX_BATCH[args.producer_batch]
    delivery = {}
    if args.connections is not None:
        delivery["COMM_SMTP_CONNECTIONS"] = str(args.connections)
    if args.delivery_process is not None:
        delivery["COMM_DELIVERY_PROCESS"] = args.delivery_process
    worker_settings = Settings.from_environ(delivery)
    messages = rendered_messages(args.therapists, args.patients)
    rates: dict[str, list[float]] = {"service worker": [], "bare aiosmtplib loop": []}
    end_to_end: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_path=Path(tmp) / "tansu.log") as broker:
        work = Path(tmp)
        for repeat in range(args.repeats):
            database = (
                contextlib.nullcontext(f"sqlite:///{work / f'r{repeat}.db'}")
                if args.database == "sqlite"
                else postgres_database()
            )
            with database as url:
                rate, total, _ = await pipeline(
                    broker,
                    url,
                    args.therapists,
                    work,
                    max_batch,
                    delivery,
                    args.timeline,
                    args.patients,
                    args.server_delay_ms,
                )
            bare = await bare_loop(messages, work, args.server_delay_ms)
            rates["service worker"].append(rate)
            rates["bare aiosmtplib loop"].append(bare)
            end_to_end.append(total)
            print(
                f"repeat {repeat + 1}: worker {rate:7.0f} emails/s (batch run -> last email {total:.1f}s), "
                f"bare loop {bare:7.0f} emails/s",
                flush=True,
            )
    where = "in a child process" if worker_settings.delivery_process else "in-process"
    defaults = "" if delivery else " (the worker's defaults)"
    print(
        f"\n{args.therapists} emails of {args.patients} patient(s), database {args.database}, "
        f"producer batching {args.producer_batch}, "
        f"{f'server accepting after {args.server_delay_ms:g} ms, ' if args.server_delay_ms else ''}"
        f"{worker_settings.smtp_connections} SMTP connection(s), delivery {where}{defaults}, "
        f"median of {args.repeats} runs:\n"
    )
    medians = print_medians("sender", "emails/s", rates)
    print(
        f"\nworker / bare loop = {medians['service worker'] / medians['bare aiosmtplib loop']:.2f}; "
        f"batch run -> last email delivered: median {statistics.median(end_to_end):.1f}s"
    )


if __name__ == "__main__":
    asyncio.run(main())
