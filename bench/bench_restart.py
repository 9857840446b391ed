"""Restart benchmark (issue 14): how soon a worker is ready again, and how much
memory it holds, with N therapists in its table, for the memory and the RocksDB
store in the same run; and the state's bytes per therapist.

The table state is made by the domain's own rules (domain/therapist_state.py): each
therapist gets a directory entry with phone hours, one to three contact emails sent
over the last twelve weeks (with the requests they carried), and one to four
requests waiting now, the patients' details passed in as a match.created carries
them (the aggregate keeps ids and times only; the details live in the database).
Replay memory is what those events leave. Each state is encoded by the table's
codec and written onto the table's changelog as the therapist agent's write would
be: same key, same partition. One record per therapist, as in a compacted
changelog: the memory store's best case.

For each store and repeat, in a data directory of its own:
  1. a worker starts on that changelog and recovers all of it (RocksDB: into its
     databases; this recovery is reported too), then stops (SIGTERM);
  2. the worker starts again, and is measured:
     - restart-to-ready: process start -> "commsvc worker ready";
     - start -> assigned: imports, migrations, topic check and the group join (it
       depends on the broker's session settings);
     - recovery: partitions assigned -> table recovered, as the worker reports it,
       with the changelog records it read;
     - RSS: the worker's resident memory 1 s after it is ready.
The bytes: the median encoded value (the changelog record), and the RocksDB
directory's size on disk / N after the measured restart.

    .venv/bin/python bench/bench_restart.py [--therapists 10000 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from domain.placement import PlacementRequest
from domain.therapist import TherapistProfile
from domain.therapist_state import TherapistState
from streams.agents.ticks import partition_of
from streams.demo.broker import LocalBroker, free_port
from streams.messages.codec import dumps, state_to_wire

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 8
STORES = ("memory", "rocksdb")
INTERVAL = timedelta(days=7)
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
FIRST = ["Anna", "Ben", "Clara", "David", "Elif", "Felix", "Greta", "Hannah", "Ilias", "Jana"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann"]
DIAGNOSES = ["F32.1", "F41.1", "F43.1", "F40.1", "F33.1", "F50.2"]
HOURS = {"monday": [{"start": "09:00", "end": "12:00"}], "thursday": [{"start": "14:00", "end": "17:30"}]}
READY = re.compile(r"^(\S+ \S+) INFO \[streams\.bootstrap\] commsvc worker ready", re.MULTILINE)
RECOVERED = re.compile(
    r"^(\S+ \S+) INFO \[streams\.kafka\.store\] table recovered in ([\d.]+)s .*: (\d+) changelog records read",
    re.MULTILINE,
)


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.request = 0

    def event(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def next_request(self) -> int:
        self.request += 1
        return self.request


def _request(ids: _Ids, rng: random.Random) -> PlacementRequest:
    request_id = ids.next_request()
    patient = {
        "registered_at": (NOW - timedelta(days=rng.randint(30, 300))).isoformat(),
        "first_name": rng.choice(FIRST),
        "last_name": f"{rng.choice(LAST)[0]}.",
        "age": rng.randint(18, 80),
        "gender": rng.choice(["weiblich", "männlich", "divers"]),
        "insurance": rng.choice(["AOK", "TK", "Barmer", "privat"]),
        "diagnosis": rng.choice(DIAGNOSES),
        "availability": "vormittags",
        "notes": "Wünscht Termine am Vormittag, kann kurzfristig einspringen.",
    }
    registered_at = datetime.fromisoformat(patient["registered_at"])
    return PlacementRequest(request_id, 10_000_000 + request_id, registered_at, patient=patient)


def therapist_state(therapist_id: int, ids: _Ids, rng: random.Random) -> TherapistState:
    """One therapist as the rules leave it after a realistic history."""
    state = TherapistState(therapist_id)
    profile = TherapistProfile(
        therapist_id=therapist_id,
        email=f"praxis.{rng.choice(LAST).lower()}.{therapist_id}@therapie-beispiel.de",
        first_name=rng.choice(FIRST),
        last_name=rng.choice(LAST),
        title=rng.choice(["Dr.", None]),
        salutation=rng.choice(["Frau", "Herr"]),
        phone=f"+49 30 {rng.randint(1_000_000, 9_999_999)}",
        availability=HOURS,
    )
    registered = NOW - timedelta(days=120)
    state.therapist_upserted(ids.event(), registered, profile, registered)
    # The send history: contact emails in some of the last twelve weeks (at most
    # one per fortnight, so that the weekly rule lets each of them go).
    for fortnights_ago in sorted(rng.sample(range(1, 7), rng.randint(1, 3)), reverse=True):
        run_at = NOW - timedelta(weeks=2 * fortnights_ago, hours=rng.randint(0, 48))
        for _ in range(rng.randint(1, 3)):
            state.match_created(ids.event(), _request(ids, rng), run_at - timedelta(days=rng.randint(1, 6)))
        decision = state.plan_contact_email(run_at, INTERVAL)
        assert decision is not None
        state.email_sent(decision.email_key, True, run_at + timedelta(minutes=rng.randint(1, 30)), INTERVAL)
    # Waiting now for the next batch run.
    for _ in range(rng.randint(1, 4)):
        state.match_created(ids.event(), _request(ids, rng), NOW - timedelta(hours=rng.randint(1, 160)))
    return state


def changelog_records(therapists: int, seed: int = 14) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of each therapist's table write."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    records = []
    for therapist_id in range(1, therapists + 1):
        value = dumps(state_to_wire(therapist_state(therapist_id, ids, rng)))
        records.append((partition_of(therapist_id, PARTITIONS), str(therapist_id).encode(), value))
    return records


async def write_changelog(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        # Tansu reports the first offset of a partition's last batch as its end, so
        # each partition's last record goes in a batch of its own.
        last: dict[int, tuple[bytes, bytes]] = {}
        for partition, key, value in records:
            if partition in last:
                previous = last[partition]
                await producer.send(topic, previous[1], key=previous[0], partition=partition)
            last[partition] = (key, value)
        await producer.flush()
        for partition, (key, value) in sorted(last.items()):
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


@dataclass
class Restart:
    first_recovery: float  # the first start's, from the whole changelog
    ready_after: float
    assigned_after: float
    recovery: float
    records_read: int
    rss_bytes: int
    disk_bytes: int


def _log_time(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _disk_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


class Worker:
    def __init__(self, environ: dict[str, str], log: Path) -> None:
        self.environ = environ
        self.log = log

    async def start(self, timeout: float = 600) -> tuple[subprocess.Popen[bytes], float, str]:
        """Start, wait for the ready line; (process, wall-clock start, its log)."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            started = time.time()
            process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env={**os.environ, **self.environ},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + timeout
        while not READY.search(text := self.log.read_bytes()[offset:].decode(errors="replace")):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the worker did not get ready:\n{text[-3000:]}")
            await asyncio.sleep(0.02)  # polling the worker's log for its ready line
        return process, started, text

    @staticmethod
    def stop(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def restart(broker: LocalBroker, app_id: str, store: str, work: Path) -> Restart:
    data_dir = work / f"data-{store}-{uuid.uuid4().hex[:6]}"
    environ = {
        "COMM_KAFKA_BROKER": broker.url,
        "COMM_APP_ID": app_id,
        "COMM_TOPIC_MATCHING": f"{app_id}-matching",
        "COMM_TOPIC_THERAPISTS": f"{app_id}-therapists",
        "COMM_TOPIC_COMMANDS": f"{app_id}-commands",
        "COMM_TOPIC_EVENTS": f"{app_id}-events",
        "COMM_TOPIC_DLQ": f"{app_id}-dlq",
        "COMM_DATABASE_URL": f"sqlite:///{work / (app_id + '.db')}",
        "COMM_PARTITIONS": str(PARTITIONS),
        "COMM_STORE": store,
        "COMM_DATA_DIR": str(data_dir),
        "COMM_WEB_HOST": "127.0.0.1",
        "COMM_WEB_PORT": str(free_port()),
        # Tansu (README "Running on Tansu"); no standby replicas with one worker.
        "COMM_PRODUCER_MAX_BATCH_SIZE": "1",
        "COMM_CONSUMER_FETCH_MAX_WAIT": "50ms",
        "COMM_BROKER_SESSION_TIMEOUT": "2s",
        "COMM_BROKER_HEARTBEAT_INTERVAL": "400ms",
        "COMM_TABLE_STANDBY_REPLICAS": "0",
        # No batch run, so the table is not written while it is measured.
        "COMM_TICK_INTERVAL": "1h",
        "COMM_LOG_LEVEL": "INFO",
    }
    worker = Worker(environ, work / f"{app_id}-{store}.log")
    first, _, first_log = await worker.start()  # recovers the whole changelog (RocksDB: into its databases)
    worker.stop(first)
    [(_, first_recovery, _)] = RECOVERED.findall(first_log)

    process, started, log = await worker.start()
    await asyncio.sleep(1.0)
    rss = _rss(process.pid)
    worker.stop(process)
    [ready_at] = READY.findall(log)
    [(recovered_at, recovery, read)] = RECOVERED.findall(log)
    disk = _disk_bytes(data_dir / app_id) if store == "rocksdb" else 0
    return Restart(
        first_recovery=float(first_recovery),
        ready_after=_log_time(ready_at) - started,
        assigned_after=_log_time(recovered_at) - float(recovery) - started,
        recovery=float(recovery),
        records_read=int(read),
        rss_bytes=rss,
        disk_bytes=disk,
    )


def _runs(values: list[float], unit: str = "", digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}{unit}" for v in values)


def report(therapists: int, value_bytes: list[int], results: dict[str, list[Restart]]) -> bool:
    mib = 1024 * 1024
    print(f"\n{therapists:,} therapists, {PARTITIONS} partitions, median of {len(results['rocksdb'])} run(s):\n")
    print(
        "| store | restart → ready (s) | start → assigned (s) | recovery (s) | records read | RSS (MiB) "
        "| first start's recovery (s) |"
    )
    print("|---|---|---|---|---|---|---|")
    medians: dict[str, dict[str, float]] = {}
    for store, runs in results.items():
        m = {
            "ready": statistics.median(r.ready_after for r in runs),
            "assigned": statistics.median(r.assigned_after for r in runs),
            "recovery": statistics.median(r.recovery for r in runs),
            "read": statistics.median(r.records_read for r in runs),
            "rss": statistics.median(r.rss_bytes for r in runs) / mib,
            "first": statistics.median(r.first_recovery for r in runs),
        }
        medians[store] = m
        print(
            f"| {store} | {m['ready']:.2f} ({_runs([r.ready_after for r in runs])}) "
            f"| {m['assigned']:.2f} | {m['recovery']:.3f} ({_runs([r.recovery for r in runs], digits=3)}) "
            f"| {m['read']:,.0f} | {m['rss']:.0f} ({_runs([r.rss_bytes / mib for r in runs], digits=0)}) "
            f"| {m['first']:.2f} |"
        )
    median_value = statistics.median(value_bytes)
    disk = statistics.median(r.disk_bytes for r in results["rocksdb"]) / therapists
    print(
        f"\nstate per therapist: median encoded value {median_value:,.0f} bytes "
        f"(p90 {statistics.quantiles(value_bytes, n=10)[-1]:,.0f}, max {max(value_bytes):,}); "
        f"RocksDB on disk {disk:,.0f} bytes"
    )
    rocks, memory = medians["rocksdb"]["recovery"], medians["memory"]["recovery"]
    ratio = rocks / memory if memory else float("inf")
    met = rocks <= 2.0 and ratio <= 0.2 and median_value <= 2048
    print(
        f"RocksDB recovery {rocks:.3f}s (target ≤ 2 s), {ratio:.3f} of the memory store's (target ≤ 0.2); "
        f"median state {median_value:,.0f} bytes (target ≤ 2048): {'met' if met else 'NOT met'}"
    )
    return met


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--therapists", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalBroker(log_path=Path(tmp) / "tansu.log") as broker:
        work = Path(tmp)
        for therapists in args.therapists:
            app_id = f"restart-{therapists}-{uuid.uuid4().hex[:6]}"
            built = time.monotonic()
            records = changelog_records(therapists)
            await write_changelog(broker.bootstrap, f"{app_id}-therapists-changelog", records)
            print(f"{therapists:,} therapists: changelog written in {time.monotonic() - built:.1f}s", flush=True)
            results: dict[str, list[Restart]] = {store: [] for store in STORES}
            for repeat in range(args.repeats):
                for store in STORES:
                    run = await restart(broker, app_id, store, work)
                    results[store].append(run)
                    print(
                        f"repeat {repeat + 1}: {store:<7} ready after {run.ready_after:.2f}s, "
                        f"recovery {run.recovery:.3f}s ({run.records_read:,} records read), "
                        f"RSS {run.rss_bytes / 1024 / 1024:.0f} MiB",
                        flush=True,
                    )
            report(therapists, [len(value) for _, _, value in records], results)
            del records


if __name__ == "__main__":
    asyncio.run(main())
